/**
 * Leases (locking): taking them (one round trip: settings, advisory locks in key order, the fence,
 * the rows), committing them (fenced, field-checked; set/unset patches in ONE round trip), and
 * resolving a commit whose connection dropped (the fence on the row tells).
 */
import type { QueryResult } from 'pg';
import pg from 'pg';
import {
  BackendError,
  DeadlockError,
  LockBusyError,
  LockTimeoutError,
  ValidationError,
} from '../../errors.js';
import type { DocWrite, Lease, LeaseRequest, WriteResult } from '../../store/backend.js';
import { checkKey, checkModelName } from '../../store/keys.js';
import { batch } from './batch.js';
import type { Combiner } from './combine.js';
import type { Conn } from './conn.js';
import type { PgContext } from './context.js';
import { classify, fromDriver } from './errors.js';
import { PgLease } from './lease.js';
import { ensure } from './migrations.js';
import {
  checkedSnapshotCommit,
  multiSimpleCommit,
  simplePatchResult,
  simplePatchSql,
} from './patch-sql.js';
import { refuse, validateWrites } from './planner.js';
import { boundedWait, writesInFlight } from './program-order.js';
import { read } from './reading.js';
import { compareC, DEFAULT_ACTION, docId, lockName, parseRow, RAW, type Raw } from './rows.js';
import {
  COLUMNS,
  FENCE_SEQUENCE,
  ident,
  isConnectionLoss,
  lit,
  lockHash,
  sqlState,
} from './sql.js';
import { type TrackedLease, untrackedLease } from './tasks.js';

/**
 * @internal taking leases (one transaction each, advisory locks in key order) and committing
 * them (fenced, field-checked, one round trip for set/unset patches).
 *
 * @example
 * ```ts
 * const leases = new Leases(ctx, combiner);
 * const lease = await leases.acquire(request);
 * ```
 */
export class Leases {
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

  // ---------------------------------------------------------------------------------------------
  // acquire

  /** Takes a lease: one transaction holding advisory (and, for the default action, row) locks. */
  async acquire(request: LeaseRequest): Promise<Lease | undefined> {
    this.#ctx.checkOpen();
    const req = validateLease(request);
    req.signal?.throwIfAborted();
    const before = writesInFlight(
      req.keys.map((k) => docId(this.#ctx.schema, docId(req.model, k))),
    );
    if (before.length > 0) {
      // Program order is best effort: never wait for it longer than the caller would wait for the
      // lock (nor past its signal, nor more than a second).
      await boundedWait(Promise.all(before), Math.min(req.timeoutMs ?? 1000, 1000), req.signal);
    }
    req.signal?.throwIfAborted();
    // In-process deadlock tracking is the boundary's (src/store/boundary.ts): this lease only
    // keeps the no-op handle until the PostgreSQL helper's clean-up removes it.
    const tracked = untrackedLease();
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          const lease = await this.#acquireOnce(req, tracked);
          if (!lease) tracked.abandoned();
          return lease;
        } catch (err) {
          const state = sqlState(err);
          if ((state === '42P01' || state === '3F000') && attempt < 3) {
            await ensure(this.#ctx, [req.model], err);
            continue;
          }
          throw err;
        }
      }
    } catch (err) {
      tracked.abandoned();
      throw err;
    }
  }

  async #acquireOnce(req: LeaseRequest, tracked: TrackedLease): Promise<PgLease | undefined> {
    const conn = await this.#ctx.connect();
    if (req.signal?.aborted) {
      await conn.done();
      throw req.signal.reason;
    }
    const name = lockName(req.model, req.keys, req.action);
    const keys = [...req.keys].sort(compareC);
    const exclusive = req.mode === 'exclusive';
    const rowLocks = this.#ctx.rowLocks && req.action === DEFAULT_ACTION;
    const noWait = req.nowait || req.skipLocked;
    const hashes = keys.map((k) => lockHash(this.#ctx.schema, req.model, k, req.action));
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
    const rowLock = rowLocks
      ? ` FOR ${exclusive ? 'NO KEY UPDATE' : 'SHARE'}${noWait ? ' NOWAIT' : ''}`
      : '';
    const sql = [
      'BEGIN',
      // set_config(..., true) is SET LOCAL. The target list runs left to right: both settings are
      // in force before the first lock is waited for, and the fence is drawn once every lock is
      // held (so it is larger than every earlier holder's). Rows are read by the NEXT statement,
      // whose snapshot is taken after the locks were granted.
      `SELECT set_config('lock_timeout', '${lockTimeout}', true) AS lt, set_config('idle_in_transaction_session_timeout', '${leaseMs}', true) AS it, ${hashes.map((h, i) => `${fn}(${h}) AS l${i}`).join(', ')}, nextval('${ident(this.#ctx.schema)}.${ident(FENCE_SEQUENCE)}') AS fence`,
      `SELECT ${COLUMNS} FROM ${this.#ctx.table(req.model)} WHERE key IN (${keys.map(lit).join(', ')}) ORDER BY key${rowLock}`,
    ].join('; ');
    const started = performance.now();
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      // Stop the server-side wait; the connection is destroyed afterwards, so a late cancel
      // can never hit anyone else's query.
      const pid = (conn.client as unknown as { processID?: number }).processID;
      if (pid !== undefined) void this.#cancelBackend(pid);
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
        throw new DeadlockError(
          [name],
          'PostgreSQL detected a deadlock while waiting for the lease',
        );
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
    const rows = new Map(
      ((res[2]?.rows ?? []) as Raw[]).map((r) => [r.key as string, parseRow(r)]),
    );
    const fence = Number((advisory as Raw).fence);
    const lease = new PgLease(this, conn, req, rows, fence, rowLocks, tracked);
    this.#leases.add(lease);
    return lease;
  }

  /**
   * Cancels the statement running on backend `pid`, over a short-lived connection of its own
   * (the pool may be exhausted by the very waiters being cancelled).
   */
  async #cancelBackend(pid: number): Promise<void> {
    const options = (this.#ctx.pool as unknown as { options?: pg.ClientConfig }).options;
    const client = new pg.Client(options);
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT pg_cancel_backend($1)', [pid]);
    } catch {
      // Best effort: lock_timeout and the destroyed connection bound the wait anyway.
    } finally {
      await client.end().catch(() => {});
    }
  }

