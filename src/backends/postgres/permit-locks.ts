/**
 * Mutexes and rwlocks on PostgreSQL's own lock manager: a permit is a transaction-level advisory
 * lock held by an open transaction (exclusive for a mutex or an rwlock writer, shared for an
 * rwlock reader), taken in ONE round trip and given back by ROLLBACK.
 *
 * Why the lock manager rather than rows: a hand-off is the server waking the next waiter inside
 * the release itself (no notification, no second statement), which is what a hand-written
 * `pg_advisory_xact_lock` loop costs. And it already has every property a permit needs:
 * - FIFO: a request that conflicts with a queued one waits behind it, and a try-lock fails while
 *   a conflicting request is queued (`waitMask`), so a queued writer holds back later readers
 *   (write-preferring) and `nowait` never jumps the queue;
 * - a waiter that leaves (lock_timeout, cancel, its session ending) is taken out of the queue and
 *   whoever it was blocking is woken at once, by the server;
 * - a dead holder's session ends and its lock goes with it; a stalled holder (SIGSTOP) is idle in
 *   its transaction, which the server ends after `idle_in_transaction_session_timeout` = leaseMs,
 *   on the server's clock; renewal keeps the session busy (`SELECT 1` every leaseMs/3);
 * - nothing is stored: an idle pool leaves no row (fences come from the schema's sequence, drawn
 *   once the lock is held, so they increase across grants, clients and restarts).
 * The lock's key is hashed from (schema, `lockstep$permit`, kind, name): `$` is never in a model
 * name, so a named lock never meets a document lock (whose hash starts with a model).
 */
import type { QueryResult } from 'pg';
import { BackendError, LockTimeoutError } from '../../errors.js';
import { type PermitRequest, RWLOCK_PERMITS } from '../../store/backend.js';
import { cancelBackend } from './cancel.js';
import type { Conn } from './conn.js';
import type { PgContext } from './context.js';
import { classify } from './errors.js';
import { HeldPermit, type PermitHost, permitName } from './permit-lease.js';
import type { Raw } from './rows.js';
import { FENCE_SEQUENCE, ident, lockHash, sqlState } from './sql.js';

/** Keys computed lately (a hot name costs one SHA-256, not one per acquire); cleared when full. */
const keys = new Map<string, string>();

/** The advisory lock key of a named pool (a signed 64-bit integer, as SQL text). */
export function permitLockKey(schema: string, kind: string, name: string): string {
  const id = `${schema}\u0000${kind}\u0000${name}`;
  let key = keys.get(id);
  if (key === undefined) {
    if (keys.size >= 4096) keys.clear();
    key = lockHash(schema, 'lockstep$permit', kind, name);
    keys.set(id, key);
  }
  return key;
}

/** The lock mode a request takes: shared for an rwlock reader, exclusive otherwise. */
function shared(req: PermitRequest): boolean {
  return req.kind === 'rwlock' && req.weight < RWLOCK_PERMITS;
}

/** Clamps milliseconds to what a PostgreSQL timeout setting takes (1 .. 2^31-1). */
export function settingMs(ms: number): number {
  return Math.min(2_147_483_647, Math.max(1, Math.ceil(ms)));
}

/**
 * @internal one attempt at a mutex or rwlock permit: resolves the permit, undefined (nowait and
 * not grantable at once), or rejects (LockTimeoutError, the signal's reason, a driver error —
 * a connection loss while waiting is retried by the caller).
 *
 * @example
 * ```ts
 * const permit = await acquireLockPermit(ctx, host, request, deadline);
 * ```
 */
