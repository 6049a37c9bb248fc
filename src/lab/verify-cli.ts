/**
 * `npm run lab -- verify [--backend URL|redis|postgres] [--seconds N] [--clients N]
 * [--processes N] [--faults none|client|admin] [--i-own-this-server] [--plant BUG] [--seed N]
 * [--json]`: runs the verification workloads against a backend (in this process, or in N
 * processes whose histories are merged), records the history, checks it (linearizability per
 * key, invariants) and prints ops, faults by kind and anomalies.
 * - `--backend redis` / `--backend postgres` starts a throwaway server for the run (and stops it).
 * - `--faults client` puts a TCP proxy of this run between its drivers and the server and resets
 *   those connections.
 * - `--faults admin` injects server and process faults (src/lab/verify-nemesis.ts): `CLIENT KILL`
 *   of the run's connections and `CLIENT PAUSE` (Redis), `pg_terminate_backend` of its sessions
 *   (PostgreSQL), SIGSTOP / SIGKILL of worker processes and of a worker while it holds the lock.
 *   Only on a server the run started, or with `--i-own-this-server`; with no `--backend` it runs
 *   on a throwaway Redis, then a throwaway PostgreSQL; 3 processes unless `--processes` is given.
 *
 * Exit code: 0 when nothing was found, 1 on any anomaly, 2 for a usage error, 3 when the
 * backend cannot be reached, 4 when the checker ran out of time (nothing found, not proven).
 *
 * @example
 * ```sh
 * npm run lab -- verify --seconds 10
 * npm run lab -- verify --backend redis://127.0.0.1:6379 --faults client --processes 2 --json
 * npm run lab -- verify --faults admin --seconds 10       # throwaway Redis, then PostgreSQL
 * npm run lab -- verify --plant commit-ignores-fence   # must exit 1
 * ```
 */
import { writeFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { Backend } from '../index.js';
import {
  type Anomaly,
  checkVerify,
  connectionTag,
  type FaultProxy,
  formatOp,
  History,
  type HistoryPart,
  MissingServerBinaryError,
  mergeHistories,
  type PlantedBug,
  type PostgresServer,
  plantBug,
  plantedBugs,
  type RedisServer,
  resetPeriodically,
  runClients,
  type ServerNemesis,
  serverNemesis,
  setupVerify,
  startFaultProxy,
  startPostgres,
  startRedis,
  tagServerUrl,
  type VerifyOptions,
  type VerifyReport,
} from '../verify/index.js';
import { type LabBackend, LabError, newRunId, openBackend } from './backends.js';
import { errorMessage } from './util.js';
import { adminFaultKinds, runNemesis } from './verify-nemesis.js';
import { sharedClock } from './verify-worker.js';
import { WorkerPool } from './verify-workers.js';

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
  history?: string;
  faultInterval: number;
  faultKinds?: Array<(typeof adminFaultKinds)[number]>;
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
      'memory, redis://host:port, postgres://user@host:port/db, or redis / postgres: a throwaway server this run starts',
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
      "processes running clients (server backends; 3 by default with --faults admin); each worker's clock offset is measured by IPC round trips and its operations widened by the uncertainty",
      integer('--processes', 1, 16),
      1,
    )
    .addOption(
      new Option(
        '--faults <kind>',
        "none; client: this run reaches the server through its own TCP proxy and resets those connections every 0.3-1.5 s (no one else is touched); admin: every 0.3-1.5 s CLIENT KILL of the run's connections or CLIENT PAUSE (Redis), pg_terminate_backend of its sessions (PostgreSQL), SIGSTOP/SIGKILL of a worker process or of one holding the lock (a server the run started, or --i-own-this-server; no --backend: a throwaway Redis, then PostgreSQL)",
      )
        .choices(['none', 'client', 'admin'])
        .default('none'),
    )
    .addOption(
      new Option(
        '--plant <bug>',
        'plant a bug to see the check fail (the backend bugs on memory or a throwaway server only)',
      ).choices([...plantedBugs]),
    )
    .option('--seed <n>', 'workload seed (default: random, printed)', integer('--seed', 0, 2 ** 31))
    .option(
      '--fault-kinds <list>',
      `with --faults admin, only these (comma-separated): ${adminFaultKinds.join(', ')}`,
      (value: string) => {
        const list = value.split(',').map((k) => k.trim());
        const bad = list.filter((k) => !(adminFaultKinds as readonly string[]).includes(k));
        if (bad.length > 0 || list.length === 0) {
          throw new InvalidArgumentError(
            `unknown fault kind ${bad.join(', ')}: choose from ${adminFaultKinds.join(', ')}`,
          );
        }
        return list;
      },
    )
    .option(
      '--fault-interval <ms>',
      'with --faults admin, the mean time between faults (each wait is a third to five thirds of it)',
      integer('--fault-interval', 20, 60_000),
      900,
    )
    .option('--json', 'print one JSON object on stdout (one line per backend run)', false)
    .option(
      '--history <file>',
      "write the whole history (the nemesis's faults included) to <file>, one operation per JSON line (with several backends, one file each: <file>.redis, <file>.postgres)",
    )
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

