/**
 * `Mutex` across worker threads: a FIFO mutual-exclusion lock whose state lives in a
 * `SharedArrayBuffer`, passed to workers as its `.handle` and rebuilt there with `Mutex.from`.
 *
 * @example
 * ```ts
 * import { Worker } from 'node:worker_threads';
 * import { Mutex } from 'lockstep/threads';
 * const mutex = new Mutex({ name: 'counter' });
 * mutex.watch(new Worker('./worker.js', { workerData: mutex.handle }));
 * // worker.js: const m = Mutex.from(workerData); await m.run(() => bump(shared));
 * ```
 */
import type { Worker } from 'node:worker_threads';
import type { AcquireOptions, Permit } from '../sync/permit.js';
import { UnitPermit } from '../sync/permit.js';
import { checkCount, describeValue, invalid, nameOption } from './options.js';
import { KIND_MUTEX, SharedQueue } from './shared-queue.js';
import { acquireShared, acquireSharedSync, runShared } from './waiting.js';
import { type Reclaimed, watchWorker } from './watch.js';

/**
 * Options of a new {@link Mutex}.
 *
 * @example
 * ```ts
 * const mutex = new Mutex({ name: 'orders', maxWaiters: 4096 }); // errors say: Mutex "orders"
 * ```
 */
export interface MutexOptions {
  /** Names the mutex in error messages (carried by the handle). */
  name?: string;
  /**
   * Most acquisitions queued at once, over all threads (rounded up to a power of two; 8 bytes of
   * shared memory each). Beyond it newcomers retry every millisecond, out of FIFO order. Default
   * 1024.
   */
  maxWaiters?: number;
}

/**
 * What a {@link Mutex} is passed as: a structured-cloneable value (`postMessage`, `workerData`).
 *
 * @example
 * ```ts
 * worker.postMessage({ mutex: mutex.handle });
 * ```
 */
export interface MutexHandle {
  readonly kind: 'lockstep/threads:Mutex';
  readonly buffer: SharedArrayBuffer;
  readonly name: string | undefined;
}

/** Reads a handle's buffer and name, checking its kind. @internal */
export function openHandle(
  handle: unknown,
  kind: string,
  what: string,
): { buffer: unknown; name: string | undefined } {
  if (handle === null || typeof handle !== 'object') {
    throw invalid(what, `expected the .handle of a ${kind}, got ${describeValue(handle)}`);
  }
  const h = handle as { kind?: unknown; buffer?: unknown; name?: unknown };
  if (h.kind !== `lockstep/threads:${kind}`) {
    throw invalid(
      what,
      `expected the .handle of a lockstep/threads ${kind}, got ${typeof h.kind === 'string' ? `a handle of kind ${JSON.stringify(h.kind)}` : 'an object without a handle kind'}`,
    );
  }
  return { buffer: h.buffer, name: typeof h.name === 'string' ? h.name : undefined };
}

/** `Kind "name"` for error messages. @internal */
export function labelOf(kind: string, name: string | undefined): string {
  return name === undefined ? kind : `${kind} ${JSON.stringify(name)}`;
}

/** Validates `maxWaiters`. @internal */
export function ringOption(o: { maxWaiters?: unknown } | undefined, what: string): number {
  return o?.maxWaiters === undefined ? 1024 : checkCount(o.maxWaiters, 1 << 20, what, 'maxWaiters');
}

/** The queue `from()` hands to the constructor. */
let opening: { queue: SharedQueue; name: string | undefined } | undefined;

/**
 * A FIFO mutex shared by threads: no barging (a release hands the lock to the oldest waiter, in
 * whatever thread), synchronous when free, waiting with `Atomics.waitAsync` (the event loop keeps
 * running). Same API and errors as the in-process `Mutex` of `lockstep`.
 *
 * @example
 * ```ts
 * import { Mutex } from 'lockstep/threads';
 * const mutex = Mutex.from(workerData.mutex);
 * await mutex.run(() => { view[0] = view[0] + 1; });
 * {
 *   using permit = await mutex.acquire({ timeoutMs: 1_000 });
 *   // critical section
 * }
 * ```
 */
