/**
 * Rate limits on PostgreSQL: a limit key is a row of `lockstep$limits` (a token bucket's tokens,
 * or a sliding window's running sum and latest time) and a sliding window's entries are rows of
 * `lockstep$limit_entries` (at most `limit` per key). `lockstep$consume(...)`, a PL/pgSQL
 * function, locks the key's row, reads `clock_timestamp()` (the server's clock, after the lock),
 * trims the entries that left the window, decides, and records. With a batch it runs in the
 * batch's transaction (BEGIN; consume; the batch; COMMIT), so both happen or neither.
 *
 * Idle keys: a key's row carries `expires_at` (ms, server clock: the latest entry + windowMs, or
 * when the bucket is full again). Expired rows are removed by a bounded sweep: the recording
 * calls themselves (1 in 16 deletes up to 8 expired rows) and, in each process, a timer set for
 * the latest expiry this process produced, which deletes every expired row and then stops.
 */
import type { QueryResult } from 'pg';
import { BackendError, LockTimeoutError } from '../../errors.js';
import type {
  Admission,
  ConsumeResult,
  Consumption,
  DocWrite,
  LimitRef,
  WriteOptions,
  WriteResult,
} from '../../store/backend.js';
import { batch } from './batch.js';
import type { PgContext } from './context.js';
import { backoff, fromDriver, RetryBatch, unknownOutcome } from './errors.js';
import { type ExpirySweep, ttlOf } from './expiry.js';
import { ensure, migrate } from './migrations.js';
import { ident, lit, sqlState } from './sql.js';

/** The rate-limit tables' and function's names (`$`: apart from every model table). */
export const LIMITS_TABLE = 'lockstep$limits';
export const ENTRIES_TABLE = 'lockstep$limit_entries';
export const CONSUME_FN = 'lockstep$consume';

/** What the expiry sweep calls the rate-limit tables (no model has this name). */
export const LIMITS = '$limits';

/**
 * The idempotent DDL of the rate-limit tables and the consume function of `schema`.
 *
 * @example
 * ```ts
 * await client.query(rateLimitDdl('lockstep'));
 * ```
 */
