import { nameOf } from './mutex.js';
import {
  type AcquireOptions,
  acquireUnits,
  checkPositiveInteger,
  describeValue,
  invalid,
  NOTHING_CREATED,
  type Permit,
  runUnits,
  UnitPermit,
} from './permit.js';
import { WaitQueue } from './wait-queue.js';

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
 * Options of the {@link Semaphore} constructor.
 *
 * @example
 * ```ts
 * const sem = new Semaphore(10, { name: 'db' }); // errors say: Semaphore "db"
 * ```
 */
export interface SemaphoreOptions {
  /** Names the semaphore in error messages. */
  name?: string;
}

/**
 * A weighted, FIFO counting semaphore: `permits` units shared by callers that each take
 * `weight` of them. FIFO holds for weights too: a heavy waiter at the head is not overtaken by
 * lighter newcomers (no starvation). `capacity` (fixed) and `available` (free now) are kept apart.
 *
 * @example
 * ```ts
 * import { Semaphore } from 'lockstep';
 * const connections = new Semaphore(10);
 * const rows = await connections.run(() => db.query(sql));
 * using bulk = await connections.acquire({ weight: 4, timeoutMs: 1_000 });
 * ```
 */
export class Semaphore {
  private readonly queue: WaitQueue;
  private readonly label: string;

  constructor(permits: number, options?: SemaphoreOptions) {
    checkPositiveInteger(permits, 'new Semaphore()', 'permits', NOTHING_CREATED);
    this.label = nameOf('Semaphore', options);
    this.queue = new WaitQueue(permits);
  }

  /**
   * Waits for `weight` permits (default 1), FIFO.
   *
   * @example
   * ```ts
   * using permit = await sem.acquire({ weight: 2, timeoutMs: 100 });
   * ```
   */
  acquire(options?: SemaphoreAcquireOptions): Promise<Permit> {
    let weight = 1;
    if (options?.weight !== undefined) {
      try {
        weight = this.checkWeight(options.weight, 'Semaphore.acquire');
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return acquireUnits(this.queue, weight, this.label, options, 'Semaphore.acquire');
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
   * settles (inline when free and synchronous).
   *
   * @example
   * ```ts
   * const page = await sem.run(() => fetchPage(url), { timeoutMs: 5_000 });
   * ```
   */
  run<T>(fn: () => T | Promise<T>, options?: SemaphoreAcquireOptions): Promise<T> {
    let weight = 1;
    if (options?.weight !== undefined) {
      try {
        weight = this.checkWeight(options.weight, 'Semaphore.run');
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return runUnits(this.queue, weight, this.label, fn, options, 'Semaphore.run');
  }

  /** Permits free right now. */
  get available(): number {
    return this.queue.available;
  }

  /** Permits in total (the constructor's `permits`). */
  get capacity(): number {
    return this.queue.capacity;
  }

  /** How many callers are queued. */
  get waiting(): number {
    return this.queue.length;
  }

  private checkWeight(weight: unknown, what: string): number {
    checkPositiveInteger(weight, what, 'weight');
    if ((weight as number) > this.queue.capacity) {
      throw invalid(
        what,
        ['weight'],
        `${describeValue(weight)} is above the capacity (${this.queue.capacity}), so it could never be granted; give at most ${this.queue.capacity}`,
      );
    }
    return weight as number;
  }
}
