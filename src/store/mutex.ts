/**
 * DistributedMutex: a named lock (not tied to a document) shared by every client of the store's
 * backend — across processes and machines on Redis and PostgreSQL. `store.mutex(name)`.
 *
 * Fairness: FIFO across clients (one pool of 1 permit; see `PermitRequest` in backend.ts).
 * Waiters are woken without polling. The lease is renewed while held; a holder that crashed or
 * stalled loses it `leaseMs` after its last renewal (server clock), and its `signal` aborts.
 * Its namespace is its own: `store.mutex('x')` never collides with a document lock on `"x"`,
 * nor with `store.rwlock('x')` or `store.semaphore('x')`.
 *
 * @example
 * ```ts
 * const nightly = store.mutex('nightly-report', { leaseMs: 10_000 });
 * await nightly.run(async (ctx) => {
 *   await s3.put('report.csv', body, { headers: { 'x-fence': String(ctx.fence) }, signal: ctx.signal });
 * });
 * ```
 */
import type { AcquireOptions } from '../sync/permit.js';
import type { Bounded } from './boundary.js';
import type { LeasePermit } from './lease-permit.js';
import type { LockContext } from './lock-context.js';
import { type NamedLockOptions, PermitPool } from './permit-pool.js';

/**
 * A named mutex over the store's backend. Made by `store.mutex(name, options)`.
 *
 * @example
 * ```ts
 * await using permit = await store.mutex('migrations').acquire({ timeoutMs: 5_000 });
 * ```
 */
export class DistributedMutex {
  readonly #pool: PermitPool;

  /** @internal use `store.mutex(name, options)`. */
  constructor(backend: Bounded, name: string, options?: NamedLockOptions) {
    this.#pool = new PermitPool(backend, 'mutex', name, 1, options);
  }

  /** The mutex's name. */
  get name(): string {
    return this.#pool.name;
  }

  /**
   * Waits for the mutex (FIFO), bounded by `timeoutMs` (LockTimeoutError) and `signal`.
   *
   * @example
   * ```ts
   * const permit = await mutex.acquire({ timeoutMs: 1_000 });
   * try { await work(permit.fence); } finally { await permit.release(); }
   * ```
   */
  acquire(options?: AcquireOptions): Promise<LeasePermit> {
    return this.#pool.take(1, options, false, 'mutex.acquire') as Promise<LeasePermit>;
  }

  /**
   * Takes the mutex if it is free and nobody is queued, in one round trip; otherwise
   * `undefined`, nothing queued.
   *
   * @example
   * ```ts
   * const permit = await mutex.tryAcquire();
   * if (!permit) return 'someone else is running the report';
   * ```
   */
  tryAcquire(): Promise<LeasePermit | undefined> {
    return this.#pool.take(1, undefined, true, 'mutex.tryAcquire');
  }

  /**
   * Runs `fn` holding the mutex and resolves its result — only if the lease held until `fn`
   * ended: otherwise `LeaseLostError`, even if `fn` succeeded. `fn` gets the lock context
   * (`signal`, `fence`).
   *
   * @example
   * ```ts
   * const n = await mutex.run((ctx) => writeOutside(ctx.fence), { timeoutMs: 5_000 });
   * ```
   */
  run<T>(fn: (ctx: LockContext) => T | Promise<T>, options?: AcquireOptions): Promise<T> {
    return this.#pool.run(1, fn, options, 'mutex.run');
  }
}
