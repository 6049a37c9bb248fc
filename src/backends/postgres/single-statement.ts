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
import { jsonbProblem, sqlState } from './sql.js';

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
    if (w.kind === 'create') {
      let incarnation: string;
      try {
        const created = await run({
          ...ctx.named('create', w.model),
          text: `INSERT INTO ${t} (key, version, data, data_version) VALUES ($1, 1, $2::jsonb, 1) RETURNING incarnation`,
          values: [w.key, text],
          types: RAW,
        });
        incarnation = String((created.rows[0] as Raw).incarnation);
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
      text: `INSERT INTO ${t} AS t (key, version, data, data_version) VALUES ($1, 1, $2::jsonb, 1)
ON CONFLICT (key) DO UPDATE SET version = t.version + 1, data = EXCLUDED.data,
data_version = t.version + 1, field_versions = '{}'::jsonb, updated_at = now()
RETURNING version, incarnation`,
      values: [w.key, text],
      types: RAW,
    });
    const version = Number((r.rows[0] as Raw).version);
    const incarnation = String((r.rows[0] as Raw).incarnation);
    return { applied: true, docs: [{ key: w.key, version, data, incarnation }], results: [[]] };
  }
  if (w.kind === 'delete' && w.expectVersion === undefined) {
    const r = await run({
      ...ctx.named('delete', w.model),
      text: `DELETE FROM ${t} WHERE key = $1`,
      values: [w.key],
      types: RAW,
    });
    return { applied: true, docs: [undefined], results: [[(r.rowCount ?? 0) > 0]] };
  }
  return undefined;
}
