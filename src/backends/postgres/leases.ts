/**
 * The open leases of one backend: taking them (`acquire.ts`), committing them (`commit.ts`), and
 * releasing them all when the backend closes.
 */
import type { DocWrite, Lease, LeaseRequest, WriteResult } from '../../store/backend.js';
import { acquireLease } from './acquire.js';
import type { Combiner } from './combine.js';
import { commitLease } from './commit.js';
import type { Conn } from './conn.js';
import type { PgContext } from './context.js';
import type { LeaseHost, PgLease } from './lease.js';

/**
 * @internal the open leases of one backend, and the host they commit through.
 *
 * @example
 * ```ts
 * const leases = new Leases(ctx, combiner);
 * const lease = await leases.acquire(request);
 * ```
 */
export class Leases implements LeaseHost {
  readonly #ctx: PgContext;
  readonly #combiner: Combiner;
  readonly #leases = new Set<PgLease>();

  constructor(ctx: PgContext, combiner: Combiner) {
    this.#ctx = ctx;
    this.#combiner = combiner;
  }

  /** Releases every open lease (backend close). */
  async releaseAll(): Promise<void> {
    await Promise.all([...this.#leases].map((l) => l.release()));
  }

  /** Takes a lease (see `acquire.ts`). */
  async acquire(request: LeaseRequest): Promise<Lease | undefined> {
    const lease = await acquireLease(this.#ctx, this, request);
    if (lease) this.#leases.add(lease);
    return lease;
  }

  /** @internal */
  commit(lease: PgLease, conn: Conn, writes: readonly DocWrite[]): Promise<WriteResult> {
    return commitLease(this.#ctx, this.#combiner, lease, conn, writes);
  }

  /** @internal */
  forget(lease: PgLease): void {
    this.#leases.delete(lease);
  }
}