  /** @internal the lease's commit: a batch inside its transaction. */
  async commitLease(lease: PgLease, conn: Conn, writes: readonly DocWrite[]): Promise<WriteResult> {
    validateWrites(writes);
    for (const w of writes) this.#combiner.forget(docId(w.model, w.key));
    try {
      const simple =
        writes.length === 1 && lease.covers(writes[0]?.model ?? '', writes[0]?.key ?? '')
          ? simplePatchSql(this.#ctx, writes[0] as DocWrite, lease)
          : undefined;
      if (simple) {
        // One round trip: the UPDATE and the COMMIT. Zero rows: nothing written, then explain.
        const res = await conn.query(`${simple}; COMMIT`);
        await lease.releaseConn();
        return await simplePatchResult(
          this.#ctx,
          writes[0] as DocWrite,
          (res[0]?.rows ?? []) as Raw[],
          lease,
        );
      }
      if (writes.length === 1) {
        const checked = await checkedSnapshotCommit(this.#ctx, conn, writes[0] as DocWrite, lease);
        if (checked) return checked;
      }
      const multi = await multiSimpleCommit(this.#ctx, conn, writes, lease);
      if (multi) return multi;
      return await batch(this.#ctx, conn, writes, lease);
    } catch (err) {
      if (isConnectionLoss(err) || conn.dead !== undefined) {
        return this.#resolveLostCommit(lease, conn, writes, err);
      }
      throw fromDriver(err, `committing ${lease.name}`);
    } finally {
      await lease.releaseConn();
    }
  }

  /**
   * The connection dropped during a lease commit. If the session was ended while idle (lease
   * expired, killed), nothing was written: refused with `fence`. If the COMMIT may have reached
   * the server, wait until the old session is gone, then look for the lease's fence on a written
   * row: it tells whether the commit happened.
   */
  async #resolveLostCommit(
    lease: PgLease,
    conn: Conn,
    writes: readonly DocWrite[],
    err: unknown,
  ): Promise<WriteResult> {
    const state = sqlState(err);
    const lost = (detail: string) => refuse('fence', 0, detail);
    if (state === '25P03' || lease.wasDeadBeforeCommit) {
      return lost('the lease expired: its PostgreSQL session was ended before the commit');
    }
    const probe = writes.find((w) => w.kind !== 'delete');
    const pid = (conn.client as unknown as { processID?: number }).processID;
    if (!probe || pid === undefined) {
      throw new BackendError(`the connection dropped while committing ${lease.name}`, {
        cause: err,
        outcomeUnknown: true,
      });
    }
    try {
      for (let i = 0; i < 100; i++) {
        const r = await this.#ctx.pool.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [
          pid,
        ]);
        if (r.rowCount === 0) break;
        await new Promise((res) => setTimeout(res, 20));
      }
      const r = await this.#ctx.pool.query({
        text: `SELECT fence FROM ${this.#ctx.table(probe.model)} WHERE key = $1`,
        values: [probe.key],
        types: RAW,
      });
      const fence = r.rows[0] ? Number((r.rows[0] as Raw).fence) : undefined;
      if (fence !== lease.fence) {
        return lost(
          'the lease was lost: its PostgreSQL session ended before the commit took effect',
        );
      }
    } catch (e) {
      throw new BackendError(`the connection dropped while committing ${lease.name}`, {
        cause: e,
        outcomeUnknown: true,
      });
    }
    // It committed: report the documents as they are now.
    const docs = await read(
      this.#ctx,
      writes.map((w) => ({ model: w.model, key: w.key })),
    );
    return {
      applied: true,
      docs: writes.map((w, i) => (w.kind === 'delete' ? undefined : docs[i])),
      results: writes.map((w) => (w.kind === 'delete' ? [true] : [])),
    };
  }

  /** @internal */
  forget(lease: PgLease): void {
    this.#leases.delete(lease);
  }
}

function validateLease(req: LeaseRequest): LeaseRequest {
  checkModelName(req.model);
  if (!Array.isArray(req.keys) || req.keys.length === 0) {
    throw new ValidationError('lease request', [{ message: 'give at least one key' }]);
  }
  for (const k of req.keys) checkKey(k);
  if (new Set(req.keys).size !== req.keys.length) {
    throw new ValidationError('lease request', [{ message: 'keys must be distinct' }]);
  }
  if (!(Number.isFinite(req.leaseMs) && req.leaseMs > 0)) {
    throw new ValidationError('lease request', [{ message: 'leaseMs must be a positive number' }]);
  }
  if (req.timeoutMs !== undefined && !(req.timeoutMs >= 0)) {
    throw new ValidationError('lease request', [{ message: 'timeoutMs must be >= 0' }]);
  }
  if (typeof req.action !== 'string') {
    throw new ValidationError('lease request', [{ message: 'action must be a string' }]);
  }
  return req;
}
