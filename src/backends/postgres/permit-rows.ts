/**
 * Semaphores (weighted, FIFO) on PostgreSQL: holders are rows with an expiry on the server's
 * clock; waiters queue in the server's lock manager on the pool's gate lock.
 *
 * Why this split: the lock manager cannot count weighted units, and a waiter must never be woken
 * by polling — but it queues FIFO, drops a dead or cancelled waiter and wakes the next at once.
 * So a request first takes the pool's gate (a transaction-level advisory lock, FIFO across every
 * client); the gate's holder is the head of the queue and alone may take units:
 * - in the same round trip it purges expired holders, refuses a `permits` other than the pool's
 *   in use, and inserts its holder row if its weight fits; COMMIT makes the row visible and
 *   passes the gate to the next in line (whose statement continues on the server at once);
 * - if its weight does not fit, it keeps the gate (so nobody behind it gets ahead: a weight-5
 *   request is never starved by weight-1s) and waits, its transaction open, for a release's
 *   NOTIFY on the one listening connection of its backend (`permit-listener.ts`), or for a timer
 *   at the earliest holder's expiry (a dead holder says nothing: its row expires) — then looks
 *   again in the same transaction. It also looks at least every leaseMs/3, which keeps its
 *   session busy: a stalled head (SIGSTOP) is idle in its transaction and the server ends it after
 *   `idle_in_transaction_session_timeout` = leaseMs, passing the gate on.
 * A waiter that times out (lock_timeout on the server, a timer at the head) or is aborted leaves:
 * the server takes it out of the queue, or its ROLLBACK passes the gate on. A holder renews its row
 * (UPDATE ... WHERE not expired) on the connection it kept, so a release never needs a free pooled
 * connection; release DELETEs the row and NOTIFYs the pool. Fences come from the schema's sequence,
 * drawn under the gate. Nothing stays for an idle pool: no waiter row, and holder rows are deleted
 * on release (a crashed holder's row is purged by the next request on its pool).
 */
import type { QueryResult } from 'pg';
import { LockTimeoutError, ValidationError } from '../../errors.js';
import type { PermitRequest } from '../../store/backend.js';
import { cancelBackend } from './cancel.js';
import type { Conn } from './conn.js';
import type { PgContext } from './context.js';
import { classify } from './errors.js';
import { HeldPermit, type PermitHost, permitName } from './permit-lease.js';
import type { PermitListener } from './permit-listener.js';
import { permitLockKey, settingMs } from './permit-locks.js';
import type { Raw } from './rows.js';
import { FENCE_SEQUENCE, ident, lit, PERMIT_TABLE } from './sql.js';

/** The schema-qualified holders' table. */
function table(ctx: PgContext): string {
  return `${ident(ctx.schema)}.${ident(PERMIT_TABLE)}`;
}

/** `kind = ... AND name = ...`: the rows of one pool. */
function poolWhere(req: { kind: string; name: string }): string {
  return `kind = ${lit(req.kind)} AND name = ${lit(req.name)}`;
}

/**
 * The head's look at its pool, ONE statement under the gate: purge expired holders, tell a
 * `permits` mismatch, and insert this request's holder row if its weight fits. Idempotent per
 * token: a live row of this token (an earlier attempt whose COMMIT reply was lost) is the grant.
 * The insert also try-locks the gate (re-entrant for its holder): it never happens without it.
 */
function lookSql(ctx: PgContext, req: PermitRequest, token: string, gate: string): string {
  const t = table(ctx);
  const pool = poolWhere(req);
  const tok = lit(token);
  const P = req.permits;
  const W = req.weight;
  return `WITH c AS MATERIALIZED (SELECT clock_timestamp() AS t),
live AS MATERIALIZED (SELECT token, permits, weight, fence, expires_at FROM ${t}, c WHERE ${pool} AND expires_at > c.t),
purge AS (DELETE FROM ${t} USING c WHERE ${pool} AND expires_at <= c.t),
v AS (SELECT coalesce(bool_or(permits <> ${P}), false) AS mismatch, coalesce(sum(weight) FILTER (WHERE token <> ${tok}), 0) AS held, max(fence) FILTER (WHERE token = ${tok}) AS mine, min(expires_at) AS next FROM live),
ins AS (INSERT INTO ${t} (kind, name, token, permits, weight, fence, expires_at)
  SELECT ${lit(req.kind)}, ${lit(req.name)}, ${tok}, ${P}, ${W}, nextval('${ident(ctx.schema)}.${ident(FENCE_SEQUENCE)}'), c.t + ${settingMs(req.leaseMs)} * interval '1 millisecond'
  FROM v, c WHERE NOT v.mismatch AND v.mine IS NULL AND v.held + ${W} <= ${P} AND pg_try_advisory_xact_lock(${gate})
  RETURNING fence)
SELECT v.mismatch, coalesce(v.mine, (SELECT fence FROM ins)) AS fence, ceil(extract(epoch FROM v.next - c.t) * 1000) AS next_ms FROM v, c`;
}

