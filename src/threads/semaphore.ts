/**
 * `Semaphore` across worker threads: weighted, FIFO, state in a `SharedArrayBuffer`, passed as
 * `.handle` and rebuilt with `Semaphore.from`.
 *
 * @example
 * ```ts
 * import { Semaphore } from 'lockstep/threads';
 * const gpu = new Semaphore(4, { name: 'gpu' });
 * // in any thread: await Semaphore.from(handle).run(() => infer(batch), { weight: 2 });
 * ```
 */
import type { Worker } from 'node:worker_threads';
import type { AcquireOptions, Permit } from '../sync/permit.js';
import { UnitPermit } from '../sync/permit.js';
import { labelOf, openHandle, ringOption } from './mutex.js';
import { checkCount, describeValue, invalid, nameOption } from './options.js';
import { KIND_SEMAPHORE, SharedQueue } from './shared-queue.js';
import { acquireShared, acquireSharedSync, runShared } from './waiting.js';
import { type Reclaimed, watchWorker } from './watch.js';

/** Largest capacity (units are counted in a 32-bit word). */
const MAX_PERMITS = 0x3fff_ffff;

/**
 * Options of {@link Semaphore.acquire} and {@link Semaphore.run}.
 *
 * @example
 * ```ts
 * await sem.run(() => bulkInsert(rows), { weight: 4, timeoutMs: 1_000 });
 * ```
 */
export interface SemaphoreAcquireOptions extends AcquireOptions {
  /** How many permits to take at once (a positive integer, at most the capacity). Default 1. */
  weight?: number;
}

/**
 * Options of a new {@link Semaphore}.
 *
 * @example
 * ```ts
 * const sem = new Semaphore(10, { name: 'db' }); // errors say: Semaphore "db"
 * ```
 */
export interface SemaphoreOptions {
  /** Names the semaphore in error messages (carried by the handle). */
  name?: string;
  /** Most acquisitions queued at once, over all threads (see `Mutex`). Default 1024. */
  maxWaiters?: number;
  /**
   * Most threads holding permits at once whose permits are taken back if they die. Default
   * `min(permits, 64)`.
   */
  maxThreads?: number;
}

/**
 * What a {@link Semaphore} is passed as: a structured-cloneable value.
 *
 * @example
 * ```ts
 * worker.postMessage({ sem: sem.handle });
 * ```
 */
export interface SemaphoreHandle {
  readonly kind: 'lockstep/threads:Semaphore';
  readonly buffer: SharedArrayBuffer;
  readonly name: string | undefined;
}

let opening: { queue: SharedQueue; name: string | undefined } | undefined;

/**
 * A weighted FIFO semaphore shared by threads: `permits` units taken `weight` at a time; a heavy
 * waiter at the head is not overtaken by lighter newcomers. Same API and errors as the
 * in-process `Semaphore` of `lockstep`.
 *
 * @example
 * ```ts
 * const sem = Semaphore.from(workerData.sem);
 * using permit = await sem.acquire({ weight: 2, timeoutMs: 1_000 });
 * ```
 */
export class Semaphore {
  /** The structured-cloneable handle to pass to other threads. */
  readonly handle: SemaphoreHandle;
  private readonly queue: SharedQueue;
  private readonly label: string;

  constructor(permits: number, options?: SemaphoreOptions) {
    let name: string | undefined;
    if (opening === undefined) {
      const what = 'new Semaphore()';
      checkCount(permits, MAX_PERMITS, what, 'permits');
      name = nameOption(options, what);
      const ring = ringOption(options, what);
      const holders =
        options?.maxThreads === undefined
          ? Math.min(permits, 64)
          : checkCount(options.maxThreads, 1 << 16, what, 'maxThreads');
      this.queue = SharedQueue.create(KIND_SEMAPHORE, permits, { ring, holders });
    } else {
      ({ queue: this.queue, name } = opening);
      opening = undefined;
    }
    this.label = labelOf('Semaphore', name);
    this.handle = Object.freeze({
      kind: 'lockstep/threads:Semaphore',
      buffer: this.queue.buffer,
      name,
    });
  }