export class Mutex {
  /** The structured-cloneable handle to pass to other threads. */
  readonly handle: MutexHandle;
  private readonly queue: SharedQueue;
  private readonly label: string;

  constructor(options?: MutexOptions) {
    const name = opening === undefined ? nameOption(options, 'new Mutex()') : opening.name;
    this.queue =
      opening?.queue ??
      SharedQueue.create(KIND_MUTEX, 1, { ring: ringOption(options, 'new Mutex()'), holders: 1 });
    opening = undefined;
    this.label = labelOf('Mutex', name);
    this.handle = Object.freeze({
      kind: 'lockstep/threads:Mutex',
      buffer: this.queue.buffer,
      name,
    });
  }

  /**
   * The mutex behind `handle` (made on any thread, passed by `postMessage` or `workerData`).
   *
   * @example
   * ```ts
   * const mutex = Mutex.from(workerData.mutex);
   * ```
   */
  static from(handle: MutexHandle): Mutex {
    const { buffer, name } = openHandle(handle, 'Mutex', 'Mutex.from');
    opening = { queue: SharedQueue.open(buffer, KIND_MUTEX, 'Mutex.from'), name };
    return new Mutex();
  }

  /**
   * Waits for the lock (FIFO over all threads). Rejects with `LockTimeoutError` after
   * `timeoutMs`, or with `signal.reason` when aborted; either way nothing stays queued.
   *
   * @example
   * ```ts
   * using permit = await mutex.acquire({ timeoutMs: 100 });
   * ```
   */
  acquire(options?: AcquireOptions): Promise<Permit> {
    return acquireShared(this.queue, 1, this.label, options, 'Mutex.acquire');
  }

  /**
   * Waits for the lock BLOCKING this thread (`Atomics.wait`), in the same FIFO queue as
   * `acquire()`: for code in a worker that cannot await. Throws `LockTimeoutError` after
   * `timeoutMs`, leaving nothing queued. It stops this thread's event loop while it waits: never
   * call it on a thread that must stay responsive, nor while this thread holds the lock.
   *
   * @example
   * ```ts
   * const permit = mutex.acquireSync({ timeoutMs: 1_000 });
   * try { view[0] += 1; } finally { permit.release(); }
   * ```
   */
  acquireSync(options?: { timeoutMs?: number }): Permit {
    return acquireSharedSync(this.queue, 1, this.label, options, 'Mutex.acquireSync');
  }

  /**
   * Takes the lock if it is free and nobody is queued in any thread; otherwise `undefined`, and
   * nothing is queued.
   *
   * @example
   * ```ts
   * const permit = mutex.tryAcquire();
   * if (permit) try { work(); } finally { permit.release(); }
   * ```
   */
  tryAcquire(): Permit | undefined {
    return this.queue.tryTake(1) ? new UnitPermit(this.queue, 1) : undefined;
  }

  /**
   * Runs `fn` holding the lock and releases it when `fn` returns, throws or settles (inline when
   * free and `fn` is synchronous).
   *
   * @example
   * ```ts
   * const n = await mutex.run(() => ++view[0]);
   * ```
   */
  run<T>(fn: () => T | Promise<T>, options?: AcquireOptions): Promise<T> {
    return runShared(this.queue, 1, this.label, fn, options, 'Mutex.run');
  }

  /**
   * Takes the lock back if `worker` exits holding it (and drops its queued acquisitions), so the
   * next waiter gets it. Call it on the thread that created the worker, right after creating it.
   *
   * @example
   * ```ts
   * mutex.watch(new Worker('./job.js', { workerData: mutex.handle }));
   * ```
   */
  watch(worker: Worker, onReclaim?: (r: Reclaimed) => void): this {
    watchWorker(this.queue, worker, 'Mutex.watch', onReclaim);
    return this;
  }

  /** True while some thread holds the lock. */
  get isLocked(): boolean {
    return this.queue.available === 0;
  }

  /** How many acquisitions are queued, over all threads. */
  get waiting(): number {
    return this.queue.waiting;
  }
}