function mismatch(req: PermitRequest): ValidationError {
  return new ValidationError(permitName(req.kind, req.name), [
    {
      message: `permits ${req.permits} differs from the permits of the pool in use; every client of one pool must give the same permits`,
    },
  ]);
}

/**
 * @internal one attempt at a semaphore permit (see the file comment): the permit, undefined
 * (nowait and not grantable at once), or a rejection (LockTimeoutError, ValidationError, the
 * signal's reason, a driver error — a connection loss is retried by the caller with the same
 * token, so a grant whose COMMIT reply was lost is found again).
 *
 * @example
 * ```ts
 * const permit = await acquireRowPermit(ctx, host, listener, request, deadline, token);
 * ```
 */
export async function acquireRowPermit(
  ctx: PgContext,
  host: PermitHost,
  listener: PermitListener,
  req: PermitRequest,
  deadline: number | undefined,
  token: string,
): Promise<HeldPermit | undefined> {
  const name = permitName(req.kind, req.name);
  const timedOut = () => new LockTimeoutError(name, req.timeoutMs ?? 0);
  const conn = await ctx.connect();
  const gate = permitLockKey(ctx.schema, req.kind, req.name);
  const look = lookSql(ctx, req, token, gate);
  let inFlight = false;
  let aborted = false;
  let wake: (() => void) | undefined;
  const onAbort = () => {
    aborted = true;
    // A statement waiting on the server is cancelled (the connection is destroyed afterwards,
    // so a late cancel hits nobody else); a head waiting here is woken.
    if (inFlight) void cancelBackend(ctx, conn.pid);
    wake?.();
  };
  const run = async (sql: string): Promise<QueryResult[]> => {
    inFlight = true;
    try {
      return await conn.query(sql);
    } finally {
      inFlight = false;
    }
  };
  let unwatch: (() => void) | undefined;
  let woken = false;
  const heard = () => {
    woken = true;
    wake?.();
  };
  let ok = false;
  req.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // Listening already (the pool is contended): be heard before the first look, so that a
    // head's first look is one it can wait on.
    if (!req.nowait && listener.listening) unwatch = listener.watch(gate, heard);
    if (req.signal?.aborted) throw req.signal.reason;
    // A deadline already reached still asks once (lock_timeout is at least 1 ms).
    const left = deadline === undefined ? undefined : deadline - performance.now();
    const gateFn = req.nowait ? 'pg_try_advisory_xact_lock' : 'pg_advisory_xact_lock';
    // One round trip: the mismatch a holder can already tell (nothing queued then), the gate
    // (FIFO, bounded by lock_timeout), and the first look.
    let res: QueryResult[];
    try {
      res = await run(
        `BEGIN; SELECT set_config('lock_timeout', '${left === undefined ? 0 : settingMs(left)}', true) AS lt, set_config('idle_in_transaction_session_timeout', '${settingMs(req.leaseMs)}', true) AS it, CASE WHEN EXISTS (SELECT 1 FROM ${table(ctx)} WHERE ${poolWhere(req)} AND permits <> ${req.permits} AND expires_at > clock_timestamp()) THEN 'mismatch' ELSE ${gateFn}(${gate})::text END AS gate; ${look}`,
      );
    } catch (err) {
      if (aborted) throw req.signal?.reason;
      if ((err as { code?: string }).code === '55P03') throw timedOut();
      throw err;
    }
    if (aborted) throw req.signal?.reason;
    const gateRow = res[1]?.rows[0] as Raw;
    let seen = res[2]?.rows[0] as Raw;
    if (gateRow.gate === 'mismatch' || seen.mismatch === 't') throw mismatch(req);
    if (seen.fence === null && req.nowait) return undefined;
    if (seen.fence === null) {
      // The head of the queue, and its weight does not fit: wait for units to come back. A look
      // counts only if it was taken while this head was already heard (listening and watching):
      // a release between an earlier look and the watch would go unheard. Under contention the
      // listener is open before the first look (see `early` above), which saves a round trip per
      // hand-off; otherwise watch now and look again.
      const keepAlive = Math.max(1, Math.floor(req.leaseMs / 3));
      let fresh = unwatch !== undefined;
      if (!fresh) {
        unwatch = listener.watch(gate, heard);
        await sleep(listener.ready(), deadline, req.signal, (w) => (wake = w));
      }
      // Its session ending (terminated, the network) wakes it too: the next look fails with the
      // connection loss, and the caller waits again on another connection.
      conn.onDeath(heard);
      for (;;) {
        if (aborted) throw req.signal?.reason;
        if (deadline !== undefined && performance.now() >= deadline) throw timedOut();
        if (!fresh) {
          woken = false;
          try {
            seen = (await run(look))[0]?.rows[0] as Raw;
          } catch (err) {
            if (aborted) throw req.signal?.reason;
            throw err;
          }
          if (seen.mismatch === 't') throw mismatch(req);
          if (seen.fence !== null) break;
        }
        fresh = false;
        if (woken) continue;
        const next = seen.next_ms === null ? keepAlive : Math.max(1, Number(seen.next_ms) + 1);
        await sleep(undefined, deadline, req.signal, (w) => (wake = w), Math.min(next, keepAlive));
        wake = undefined;
      }
    }
    await run('COMMIT');
    ok = true;
    return new RowPermit(ctx, host, conn, req, token, gate, listener.channel, Number(seen.fence));
  } finally {
    req.signal?.removeEventListener('abort', onAbort);
    unwatch?.();
    // ROLLBACK (by done) leaves the queue and passes the gate on; a cancelled connection is
    // destroyed, never reused.
    if (!ok) await conn.done(aborted);
  }
}