  /**
   * The semaphore behind `handle`.
   *
   * @example
   * ```ts
   * const sem = Semaphore.from(workerData.sem);
   * ```
   */
  static from(handle: SemaphoreHandle): Semaphore {
    const { buffer, name } = openHandle(handle, 'Semaphore', 'Semaphore.from');
    opening = { queue: SharedQueue.open(buffer, KIND_SEMAPHORE, 'Semaphore.from'), name };
    return new Semaphore(0);
  }

  /**
   * Waits for `weight` permits (default 1), FIFO over all threads.
   *
   * @example
   * ```ts
   * using permit = await sem.acquire({ weight: 2, timeoutMs: 100 });
   * ```
   */
  acquire(options?: SemaphoreAcquireOptions): Promise<Permit> {
    let weight = 1;
    try {
      if (options?.weight !== undefined)
        weight = this.checkWeight(options.weight, 'Semaphore.acquire');
    } catch (err) {
      return Promise.reject(err);
    }
    return acquireShared(this.queue, weight, this.label, options, 'Semaphore.acquire');
  }

  /**
   * Waits for `weight` permits (default 1) BLOCKING this thread (`Atomics.wait`), in the same
   * FIFO queue as `acquire()`: for code in a worker that cannot await. Throws `LockTimeoutError`
   * after `timeoutMs`, leaving nothing queued. It stops this thread's event loop while it waits:
   * never call it on a thread that must stay responsive, nor while this thread holds permits
   * that the ones it waits for need.
   *
   * @example
   * ```ts
   * const permit = sem.acquireSync({ weight: 2, timeoutMs: 1_000 });
   * try { infer(batch); } finally { permit.release(); }
   * ```
   */
  acquireSync(options?: { weight?: number; timeoutMs?: number }): Permit {
    const weight =
      options?.weight === undefined ? 1 : this.checkWeight(options.weight, 'Semaphore.acquireSync');
    return acquireSharedSync(this.queue, weight, this.label, options, 'Semaphore.acquireSync');
  }

  /**
   * Takes `weight` permits (default 1) if they are free and nobody is queued; otherwise
   * `undefined`, nothing queued.
   *
   * @example
   * ```ts
   * const permit = sem.tryAcquire(3);
   * ```
   */
  tryAcquire(weight = 1): Permit | undefined {
    if (weight !== 1) this.checkWeight(weight, 'Semaphore.tryAcquire');
    return this.queue.tryTake(weight) ? new UnitPermit(this.queue, weight) : undefined;
  }

  /**
   * Runs `fn` holding `weight` permits (default 1), released when `fn` returns, throws or
   * settles.
   *
   * @example
   * ```ts
   * const page = await sem.run(() => render(url), { timeoutMs: 5_000 });
   * ```
   */
  run<T>(fn: () => T | Promise<T>, options?: SemaphoreAcquireOptions): Promise<T> {
    let weight = 1;
    try {
      if (options?.weight !== undefined) weight = this.checkWeight(options.weight, 'Semaphore.run');
    } catch (err) {
      return Promise.reject(err);
    }
    return runShared(this.queue, weight, this.label, fn, options, 'Semaphore.run');
  }

  /**
   * Gives back the permits `worker` holds if it exits holding them, and drops its queued
   * acquisitions. Call it on the thread that created the worker.
   *
   * @example
   * ```ts
   * sem.watch(new Worker('./job.js', { workerData: sem.handle }));
   * ```
   */
  watch(worker: Worker, onReclaim?: (r: Reclaimed) => void): this {
    watchWorker(this.queue, worker, 'Semaphore.watch', onReclaim);
    return this;
  }

  /** Permits free right now (over all threads). */
  get available(): number {
    return this.queue.available;
  }

  /** Permits in total. */
  get capacity(): number {
    return this.queue.capacity;
  }

  /** How many acquisitions are queued, over all threads. */
  get waiting(): number {
    return this.queue.waiting;
  }

  private checkWeight(weight: unknown, what: string): number {
    const cap = this.queue.capacity;
    if (typeof weight === 'number' && Number.isInteger(weight) && weight > cap) {
      throw invalid(
        what,
        `weight ${describeValue(weight)} is above the capacity (${cap}); it could never be granted`,
      );
    }
    return checkCount(weight, cap, what, 'weight');
  }
}