function text(
  report: VerifyReport,
  label: string,
  faults: Record<string, number>,
  misses: number,
): string {
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
  const counted = report.ops.ok + report.ops.fail + report.ops.info + report.ops.pending;
  const missed = misses > 0 ? ` (${misses} more found nothing to act on)` : '';
  out.push(
    '',
    `verify: ${report.verdict.toUpperCase()} on ${label}: ${counted} ops (ok ${report.ops.ok}, fail ${report.ops.fail}, info ${report.ops.info}${report.ops.pending > 0 ? `, ${report.ops.pending} never completed (hung, or their process was killed), checked as info` : ''}) in ${(report.runMs / 1000).toFixed(1)} s, faults ${f.length === 0 ? 'none' : f.map(([k, v]) => `${k} ${v}`).join(', ')}${missed}, ${total} anomalies, checked in ${(report.checkMs / 1000).toFixed(2)} s (seed ${report.seed})`,
  );
  return out.join('\n');
}

/** A run's report, its faults by kind, and how many faults found nothing to act on. */
interface RunResult {
  readonly report: VerifyReport;
  readonly faults: Record<string, number>;
  readonly misses: number;
}

/** What one run needs besides the workloads' options. */
interface RunPlan {
  readonly backend: LabBackend;
  readonly spec: string;
  readonly runId: string;
  readonly processes: number;
  readonly plant?: PlantedBug;
  /** Faults: `client` resets through this run's proxy; `admin` the server's and the processes'. */
  readonly proxy?: FaultProxy;
  readonly server?: ServerNemesis;
  readonly admin: boolean;
  readonly faultKinds?: ReadonlyArray<(typeof adminFaultKinds)[number]>;
  readonly faultIntervalMs: number;
}

/**
 * One run across `processes` processes (this one and `processes - 1` forked workers on the
 * same backend and run id): this one sets up, starts the workers and its own clients, runs the
 * nemesis, merges every history (the nemesis's too) and checks it.
 */
