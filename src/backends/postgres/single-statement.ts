/**
 * Single-statement writes, ONE autocommit round trip: a create, a put, an unconditional delete,
 * or a simple set/unset patch (see `patch-sql.ts`).
 */
import type { QueryConfig, QueryResult } from 'pg';
import type { DocWrite, WriteResult } from '../../store/backend.js';
import type { PgContext } from './context.js';
import { simplePatchResult, simplePatchSql } from './patch-sql.js';
import { copyData, refuse } from './planner.js';
import { RAW, type Raw } from './rows.js';
import { FENCE_SEQUENCE, ident, jsonbProblem, LIVE, sqlState } from './sql.js';

/** Runs one statement: on any pooled connection, or on one the caller checked out. */
export type Run = (config: QueryConfig) => Promise<QueryResult>;

/**
 * Single-statement writes: one create, one put, one unconditional delete, or a simple patch.
 * Each is ONE autocommit statement: it waits for a row lock (a default-action exclusive lease)
 * like any UPDATE/DELETE, and its reply is its outcome; a lost reply is the caller's to report
 * as unknown (`unknownOutcome`), never as not written.
 *
 * @example
 * ```ts
 * const r = await fastWrite(ctx, writes); // undefined: not a single-statement shape
 * ```
 */
export async function fastWrite(
  ctx: PgContext,
  writes: readonly DocWrite[],
  run: Run = (c) => ctx.pool.query(c),
): Promise<WriteResult | undefined> {
  if (writes.length !== 1) return undefined;
  const w = writes[0] as DocWrite;
  const t = ctx.table(w.model);
  const simple = simplePatchSql(ctx, w, undefined);
  if (simple) {
    const r = await run({ text: simple, types: RAW });
    return simplePatchResult(ctx, w, r.rows as Raw[]);
  }
  if (w.kind === 'create' || w.kind === 'put') {
    const data = copyData(w.data);
    if (typeof data === 'string') return refuse('invalid', 0, data);
    const text = JSON.stringify(data);
    const problem = jsonbProblem(text);
    if (problem) return refuse('invalid', 0, problem);
    const seq = `nextval('${ident(ctx.schema)}.${ident(FENCE_SEQUENCE)}')`;
    // $3: the TTL in ms, or NULL (no expiry).
    const expires = `clock_timestamp() + interval '1 millisecond' * $3::float8`;
    const live = LIVE.replace(/expires_at/g, 't.expires_at');
    if (w.kind === 'create') {
      let incarnation: string;
      try {
        // A row whose document expired is replaced by the new life; a live one refuses.
        const created = await run({
          ...ctx.named('create', w.model),
          text: `INSERT INTO ${t} AS t (key, version, data, data_version, expires_at) VALUES ($1, 1, $2::jsonb, 1, ${expires})
ON CONFLICT (key) DO UPDATE SET version = 1, data = EXCLUDED.data, data_version = 1,
field_versions = '{}'::jsonb, created_at = now(), updated_at = now(), incarnation = ${seq},
expires_at = EXCLUDED.expires_at WHERE NOT ${live}
RETURNING incarnation`,
          values: [w.key, text, w.ttlMs ?? null],
          types: RAW,
        });
        const row = created.rows[0] as Raw | undefined;
        if (!row) return refuse('exists', 0);
        incarnation = String(row.incarnation);
      } catch (err) {
        if (sqlState(err) === '23505') return refuse('exists', 0);
        throw err;
      }
      return {
        applied: true,
        docs: [{ key: w.key, version: 1, data, incarnation }],
        results: [[]],
      };
    }
    const r = await run({
      ...ctx.named('put', w.model),
      text: `INSERT INTO ${t} AS t (key, version, data, data_version, expires_at) VALUES ($1, 1, $2::jsonb, 1, ${expires})
ON CONFLICT (key) DO UPDATE SET version = CASE WHEN ${live} THEN t.version + 1 ELSE 1 END,
data = EXCLUDED.data, data_version = CASE WHEN ${live} THEN t.version + 1 ELSE 1 END,
field_versions = '{}'::jsonb, updated_at = now(),
created_at = CASE WHEN ${live} THEN t.created_at ELSE now() END,
incarnation = CASE WHEN ${live} THEN t.incarnation ELSE ${seq} END,
expires_at = EXCLUDED.expires_at
RETURNING version, incarnation`,
      values: [w.key, text, w.ttlMs ?? null],
      types: RAW,
    });
    const version = Number((r.rows[0] as Raw).version);
    const incarnation = String((r.rows[0] as Raw).incarnation);
    return { applied: true, docs: [{ key: w.key, version, data, incarnation }], results: [[]] };
  }
  if (w.kind === 'delete' && w.expectVersion === undefined) {
    const r = await run({
      ...ctx.named('delete', w.model),
      text: `DELETE FROM ${t} WHERE key = $1 RETURNING ${LIVE} AS live`,
      values: [w.key],
      types: RAW,
    });
    const existed = (r.rows[0] as Raw | undefined)?.live === 't';
    return { applied: true, docs: [undefined], results: [[existed]] };
  }
  return undefined;
}
