/**
 * The load driver: runs one operation many times from several concurrent tasks, measuring each
 * operation's latency, until the operations or the time budget run out.
 */
import type { LabContext, StrategyOutcome } from './types.js';
import { errorMessage } from './util.js';

/** What an operation reports about itself (nothing = it completed normally). */
export type OpResult = undefined | 'skipped';

/** Options of {@link drive}. */
export interface DriveOptions {
  /** Concurrent tasks. */
  readonly workers: number;
  /** Operations in total (indices 0..ops-1, handed out in order). */
  readonly ops: number;
  /** No new operation starts after this many ms. */
  readonly budgetMs: number;
  /** Called as operations complete (throttled by the caller's progress bar). */
  readonly progress?: (done: number) => void;
  /** Stop handing out operations once this returns true (e.g. the queue is empty). */
  readonly done?: () => boolean;
  /**
   * Give up on operations still running this long after the budget ran out (default 10 s): they
   * are counted as errors ("hung") and abandoned, so that the lab never hangs.
   */
  readonly hangMs?: number;
}

/** What {@link drive} measured. */
export interface DriveResult {
  readonly completed: number;
  readonly skipped: number;
  readonly errors: number;
  readonly firstError?: string;
  readonly elapsedMs: number;
  readonly latencies: number[];
}

/**
 * Runs `op(i, worker)` for i = 0..ops-1 from `workers` concurrent tasks. An operation that throws
 * is counted in `errors` (the first message is kept) and the run continues.
 *
 * @example
 * ```ts
 * const r = await drive({ workers: 8, ops: 1000, budgetMs: 5000 }, async (i) => {
 *   await Counter.apply('c', (c) => c.n.incr(1));
 * });
 * console.log(r.completed / (r.elapsedMs / 1000), 'ops/s');
 * ```
 */
export async function drive(
  options: DriveOptions,
  op: (i: number, worker: number) => Promise<OpResult>,
): Promise<DriveResult> {
  const latencies: number[] = [];
  let next = 0;
  let completed = 0;
  let skipped = 0;
  let errors = 0;
  let firstError: string | undefined;
  const start = performance.now();
  const deadline = start + options.budgetMs;
  const worker = async (w: number): Promise<void> => {
    while (next < options.ops && performance.now() < deadline && !options.done?.()) {
      const i = next++;
      const t0 = performance.now();
      try {
        const r = await op(i, w);
        if (r === 'skipped') skipped++;
        else completed++;
        latencies.push(performance.now() - t0);
      } catch (err) {
        errors++;
        firstError ??= errorMessage(err);
      }
      options.progress?.(completed + skipped + errors);
    }
  };
  let inFlight = 0;
  const tracked = async (w: number): Promise<void> => {
    inFlight++;
    try {
      await worker(w);
    } finally {
      inFlight--;
    }
  };
  const all = Promise.all(
    Array.from({ length: Math.max(1, options.workers) }, (_, w) => tracked(w)),
  );
  let timer: NodeJS.Timeout | undefined;
  const hangMs = options.hangMs ?? 10_000;
  const hung = await Promise.race([
    all.then(() => false),
    new Promise<boolean>((resolve) => {
      const check = () => {
        if (performance.now() > deadline + hangMs) resolve(true);
        else timer = setTimeout(check, 100);
      };
      timer = setTimeout(check, 100);
    }),
  ]);
  clearTimeout(timer);
  if (hung) {
    errors += inFlight;
    firstError ??= `${inFlight} operations still running ${Math.round(hangMs / 1000)} s after the time budget: abandoned (hung)`;
  }
  const result: DriveResult = {
    completed,
    skipped,
    errors,
    elapsedMs: performance.now() - start,
    latencies,
  };
  return firstError === undefined ? result : { ...result, firstError };
}

/**
 * Combines what {@link drive} measured with the checker's verdict into a strategy outcome.
 *
 * @example
 * ```ts
 * return outcome(await drive(opts, op), checkCounter({ acknowledged, final }), 0);
 * ```
 */
export function outcome(
  run: DriveResult,
  verdict: { violations: number; note: string },
  deadlocks = 0,
): StrategyOutcome {
  const base: StrategyOutcome = {
    violations: verdict.violations,
    deadlocks,
    completed: run.completed,
    skipped: run.skipped,
    errors: run.errors,
    elapsedMs: run.elapsedMs,
    latencies: run.latencies,
    note: verdict.note,
  };
  return run.firstError === undefined ? base : { ...base, firstError: run.firstError };
}

/**
 * The drive options of a strategy run: the context's workers, ops, budget, hang limit and
 * progress, with `overrides`.
 *
 * @example
 * ```ts
 * await drive(driveOptions(ctx, { ops: ctx.ops * 4, done: () => empty }), op);
 * ```
 */
export function driveOptions(ctx: LabContext, overrides: Partial<DriveOptions> = {}): DriveOptions {
  return {
    workers: ctx.workers,
    ops: ctx.ops,
    budgetMs: ctx.budgetMs,
    hangMs: ctx.hangMs,
    progress: ctx.progress,
    ...overrides,
  };
}
