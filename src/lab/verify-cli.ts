/**
 * `npm run lab -- verify [--backend URL] [--seconds N] [--clients N] [--processes N]
 * [--faults none|client] [--plant BUG] [--seed N] [--json]`: runs the verification workloads
 * against a backend (in this process, or in N processes whose histories are merged), records the
 * history, checks it (linearizability per key, invariants) and prints ops, faults and anomalies.
 * `--faults client` puts a TCP proxy of this run between its drivers and the server and resets
 * those connections; `--faults admin` (server-side faults) is not implemented. Exit code: 0 when nothing was found, 1 on any anomaly, 2 for a usage error, 3 when
 * the backend cannot be reached, 4 when the checker ran out of time (nothing found, not proven).
 *
 * @example
 * ```sh
 * npm run lab -- verify --seconds 10
 * npm run lab -- verify --backend redis://127.0.0.1:6379 --faults client --processes 2 --json
 * npm run lab -- verify --plant commit-ignores-fence   # must exit 1
 * ```
 */
import { fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { createStore, memory } from '../index.js';
import {
  type Anomaly,
  checkVerify,
  type FaultProxy,
  formatOp,
  type HistoryPart,
  mergeHistories,
  type PlantedBug,
  plantBug,
  plantedBugs,
  resetPeriodically,
  runClients,
  runVerify,
  setupVerify,
  startFaultProxy,
  type VerifyOptions,
  type VerifyReport,
} from '../verify/index.js';
import { type LabBackend, LabError, newRunId, openBackend } from './backends.js';
import { errorMessage } from './util.js';
import { sharedClock, type WorkerOpen, type WorkerReply } from './verify-worker.js';

interface VerifyCliOptions {
  backend: string;
  seconds: number;
  clients: number;
  processes: number;
  faults: 'none' | 'client' | 'admin';
  plant?: PlantedBug;
  seed?: number;
  json: boolean;
  iOwnThisServer: boolean;
}

function integer(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}.`);
    }
    return n;
  };
}

function program(): Command {
  return new Command('lab verify')
    .description(
      'Records a history of concurrent operations (register read/write/cas, counter, bank transfers and snapshots, fenced lock holders that stall past their lease), checks it for linearizability per key and for the invariants, and prints ops (ok/fail/info), faults and anomalies. Exit 0: nothing found; 1: an anomaly; 2: usage; 3: backend unreachable; 4: the checker ran out of time.',
    )
    .option(
      '--backend <url>',
      'memory, redis://host:port or postgres://user@host:port/db',
      'memory',
    )
    .option('--seconds <n>', 'how long the clients run', integer('--seconds', 1, 3600), 10)
    .option(
      '--clients <n>',
      'concurrent clients per workload, per process',
      integer('--clients', 1, 64),
      4,
    )
    .option(
      '--processes <n>',
      "processes running clients (server backends); each worker's clock offset is measured by IPC round trips and its operations widened by the uncertainty",
      integer('--processes', 1, 16),
      1,
    )
    .addOption(
      new Option(
        '--faults <kind>',
        'none; client: this run reaches the server through its own TCP proxy and resets those connections every 0.3-1.5 s (no one else is touched); admin (CLIENT KILL/PAUSE, pg_terminate_backend) is not implemented yet',
      )
        .choices(['none', 'client', 'admin'])
        .default('none'),
    )
    .addOption(
      new Option(
        '--plant <bug>',
        'plant a bug to see the check fail (the backend bugs on memory only)',
      ).choices([...plantedBugs]),
    )
    .option('--seed <n>', 'workload seed (default: random, printed)', integer('--seed', 0, 2 ** 31))
    .option('--json', 'print one JSON object on stdout', false)
    .option('--i-own-this-server', 'allow --faults admin on a server this run did not start', false)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => process.stdout.write(s),
      writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `lab verify: ${s}` : s),
    });
}

function fail(message: string, code: number): never {
  process.stderr.write(`lab verify: error: ${message.replace(/\s+/g, ' ').trim()}\n`);
  process.exit(code);
}

/** The backend URL, pointed at a local proxy for `--faults client`. */
function throughProxy(spec: string, proxy: FaultProxy): string {
  const url = new URL(spec);
  url.hostname = '127.0.0.1';
  url.port = String(proxy.port);
  return url.href;
}

function target(spec: string): { host: string; port: number } {
  const url = new URL(spec);
  const port = url.port ? Number(url.port) : url.protocol.startsWith('redis') ? 6379 : 5432;
  return { host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', port };
}

function anomalyText(workload: string, a: Anomaly): string {
  const lines = [`  [${workload}] ${a.kind} on ${a.key}: ${a.message}`];
  for (const o of a.ops.slice(0, 12)) lines.push(`      ${formatOp(o)}`);
  if (a.ops.length > 12) lines.push(`      … ${a.ops.length - 12} more operations`);
  return lines.join('\n');
}

function text(report: VerifyReport, label: string, faults: Record<string, number>): string {
  const out: string[] = [];
  const pad = (s: string, n: number) => s.padEnd(n);
  out.push(
    `${pad('workload', 10)}${pad('ok', 8)}${pad('fail', 7)}${pad('info', 7)}${pad('check', 20)}verdict`,
  );
  for (const w of report.workloads) {
    const check = w.linearizability
      ? `lin ${w.linearizability.verdict === 'linearizable' ? 'ok' : w.linearizability.verdict}, ${Math.round(w.checkMs)} ms`
      : `invariants, ${Math.round(w.checkMs)} ms`;
    out.push(
      `${pad(w.name, 10)}${pad(String(w.ops.ok), 8)}${pad(String(w.ops.fail), 7)}${pad(String(w.ops.info + w.ops.pending), 7)}${pad(check, 20)}${w.verdict}`,
    );
  }
  const anomalies = report.workloads.flatMap((w) => w.anomalies.map((a) => anomalyText(w.name, a)));
  const total = report.workloads.reduce(
    (s, w) => s + Object.values(w.anomalyCounts).reduce((x, y) => x + y, 0),
    0,
  );
  if (anomalies.length > 0)
    out.push('', `anomalies (${total}; the first of each kind):`, ...anomalies);
  const perProcess = new Map<string, number>();
  for (const o of report.history) {
    const tag = /-(p\d+)\./.exec(o.process)?.[1];
    if (tag !== undefined) perProcess.set(tag, (perProcess.get(tag) ?? 0) + 1);
  }
  if (perProcess.size > 1) {
    out.push('', `ops per process: ${[...perProcess].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  }
  const f = Object.entries(faults);
  out.push(
    '',
    `verify: ${report.verdict.toUpperCase()} on ${label}: ${report.history.length} ops (ok ${report.ops.ok}, fail ${report.ops.fail}, info ${report.ops.info}${report.ops.pending > 0 ? `, ${report.ops.pending} still running, checked as info` : ''}) in ${(report.runMs / 1000).toFixed(1)} s, faults ${f.length === 0 ? 'none' : f.map(([k, v]) => `${k} ${v}`).join(', ')}, ${total} anomalies, checked in ${(report.checkMs / 1000).toFixed(2)} s (seed ${report.seed})`,
  );
  return out.join('\n');
}

