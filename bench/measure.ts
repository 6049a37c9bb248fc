/**
 * The load loop shared by the server benchmarks: `workers` concurrent loops call `fn` until the
 * deadline. Throughput is counted within the window only: `ops` are the calls that completed by
 * the deadline, `ms` is the window's length. Calls still running at the deadline finish (their
 * latency is kept) but are not counted, and the time they take is not either: a side whose
 * workers sleep through the deadline (redlock retries after 200-400 ms) would otherwise be
 * charged for that sleep. Until the fourth session, `ms` ran until the last call finished, which
 * understated redlock's rate by 10-20% (a 220-400 ms tail after 2 s rounds) and overstated the
 * lock's ratio by as much.
 *
 * @example
 * ```ts
 * const m = await measure(16, 2, () => client.incr('k'));
 * console.log(m.ops / (m.ms / 1000), percentile(m.lat, 0.99));
 * ```
 */
export interface Measure {
  /** Calls completed within the window. */
  ops: number;
  /** The window's length, in milliseconds. */
  ms: number;
  /** Latency of each call, in milliseconds, in completion order (those after the window too). */
  lat: number[];
}

export async function measure(
  workers: number,
  seconds: number,
  fn: (worker: number) => Promise<unknown>,
): Promise<Measure> {
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  const lat: number[] = [];
  let ops = 0;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (performance.now() < deadline) {
        const s = performance.now();
        await fn(w);
        const e = performance.now();
        lat.push(e - s);
        if (e <= deadline) ops++;
      }
    }),
  );
  return { ops, ms: deadline - t0, lat };
}

/**
 * Seconds each side of a comparison runs, uncounted, before its measured rounds
 * (`BENCH_WARMUP`, default 1): both sides reach steady state (JIT-compiled code, warm
 * connections, caches) before anything is counted, as in a long-running server.
 */
export const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP ?? 1);

/**
 * Runs each of `fns` for {@link WARMUP_SECONDS} with `workers` loops, and discards the result.
 *
 * @example
 * ```ts
 * await warmUp(16, [anchor, ours]);
 * ```
 */
export async function warmUp(
  workers: number,
  fns: ReadonlyArray<(worker: number) => Promise<unknown>>,
): Promise<void> {
  if (!(WARMUP_SECONDS > 0)) return;
  for (const fn of fns) await measure(workers, WARMUP_SECONDS, fn);
}

/** The `p` quantile (0..1) of `xs` (0 when empty). Sorts a copy. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0;
}
