/**
 * Named permits on PostgreSQL (`acquirePermit` / `permitsHeld` of the Backend contract): which
 * mechanism serves a pool, the retries every request shares, and the open permits of a backend.
 *
 * - mutex and rwlock: the server's lock manager, a permit is an advisory lock held by an open
 *   transaction (`permit-locks.ts`); a hand-off costs what a hand-written advisory-lock loop does.
 * - semaphore: FIFO on the pool's gate lock, holders as rows with a server-clock expiry, heads
 *   woken by NOTIFY (`permit-rows.ts`, `permit-listener.ts`): the lock manager cannot count
 *   weights.
 * The mechanism is a function of the kind alone, so every client of one pool uses the same one.
 * A mutex is always permits 1 and an rwlock always RWLOCK_PERMITS (the store's rule); any other
 * shape for those kinds is refused here rather than served by a mechanism others do not see.
 *
 * Retries: a waiter whose session ended (terminated, the network) waits again on a fresh
 * connection, within its timeout and signal (its place in the queue is lost with its session); a
 * missing schema or table is created, then the request sent again.
 */
import { randomUUID } from 'node:crypto';
import { LockTimeoutError, ValidationError } from '../../errors.js';
import { type PermitKind, type PermitRequest, RWLOCK_PERMITS } from '../../store/backend.js';
import type { PgContext } from './context.js';
import { backoff, fromDriver } from './errors.js';
import { ensureSchema } from './migrations.js';
import type { HeldPermit, PermitHost } from './permit-lease.js';
import { permitName } from './permit-lease.js';
import { PermitListener } from './permit-listener.js';
import { acquireLockPermit, lockPermitsHeld } from './permit-locks.js';
import { acquireRowPermit, rowPermitsHeld } from './permit-rows.js';
import { isConnectionLoss, sqlState } from './sql.js';

/** Why a mutex or rwlock request has a shape its kind never has, or undefined. */
function badShape(req: PermitRequest): string | undefined {
  if (req.kind === 'mutex' && (req.permits !== 1 || req.weight !== 1)) {
    return 'a mutex has permits 1 and weight 1';
  }
  if (
    req.kind === 'rwlock' &&
    (req.permits !== RWLOCK_PERMITS || (req.weight !== 1 && req.weight !== RWLOCK_PERMITS))
  ) {
    return `an rwlock has permits ${RWLOCK_PERMITS} and weight 1 (a reader) or ${RWLOCK_PERMITS} (a writer)`;
  }
  return undefined;
}

/**
 * @internal the open permits of one backend, and the listener its semaphore heads share.
 *
 * @example
 * ```ts
 * const permits = new Permits(ctx);
 * const p = await permits.acquire({ kind: 'mutex', name: 'm', permits: 1, weight: 1, ... });
 * ```
 */
export class Permits implements PermitHost {
  readonly #ctx: PgContext;
  readonly #open = new Set<HeldPermit>();
  /** Semaphore permits' holds on the listener, let go when they end. */
  readonly #holds = new Map<HeldPermit, () => void>();
  readonly listener: PermitListener;

  constructor(ctx: PgContext) {
    this.#ctx = ctx;
    this.listener = new PermitListener(ctx);
  }

  /** Permits granted and not yet released (what close() releases). */
  get open(): number {
    return this.#open.size;
  }

  /** Takes `weight` units of the pool (see the contract); undefined only with `nowait`. */
  async acquire(req: PermitRequest): Promise<HeldPermit | undefined> {
    this.#ctx.checkOpen();
    req.signal?.throwIfAborted();
    const bad = badShape(req);
    if (bad) throw new ValidationError(permitName(req.kind, req.name), [{ message: bad }]);
    const deadline = req.timeoutMs === undefined ? undefined : performance.now() + req.timeoutMs;
    if (req.kind !== 'semaphore') return this.#acquire(req, deadline, '');
    // One token for every attempt: a semaphore grant whose COMMIT reply was lost is found again.
    const token = randomUUID();
    // A semaphore acquire (then its permit, see `forget`) keeps the listener open if it is.
    const unhold = this.listener.hold();
    let permit: HeldPermit | undefined;
    try {
      permit = await this.#acquire(req, deadline, token);
      return permit;
    } finally {
      if (permit) this.#holds.set(permit, unhold);
      else unhold();
    }
  }

  async #acquire(
    req: PermitRequest,
    deadline: number | undefined,
    token: string,
  ): Promise<HeldPermit | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        const permit =
          req.kind === 'semaphore'
            ? await acquireRowPermit(this.#ctx, this, this.listener, req, deadline, token)
            : await acquireLockPermit(this.#ctx, this, req, deadline);
        if (permit) this.#open.add(permit);
        return permit;
      } catch (err) {
        const state = sqlState(err);
        if ((state === '42P01' || state === '3F000') && attempt < 3) {
          await ensureSchema(this.#ctx, err);
          continue;
        }
        if (
          isConnectionLoss(err) &&
          !this.#ctx.closed &&
          !req.signal?.aborted &&
          attempt < 50 &&
          (deadline === undefined || performance.now() < deadline)
        ) {
          // A waiter's session ended: wait again on another connection.
          await backoff(attempt);
          if (deadline !== undefined && performance.now() >= deadline) {
            throw new LockTimeoutError(permitName(req.kind, req.name), req.timeoutMs ?? 0);
          }
          continue;
        }
        // Lockstep errors and the signal's reason pass through as they are.
        throw fromDriver(err, `acquiring ${permitName(req.kind, req.name)}`);
      }
    }
  }

  /** Units of the pool held now by live leases (server truth). */
  held(kind: PermitKind, name: string): Promise<number> {
    this.#ctx.checkOpen();
    return kind === 'semaphore'
      ? rowPermitsHeld(this.#ctx, kind, name)
      : lockPermitsHeld(this.#ctx, kind, name);
  }

  /** @internal */
  forget(permit: HeldPermit): void {
    this.#open.delete(permit);
    this.#holds.get(permit)?.();
    this.#holds.delete(permit);
  }

  /** Releases every open permit and closes the listener (backend close). */
  async releaseAll(): Promise<void> {
    await Promise.all([...this.#open].map((p) => p.release()));
    this.listener.close();
  }
}
