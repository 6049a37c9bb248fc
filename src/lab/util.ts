/**
 * Small helpers shared by the race lab: a seeded random generator, sleeping, yielding to the
 * event loop, and latency percentiles. Nothing here touches the store.
 */
import { setImmediate as yieldImmediate } from 'node:timers/promises';

/** A seeded pseudo-random generator (mulberry32). Same seed, same sequence. */
export interface Rng {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [min, max] (both inclusive). */
  int(min: number, max: number): number;
  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T;
}

/**
 * Creates a seeded generator.
 *
 * @example
 * ```ts
 * const rng = createRng(42);
 * rng.int(1, 6); // the same die roll every run with seed 42
 * ```
 */
export function createRng(seed: number): Rng {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick: (items) => items[Math.floor(next() * items.length)] as (typeof items)[number],
  };
}

/**
 * Resolves after `ms` milliseconds (the lab's stand-in for I/O: an HTTP call, a disk write).
 *
 * @example
 * ```ts
 * await sleep(1);
 * ```
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Lets every other ready task run once before continuing: the shortest possible "await between
 * the read and the write" that still lets a race happen.
 *
 * @example
 * ```ts
 * const v = await Counter.get('c'); await yieldNow(); await Counter.put('c', { n: v.data.n + 1 });
 * ```
 */
export function yieldNow(): Promise<void> {
  return yieldImmediate();
}

/**
 * The p-th percentile (0..100) of a list of numbers, nearest-rank method; 0 for an empty list.
 *
 * @example
 * ```ts
 * percentile([1, 2, 3, 4], 50); // 2
 * ```
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] ?? 0;
}

/** Rounds to `digits` decimals (for the report). */
export function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** The message of anything thrown, on one line. */
export function errorMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s+/g, ' ').trim();
}

/**
 * Maps `items` through `fn` with at most `concurrency` calls in flight; results in input order.
 * Used for setup and final reads, which are not measured.
 *
 * @example
 * ```ts
 * const docs = await mapConcurrent(keys, 8, (k) => Account.get(k));
 * ```
 */
export async function mapConcurrent<T, R>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker),
  );
  return out;
}
