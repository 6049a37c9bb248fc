import { nameOf } from './mutex.js';
import { type AcquireOptions, acquireUnits, type Permit, runUnits, UnitPermit } from './permit.js';
import { MAX_UNITS, WaitQueue } from './wait-queue.js';

/**
 * Options of {@link RWLock}.
 *
 * @example
 * ```ts
 * const lock = new RWLock({ name: 'model' }); // errors say: RWLock "model" (write)
 * ```
 */
export interface RWLockOptions {
  /** Names the lock in error messages. */
  name?: string;
}

/**
 * An async reader-writer lock: many readers or one writer. FIFO and write-preferring: once a
 * writer is queued, later readers queue behind it (writers never starve); a writer that times
 * out or is aborted wakes the readers it was blocking. Synchronous when free.
 *
 * @example
 * ```ts
 * import { RWLock } from 'lockstep';
 * const lock = new RWLock({ name: 'model' });
 * const prediction = await lock.read(() => model.predict(x));   // readers run together
 * await lock.write(async () => { model = await train(model); }); // a writer runs alone
 * ```
 */
export class RWLock {
  private readonly queue = new WaitQueue(MAX_UNITS);
  private readonly readLabel: string;
  private readonly writeLabel: string;

  constructor(options?: RWLockOptions) {
    const label = nameOf('RWLock', options);
    this.readLabel = `${label} (read)`;
    this.writeLabel = `${label} (write)`;
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
    return acquireUnits(this.queue, 1, this.readLabel, options, 'RWLock.acquireRead');
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
    return acquireUnits(this.queue, MAX_UNITS, this.writeLabel, options, 'RWLock.acquireWrite');
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
   * Runs `fn` under a read lock, released when `fn` returns, throws or settles (inline when
   * free and synchronous).
   *
   * @example
   * ```ts
   * const v = await lock.read(() => cache.get(k));
   * ```
   */
  read<T>(fn: () => T | Promise<T>, options?: AcquireOptions): Promise<T> {
    return runUnits(this.queue, 1, this.readLabel, fn, options, 'RWLock.read');
  }

  /**
   * Runs `fn` under the write lock, released when `fn` returns, throws or settles (inline when
   * free and synchronous).
   *
   * @example
   * ```ts
   * await lock.write(() => cache.set(k, v));
   * ```
   */
  write<T>(fn: () => T | Promise<T>, options?: AcquireOptions): Promise<T> {
    return runUnits(this.queue, MAX_UNITS, this.writeLabel, fn, options, 'RWLock.write');
  }

  /** How many readers hold the lock now. */
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

  /** How many callers are queued. */
  get waiting(): number {
    return this.queue.length;
  }
}