export function rateLimitDdl(schema: string): string {
  const s = ident(schema);
  const L = `${s}.${ident(LIMITS_TABLE)}`;
  const E = `${s}.${ident(ENTRIES_TABLE)}`;
  return `CREATE TABLE IF NOT EXISTS ${L} (
  id bigserial PRIMARY KEY,
  name text NOT NULL,
  algo text NOT NULL,
  key text COLLATE "C" NOT NULL,
  used bigint NOT NULL DEFAULT 0,
  last float8 NOT NULL DEFAULT 0,
  tokens float8 NOT NULL DEFAULT 0,
  expires_at float8 NOT NULL DEFAULT 0,
  UNIQUE (name, algo, key)
);
CREATE INDEX IF NOT EXISTS ${ident(`${LIMITS_TABLE}_expiry`)} ON ${L} (expires_at);
CREATE TABLE IF NOT EXISTS ${E} (
  limit_id bigint NOT NULL,
  at float8 NOT NULL,
  cost bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS ${ident(`${ENTRIES_TABLE}_at`)} ON ${E} (limit_id, at);
CREATE OR REPLACE FUNCTION ${s}.${ident(CONSUME_FN)}(
  p_name text, p_algo text, p_key text, p_limit bigint, p_window float8, p_cost bigint,
  p_record boolean,
  OUT allowed boolean, OUT avail float8, OUT retry_ms bigint, OUT reset_rec bigint,
  OUT reset_now bigint)
LANGUAGE plpgsql AS $lockstep$
DECLARE
  r ${L}%ROWTYPE;
  v_now float8;
  v_used bigint := 0;
  v_trimmed bigint := 0;
  v_tokens float8;
  v_after float8;
  v_need bigint;
  v_at float8;
BEGIN
  SELECT * INTO r FROM ${L} WHERE name = p_name AND algo = p_algo AND key = p_key FOR UPDATE;
  IF NOT FOUND AND p_record THEN
    INSERT INTO ${L} (name, algo, key, tokens) VALUES (p_name, p_algo, p_key, p_limit)
      ON CONFLICT DO NOTHING;
    SELECT * INTO r FROM ${L} WHERE name = p_name AND algo = p_algo AND key = p_key FOR UPDATE;
  END IF;
  -- The server's clock, read once the key is locked, never before the key's latest entry.
  v_now := extract(epoch FROM clock_timestamp()) * 1000;
  IF r.id IS NOT NULL AND r.last > v_now THEN v_now := r.last; END IF;
  retry_ms := 0;
  IF p_algo = 'token-bucket' THEN
    IF r.id IS NULL OR r.last = 0 THEN v_tokens := p_limit;
    ELSE v_tokens := least(p_limit, r.tokens + (v_now - r.last) * p_limit / p_window);
    END IF;
    avail := v_tokens;
    allowed := p_cost <= v_tokens + 1e-9;
    v_after := greatest(0, v_tokens - p_cost);
    IF NOT allowed THEN
      retry_ms := greatest(1, ceil((p_cost - v_tokens) * p_window / p_limit - 1e-9));
    END IF;
    reset_now := greatest(0, ceil((p_limit - v_tokens) * p_window / p_limit - 1e-9));
    reset_rec := greatest(0, ceil((p_limit - v_after) * p_window / p_limit - 1e-9));
    IF allowed AND p_record THEN
      UPDATE ${L} SET tokens = v_after, last = v_now,
        expires_at = v_now + (p_limit - v_after) * p_window / p_limit WHERE id = r.id;
    END IF;
  ELSE
    IF r.id IS NOT NULL AND r.used > 0 THEN
      WITH d AS (DELETE FROM ${E} WHERE limit_id = r.id AND at <= v_now - p_window RETURNING cost)
        SELECT coalesce(sum(cost), 0) INTO v_trimmed FROM d;
      v_used := r.used - v_trimmed;
    END IF;
    avail := p_limit - v_used;
    allowed := p_cost <= avail;
    IF NOT allowed THEN
      v_need := v_used + p_cost - p_limit;
      SELECT x.at INTO v_at FROM (
        SELECT e.at, sum(e.cost) OVER (ORDER BY e.at ROWS UNBOUNDED PRECEDING) AS s
        FROM ${E} e WHERE e.limit_id = r.id) x
      WHERE x.s >= v_need ORDER BY x.at LIMIT 1;
      retry_ms := greatest(1, ceil(coalesce(v_at + p_window - v_now, p_window) - 1e-9));
    END IF;
    reset_rec := ceil(p_window);
    reset_now := CASE WHEN v_used > 0 THEN greatest(0, ceil(r.last + p_window - v_now - 1e-9)) ELSE 0 END;
    IF allowed AND p_record THEN
      INSERT INTO ${E} (limit_id, at, cost) VALUES (r.id, v_now, p_cost);
      UPDATE ${L} SET used = v_used + p_cost, last = v_now, expires_at = v_now + p_window
        WHERE id = r.id;
    ELSIF v_trimmed > 0 THEN
      UPDATE ${L} SET used = v_used WHERE id = r.id;
    END IF;
  END IF;
  -- The bounded sweep of the writes themselves.
  IF p_record AND allowed AND random() < 0.0625 THEN
    WITH d AS (
      DELETE FROM ${L} WHERE id IN (
        SELECT id FROM ${L} WHERE expires_at <= v_now AND id <> r.id
        ORDER BY expires_at LIMIT 8 FOR UPDATE SKIP LOCKED)
      RETURNING id)
    DELETE FROM ${E} WHERE limit_id IN (SELECT id FROM d);
  END IF;
END
$lockstep$`;
}

