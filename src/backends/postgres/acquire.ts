/**
 * Taking a lease in ONE round trip: settings, advisory locks in key order, the fence and the
 * transaction id, then the rows (row-locked `FOR NO KEY UPDATE` for the default action's
 * exclusive leases, so plain writers wait for the holder).
 */
import type { QueryResult } from 'pg';
import { BackendError, DeadlockError, LockBusyError, LockTimeoutError } from '../../errors.js';
import type { LeaseRequest } from '../../store/backend.js';
import { cancelBackend } from './cancel.js';
import type { PgContext } from './context.js';
import { classify } from './errors.js';
import { type LeaseHost, PgLease } from './lease.js';
import { ensure } from './migrations.js';
import { boundedWait, writesInFlight } from './program-order.js';
import { compareC, DEFAULT_ACTION, docId, lockName, parseRow, type Raw } from './rows.js';
import { COLUMNS, FENCE_SEQUENCE, ident, lit, lockHash, sqlState } from './sql.js';

/**
 * @internal takes a lease: one transaction holding advisory (and, for the default action's
 * exclusive leases, row) locks; resolves undefined only with `skipLocked`.
 *
 * @example
 * ```ts
 * const lease = await acquireLease(ctx, host, request);
 * ```
 */
export async function acquireLease(
  ctx: PgContext,
  host: LeaseHost,
  req: LeaseRequest,
): Promise<PgLease | undefined> {
  // The request is well-formed (the boundary checked it, src/store/boundary.ts), and in-process
  // deadlocks are the boundary's too: here, only what the server does.
  ctx.checkOpen();
  req.signal?.throwIfAborted();
  const before = writesInFlight(req.keys.map((k) => docId(ctx.schema, docId(req.model, k))));
  if (before.length > 0) {
    // Program order is best effort: never wait for it longer than the caller would wait for the
    // lock (nor past its signal, nor more than a second).
    await boundedWait(Promise.all(before), Math.min(req.timeoutMs ?? 1000, 1000), req.signal);
  }
  req.signal?.throwIfAborted();
  for (let attempt = 0; ; attempt++) {
    try {
      return await acquireOnce(ctx, host, req);
    } catch (err) {
      const state = sqlState(err);
      if ((state === '42P01' || state === '3F000') && attempt < 3) {
        await ensure(ctx, [req.model], err);
        continue;
      }
      throw err;
    }
  }
}

async function acquireOnce(
  ctx: PgContext,
  host: LeaseHost,
  req: LeaseRequest,
): Promise<PgLease | undefined> {
  const conn = await ctx.connect();
  if (req.signal?.aborted) {
    await conn.done();
    throw req.signal.reason;
  }
  const name = lockName(req.model, req.keys, req.action);
  const keys = [...req.keys].sort(compareC);
  const exclusive = req.mode === 'exclusive';
  // Plain writers wait for the default action's exclusive leases (the contract's rule): such a
  // lease locks its rows FOR NO KEY UPDATE, which every UPDATE/DELETE of them (ours, and any other
  // SQL) waits for. Shared leases take no row lock: FOR SHARE would hold plain writers back, and
  // FOR KEY SHARE would still hold back a plain delete; shared holders are kept apart from
  // exclusive ones by the advisory locks alone. Named actions are lanes of their own: no row lock.
  const rowLocked = exclusive && req.action === DEFAULT_ACTION;
  const noWait = req.nowait || req.skipLocked;
  const hashes = keys.map((k) => lockHash(ctx.schema, req.model, k, req.action));
  const fn = noWait
    ? exclusive
      ? 'pg_try_advisory_xact_lock'
      : 'pg_try_advisory_xact_lock_shared'
    : exclusive
      ? 'pg_advisory_xact_lock'
      : 'pg_advisory_xact_lock_shared';
  const lockTimeout =
    req.timeoutMs === undefined
      ? 0
      : Math.min(2_147_483_647, Math.max(1, Math.ceil(req.timeoutMs)));
  const leaseMs = Math.min(2_147_483_647, Math.max(1, Math.ceil(req.leaseMs)));
  // NOWAIT with nowait/skipLocked: when a try-lock failed, the row lock must not wait for the
  // holder either (it fails at once, 55P03, and that is LockBusyError / undefined).
  const rowLock = rowLocked ? ` FOR NO KEY UPDATE${noWait ? ' NOWAIT' : ''}` : '';
  const sql = [
    'BEGIN',
    // set_config(..., true) is SET LOCAL. The target list runs left to right: both settings are
    // in force before the first lock is waited for, and the fence is drawn once every lock is
    // held (so it is larger than every earlier holder's). txid_current() gives the transaction
    // its id now: if the reply to its COMMIT is ever lost, txid_status() settles whether it
    // committed (see lost-commit.ts). Rows are read by the NEXT statement, whose snapshot is
    // taken after the locks were granted.
    `SELECT set_config('lock_timeout', '${lockTimeout}', true) AS lt, set_config('idle_in_transaction_session_timeout', '${leaseMs}', true) AS it, ${hashes.map((h, i) => `${fn}(${h}) AS l${i}`).join(', ')}, nextval('${ident(ctx.schema)}.${ident(FENCE_SEQUENCE)}') AS fence, txid_current() AS txid`,
    `SELECT ${COLUMNS} FROM ${ctx.table(req.model)} WHERE key IN (${keys.map(lit).join(', ')}) ORDER BY key${rowLock}`,
  ].join('; ');
  const started = performance.now();
  let aborted = false;
  const onAbort = () => {
    aborted = true;
    // Stop the server-side wait; the connection is destroyed afterwards, so a late cancel
    // can never hit anyone else's query.
    void cancelBackend(ctx, conn.pid);
  };
  req.signal?.addEventListener('abort', onAbort, { once: true });
  let res: QueryResult[];
  try {
    res = await conn.query(sql);
  } catch (err) {
    req.signal?.removeEventListener('abort', onAbort);
    const state = sqlState(err);
    if (aborted) {
      await conn.done(true);
      throw req.signal?.reason;
    }
    await conn.done();
    if (state === '55P03') {
      if (req.skipLocked) return undefined;
      if (noWait) throw new LockBusyError(name);
      throw new LockTimeoutError(name, performance.now() - started);
    }
    if (state === '40P01') {
      throw new DeadlockError([name], 'PostgreSQL detected a deadlock while waiting for the lease');
    }
    throw err instanceof BackendError || state === '42P01' || state === '3F000'
      ? err
      : classify(err, `acquiring ${name}`);
  }
  req.signal?.removeEventListener('abort', onAbort);
  if (aborted) {
    await conn.done(true);
    throw req.signal?.reason;
  }
  const advisory = res[1]?.rows[0] as Raw | undefined;
  if (noWait && advisory && hashes.some((_, i) => advisory[`l${i}`] !== 't')) {
    await conn.done();
    if (req.skipLocked) return undefined;
    throw new LockBusyError(name);
  }
  const rows = new Map(((res[2]?.rows ?? []) as Raw[]).map((r) => [r.key as string, parseRow(r)]));
  const grant = {
    rows,
    fence: Number((advisory as Raw).fence),
    txid: String((advisory as Raw).txid),
    rowLocked,
  };
  return new PgLease(host, conn, req, grant);
}
