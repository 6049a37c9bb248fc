/**
 * DistributedSemaphore: `permits` units shared by every client of the store's backend, each
 * caller taking `weight` of them — "at most 5 concurrent calls to the payment API across all
 * servers". `store.semaphore(name, { permits })`.
 *
 * Fairness: FIFO by arrival, weights included: a heavy request at the head of the queue is not
 * overtaken by lighter newcomers (no starvation). Never more than `permits` units held at once,
 * by weight, across clients: a holder that crashed or stalled stops counting `leaseMs` after
 * its last renewal (server clock). A weight above `permits` is refused at once
 * (ValidationError), never left to hang. Every client must use the same `permits` for one
 * name: a different count while the semaphore is in use is refused (ValidationError).
 *
 * @example
 * ```ts
 * const payments = store.semaphore('payment-api', { permits: 5, leaseMs: 10_000 });
 * const receipt = await payments.run((ctx) => charge(order, { signal: ctx.signal }));
 * ```
 */
import { ValidationError } from '../errors.js';
import type { AcquireOptions } from '../sync/permit.js';
import type { Bounded } from './boundary.js';
import { checkPermits } from './checks.js';
import type { LeasePermit } from './lease-permit.js';
import type { LockContext } from './lock-context.js';
import { permitName } from './names.js';
import { type NamedLockOptions, PermitPool } from './permit-pool.js';

/**
 * Options of `store.semaphore`.
 *
 * @example
 * ```ts
 * store.semaphore('payment-api', { permits: 5, leaseMs: 10_000 });
 * ```
 */
export interface SemaphoreOptions extends NamedLockOptions {
  /** How many units there are: a positive integer. */
  permits: number;
}

/**
 * Options of {@link DistributedSemaphore.acquire} and {@link DistributedSemaphore.run}.
 *
 * @example
 * ```ts
 * await sem.acquire({ weight: 2, timeoutMs: 1_000 });
 * ```
 */
export interface SemaphoreAcquireOptions extends AcquireOptions {
  /** Units to take at once: a positive integer, at most `permits`. Default 1. */
  weight?: number;
}

/**
 * A named, weighted, FIFO semaphore over the store's backend. Made by
 * `store.semaphore(name, { permits })`.
 *
 * @example
 * ```ts
 * await using slot = await store.semaphore('gpu', { permits: 2 }).acquire();
 * ```
 */
export class DistributedSemaphore {
  readonly #pool: PermitPool;

  /** @internal use `store.semaphore(name, options)`. */
  constructor(backend: Bounded, name: string, options: SemaphoreOptions) {
    if (options === null || typeof options !== 'object') {
      throw new ValidationError(permitName('semaphore', String(name)), [
        { message: 'give the options with permits: store.semaphore(name, { permits: 5 })' },
      ]);
    }
    checkPermits(permitName('semaphore', String(name)), options.permits);
    this.#pool = new PermitPool(backend, 'semaphore', name, options.permits, options);
  }

  /** The semaphore's name. */
  get name(): string {
    return this.#pool.name;
  }

  /** Its capacity (the `permits` it was made with). */
  get permits(): number {
    return this.#pool.permits;
  }

  /**
   * Waits (FIFO) for `weight` units (default 1), bounded by `timeoutMs` and `signal`.
   *
   * @example
   * ```ts
   * const permit = await sem.acquire({ weight: 2, timeoutMs: 1_000 });
   * ```
   */
  acquire(options?: SemaphoreAcquireOptions): Promise<LeasePermit> {
    return this.#pool.take(
      options?.weight ?? 1,
      options,
      false,
      'semaphore.acquire',
    ) as Promise<LeasePermit>;
  }

  /**
   * Takes `weight` units (default 1) if they are free and nobody is queued, in one round trip;
   * otherwise `undefined`, nothing queued.
   *
   * @example
   * ```ts
   * const permit = await sem.tryAcquire();
   * if (!permit) throw new Error('busy, try later');
   * ```
   */
  tryAcquire(weight = 1): Promise<LeasePermit | undefined> {
    return this.#pool.take(weight, undefined, true, 'semaphore.tryAcquire');
  }

  /**
   * Runs `fn` holding `weight` units (default 1); resolves its result only if the lease held
   * until it ended (else `LeaseLostError`).
   *
   * @example
   * ```ts
   * const body = await sem.run((ctx) => fetch(url, { signal: ctx.signal }), { weight: 1 });
   * ```
   */
  run<T>(fn: (ctx: LockContext) => T | Promise<T>, options?: SemaphoreAcquireOptions): Promise<T> {
    return this.#pool.run(options?.weight ?? 1, fn, options, 'semaphore.run');
  }

  /**
   * Units free right now across every client (`permits` minus those held by live leases).
   * A snapshot: it may change before you act on it.
   *
   * @example
   * ```ts
   * if ((await sem.available()) === 0) log('all payment slots busy');
   * ```
   */
  async available(): Promise<number> {
    return Math.max(0, this.#pool.permits - (await this.#pool.held()));
  }
}
