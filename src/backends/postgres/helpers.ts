/**
 * Helpers for your own tables: a transaction runner that retries exactly what PostgreSQL says is
 * safe to retry (by SQLSTATE, never by message), and row locking in one canonical order.
 */
import type { Pool, PoolClient } from 'pg';
import { BackendError, ValidationError } from '../../errors.js';
import { ident, isConnectionLoss, sqlState } from './sql.js';

/** Options of {@link transaction}. */
export interface TransactionOptions {
  /** Isolation level (default: the server's, normally read committed). */
  isolation?: 'read committed' | 'repeatable read' | 'serializable';
  /**
   * How many times to retry after a serialization failure (40001) or a deadlock (40P01), each
   * time in a fresh transaction after ROLLBACK (default 5). When attempts run out, the original
   * error is rethrown.
   */
  retries?: number;
  /** `SET LOCAL lock_timeout` for each attempt (milliseconds). */
  lockTimeoutMs?: number;
  /** `SET LOCAL statement_timeout` for each attempt (milliseconds). */
  statementTimeoutMs?: number;
  /** Also retry 55P03 (lock_not_available: NOWAIT or lock_timeout). Default false. */
  retryOnLockNotAvailable?: boolean;
  /** Read-only transaction. */
  readOnly?: boolean;
  /** Stop retrying: rejects with `signal.reason` between attempts. */
  signal?: AbortSignal;
}

/** Clients currently inside a {@link transaction} call (so a nested call never restarts it). */
const inTransaction = new WeakSet<object>();

const ISOLATIONS = new Set(['read committed', 'repeatable read', 'serializable']);

function isPool(x: Pool | PoolClient): x is Pool {
  return typeof (x as PoolClient).release !== 'function';
}

function positiveMs(what: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!(Number.isFinite(v) && v > 0)) {
    throw new ValidationError(`transaction ${what}`, [
      { message: `must be a positive number, got ${v}` },
    ]);
  }
  return Math.min(2_147_483_647, Math.ceil(v));
}

/**
 * Runs `fn(client)` in a transaction and commits. A serialization failure (40001) or a deadlock
 * (40P01) — in `fn` or at COMMIT — rolls back and runs `fn` again in a fresh transaction, after a
 * full-jitter backoff, up to `retries` times; then the original error is rethrown. Any other error
 * rolls back and is rethrown as is. `fn` may run several times: keep side effects out of it.
 *
 * Given a pool, a client is checked out for the call. Given a client that is already inside a
 * `transaction()` call, `fn` simply runs in that transaction (no BEGIN, no retry: the outer call
 * owns the retries). Given a client inside a transaction someone else opened, it refuses.
 *
 * @example
 * ```ts
 * import { transaction } from 'lockstep/postgres';
 * await transaction(pool, async (c) => {
 *   const { rows } = await c.query('SELECT balance FROM accounts WHERE id = $1 FOR UPDATE', [1]);
 *   await c.query('UPDATE accounts SET balance = $2 WHERE id = $1', [1, rows[0].balance - 10]);
 * }, { isolation: 'serializable', retries: 10 });
 * ```
 */
export async function transaction<R>(
  poolOrClient: Pool | PoolClient,
  fn: (client: PoolClient) => Promise<R>,
  options: TransactionOptions = {},
): Promise<R> {
  const retries = options.retries ?? 5;
  if (!(Number.isInteger(retries) && retries >= 0)) {
    throw new ValidationError('transaction retries', [
      { message: `must be a non-negative integer, got ${retries}` },
    ]);
  }
  if (options.isolation !== undefined && !ISOLATIONS.has(options.isolation)) {
    throw new ValidationError('transaction isolation', [
      { message: `must be one of ${[...ISOLATIONS].join(', ')}, got ${String(options.isolation)}` },
    ]);
  }
  const lockTimeout = positiveMs('lockTimeoutMs', options.lockTimeoutMs);
  const statementTimeout = positiveMs('statementTimeoutMs', options.statementTimeoutMs);

  if (!isPool(poolOrClient)) {
    const client = poolOrClient;
    if (inTransaction.has(client)) return fn(client);
    const status = await transactionStatus(client);
    if (status !== 'I') {
      throw new ValidationError('transaction()', [
        {
          message:
            'the client is already inside a transaction opened elsewhere; call fn directly, or pass the pool',
        },
      ]);
    }
  }

  let begin = 'BEGIN';
  if (options.isolation) begin += ` ISOLATION LEVEL ${options.isolation.toUpperCase()}`;
  if (options.readOnly) begin += ' READ ONLY';
  const sets = [begin];
  if (lockTimeout !== undefined) sets.push(`SET LOCAL lock_timeout = ${lockTimeout}`);
  if (statementTimeout !== undefined)
    sets.push(`SET LOCAL statement_timeout = ${statementTimeout}`);
  const beginSql = sets.join('; ');

  for (let attempt = 0; ; attempt++) {
    options.signal?.throwIfAborted();
    const client = isPool(poolOrClient) ? await poolOrClient.connect() : poolOrClient;
    let broken: unknown;
    const onError = (err: unknown) => {
      broken ??= err;
    };
    client.on('error', onError);
    inTransaction.add(client);
    let committing = false;
    try {
      await client.query(beginSql);
      const result = await fn(client);
      committing = true;
      await client.query('COMMIT');
      return result;
    } catch (err) {
      if (isConnectionLoss(err) || broken !== undefined) {
        broken ??= err;
        if (committing) {
          throw new BackendError(
            'the connection dropped during COMMIT; the transaction may or may not have been applied (check before retrying)',
            { cause: err, outcomeUnknown: true },
          );
        }
        throw err;
      }
      try {
        await client.query('ROLLBACK');
      } catch (e) {
        broken ??= e;
      }
      const state = sqlState(err);
      const retryable =
        state === '40001' ||
        state === '40P01' ||
        (state === '55P03' && options.retryOnLockNotAvailable === true);
      if (!retryable || attempt >= retries) throw err;
    } finally {
      inTransaction.delete(client);
      client.removeListener('error', onError);
      if (isPool(poolOrClient)) {
        if (broken !== undefined) client.on('error', () => {});
        (client as PoolClient).release(broken !== undefined ? toError(broken) : undefined);
      }
    }
    // Full jitter: uniform in [0, min(cap, base * 2^attempt)].
    const ms = Math.random() * Math.min(1000, 10 * 2 ** attempt);
    await new Promise((r) => setTimeout(r, ms));
  }
}

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