async function runAcross(plan: RunPlan, options: VerifyOptions): Promise<RunResult> {
  const { backend } = plan;
  await setupVerify(backend.store, options);
  const { signal: _s, onClientsDone: _d, onOp: _o, ...plain } = options;
  const pool =
    plan.processes > 1
      ? new WorkerPool({
          spec: plan.spec,
          runId: plan.runId,
          options: plain,
          ...(plan.plant === undefined ? {} : { plant: plan.plant }),
        })
      : undefined;
  const nemesisHistory = new History({ now: sharedClock });
  const stopFaults = new AbortController();
  let resets: Promise<number> = Promise.resolve(0);
  let nemesis: Promise<void> = Promise.resolve();
  try {
    if (pool) {
      const workers = await Promise.all(
        Array.from({ length: plan.processes - 1 }, () => pool.open(options.durationMs)),
      );
      process.stderr.write(
        `lab verify: worker clocks: ${workers.map((w) => `${w.tag} ${w.clock.offsetMs >= 0 ? '+' : ''}${w.clock.offsetMs.toFixed(3)} ± ${w.clock.marginMs.toFixed(3)} ms`).join(', ')}\n`,
      );
      for (const w of workers) pool.go(w);
    }
    const until = sharedClock() + options.durationMs;
    if (plan.proxy) {
      resets = resetPeriodically(plan.proxy, {
        minMs: 300,
        maxMs: 1500,
        signal: stopFaults.signal,
      });
    }
    if (plan.admin) {
      nemesis = runNemesis({
        ...(plan.server ? { server: plan.server } : {}),
        ...(pool ? { pool } : {}),
        leaseMs: options.leaseMs ?? 150,
        until,
        now: sharedClock,
        history: nemesisHistory,
        random: Math.random,
        signal: stopFaults.signal,
        ...(plan.faultKinds ? { only: plan.faultKinds } : {}),
        intervalMs: plan.faultIntervalMs,
      });
    }
    const own = await runClients(backend.store, {
      ...options,
      tag: 'p0',
      processIndex: 0,
      now: sharedClock,
    });
    // The faults stop when the clients do, before the final reads.
    stopFaults.abort();
    await nemesis;
    const resetCount = await resets;
    await pool?.finish();
    options.onClientsDone?.();
    const parts: HistoryPart[] = [
      { ops: own.ops },
      ...(pool?.parts() ?? []),
      { ops: nemesisHistory.operations() },
    ];
    const report = await checkVerify(
      backend.store,
      mergeHistories(parts),
      options,
      Math.max(own.runMs, pool?.runMs() ?? 0),
    );
    const faults: Record<string, number> = { ...report.faults };
    if (plan.proxy) faults['connection-reset'] = resetCount;
    const misses = nemesisHistory.operations().filter((o) => o.status === 'fail').length;
    return { report, faults, misses };
  } finally {
    stopFaults.abort();
    await nemesis.catch(() => {});
    await resets.catch(() => 0);
    await pool?.close();
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
/** `--backend redis` / `--backend postgres`: a throwaway server this run starts and stops. */
const THROWAWAY = /^(redis|postgres)$/;

/** The exit code of several runs: an anomaly wins, then the first other failure. */
function worst(codes: readonly number[]): number {
  return codes.includes(1) ? 1 : (codes.find((c) => c !== 0) ?? 0);
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
  const backendGiven = cmd.getOptionValueSource('backend') !== 'default';
  const processesGiven = cmd.getOptionValueSource('processes') !== 'default';
  // --faults admin with no --backend: a throwaway Redis, then a throwaway PostgreSQL.
  const specs =
    opts.faults === 'admin' && !backendGiven ? ['redis', 'postgres'] : [opts.backend.trim()];
  const codes: number[] = [];
  for (const spec of specs) {
    codes.push(await verifyOne(spec, opts, processesGiven, specs.length));
  }
  return worst(codes);
}

async function verifyOne(
  given: string,
  opts: VerifyCliOptions,
  processesGiven: boolean,
  specsCount: number,
): Promise<number> {
  const isMemory = /^memory(:(\/\/)?)?$/.test(given);
  const throwaway = THROWAWAY.exec(given)?.[1] as 'redis' | 'postgres' | undefined;
  if (opts.faults === 'admin' && isMemory) {
    fail(
      '--faults admin needs a server backend: give --backend redis or --backend postgres (a throwaway server this run starts), or leave --backend out to run on both',
      2,
    );
  }
  const isSqlite = /^sqlite(:|$)/.test(given);
  if (opts.faults === 'client' && isSqlite) {
    fail(
      '--faults client needs a server backend (redis://... or postgres://...): SQLite has no connections to break',
      2,
    );
  }
  if (opts.faults === 'admin' && isSqlite) {
    fail(
      '--faults admin needs a server backend (redis://..., postgres://..., or redis / postgres for a throwaway server): SQLite has no server to disturb',
      2,
    );
  }
  if (opts.faults === 'admin' && throwaway === undefined && !opts.iOwnThisServer) {
    fail(
      '--faults admin disturbs the server itself (CLIENT PAUSE holds every client; kills go to this run’s connections only): pass --i-own-this-server if it is yours to disturb, or give --backend redis / postgres for a throwaway server',
      2,
    );
  }
  if (opts.faultKinds !== undefined && opts.faults !== 'admin') {
    fail('--fault-kinds chooses among the admin faults: give --faults admin too', 2);
  }
  if (opts.faults === 'client' && isMemory) {
    fail(
      '--faults client needs a server backend (redis://... or postgres://..., or redis / postgres for a throwaway server): memory has no connections',
      2,
    );
  }
  // Worker processes give the process faults something to stop and kill.
  const processes =
    opts.faults === 'admin' && !processesGiven ? Math.max(3, opts.processes) : opts.processes;
  if (processes > 1 && isMemory) {
    fail('--processes needs a server backend: the memory backend lives in one process', 2);
  }
  const processFaults = opts.faultKinds?.filter((k) => /^(worker|holder)-/.test(k)) ?? [];
  if (processFaults.length > 0 && processes < 2) {
    fail(`${processFaults.join(', ')} need worker processes: give --processes 2 or more`, 2);
  }
  const backendBug = opts.plant !== undefined && opts.plant !== 'read-then-write-increment';
  if (backendBug && !isMemory && throwaway === undefined && given !== 'sqlite') {
    fail(
      `--plant ${opts.plant} runs against the memory backend or a throwaway server (--backend redis / postgres; --backend sqlite, a temporary file) only (a broken backend must never reach your server); read-then-write-increment, a client bug, runs anywhere`,
      2,
    );
  }

  let server: RedisServer | PostgresServer | undefined;
  let proxy: FaultProxy | undefined;
  let backend: LabBackend | undefined;
  let nemesis: ServerNemesis | undefined;
  const runId = newRunId();
  const tag = connectionTag(runId);
  let spec = given;
  try {
    let url = given;
    if (throwaway === 'redis') server = await startRedis();
    else if (throwaway === 'postgres') server = await startPostgres();
    if (server) url = server.url;
    spec = isMemory || isSqlite ? url : tagServerUrl(url, tag);
    if (opts.faults === 'client') {
      proxy = await startFaultProxy(target(url));
      spec = throughProxy(spec, proxy);
    }
    const wrap = opts.plant === undefined ? undefined : (b: Backend) => plantBug(b, opts.plant);
    backend = await openBackend(spec, runId, {
      workers: opts.clients * 4,
      ...(wrap ? { wrap } : {}),
    });
    if (opts.faults === 'admin') nemesis = await serverNemesis(url, tag);
  } catch (err) {
    await nemesis?.close();
    await backend?.cleanup();
    await proxy?.close();
    await server?.stop();
    if (err instanceof MissingServerBinaryError) fail(err.message, 3);
    if (err instanceof LabError) fail(err.message, err.exitCode);
    fail(errorMessage(err), 3);
  }
  const base = server ? `${throwaway} (throwaway server ${server.url})` : backend.label;
  const label = `${base}${proxy ? " (through this run's proxy)" : ''}${opts.plant ? ` (planted: ${opts.plant})` : ''}`;
  if (!opts.json) {
    process.stderr.write(
      `lab verify: ${label}, ${processes > 1 ? `${processes} processes x ` : ''}${opts.clients} clients per workload, ${opts.seconds} s, faults ${opts.faults}\n`,
    );
  }
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.once('SIGINT', onSigint);
  let result: RunResult;
  try {
    const options: VerifyOptions = {
      durationMs: opts.seconds * 1000,
      clients: opts.clients,
      signal: stop.signal,
      seed: opts.seed ?? Math.floor(Math.random() * 2 ** 31),
      ...(opts.plant === undefined ? {} : { bug: opts.plant }),
    };
    result = await runAcross(
      {
        backend,
        spec,
        runId,
        processes,
        admin: opts.faults === 'admin',
        ...(opts.faultKinds ? { faultKinds: opts.faultKinds } : {}),
        faultIntervalMs: opts.faultInterval,
        ...(backendBug && opts.plant ? { plant: opts.plant } : {}),
        ...(proxy ? { proxy } : {}),
        ...(nemesis ? { server: nemesis } : {}),
      },
      options,
    );
  } finally {
    process.off('SIGINT', onSigint);
    await nemesis?.close();
    await backend.cleanup();
    await proxy?.close();
    await server?.stop();
  }
  const { report, faults, misses } = result;
  if (opts.history !== undefined) {
    const file = specsCount > 1 ? `${opts.history}.${throwaway ?? 'run'}` : opts.history;
    writeFileSync(file, report.history.map((o) => `${JSON.stringify(o)}\n`).join(''));
  }
  if (opts.json) {
    const { history: _h, ...rest } = report;
    process.stdout.write(
      `${JSON.stringify({ backend: label, ...rest, faults, faultsWithNothingToActOn: misses })}\n`,
    );
  } else {
    process.stdout.write(`${text(report, label, faults, misses)}\n`);
  }
  return report.verdict === 'fail' ? 1 : report.verdict === 'unknown' ? 4 : 0;
}
