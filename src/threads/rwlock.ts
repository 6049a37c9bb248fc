/**
 * `RWLock` across worker threads: many readers or one writer, FIFO and write-preferring, state in
 * a `SharedArrayBuffer`, passed as `.handle` and rebuilt with `RWLock.from`.
 *
 * @example
 * ```ts
 * import { RWLock } from 'lockstep/threads';
 * const lock = new RWLock({ name: 'model' });
 * // in any thread: const l = RWLock.from(handle);
 * const y = await lock.read(() => predict(weights, x)); // readers run together
 * await lock.write(() => train(weights, batch));        // a writer runs alone
 * ```
 */
import type { Worker } from 'node:worker_threads';
import type { AcquireOptions, Permit } from '../sync/permit.js';
import { UnitPermit } from '../sync/permit.js';
import { MAX_UNITS } from '../sync/wait-queue.js';
import { labelOf, openHandle, ringOption } from './mutex.js';
import { checkCount, nameOption } from './options.js';
import { KIND_RWLOCK, SharedQueue } from './shared-queue.js';
import { acquireShared, acquireSharedSync, runShared } from './waiting.js';
import { type Reclaimed, watchWorker } from './watch.js';

/**
 * Options of a new {@link RWLock}.
 *
 * @example
 * ```ts
 * const lock = new RWLock({ name: 'model', maxThreads: 16 });
 * ```
 */
export interface RWLockOptions {
  /** Names the lock in error messages (carried by the handle). */
  name?: string;
  /** Most acquisitions queued at once, over all threads (see `Mutex`). Default 1024. */
  maxWaiters?: number;
  /**
   * Most threads holding read locks at once whose locks are taken back if they die (8 bytes of
   * shared memory each). More readers than that still read; the extra threads' read locks are
   * not recovered if they die holding them. Default 64.
   */
  maxThreads?: number;
}

/**
 * What an {@link RWLock} is passed as: a structured-cloneable value.
 *
 * @example
 * ```ts
 * new Worker(file, { workerData: { lock: lock.handle } });
 * ```
 */
export interface RWLockHandle {
  readonly kind: 'lockstep/threads:RWLock';
  readonly buffer: SharedArrayBuffer;
  readonly name: string | undefined;
}

let opening: { queue: SharedQueue; name: string | undefined } | undefined;

/**
 * A reader-writer lock shared by threads: FIFO and write-preferring (once a writer is queued,
 * later readers queue behind it; a writer that times out or is aborted lets the readers it
 * blocked in at once). Same API and errors as the in-process `RWLock` of `lockstep`.
 *
 * @example
 * ```ts
 * const lock = RWLock.from(workerData.lock);
 * {
 *   using permit = await lock.acquireRead({ timeoutMs: 100 });
 *   predict(weights);
 * }
 * ```
 */
export class RWLock {
  /** The structured-cloneable handle to pass to other threads. */
  readonly handle: RWLockHandle;
  private readonly queue: SharedQueue;
  private readonly readLabel: string;
  private readonly writeLabel: string;

  constructor(options?: RWLockOptions) {
    const name = opening === undefined ? nameOption(options, 'new RWLock()') : opening.name;
    if (opening === undefined) {
      const ring = ringOption(options, 'new RWLock()');
      const holders =
        options?.maxThreads === undefined
          ? 64
          : checkCount(options.maxThreads, 1 << 16, 'new RWLock()', 'maxThreads');
      this.queue = SharedQueue.create(KIND_RWLOCK, MAX_UNITS, { ring, holders });
    } else {
      this.queue = opening.queue;
      opening = undefined;
    }
    const label = labelOf('RWLock', name);
    this.readLabel = `${label} (read)`;
    this.writeLabel = `${label} (write)`;
    this.handle = Object.freeze({
      kind: 'lockstep/threads:RWLock',
      buffer: this.queue.buffer,
      name,
    });
  }

  /**
   * The lock behind `handle`.
   *
   * @example
   * ```ts
   * const lock = RWLock.from(workerData.lock);
   * ```
   */
  static from(handle: RWLockHandle): RWLock {
    const { buffer, name } = openHandle(handle, 'RWLock', 'RWLock.from');
    opening = { queue: SharedQueue.open(buffer, KIND_RWLOCK, 'RWLock.from'), name };
    return new RWLock();
  }

  /**
   * Waits for a read lock (FIFO: behind any queued writer).
   *
   * @example
   * ```ts
   * using permit = await lock.acquireRead({ timeoutMs: 100 });
   * ```
   */
  acquireRead(options?: AcquireOptions): Promise<Permit> {
    return acquireShared(this.queue, 1, this.readLabel, options, 'RWLock.acquireRead');
  }

