/**
 * The nemesis schedule of `lab verify --faults admin`: every 0.3-1.5 s (by default) one fault, each kind
 * once per round in a random order, from what the run has — the server's (`CLIENT KILL` of the run's connections, `CLIENT PAUSE`,
 * `pg_terminate_backend` of its sessions) and, with worker processes, the process faults
 * (`worker-stop`: SIGSTOP then SIGCONT; `worker-kill`: SIGKILL and a replacement for the rest
 * of the run; `holder-stop` / `holder-kill`: the same to a worker while one of its mutex
 * holders is inside its critical section, stopped for 3-6 leases). Each fault is an operation of
 * process `nemesis` in the history: `ok` when it was injected (with what it did), `fail` when
 * there was nothing to act on.
 */
import {
  type History,
  NEMESIS,
  type ServerFaultKind,
  type ServerNemesis,
} from '../verify/index.js';
import type { VerifyWorker, WorkerPool } from './verify-workers.js';

/** The process faults. */
export type ProcessFaultKind = 'worker-stop' | 'worker-kill' | 'holder-stop' | 'holder-kill';

/** Every kind of admin fault, for `--fault-kinds` and help texts. */
export const adminFaultKinds: ReadonlyArray<ServerFaultKind | ProcessFaultKind> = [
  'client-kill',
  'client-pause',
  'terminate-backend',
  'worker-stop',
  'worker-kill',
  'holder-stop',
  'holder-kill',
];

const PROCESS_FAULTS: readonly ProcessFaultKind[] = [
  'worker-stop',
  'worker-kill',
  'holder-stop',
  'holder-kill',
];

/** What the schedule acts on. */
export interface NemesisPlan {
  readonly server?: ServerNemesis;
  readonly pool?: WorkerPool;
  /** The mutex workload's lease, ms (holders are stopped past it). */
  readonly leaseMs: number;
  /** When the run's clients stop (shared clock): a replacement runs until then. */
  readonly until: number;
  readonly now: () => number;
  readonly history: History;
  readonly random: () => number;
  readonly signal: AbortSignal;
  /** Mean time between faults, ms (each wait is drawn from a third of it to five thirds). */
  readonly intervalMs?: number;
  /** Only these kinds (default every kind the server and the processes allow). */
  readonly only?: ReadonlyArray<ServerFaultKind | ProcessFaultKind>;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

/** Replacements are not started with less than this left of the run, ms. */
const MIN_REPLACEMENT_MS = 1000;

/**
 * Runs the schedule until `plan.signal` aborts; resolves once the last fault is over.
 *
 * @example
 * ```ts
 * const stop = new AbortController();
 * const done = runNemesis({ server, pool, leaseMs: 150, until, now: sharedClock, history, random: Math.random, signal: stop.signal });
 * // ... clients run ...
 * stop.abort();
 * await done;
 * ```
 */
export async function runNemesis(plan: NemesisPlan): Promise<void> {
  const kinds: Array<ServerFaultKind | ProcessFaultKind> = [
    ...(plan.server?.kinds ?? []),
    ...(plan.pool ? PROCESS_FAULTS : []),
  ].filter((k) => plan.only === undefined || plan.only.includes(k));
  if (kinds.length === 0) return;
  const replacements: Promise<void>[] = [];
  let round: typeof kinds = [];
  while (!plan.signal.aborted) {
    const mean = plan.intervalMs ?? 900;
    await sleep(mean * (1 / 3 + (4 / 3) * plan.random()), plan.signal);
    if (plan.signal.aborted) break;
    // Every kind once per round, in a random order: a short run still sees each of them.
    if (round.length === 0) round = shuffle(kinds, plan.random);
    const kind = round.pop() as (typeof kinds)[number];
    if (kind === 'client-kill' || kind === 'client-pause' || kind === 'terminate-backend') {
      const server = plan.server as ServerNemesis;
      const id = plan.history.invoke(NEMESIS, 'server', kind);
      try {
        const r = await server.inject(kind, plan.random);
        if (r.touched) plan.history.ok(id, undefined, r.detail);
        else plan.history.fail(id, 'none of the run’s connections was open', r.detail);
      } catch (err) {
        plan.history.fail(id, err instanceof Error ? err.message : String(err));
      }
      continue;
    }
    const pool = plan.pool as WorkerPool;
    const holder = kind.startsWith('holder');
    const w = holder ? await findHolder(pool, plan.signal) : pickRunning(pool, plan.random);
    if (w === undefined) {
      const id = plan.history.invoke(NEMESIS, 'workers', kind);
      plan.history.fail(id, holder ? 'no worker held the lock' : 'no worker running');
      continue;
    }
    const id = plan.history.invoke(NEMESIS, w.tag, kind);
    if (kind.endsWith('stop')) {
      const ms = Math.round(
        holder ? plan.leaseMs * (3 + 3 * plan.random()) : 300 + plan.random() * 1200,
      );
      const inside = w.inside;
      await pool.stop(w, ms);
      plan.history.ok(id, undefined, { ms, leaseMs: plan.leaseMs, holding: inside });
    } else {
      const inside = w.inside;
      await pool.kill(w);
      const left = plan.until - plan.now();
      plan.history.ok(id, undefined, { holding: inside, replaced: left > MIN_REPLACEMENT_MS });
      if (left > MIN_REPLACEMENT_MS) {
        // Opened in the background: the schedule goes on while the replacement boots.
        replacements.push(
          pool.open(left).then(
            (r) => {
              const rest = plan.until - plan.now();
              if (rest > 0 && !plan.signal.aborted) pool.go(r, rest);
              else pool.go(r, 0);
            },
            () => {},
          ),
        );
      }
    }
  }
  await Promise.all(replacements);
}

function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

function pickRunning(pool: WorkerPool, random: () => number): VerifyWorker | undefined {
  const running = pool.running();
  return running[Math.floor(random() * running.length)];
}

/** A running worker with a mutex holder inside its critical section, waiting up to 1 s. */
async function findHolder(
  pool: WorkerPool,
  signal: AbortSignal,
): Promise<VerifyWorker | undefined> {
  for (let i = 0; i < 200 && !signal.aborted; i++) {
    const w = pool.running().find((x) => x.inside > 0);
    if (w !== undefined) return w;
    await sleep(5);
  }
  return undefined;
}
