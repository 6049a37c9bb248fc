/**
 * One verification run: the workloads' clients run concurrently against a store for a while,
 * every operation recorded in one history; then each workload's part of the history is
 * checked (linearizability per key, invariants) and the run reports ops, faults and anomalies.
 */
import type { Store } from '../store/store.js';
import { History, type Operation, type OpStatus } from './history.js';
import type { Anomaly } from './invariants.js';
import type { Verdict } from './linearizable.js';
import type { PlantedBug } from './mutants.js';
import { type WorkloadContext, type WorkloadName, workload, workloadNames } from './workloads.js';

/** Options of {@link runVerify}. */
export interface VerifyOptions {
  /** How long the clients run, ms. */
  readonly durationMs: number;
  /** Concurrent clients per workload (default 4). */
  readonly clients?: number;
  /** Which workloads (default all). */
  readonly workloads?: readonly WorkloadName[];
  /** Model-name prefix isolating this run (letters, digits, `_`; default `v`). */
  readonly prefix?: string;
  /** Seed of the workloads' randomness (default random). */
  readonly seed?: number;
  /** The client-side planted bug, if any (plant backend bugs with `plantBug`). */
  readonly bug?: PlantedBug;
  /** Lease of the mutex workload's holders, ms (default 150). */
  readonly leaseMs?: number;
  /** Time the checker may spend per workload before answering `unknown`, ms (default 20 000). */
  readonly checkMs?: number;
  /**
   * Operations still running this long after the run's end are left behind: the checks go on
   * with them pending (checked as `info`: they may land at any time, or never). Default 30 000.
   */
  readonly hangMs?: number;
  /** Stops the clients early. */
  readonly signal?: AbortSignal;
  /** Called once the clients stopped, before the final reads and the checks (stop faults here). */
  readonly onClientsDone?: () => void;
  /** Called once per completed operation (progress). */
  readonly onOp?: (op: Operation) => void;
}

/** What one workload found. */
export interface WorkloadReport {
  readonly name: WorkloadName;
  readonly ops: Record<OpStatus, number>;
  /** `pass`: no anomaly; `fail`: anomalies; `unknown`: the checker ran out of time, nothing found. */
  readonly verdict: 'pass' | 'fail' | 'unknown';
  /** The first few anomalies of each kind (see `anomalyCounts` for all). */
  readonly anomalies: readonly Anomaly[];
  /** How many anomalies of each kind were found. */
  readonly anomalyCounts: Readonly<Record<string, number>>;
  /** Linearizability, for the workloads checked that way: verdict, keys and search steps. */
  readonly linearizability?: {
    readonly verdict: Verdict;
    readonly keys: number;
    readonly steps: number;
  };
  readonly checkMs: number;
}

/** The result of a run. */
export interface VerifyReport {
  /** `fail` if any workload found an anomaly; else `unknown` if any was undecided; else `pass`. */
  readonly verdict: 'pass' | 'fail' | 'unknown';
  readonly seed: number;
  readonly clients: number;
  /** The clients' operations by status (the nemesis's are counted in `faults`). */
  readonly ops: Record<OpStatus, number>;
  /**
   * Faults injected, by kind: the `ok` operations of process {@link NEMESIS} in the history
   * (a client-side fault count such as a proxy's resets is added by whoever ran it).
   */
  readonly faults: Readonly<Record<string, number>>;
  readonly workloads: readonly WorkloadReport[];
  readonly runMs: number;
  readonly checkMs: number;
  /** The whole history (for `--json` and for debugging). */
  readonly history: readonly Operation[];
}

/**
 * The process name of the nemesis's operations in a history: each fault is one operation (its
 * kind the fault's, `ok` when injected, `fail` when there was nothing to act on). The workloads'
 * checks never see them.
 */
export const NEMESIS = 'nemesis';

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const countOps = (ops: readonly Operation[]): Record<OpStatus, number> => {
  const c: Record<OpStatus, number> = { ok: 0, fail: 0, info: 0, pending: 0 };
  for (const o of ops) c[o.status]++;
  return c;
};

/** Anomalies shown per kind in a report. */
const SHOWN_PER_KIND = 3;

function capAnomalies(all: readonly Anomaly[]): {
  anomalies: Anomaly[];
  anomalyCounts: Record<string, number>;
} {
  const anomalyCounts: Record<string, number> = {};
  const anomalies: Anomaly[] = [];
  for (const a of all) {
    anomalyCounts[a.kind] = (anomalyCounts[a.kind] ?? 0) + 1;
    if ((anomalyCounts[a.kind] as number) <= SHOWN_PER_KIND) anomalies.push(a);
  }
  return { anomalies, anomalyCounts };
}

/** Options of {@link runClients}: which run, and, for one process of several, which one. */
export interface ClientOptions extends VerifyOptions {
  /** Names this process's clients (`register-p2.0`): one tag per process of a run. */
  readonly tag?: string;
  /** The history's clock (default `performance.now`; several processes need a shared one). */
  readonly now?: () => number;
  /** This process's number among the run's (0, 1, ...): keeps written values unique. */
  readonly processIndex?: number;
  /** Sees every operation when invoked and when completed (a journal that outlives a kill). */
  readonly onChange?: (op: Operation) => void;
  /**
   * Told when one of this process's mutex holders enters its critical section (`true`) and when
   * its lock call has returned (`false`): the nemesis stops or kills a process while it holds.
   */
  readonly onSection?: (inside: boolean) => void;
}