/** Pings per worker to measure its clock's offset (the fastest round trip bounds it). */
const CLOCK_PINGS = 20;

/** The worker's file: compiled JavaScript in the package, TypeScript under tsx. */
function workerFile(): string {
  const js = fileURLToPath(new URL('./verify-worker.js', import.meta.url));
  return existsSync(js) ? js : js.replace(/\.js$/, '.ts');
}

/**
 * One run across `processes` processes: this one sets up, runs its clients with the others
 * (forked workers on the same backend and run id), merges the histories and checks them.
 */
async function acrossProcesses(
  backend: LabBackend,
  spec: string,
  runId: string,
  options: VerifyOptions,
  processes: number,
): Promise<VerifyReport> {
  await setupVerify(backend.store, options);
  const { signal: _s, onClientsDone: _d, onOp: _o, ...plain } = options;
  const workers = Array.from({ length: processes - 1 }, () =>
    fork(workerFile(), ['--lockstep-verify-worker'], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  const replies = workers.map(() => [] as WorkerReply[]);
  const waiters = workers.map(() => [] as Array<() => void>);
  const next = (k: number, type: WorkerReply['type']) =>
    new Promise<WorkerReply>((resolve, reject) => {
      const check = () => {
        const r = replies[k]?.find((m) => m.type === type || m.type === 'error');
        if (r === undefined) return false;
        if (r.type === 'error') reject(new LabError(`verify worker ${k + 1}: ${r.message}`, 3));
        else resolve(r);
        return true;
      };
      if (!check()) waiters[k]?.push(() => void check());
    });
  try {
    workers.forEach((w, k) => {
      w.on('message', (m: WorkerReply) => {
        replies[k]?.push(m);
        for (const f of waiters[k]?.splice(0) ?? []) f();
      });
      w.on('exit', (code) => {
        replies[k]?.push({ type: 'error', message: `exited (code ${code}) before it reported` });
        for (const f of waiters[k]?.splice(0) ?? []) f();
      });
      const open: WorkerOpen = {
        type: 'open',
        spec,
        runId,
        options: { ...plain, tag: `p${k + 1}`, processIndex: k + 1 },
      };
      w.send(open);
    });
    await Promise.all(workers.map((_, k) => next(k, 'ready')));
    // Each worker's clock against ours: offset = its reading minus the midpoint of the round
    // trip, known to within half the round trip (the fastest of CLOCK_PINGS).
    const clocks: Array<{ offsetMs: number; marginMs: number }> = [];
    for (const [k, w] of workers.entries()) {
      let best = { offsetMs: 0, marginMs: Number.POSITIVE_INFINITY };
      for (let i = 0; i < CLOCK_PINGS; i++) {
        replies[k] = (replies[k] ?? []).filter((m) => m.type !== 'pong');
        const t0 = sharedClock();
        w.send({ type: 'ping' });
        const pong = await next(k, 'pong');
        const t1 = sharedClock();
        const half = (t1 - t0) / 2;
        if (pong.type === 'pong' && half < best.marginMs) {
          best = { offsetMs: pong.t - (t0 + t1) / 2, marginMs: half };
        }
      }
      clocks.push(best);
    }
    process.stderr.write(
      `lab verify: worker clocks: ${clocks.map((c, k) => `p${k + 1} ${c.offsetMs >= 0 ? '+' : ''}${c.offsetMs.toFixed(3)} ± ${c.marginMs.toFixed(3)} ms`).join(', ')}\n`,
    );
    for (const w of workers) w.send({ type: 'go' });
    const mine = runClients(backend.store, {
      ...options,
      tag: 'p0',
      processIndex: 0,
      now: sharedClock,
    });
    const theirs = await Promise.all(workers.map((_, k) => next(k, 'done')));
    const own = await mine;
    options.onClientsDone?.();
    const parts: HistoryPart[] = [{ ops: own.ops }];
    let runMs = own.runMs;
    for (const [k, r] of theirs.entries()) {
      if (r.type !== 'done') continue;
      parts.push({ ops: r.ops, ...(clocks[k] ?? { marginMs: 1 }) });
      runMs = Math.max(runMs, r.runMs);
    }
    return await checkVerify(backend.store, mergeHistories(parts), options, runMs);
  } finally {
    for (const w of workers) if (w.exitCode === null) w.kill();
  }
}

/**
 * Runs `lab verify` with the arguments after `verify`; resolves the exit code.
 *
 * @example
 * ```ts
 * process.exitCode = await verifyMain(['--seconds', '5']);
 * ```
 */
export async function verifyMain(argv: readonly string[]): Promise<number> {
  const cmd = program();
  try {
    cmd.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    throw err;
  }
  const opts = cmd.opts<VerifyCliOptions>();
  const isMemory = /^memory(:(\/\/)?)?$/.test(opts.backend.trim());
  if (opts.faults === 'admin') {
    if (!opts.iOwnThisServer) {
      fail(
        '--faults admin disturbs the server itself (other clients too); pass --i-own-this-server if it is yours to disturb',
        2,
      );
    }
    fail('--faults admin is not implemented yet; use --faults client', 2);
  }
  if (opts.faults === 'client' && isMemory) {
    fail(
      '--faults client needs a server backend (redis://... or postgres://...): memory has no connections',
      2,
    );
  }
  if (opts.faults === 'client' && /^sqlite(:|$)/.test(opts.backend.trim())) {
    fail(
      '--faults client needs a server backend (redis://... or postgres://...): SQLite has no connections to break',
      2,
    );
  }
  if (opts.processes > 1 && isMemory) {
    fail('--processes needs a server backend: the memory backend lives in one process', 2);
  }
  if (opts.plant !== undefined && opts.plant !== 'read-then-write-increment' && !isMemory) {
    fail(
      `--plant ${opts.plant} runs against the memory backend only (a broken backend must never reach a server); read-then-write-increment, a client bug, runs anywhere`,
      2,
    );
  }

  let proxy: FaultProxy | undefined;
  let backend: LabBackend | undefined;
  let spec = opts.backend;
  const runId = newRunId();
  try {
    if (opts.plant !== undefined && isMemory) {
      const store = createStore(plantBug(memory(), opts.plant));
      backend = {
        kind: 'memory',
        label: `memory (planted: ${opts.plant})`,
        store,
        cleanup: () => store.close(),
      };
    } else {
      if (opts.faults === 'client') {
        proxy = await startFaultProxy(target(spec));
        spec = throughProxy(spec, proxy);
      }
      backend = await openBackend(spec, runId, { workers: opts.clients * 4 });
    }
  } catch (err) {
    await proxy?.close();
    if (err instanceof LabError) fail(err.message, err.exitCode);
    fail(errorMessage(err), 3);
  }
  const label = proxy ? `${opts.backend} (through this run's proxy)` : backend.label;
  if (!opts.json) {
    process.stderr.write(
      `lab verify: ${label}, ${opts.processes > 1 ? `${opts.processes} processes x ` : ''}${opts.clients} clients per workload, ${opts.seconds} s, faults ${opts.faults}\n`,
    );
  }
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  const nemesis = new AbortController();
  const faultsDone = proxy
    ? resetPeriodically(proxy, { minMs: 300, maxMs: 1500, signal: nemesis.signal })
    : Promise.resolve(0);
  let report: VerifyReport;
  const faults: Record<string, number> = {};
  try {
    const options: VerifyOptions = {
      durationMs: opts.seconds * 1000,
      clients: opts.clients,
      signal: stop.signal,
      seed: opts.seed ?? Math.floor(Math.random() * 2 ** 31),
      ...(opts.plant === undefined ? {} : { bug: opts.plant }),
      // The faults stop when the clients do, before the final reads.
      onClientsDone: () => nemesis.abort(),
    };
    report =
      opts.processes > 1
        ? await acrossProcesses(backend, spec, runId, options, opts.processes)
        : await runVerify(backend.store, options);
  } finally {
    nemesis.abort();
    const resets = await faultsDone;
    if (proxy) faults['connection reset'] = resets;
    await backend.cleanup();
    await proxy?.close();
  }
  if (opts.json) {
    const { history: _h, ...rest } = report;
    process.stdout.write(`${JSON.stringify({ backend: label, faults, ...rest })}\n`);
  } else {
    process.stdout.write(`${text(report, label, faults)}\n`);
  }
  return report.verdict === 'fail' ? 1 : report.verdict === 'unknown' ? 4 : 0;
}