  /**
   * Waits for the write lock (exclusive).
   *
   * @example
   * ```ts
   * using permit = await lock.acquireWrite({ signal });
   * ```
   */
  acquireWrite(options?: AcquireOptions): Promise<Permit> {
    return acquireShared(this.queue, MAX_UNITS, this.writeLabel, options, 'RWLock.acquireWrite');
  }

  /**
   * Waits for a read lock BLOCKING this thread (`Atomics.wait`), in the same FIFO queue as
   * `acquireRead()`: for code in a worker that cannot await. Throws `LockTimeoutError` after
   * `timeoutMs`, leaving nothing queued. It stops this thread's event loop while it waits: never
   * call it on a thread that must stay responsive, nor while this thread holds the write lock.
   *
   * @example
   * ```ts
   * const permit = lock.acquireReadSync({ timeoutMs: 1_000 });
   * try { y = predict(weights, x); } finally { permit.release(); }
   * ```
   */
  acquireReadSync(options?: { timeoutMs?: number }): Permit {
    return acquireSharedSync(this.queue, 1, this.readLabel, options, 'RWLock.acquireReadSync');
  }

  /**
   * Waits for the write lock BLOCKING this thread (`Atomics.wait`), in the same FIFO queue as
   * `acquireWrite()`. Throws `LockTimeoutError` after `timeoutMs`, leaving nothing queued. It
   * stops this thread's event loop while it waits: never call it on a thread that must stay
   * responsive, nor while this thread holds the lock (read or write).
   *
   * @example
   * ```ts
   * const permit = lock.acquireWriteSync({ timeoutMs: 1_000 });
   * try { train(weights, batch); } finally { permit.release(); }
   * ```
   */
  acquireWriteSync(options?: { timeoutMs?: number }): Permit {
    return acquireSharedSync(
      this.queue,
      MAX_UNITS,
      this.writeLabel,
      options,
      'RWLock.acquireWriteSync',
    );
  }

  /**
   * A read lock if no writer holds it and nobody is queued; otherwise `undefined`.
   *
   * @example
   * ```ts
   * const permit = lock.tryAcquireRead();
   * ```
   */
  tryAcquireRead(): Permit | undefined {
    return this.queue.tryTake(1) ? new UnitPermit(this.queue, 1) : undefined;
  }

  /**
   * The write lock if nobody holds or waits for the lock; otherwise `undefined`.
   *
   * @example
   * ```ts
   * const permit = lock.tryAcquireWrite();
   * ```
   */
  tryAcquireWrite(): Permit | undefined {
    return this.queue.tryTake(MAX_UNITS) ? new UnitPermit(this.queue, MAX_UNITS) : undefined;
  }

  /**
   * Runs `fn` under a read lock, released when `fn` returns, throws or settles.
   *
   * @example
   * ```ts
   * const y = await lock.read(() => predict(weights, x));
   * ```
   */
  read<T>(fn: () => T | Promise<T>, options?: AcquireOptions): Promise<T> {
    return runShared(this.queue, 1, this.readLabel, fn, options, 'RWLock.read');
  }

  /**
   * Runs `fn` under the write lock, released when `fn` returns, throws or settles.
   *
   * @example
   * ```ts
   * await lock.write(() => train(weights, batch));
   * ```
   */
  write<T>(fn: () => T | Promise<T>, options?: AcquireOptions): Promise<T> {
    return runShared(this.queue, MAX_UNITS, this.writeLabel, fn, options, 'RWLock.write');
  }

  /**
   * Takes back the read or write locks `worker` holds if it exits holding them, and drops its
   * queued acquisitions. Call it on the thread that created the worker.
   *
   * @example
   * ```ts
   * lock.watch(new Worker('./reader.js', { workerData: lock.handle }));
   * ```
   */
  watch(worker: Worker, onReclaim?: (r: Reclaimed) => void): this {
    watchWorker(this.queue, worker, 'RWLock.watch', onReclaim);
    return this;
  }

  /** How many readers hold the lock now (over all threads). */
  get readers(): number {
    const a = this.queue.available;
    return a === 0 ? 0 : MAX_UNITS - a;
  }

  /** True while a writer holds the lock. */
  get isWriteLocked(): boolean {
    return this.queue.available === 0;
  }

  /** True while anyone (reader or writer) holds the lock. */
  get isLocked(): boolean {
    return this.queue.available !== MAX_UNITS;
  }

  /** How many acquisitions are queued, over all threads. */
  get waiting(): number {
    return this.queue.waiting;
  }
}