async function transactionStatus(client: PoolClient): Promise<string> {
  const known = client.getTransactionStatus?.();
  if (known === 'I' || known === 'T' || known === 'E') return known;
  // Older pg: now() is the transaction's start, statement_timestamp() this statement's.
  const r = await client.query<{ in_tx: boolean }>(
    'SELECT now() <> statement_timestamp() AS in_tx',
  );
  return r.rows[0]?.in_tx ? 'T' : 'I';
}

/** A table name, optionally schema-qualified. Names are quoted, never interpolated raw. */
export type TableName = string | { readonly schema?: string; readonly name: string };

/** Options of {@link lockRows}. */
export interface LockRowsOptions {
  /** Row lock strength (default 'update'). */
  mode?: 'update' | 'no key update' | 'share' | 'key share';
  /** Fail at once with SQLSTATE 55P03 when a row is locked. */
  nowait?: boolean;
  /** Skip rows locked by others; the result lists only the rows locked. */
  skipLocked?: boolean;
  /** The key column (default 'id'). */
  column?: string;
}

const MODES = {
  update: 'UPDATE',
  'no key update': 'NO KEY UPDATE',
  share: 'SHARE',
  'key share': 'KEY SHARE',
};

/**
 * Locks rows of your own table in one canonical order (`ORDER BY` the key column), so that two
 * transactions locking overlapping sets can never deadlock each other. Must run inside a
 * transaction (it refuses otherwise: a row lock outside one ends with its statement). Resolves
 * the ids it locked, in lock order (with `skipLocked`, only those it could lock; missing ids are
 * not listed).
 *
 * @example
 * ```ts
 * await transaction(pool, async (c) => {
 *   await lockRows(c, 'accounts', [to, from]); // locked in id order whatever the argument order
 *   await c.query('UPDATE accounts SET balance = balance - $2 WHERE id = $1', [from, 10]);
 *   await c.query('UPDATE accounts SET balance = balance + $2 WHERE id = $1', [to, 10]);
 * });
 * ```
 */
export async function lockRows<Id = unknown>(
  client: PoolClient,
  table: TableName,
  ids: readonly Id[],
  options: LockRowsOptions = {},
): Promise<Id[]> {
  const mode = MODES[options.mode ?? 'update'];
  if (!mode) {
    throw new ValidationError('lockRows mode', [
      { message: `must be one of ${Object.keys(MODES).join(', ')}` },
    ]);
  }
  if (options.nowait && options.skipLocked) {
    throw new ValidationError('lockRows', [{ message: 'use nowait or skipLocked, not both' }]);
  }
  if (!Array.isArray(ids)) {
    throw new ValidationError('lockRows ids', [{ message: 'ids must be an array' }]);
  }
  const name = typeof table === 'string' ? { name: table } : table;
  if (typeof name?.name !== 'string' || name.name === '') {
    throw new ValidationError('lockRows table', [{ message: 'give a table name' }]);
  }
  const status = inTransaction.has(client) ? 'T' : await transactionStatus(client);
  if (status !== 'T') {
    throw new ValidationError('lockRows', [
      {
        message:
          status === 'E'
            ? 'the transaction is aborted; roll it back first'
            : 'row locks need a transaction: call it inside transaction(pool, fn) or after BEGIN',
      },
    ]);
  }
  if (ids.length === 0) return [];
  const col = ident(options.column ?? 'id');
  const qualified =
    name.schema !== undefined ? `${ident(name.schema)}.${ident(name.name)}` : ident(name.name);
  const wait = options.nowait ? ' NOWAIT' : options.skipLocked ? ' SKIP LOCKED' : '';
  const r = await client.query<{ id: Id }>(
    `SELECT ${col} AS id FROM ${qualified} WHERE ${col} = ANY($1) ORDER BY ${col} FOR ${mode}${wait}`,
    [ids],
  );
  return r.rows.map((row) => row.id);
}
