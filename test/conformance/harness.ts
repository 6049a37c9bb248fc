/**
 * Shared plumbing of the conformance suite: the per-target context (two clients), unique names,
 * deferreds, barriers and error assertions. Nothing here knows about a particular backend.
 */
import { expect } from 'vitest';
import type { Backend, createStore } from './api.js';

/** A store, as `createStore` returns it. */
export type Store = ReturnType<typeof createStore>;

/** What a runner hands to `conformance()`; documented in suite.ts. */
export interface ConformanceTarget {
  /** Open a new backend instance on the SAME shared data space (another "process"/connection). May return the same instance (memory). */
  open(): Promise<Backend>;
  /** Drop everything this target created (keys, schema). */
  cleanup(): Promise<void>;
  /**
   * Rate-limit state the data space holds right now for limiter `name` (keys, rows): the
   * idle-cleanup test waits for it to reach 0 once every window has passed.
   */
  limitState?(name: string): Promise<number>;
  /**
   * How a child process opens a backend on the same data space (a module of the checkout, the
   * factory it exports, the factory's options), for the skewed-clock test; undefined when another
   * process cannot share the data space (memory: the test then skews this process's clock).
   */
  child?: { readonly module: string; readonly factory: string; readonly options: object };
  /**
   * What named locks (mutex, rwlock, semaphore) of `name` leave stored right now — keys, rows,
   * in-memory pools, timers — as readable strings; [] when nothing. The suite checks it is []
   * once every named lock of `name` was released or timed out (an expiring fence counter is
   * allowed and not listed). Required for the named-locks section.
   */
  namedLockResidue?(name: string): Promise<string[]>;
}

/** Everything a section of the suite needs, resolved lazily (the clients exist once beforeAll ran). */
export interface Ctx {
  /** The target (after beforeAll). */
  target(): ConformanceTarget;
  /** Client 0 and client 1: two stores, each on its own backend instance from `open()` (emulating two processes). */
  client(i: number): Store;
  /** The backend instance behind client `i`. */
  backend(i: number): Backend;
  /** A model name unique to this run and this call (valid model-name syntax). */
  name(prefix: string): string;
}

const RUN = Math.random().toString(36).slice(2, 8);
let seq = 0;

/** A model name unique in this run: `<prefix>_<run>_<n>`. */
export function uniqueName(prefix: string): string {
  seq += 1;
  return `${prefix}_${RUN}_${seq}`;
}

/** A promise with its resolve/reject exposed. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

/** Creates a {@link Deferred}. */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Resolves after `ms` milliseconds (used only to let a lease expire or to give a waiter time to queue). */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A barrier for `n` parties: `arrive()` resolves once all `n` arrived, or rejects after
 * `timeoutMs` (so a test that expected overlap fails instead of hanging).
 */
export function barrier(n: number, timeoutMs = 10_000): { arrive(): Promise<void> } {
  let count = 0;
  const all = deferred<void>();
  let timer: NodeJS.Timeout | undefined;
  return {
    arrive() {
      count += 1;
      if (count === 1) {
        timer = setTimeout(
          () => all.reject(new Error(`barrier: only ${count} of ${n} parties arrived`)),
          timeoutMs,
        );
      }
      if (count >= n) {
        if (timer) clearTimeout(timer);
        all.resolve();
      }
      return all.promise;
    },
  };
}

/** Waits until `cond()` holds, polling every 5 ms; throws after `timeoutMs` (hang guard, not a timing assertion). */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for: ${what}`);
    await sleep(5);
  }
}

/** Races `p` against a hang guard: rejects if `p` has not settled after `ms`. */
export async function noHang<T>(p: Promise<T>, what: string, ms = 20_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`hang: ${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, guard]);
  } finally {
    clearTimeout(timer);
  }
}

type ErrorClass = abstract new (...args: never[]) => Error;

/** Asserts `p` rejects with an instance of `cls` carrying `code`; returns the error. */
export async function rejectsWith<E extends Error>(
  p: Promise<unknown>,
  cls: abstract new (...args: never[]) => E,
  code: string,
): Promise<E> {
  let outcome: { ok: true; value: unknown } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await p };
  } catch (error) {
    outcome = { ok: false, error };
  }
  if (outcome.ok) {
    throw new Error(
      `expected a ${cls.name} (${code}), but it resolved with ${safeJson(outcome.value)}`,
    );
  }
  const err = outcome.error;
  if (!(err instanceof (cls as ErrorClass))) {
    throw new Error(
      `expected a ${cls.name} (${code}), got ${err instanceof Error ? `${err.name}: ${err.message}` : safeJson(err)}`,
      { cause: err },
    );
  }
  expect((err as unknown as { code: string }).code).toBe(code);
  return err as E;
}

/** JSON for messages (never throws). */
export function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Counts fulfilled and rejected outcomes, grouping rejections by error name. */
export function tally(results: PromiseSettledResult<unknown>[]): {
  ok: number;
  errors: Record<string, number>;
} {
  let ok = 0;
  const errors: Record<string, number> = {};
  for (const r of results) {
    if (r.status === 'fulfilled') ok += 1;
    else {
      const e = r.reason;
      const n = e instanceof Error ? e.name : typeof e;
      errors[n] = (errors[n] ?? 0) + 1;
    }
  }
  return { ok, errors };
}

/** A small deterministic PRNG (mulberry32) so concurrency tests are reproducible from a seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