/** One consumption as SQL (a row of the function's result). */
function call(ctx: PgContext, c: Consumption): string {
  return `SELECT * FROM ${ident(ctx.schema)}.${ident(CONSUME_FN)}(${lit(c.name)}, ${lit(c.algorithm)}, ${lit(c.key)}, ${c.limit}, ${c.windowMs}, ${c.cost}, ${c.record})`;
}

/** The function's row: [allowed, avail, retry_ms, reset_rec, reset_now]. */
function admission(
  row: Record<string, string | null> | undefined,
  c: Consumption,
  recorded: boolean,
): Admission {
  if (!row) throw new BackendError('rate limit: the consume function returned no row');
  const allowed = row.allowed === 't' || row.allowed === 'true';
  const avail = Number(row.avail);
  return {
    allowed,
    remaining: Math.floor((recorded ? avail - c.cost : avail) + 1e-9),
    retryAfterMs: Number(row.retry_ms),
    resetMs: Number(recorded ? row.reset_rec : row.reset_now),
  };
}

/**
 * Deletes up to 1000 expired rate-limit rows (and their entries); how many it deleted.
 *
 * @example
 * ```ts
 * while ((await sweepLimits(ctx)) === 1000) {}
 * ```
 */
export async function sweepLimits(ctx: PgContext): Promise<number> {
  const s = ident(ctx.schema);
  const L = `${s}.${ident(LIMITS_TABLE)}`;
  const E = `${s}.${ident(ENTRIES_TABLE)}`;
  const r = await ctx.pool.query(
    `WITH d AS (DELETE FROM ${L} WHERE id IN (SELECT id FROM ${L} WHERE expires_at <= extract(epoch FROM clock_timestamp()) * 1000 ORDER BY expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING id), e AS (DELETE FROM ${E} WHERE limit_id IN (SELECT id FROM d)) SELECT count(*) AS n FROM d`,
  );
  return Number((r.rows[0] as { n: string }).n);
}

/**
 * Consumptions (and a batch) in one transaction, or one autocommit statement for a lone
 * consumption without writes. Retried from scratch only while nothing can have been written
 * (missing objects, deadlock, serialization failure, a row that appeared meanwhile).
 *
 * @example
 * ```ts
 * const { admissions, write } = await consume(ctx, sweep, consumptions, writes);
 * ```
 */
export async function consume(
  ctx: PgContext,
  sweep: ExpirySweep,
  cs: readonly Consumption[],
  writes: readonly DocWrite[],
  options?: WriteOptions,
): Promise<ConsumeResult> {
  ctx.checkOpen();
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await once(ctx, cs, writes, options);
      for (const c of cs) if (c.record && r.write?.applied) sweep.touched(LIMITS, c.windowMs);
      for (const w of writes) {
        const ttl = ttlOf(w);
        if (ttl !== undefined && r.write?.applied) sweep.touched(w.model, ttl);
      }
      return r;
    } catch (err) {
      const state = sqlState(err);
      if ((state === '42P01' || state === '3F000' || state === '42883') && attempt < 3) {
        if (writes.length > 0) await ensure(ctx, new Set(writes.map((w) => w.model)), err);
        else await ensureLimits(ctx, err);
        continue;
      }
      if ((err instanceof RetryBatch || state === '40P01' || state === '40001') && attempt < 8) {
        await backoff(attempt);
        continue;
      }
      if (state === '55P03' && options?.timeoutMs !== undefined) {
        throw new LockTimeoutError(
          writes.map((w) => `${w.model} ${JSON.stringify(w.key)}`).join(', '),
          options.timeoutMs,
        );
      }
      throw fromDriver(err, 'consuming a rate limit');
    }
  }
}

