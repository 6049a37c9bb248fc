/**
 * DistributedRWLock: a named reader/writer lock shared by every client of the store's backend.
 * `store.rwlock(name)`.
 *
 * Fairness: FIFO and write-preferring, like src/sync's `RWLock`: a reader arriving while a
 * writer waits queues behind that writer, so writers are never starved; readers queued together
 * are let in together. Built on one pool of `RWLOCK_PERMITS` units: a reader takes one, a writer
 * all of them. Leases, renewal, fences and the separate namespace are as for
 * `DistributedMutex`. A fence is strictly increasing across readers and writers alike.
 *
 * @example
 * ```ts
 * const config = store.rwlock('pricing-config');
 * const prices = await config.read(() => loadPrices());
 * await config.write((ctx) => publishPrices(next, ctx.fence));
 * ```
 */
import type { AcquireOptions } from '../sync/permit.js';
import { RWLOCK_PERMITS } from './backend.js';
import type { Bounded } from './boundary.js';
import type { LeasePermit } from './lease-permit.js';
import type { LockContext } from './lock-context.js';
import { type NamedLockOptions, PermitPool } from './permit-pool.js';

/**
 * A named reader/writer lock over the store's backend. Made by `store.rwlock(name, options)`.
 *
 * @example
 * ```ts
 * await using reading = await store.rwlock('catalog').acquireRead();
 * ```
 */
export class DistributedRWLock {
  readonly #pool: PermitPool;

  /** @internal use `store.rwlock(name, options)`. */
  constructor(backend: Bounded, name: string, options?: NamedLockOptions) {
    this.#pool = new PermitPool(backend, 'rwlock', name, RWLOCK_PERMITS, options);
  }

  /** The lock's name. */
  get name(): string {
    return this.#pool.name;
  }

  /**
   * Waits for shared (read) access: granted with other readers, unless a writer holds the lock
   * or is queued before this call.
   *
   * @example
   * ```ts
   * const permit = await lock.acquireRead({ timeoutMs: 500 });
   * ```
   */
  acquireRead(options?: AcquireOptions): Promise<LeasePermit> {
    return this.#pool.take(1, options, false, 'rwlock.acquireRead') as Promise<LeasePermit>;
  }

  /**
   * Waits for exclusive (write) access: no reader or other writer at the same time.
   *
   * @example
   * ```ts
   * await using permit = await lock.acquireWrite({ signal });
   * ```
   */
  acquireWrite(options?: AcquireOptions): Promise<LeasePermit> {
    return this.#pool.take(
      RWLOCK_PERMITS,
      options,
      false,
      'rwlock.acquireWrite',
    ) as Promise<LeasePermit>;
  }

  /**
   * Read access if it can be granted at once (no writer holding or queued), else `undefined`.
   *
   * @example
   * ```ts
   * const permit = await lock.tryAcquireRead();
   * ```
   */
  tryAcquireRead(): Promise<LeasePermit | undefined> {
    return this.#pool.take(1, undefined, true, 'rwlock.tryAcquireRead');
  }

  /**
   * Write access if nobody holds or waits for the lock, else `undefined`.
   *
   * @example
   * ```ts
   * const permit = await lock.tryAcquireWrite();
   * ```
   */
  tryAcquireWrite(): Promise<LeasePermit | undefined> {
    return this.#pool.take(RWLOCK_PERMITS, undefined, true, 'rwlock.tryAcquireWrite');
  }

  /**
   * Runs `fn` with read access; resolves its result only if the lease held until it ended.
   *
   * @example
   * ```ts
   * const rows = await lock.read(() => db.query('select * from prices'));
   * ```
   */
  read<T>(fn: (ctx: LockContext) => T | Promise<T>, options?: AcquireOptions): Promise<T> {
    return this.#pool.run(1, fn, options, 'rwlock.read');
  }

  /**
   * Runs `fn` with write access; resolves its result only if the lease held until it ended.
   *
   * @example
   * ```ts
   * await lock.write((ctx) => replacePrices(next, ctx.fence));
   * ```
   */
  write<T>(fn: (ctx: LockContext) => T | Promise<T>, options?: AcquireOptions): Promise<T> {
    return this.#pool.run(RWLOCK_PERMITS, fn, options, 'rwlock.write');
  }
}