export async function acquireLockPermit(
  ctx: PgContext,
  host: PermitHost,
  req: PermitRequest,
  deadline: number | undefined,
): Promise<HeldPermit | undefined> {
  const conn = await ctx.connect();
  if (req.signal?.aborted) {
    await conn.done();
    throw req.signal.reason;
  }
  const key = permitLockKey(ctx.schema, req.kind, req.name);
  const fn = `pg${req.nowait ? '_try' : ''}_advisory_xact_lock${shared(req) ? '_shared' : ''}`;
  // A deadline already reached (timeoutMs 0, or a retry late) still asks once: lock_timeout is
  // at least 1 ms, so a free lock is granted and a held one times out at once.
  const left = deadline === undefined ? undefined : deadline - performance.now();
  // One round trip. set_config(..., true) is SET LOCAL, in force before the lock is waited for
  // (the target list runs left to right): lock_timeout bounds the wait by timeoutMs on the
  // server; idle_in_transaction_session_timeout is the lease. The fence is drawn once the lock
  // is held, so it is larger than every earlier holder's.
  // Without timeoutMs, lock_timeout is left as it is (0 unless a role or database sets it; one
  // setting less per hand-off, measured on the server): if it fires anyway, we wait again.
  const lockTimeout =
    left === undefined ? '' : `set_config('lock_timeout', '${settingMs(left)}', true) AS lt, `;
  const sql = [
    'BEGIN',
    `SELECT ${lockTimeout}set_config('idle_in_transaction_session_timeout', '${settingMs(req.leaseMs)}', true) AS it, ${fn}(${key})::text AS got, nextval('${ident(ctx.schema)}.${ident(FENCE_SEQUENCE)}') AS fence`,
  ].join('; ');
  let aborted = false;
  const onAbort = () => {
    aborted = true;
    // Stop the server-side wait; the connection is destroyed afterwards, so a late cancel can
    // never hit anyone else's query.
    void cancelBackend(ctx, conn.pid);
  };
  req.signal?.addEventListener('abort', onAbort, { once: true });
  let res: QueryResult[];
  try {
    res = await conn.query(sql);
  } catch (err) {
    req.signal?.removeEventListener('abort', onAbort);
    if (aborted) {
      await conn.done(true);
      throw req.signal?.reason;
    }
    await conn.done();
    if (sqlState(err) === '55P03') {
      // A lock_timeout of the role's, not ours: the caller asked to wait without a bound.
      if (deadline === undefined) return acquireLockPermit(ctx, host, req, deadline);
      throw new LockTimeoutError(permitName(req.kind, req.name), req.timeoutMs ?? 0);
    }
    throw err;
  }
  req.signal?.removeEventListener('abort', onAbort);
  if (aborted) {
    await conn.done(true);
    throw req.signal?.reason;
  }
  const row = res[1]?.rows[0] as Raw | undefined;
  if (row === undefined) {
    await conn.done();
    throw new BackendError(`acquiring ${permitName(req.kind, req.name)}: no reply row`);
  }
  if (req.nowait && row.got !== 'true') {
    await conn.done();
    return undefined;
  }
  return new SessionPermit(host, conn, req, Number(row.fence));
}

/**
 * @internal a mutex or rwlock permit: the open transaction holding its advisory lock.
 *
 * @example
 * ```ts
 * const permit = new SessionPermit(host, conn, request, fence);
 * await permit.release(); // ROLLBACK: the server wakes the next waiter
 * ```
 */
export class SessionPermit extends HeldPermit {
  constructor(host: PermitHost, conn: Conn, req: PermitRequest, fence: number) {
    super(host, conn, req, fence, req.leaseMs);
  }

  /**
   * Keeps the session busy so the server's idle timer restarts; with another length, sets the
   * timer's length (SET LOCAL): the lease now ends `ms` after this statement if nobody renews.
   */
  protected async renewOnce(ms: number): Promise<boolean> {
    await this.conn.query(
      `SELECT set_config('idle_in_transaction_session_timeout', '${settingMs(ms)}', true)`,
    );
    return true;
  }

  /** ROLLBACK ends the transaction and its lock; it succeeding means the lock was ours until then. */
  protected async releaseOnce(): Promise<boolean> {
    await this.conn.query('ROLLBACK');
    return true;
  }

  protected async cleanUp(): Promise<void> {
    await this.conn.done();
  }
}

/**
 * @internal the units of a mutex or rwlock pool held now, as the server's lock table says: an
 * exclusive holder holds all of them (1 for a mutex, RWLOCK_PERMITS for a writer), each shared
 * holder (a reader) one. One round trip; `pg_locks` is the server's truth, stalled holders count
 * until the server ends their session.
 *
 * @example
 * ```ts
 * await lockPermitsHeld(ctx, 'rwlock', 'config'); // 3: three readers
 * ```
 */
export async function lockPermitsHeld(ctx: PgContext, kind: string, name: string): Promise<number> {
  const key = permitLockKey(ctx.schema, kind, name);
  // A bigint advisory key shows in pg_locks as classid = its high half, objid = its low half
  // (both unsigned), objsubid = 1.
  const sql = `SELECT count(*) FILTER (WHERE mode = 'ExclusiveLock') AS x, count(*) FILTER (WHERE mode = 'ShareLock') AS s FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND objsubid = 1 AND classid::bigint = ((${key}::bigint >> 32) & 4294967295) AND objid::bigint = (${key}::bigint & 4294967295)`;
  try {
    const r = await ctx.pool.query({ text: sql });
    const row = r.rows[0] as { x: string; s: string };
    if (Number(row.x) > 0) return kind === 'rwlock' ? RWLOCK_PERMITS : 1;
    return Number(row.s);
  } catch (err) {
    throw classify(err, `reading ${permitName(kind, name)}`);
  }
}