function contextBase(
  store: Store,
  history: History,
  options: ClientOptions,
): Omit<WorkloadContext, 'random'> {
  let written = 0;
  const base = (options.processIndex ?? 0) * 1_000_000_000;
  return {
    store,
    history,
    prefix: options.prefix ?? 'v',
    leaseMs: options.leaseMs ?? 150,
    now: options.now ?? (() => performance.now()),
    unique: () => base + ++written,
    ...(options.bug === undefined ? {} : { bug: options.bug }),
    ...(options.onSection === undefined ? {} : { onSection: options.onSection }),
  };
}

/**
 * Creates the workloads' documents (once per run, before any client starts).
 *
 * @example
 * ```ts
 * await setupVerify(store, { durationMs: 0 });
 * ```
 */
export async function setupVerify(store: Store, options: VerifyOptions): Promise<void> {
  const ctx: WorkloadContext = {
    ...contextBase(store, new History(), options),
    random: mulberry32(options.seed ?? 1),
  };
  for (const n of options.workloads ?? workloadNames) await workload(n).setup(ctx);
}

/**
 * Runs the workloads' clients for `durationMs` and returns what they recorded (operations
 * still running `hangMs` after the end stay pending). Run {@link setupVerify} first.
 *
 * @example
 * ```ts
 * const { ops } = await runClients(store, { durationMs: 5000, tag: 'p1', processIndex: 1 });
 * ```
 */
export async function runClients(
  store: Store,
  options: ClientOptions,
): Promise<{ readonly ops: Operation[]; readonly runMs: number }> {
  const names = options.workloads ?? workloadNames;
  const clients = options.clients ?? 4;
  const now = options.now ?? (() => performance.now());
  const history = new History({
    now,
    ...(options.onChange === undefined ? {} : { onChange: options.onChange }),
  });
  const seeds = mulberry32((options.seed ?? 1) + 7919 * (options.processIndex ?? 0));
  const base = contextBase(store, history, options);
  const started = performance.now();
  const until = started + options.durationMs;
  const loops: Promise<void>[] = [];
  for (const n of names) {
    const w = workload(n);
    for (let i = 0; i < clients; i++) {
      const ctx: WorkloadContext = { ...base, random: mulberry32(seeds() * 2 ** 32) };
      const client = options.tag === undefined ? `${n}-${i}` : `${n}-${options.tag}.${i}`;
      loops.push(
        (async () => {
          while (performance.now() < until && !options.signal?.aborted) {
            // The embedded backend answers in microtasks: without a turn of the event loop per
            // operation, timers (lease expiry, a stalled holder's sleep) would never run.
            await new Promise<void>((r) => setImmediate(r));
            const before = history.operations().length;
            await w.step(ctx, client);
            if (options.onOp) {
              for (const o of history.operations().slice(before)) {
                if (o.process === client) options.onOp(o);
              }
            }
          }
        })(),
      );
    }
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(loops),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, options.durationMs + (options.hangMs ?? 30_000));
    }),
  ]);
  clearTimeout(timer);
  // A snapshot: operations that hung stay pending in it even if they finish later.
  return { ops: [...history.operations()], runMs: performance.now() - started };
}

/**
 * Checks a run's history (after every client stopped): each workload's part, with the final
 * state read from `store`.
 *
 * @example
 * ```ts
 * const report = await checkVerify(store, ops, { durationMs: 5000, seed }, runMs);
 * ```
 */
export async function checkVerify(
  store: Store,
  all: readonly Operation[],
  options: VerifyOptions,
  runMs: number,
): Promise<VerifyReport> {
  const names = options.workloads ?? workloadNames;
  const ctx: WorkloadContext = {
    ...contextBase(store, new History(), options),
    random: mulberry32(1),
  };
  const reports: WorkloadReport[] = [];
  const checkStarted = performance.now();
  for (const n of names) {
    const ops = all.filter((o) => o.process.startsWith(`${n}-`));
    const t0 = performance.now();
    const r = await workload(n).check(ctx, ops, options.checkMs ?? 20_000);
    const lin = r.linearizability;
    const verdict =
      r.anomalies.length > 0 ? 'fail' : lin?.verdict === 'unknown' ? 'unknown' : 'pass';
    reports.push({
      name: n,
      ops: countOps(ops),
      verdict,
      ...capAnomalies(r.anomalies),
      ...(lin === undefined
        ? {}
        : {
            linearizability: {
              verdict: lin.verdict,
              keys: lin.keys.length,
              steps: lin.keys.reduce((s, k) => s + k.steps, 0),
            },
          }),
      checkMs: performance.now() - t0,
    });
  }
  const verdict = reports.some((r) => r.verdict === 'fail')
    ? 'fail'
    : reports.some((r) => r.verdict === 'unknown')
      ? 'unknown'
      : 'pass';
  const faults: Record<string, number> = {};
  for (const o of all) {
    if (o.process === NEMESIS && o.status === 'ok') faults[o.kind] = (faults[o.kind] ?? 0) + 1;
  }
  return {
    verdict,
    seed: options.seed ?? 1,
    clients: options.clients ?? 4,
    ops: countOps(all.filter((o) => o.process !== NEMESIS)),
    faults,
    workloads: reports,
    runMs,
    checkMs: performance.now() - checkStarted,
    history: all,
  };
}

/**
 * Runs the workloads against `store`, then checks the history.
 *
 * @example
 * ```ts
 * const report = await runVerify(createStore(memory()), { durationMs: 2000 });
 * if (report.verdict !== 'pass') console.log(report.workloads.flatMap((w) => w.anomalies));
 * ```
 */
export async function runVerify(store: Store, options: VerifyOptions): Promise<VerifyReport> {
  const o: VerifyOptions = {
    ...options,
    seed: options.seed ?? Math.floor(Math.random() * 2 ** 31),
  };
  await setupVerify(store, o);
  const { ops, runMs } = await runClients(store, o);
  o.onClientsDone?.();
  return checkVerify(store, ops, o, runMs);
}
