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

/**
 * Pairs each side of a comparison runs, alternated (`BENCH_PAIRS`, default 5). The machine's speed
 * moves by 2x from one minute to the next; a ratio taken within one pair (anchor and subject a
 * few seconds apart) moves far less than the sides' totals, so verdicts use the median of the
 * per-pair ratios.
 */
export const PAIRS = Math.max(1, Math.floor(Number(process.env.BENCH_PAIRS ?? 5)));

/** What {@link alternate} measured: each side's totals, and each subject's per-pair ratios. */
export interface Alternation {
  /** The anchor's calls, time and latencies over every pair. */
  anchor: Measure;
  /** Per subject (in the order given): its calls, time and latencies over every pair. */
  subjects: Measure[];
  /** Per subject, per pair: its rate divided by the anchor's rate in the same pair. */
  ratios: number[][];
}

/**
 * Warms every side up ({@link warmUp}), then runs {@link PAIRS} pairs: in each, the anchor and
 * every subject for `seconds` with `workers` loops, the anchor first in even pairs and last in
 * odd ones (so that neither side always follows the other).
 *
 * @example
 * ```ts
 * const r = await alternate(16, 2, () => raw.incr('k'), [() => Counter.apply('hot', (d) => d.n.incr(1))]);
 * console.log(median(r.ratios[0]));
 * ```
 */
export async function alternate(
  workers: number,
  seconds: number,
  anchor: (worker: number) => Promise<unknown>,
  subjects: ReadonlyArray<(worker: number) => Promise<unknown>>,
): Promise<Alternation> {
  await warmUp(workers, [anchor, ...subjects]);
  const total = (): Measure => ({ ops: 0, ms: 0, lat: [] });
  const out: Alternation = {
    anchor: total(),
    subjects: subjects.map(total),
    ratios: subjects.map(() => []),
  };
  const sides = [anchor, ...subjects];
  for (let p = 0; p < PAIRS; p++) {
    const order = sides.map((_, i) => i);
    if (p % 2 === 1) order.reverse();
    const rates: number[] = [];
    for (const i of order) {
      const m = await measure(workers, seconds, sides[i] as (worker: number) => Promise<unknown>);
      const acc = i === 0 ? out.anchor : (out.subjects[i - 1] as Measure);
      acc.ops += m.ops;
      acc.ms += m.ms;
      for (const x of m.lat) acc.lat.push(x);
      rates[i] = m.ops / m.ms;
    }
    for (let s = 0; s < subjects.length; s++) {
      (out.ratios[s] as number[]).push((rates[s + 1] as number) / (rates[0] as number));
    }
  }
  return out;
}

/** The median of `xs` (the mean of the middle two when even; 0 when empty). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1
    ? (s[mid] as number)
    : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** "2.41x (2.10x-2.95x over 5 pairs)": the median of per-pair ratios and their range. */
export function ratioText(ratios: readonly number[]): string {
  const lo = Math.min(...ratios);
  const hi = Math.max(...ratios);
  return `${median(ratios).toFixed(2)}x (${lo.toFixed(2)}x-${hi.toFixed(2)}x over ${ratios.length} pairs)`;
}
