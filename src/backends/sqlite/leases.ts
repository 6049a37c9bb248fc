/**
 * The open leases of one backend: taking them (`acquire.ts`) and releasing them all when the
 * backend closes.
 *
 * @example
 * ```ts
 * const leases = new Leases(ctx);
 * const lease = await leases.acquire(request);
 * ```
 */
import type { Lease, LeaseRequest } from '../../store/backend.js';
import { acquireLease } from './acquire.js';
import type { SqliteContext } from './context.js';
import type { LeaseHost, SqliteLease } from './lease.js';

/**
 * @internal the open leases of one backend.
 *
 * @example
 * ```ts
 * await leases.releaseAll(); // backend close
 * ```
 */
export class Leases implements LeaseHost {
  readonly #ctx: SqliteContext;
  readonly #open = new Set<SqliteLease>();

  constructor(ctx: SqliteContext) {
    this.#ctx = ctx;
  }

  /** Open leases (0 when idle). */
  get size(): number {
    return this.#open.size;
  }

  /** Takes a lease (see `acquire.ts`). */
  async acquire(request: LeaseRequest): Promise<Lease | undefined> {
    const lease = await acquireLease(this.#ctx, this, request);
    if (lease) this.#open.add(lease);
    return lease;
  }

  /** Releases every open lease (backend close). */
  async releaseAll(): Promise<void> {
    await Promise.all([...this.#open].map((l) => l.release()));
  }

  /** @internal */
  forget(lease: SqliteLease): void {
    this.#open.delete(lease);
  }
}