async function once(
  ctx: PgContext,
  cs: readonly Consumption[],
  writes: readonly DocWrite[],
  options: WriteOptions | undefined,
): Promise<ConsumeResult> {
  options?.signal?.throwIfAborted();
  if (writes.length === 0 && cs.length === 1) {
    const c = cs[0] as Consumption;
    let res: QueryResult;
    try {
      res = await ctx.pool.query({
        text: `SELECT * FROM ${ident(ctx.schema)}.${ident(CONSUME_FN)}($1, $2, $3, $4, $5, $6, $7)`,
        values: [c.name, c.algorithm, c.key, c.limit, c.windowMs, c.cost, c.record],
        types: { getTypeParser: () => (v: string) => v } as never,
        ...ctx.named('consume', '$limits'),
      });
    } catch (err) {
      const unknown = c.record ? unknownOutcome(err) : undefined;
      if (unknown) throw unknown;
      throw err;
    }
    const row = res.rows[0] as Record<string, string | null> | undefined;
    const a = admission(row, c, false);
    const recorded = c.record && a.allowed;
    return {
      admissions: [recorded ? admission(row, c, true) : a],
      ...(a.allowed || !c.record ? { write: EMPTY } : {}),
    };
  }
  const conn = await ctx.connect();
  try {
    const timeout =
      options?.timeoutMs !== undefined
        ? `SET LOCAL lock_timeout = ${Math.max(1, Math.ceil(options.timeoutMs))}; `
        : '';
    const res = await conn.query(`BEGIN; ${timeout}${cs.map((c) => call(ctx, c)).join('; ')}`);
    const rows = res.slice(timeout ? 2 : 1).map((r) => r.rows[0] as Record<string, string | null>);
    const seen = cs.map((c, i) => admission(rows[i], c, false));
    const ok = cs.every((c, i) => !c.record || (seen[i] as Admission).allowed);
    if (!ok) {
      await conn.query('ROLLBACK');
      return { admissions: seen };
    }
    let write: WriteResult;
    if (writes.length === 0) {
      try {
        await conn.query('COMMIT');
      } catch (err) {
        throw unknownOutcome(err) ?? err;
      }
      write = EMPTY;
    } else {
      // The batch's own transaction logic, inside this transaction (already begun).
      write = await batch(ctx, conn, writes, undefined, undefined, true);
    }
    return {
      admissions: cs.map((c, i) => admission(rows[i], c, write.applied && c.record)),
      write,
    };
  } finally {
    await conn.done();
  }
}

const EMPTY: WriteResult = { applied: true, docs: [], results: [] };

/**
 * Creates the schema's rate-limit tables and function once per backend instance (concurrent
 * callers share the work), as `ensure` does for model tables.
 */
async function ensureLimits(ctx: PgContext, cause: unknown): Promise<void> {
  if (!ctx.autoMigrate) {
    throw new BackendError(
      `the rate-limit tables of schema ${JSON.stringify(ctx.schema)} do not exist and autoMigrate is false; run migrate() first`,
      { cause },
    );
  }
  let p = ctx.ensuring.get(LIMITS);
  if (!p) {
    p = migrate(ctx, []).finally(() => ctx.ensuring.delete(LIMITS));
    ctx.ensuring.set(LIMITS, p);
  }
  await p;
}

/**
 * Forgets one key: its row and entries.
 *
 * @example
 * ```ts
 * await resetLimit(ctx, { name: 'api', algorithm: 'sliding-window', key: 'ann' });
 * ```
 */
export async function resetLimit(ctx: PgContext, ref: LimitRef): Promise<void> {
  ctx.checkOpen();
  const s = ident(ctx.schema);
  const text = `WITH d AS (DELETE FROM ${s}.${ident(LIMITS_TABLE)} WHERE name = $1 AND algo = $2 AND key = $3 RETURNING id) DELETE FROM ${s}.${ident(ENTRIES_TABLE)} WHERE limit_id IN (SELECT id FROM d)`;
  for (let attempt = 0; ; attempt++) {
    try {
      await ctx.pool.query(text, [ref.name, ref.algorithm, ref.key]);
      return;
    } catch (err) {
      const state = sqlState(err);
      if ((state === '42P01' || state === '3F000') && attempt < 1) {
        await ensureLimits(ctx, err);
        continue;
      }
      throw fromDriver(err, 'resetting a rate limit');
    }
  }
}