/**
 * Waits until `p` settles, `ms` pass, the deadline passes, the signal aborts, or `wake` is
 * called (never rejects).
 */
function sleep(
  p: Promise<unknown> | undefined,
  deadline: number | undefined,
  signal: AbortSignal | undefined,
  setWake: (wake: () => void) => void,
  ms?: number,
): Promise<void> {
  return new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    setWake(done);
    if (signal?.aborted) return done();
    const limits: number[] = [];
    if (ms !== undefined) limits.push(ms);
    if (deadline !== undefined) limits.push(Math.max(0, deadline - performance.now()));
    if (limits.length > 0) timer = setTimeout(done, Math.min(2_147_483_647, ...limits));
    p?.then(done, done);
  });
}

/**
 * @internal a semaphore permit: its holder row, renewed and deleted on the connection it kept.
 *
 * @example
 * ```ts
 * const permit = new RowPermit(ctx, host, conn, request, token, gate, channel, fence);
 * await permit.release(); // DELETE + NOTIFY: the head of the queue looks again
 * ```
 */
export class RowPermit extends HeldPermit {
  readonly #ctx: PgContext;
  readonly #req: PermitRequest;
  readonly #token: string;
  readonly #gate: string;
  readonly #channel: string;
  #deleted = false;

  constructor(
    ctx: PgContext,
    host: PermitHost,
    conn: Conn,
    req: PermitRequest,
    token: string,
    gate: string,
    channel: string,
    fence: number,
  ) {
    super(host, conn, req, fence, req.leaseMs);
    this.#ctx = ctx;
    this.#req = req;
    this.#token = token;
    this.#gate = gate;
    this.#channel = channel;
  }

  #mine(): string {
    return `${poolWhere(this.#req)} AND token = ${lit(this.#token)}`;
  }

  /** Pushes the row's expiry, only while it has not expired (server clock). */
  protected async renewOnce(ms: number): Promise<boolean> {
    const r = await this.conn.query(
      `UPDATE ${table(this.#ctx)} SET expires_at = clock_timestamp() + ${settingMs(ms)} * interval '1 millisecond' WHERE ${this.#mine()} AND expires_at > clock_timestamp() RETURNING fence`,
    );
    return (r[0]?.rowCount ?? 0) > 0;
  }

  /** Deletes the row and wakes the pool's head: true when the row had not expired. */
  protected async releaseOnce(): Promise<boolean> {
    const r = await this.conn.query(this.#deleteSql());
    this.#deleted = true;
    return (r[0]?.rows[0] as Raw | undefined)?.held === 't';
  }

  #deleteSql(): string {
    return `WITH d AS (DELETE FROM ${table(this.#ctx)} WHERE ${this.#mine()} RETURNING expires_at > clock_timestamp() AS live) SELECT coalesce((SELECT bool_or(live) FROM d), false) AS held, pg_notify(${lit(this.#channel)}, ${lit(this.#gate)}) AS n`;
  }

  /** A lost permit's row is deleted too (it may not have expired yet), then the connection returned. */
  protected async cleanUp(): Promise<void> {
    if (!this.#deleted) {
      this.#deleted = true;
      const sql = this.#deleteSql();
      try {
        if (this.conn.dead === undefined) await this.conn.query(sql);
        else await this.#ctx.pool.query(sql);
      } catch {
        // Best effort: the row expires on its own within leaseMs.
      }
    }
    await this.conn.done();
  }
}

/**
 * @internal the units of a semaphore pool held now by unexpired holder rows (server clock).
 *
 * @example
 * ```ts
 * await rowPermitsHeld(ctx, 'semaphore', 'payments'); // 3
 * ```
 */
export async function rowPermitsHeld(ctx: PgContext, kind: string, name: string): Promise<number> {
  try {
    const r = await ctx.pool.query({
      text: `SELECT coalesce(sum(weight), 0) AS n FROM ${table(ctx)} WHERE ${poolWhere({ kind, name })} AND expires_at > clock_timestamp()`,
    });
    return Number((r.rows[0] as { n: string }).n);
  } catch (err) {
    if ((err as { code?: string }).code === '42P01' || (err as { code?: string }).code === '3F000')
      return 0;
    throw classify(err, `reading ${permitName(kind, name)}`);
  }
}
