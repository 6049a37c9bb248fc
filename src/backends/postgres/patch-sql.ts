/**
 * The single-statement patch: a patch of only `set`/`unset` without guards or post-check becomes ONE
 * `UPDATE ... WHERE <version / field checks> RETURNING` (post-image by jsonb `-` and `||`); when it
 * matches no row, `whyRefused` reads why. Several documents under one lease: one message of
 * UPDATEs and a fence check that fails unless every UPDATE matched (the COMMIT is then skipped).
 */

import type { QueryResult } from 'pg';
import { applyOps, copyJson } from '../../store/apply-ops.js';
import type {
  Data,
  DocWrite,
  Json,
  PatchWrite,
  StoredDoc,
  WriteResult,
} from '../../store/backend.js';
import type { Conn } from './conn.js';
import type { PgContext } from './context.js';
import { type Refusal, refuse } from './planner.js';
import { docId, RAW, type Raw } from './rows.js';
import type { WriteScope } from './scope.js';
import { jsonbProblem, LIVE, lit, sqlState } from './sql.js';

/**
 * The one-statement SQL of a lease write: a plain simple patch (`checked: false`), or a checked
 * set/unset patch (what `Model.lock` commits: the schema check rides along, for the fields other
 * writers may have changed meanwhile) checked here on the lease's snapshot with the ops applied,
 * which is its post-image as long as the document did not move; its UPDATE then FAILS (division
 * by zero) when the row is at another version than the snapshot's (`checked: true`: run it inside
 * a savepoint and fall back to the general path on that failure). Undefined when not eligible.
 */
async function leaseWriteSql(
  ctx: PgContext,
  w: DocWrite,
  lease: WriteScope,
): Promise<{ sql: string; checked: boolean } | undefined> {
  if (w.kind !== 'patch' || !w.check) {
    const sql = simplePatchSql(ctx, w, lease);
    return sql === undefined ? undefined : { sql, checked: false };
  }
  if (w.guards && w.guards.length > 0) return undefined;
  const snap = lease.snapshot(w.model, w.key);
  if (!snap || (w.expectVersion !== undefined && w.expectVersion !== snap.version)) {
    return undefined;
  }
  const predicted = applyOps(snap.data, w.ops);
  if (!predicted.ok) return undefined;
  const issues = await w.check(predicted.data);
  if (issues && issues.length > 0) return undefined; // the general path reads and refuses
  const sql = simplePatchSql(ctx, { ...w, check: undefined }, lease, snap.version);
  return sql === undefined ? undefined : { sql, checked: true };
}

/**
 * A lease commit of ONE checked set/unset patch in one round trip while the document has not
 * moved (see {@link leaseWriteSql}): the UPDATE inside a savepoint, then COMMIT, which the
 * UPDATE's failure skips. Resolves undefined, with the lease's transaction intact (rolled back to
 * the savepoint), when the fast path does not apply or the document moved: the caller runs the
 * general (reading) path. A missing row or another incarnation matches nothing and is refused as
 * the simple path refuses it.
 */
export async function checkedSnapshotCommit(
  ctx: PgContext,
  conn: Conn,
  w: DocWrite,
  lease: WriteScope,
): Promise<WriteResult | undefined> {
  const one = w.kind === 'patch' && w.check ? await leaseWriteSql(ctx, w, lease) : undefined;
  if (!one) return undefined;
  let res: QueryResult[];
  try {
    res = await conn.query(
      `SAVEPOINT lockstep_checked; ${one.sql}; ${fenceCheck(ctx, [w], lease.fence)}; COMMIT`,
    );
  } catch (err) {
    if (sqlState(err) !== '22012') throw err;
    // The document moved (the UPDATE failed) or the UPDATE matched no row (the fence check
    // failed): nothing was written. The general path reads and decides.
    await conn.query('ROLLBACK TO SAVEPOINT lockstep_checked');
    return undefined;
  }
  await lease.end();
  return await simplePatchResult(ctx, w, (res[1]?.rows ?? []) as Raw[], lease);
}

/**
 * A statement that fails (division by zero) unless every row of `writes` now carries `fence`,
 * i.e. unless every fenced UPDATE before it in the message matched its row. It stands before the
 * COMMIT of every one-message lease commit: a failed statement skips the COMMIT, so the lease's
 * transaction commits only when everything was written. That is what makes "the transaction
 * committed" (txid_status, after a lost reply: lost-commit.ts) mean "applied"; without it a
 * commit matching no row would commit an empty transaction.
 */
export function fenceCheck(ctx: PgContext, writes: readonly DocWrite[], fence: number): string {
  const first = writes[0] as DocWrite;
  return `SELECT 1 / (count(*)::int / ${writes.length}) AS ok FROM ${ctx.table(first.model)} WHERE key IN (${writes.map((w) => lit(w.key)).join(', ')}) AND fence = ${fence}`;
}

/**
 * A patch made only of `set`/`unset` on distinct fields, without guards or post-check (what
 * `update` and `lock` commit), as ONE `UPDATE ... RETURNING` statement: the version check and
 * the field-level conflict check are in the WHERE clause, the post-image is computed by jsonb
 * `-` and `||` (top-level replace/remove: exactly `set`/`unset`). Undefined when not eligible.
 */
export function simplePatchSql(
  ctx: PgContext,
  w: DocWrite,
  lease: WriteScope | undefined,
  failUnlessVersion?: number,
): string | undefined {
  const fence = lease?.fence;
  if (w.kind !== 'patch' || w.check || (w.guards && w.guards.length > 0)) return undefined;
  if (w.ttlMs !== undefined) return undefined; // the general path writes the expiry
  if (!Array.isArray(w.ops) || w.ops.length === 0 || w.ops.length > 50) return undefined;
  const { expectVersion: ev, fieldsUnchangedSince: since, expectIncarnation: ei } = w;
  if (ev !== undefined && !Number.isSafeInteger(ev)) return undefined;
  // Ours are decimal digits; anything else cannot match (the general path refuses it).
  if (ei !== undefined && !(typeof ei === 'string' && /^[0-9]{1,19}$/.test(ei))) return undefined;
  if (since !== undefined && !Number.isSafeInteger(since)) return undefined;
  const fields = new Set<string>();
  const sets: Array<[string, Json]> = [];
  const unsets: string[] = [];
  for (const op of w.ops) {
    if (typeof op.field !== 'string' || fields.has(op.field)) return undefined;
    fields.add(op.field);
    if (op.op === 'set') {
      let v: Json;
      try {
        v = copyJson(op.value, 'value');
      } catch {
        return undefined; // the general path refuses it with the reference detail
      }
      sets.push([op.field, v]);
    } else if (op.op === 'unset') {
      unsets.push(op.field);
    } else {
      return undefined;
    }
  }
  const setText = JSON.stringify(Object.fromEntries(sets));
  if (jsonbProblem(setText)) return undefined;
  const names = [...fields];
  let data = 'data';
  if (unsets.length > 0) data = `(data - ARRAY[${unsets.map(lit).join(', ')}]::text[])`;
  if (sets.length > 0) data = `${data} || ${lit(setText)}::jsonb`;
  const fv = `field_versions || jsonb_build_object(${names.map((f) => `${lit(f)}, version + 1`).join(', ')})`;
  const where = [`key = ${lit(w.key)}`, LIVE];
  // The row exists at another version: fail the statement (division by zero), do not skip it.
  // (The divisor involves a column: a constant 1 / 0 would be folded, and fail, at planning.)
  if (failUnlessVersion !== undefined) {
    where.push(
      `(CASE WHEN version = ${failUnlessVersion} THEN true ELSE 1 / (version - version) = 1 END)`,
    );
  }
  if (ev !== undefined) where.push(`version = ${ev}`);
  if (ei !== undefined) where.push(`incarnation = ${ei}`);
  if (since !== undefined) {
    where.push(`version >= ${since}`, `data_version <= ${since}`);
    for (const f of names)
      where.push(`coalesce((field_versions->>${lit(f)})::bigint, 0) <= ${since}`);
    const inc = lease?.incarnation(w.model, w.key);
    if (inc !== undefined) where.push(`incarnation = ${inc}`);
  }
  return `UPDATE ${ctx.table(w.model)} SET data = ${data}, version = version + 1, field_versions = ${fv}${fence !== undefined ? `, fence = ${fence}` : ''}, updated_at = now() WHERE ${where.join(' AND ')} RETURNING key, version, data, incarnation`;
}

/** The result of a simple patch statement: applied, or why not (read afterwards). */
export async function simplePatchResult(
  ctx: PgContext,
  w: DocWrite,
  rows: Raw[],
  lease?: WriteScope,
): Promise<WriteResult> {
  const row = rows[0];
  if (row) {
    const data = JSON.parse(row.data as string) as Data;
    const ops = (w as Extract<DocWrite, { kind: 'patch' }>).ops;
    return {
      applied: true,
      docs: [
        { key: w.key, version: Number(row.version), data, incarnation: String(row.incarnation) },
      ],
      results: [ops.map(() => null)],
    };
  }
  return (
    (await whyRefused(ctx, w as PatchWrite, 0, lease)) ??
    refuse('conflict', 0, 'the document changed while the write ran')
  );
}

/**
 * Why a simple patch that matched no row was refused, read afterwards: missing, version, or a
 * field written since `fieldsUnchangedSince`. Undefined when it would apply now.
 *
 * Outcome: only the REASON is read afterwards; that nothing was written is exact (the statement
 * matched no row, or the lease's fence check failed and skipped the COMMIT). When the document
 * moved in between so that no reason is found, the refusal is `conflict` — still not written.
 */
export async function whyRefused(
  ctx: PgContext,
  p: PatchWrite,
  index: number,
  lease?: WriteScope,
): Promise<Refusal | undefined> {
  const r = await ctx.pool.query({
    text: `SELECT version, data_version, field_versions, incarnation FROM ${ctx.table(p.model)} WHERE key = $1 AND ${LIVE}`,
    values: [p.key],
    types: RAW,
  });
  const cur = r.rows[0] as Raw | undefined;
  if (!cur) return refuse('missing', index);
  const version = Number(cur.version);
  if (p.expectVersion !== undefined && version !== p.expectVersion) {
    return refuse('version', index, `expected version ${p.expectVersion}, found ${version}`);
  }
  if (p.expectIncarnation !== undefined && String(cur.incarnation) !== p.expectIncarnation) {
    return refuse('version', index, 'the document was deleted and created again since it was read');
  }
  const since = p.fieldsUnchangedSince;
  if (since !== undefined) {
    if (version < since) {
      return refuse('conflict', index, `it was deleted and created again since version ${since}`);
    }
    const inc = lease?.incarnation(p.model, p.key);
    if (inc !== undefined && Number(cur.incarnation) !== inc) {
      return refuse('conflict', index, 'it was deleted and created again since it was read');
    }
    const fv = JSON.parse(cur.field_versions as string) as Record<string, number>;
    for (const op of p.ops) {
      const last = Math.max(Number(cur.data_version), fv[op.field] ?? 0);
      if (last > since) {
        return refuse(
          'conflict',
          index,
          `field ${JSON.stringify(op.field)} was written at version ${last}, after version ${since}`,
        );
      }
    }
  }
  return undefined;
}

/**
 * A lease commit of set/unset patches on several documents in ONE round trip: one message of one
 * `UPDATE` per document (checks in their WHERE clauses), a check that fails (division by zero)
 * unless every row now carries the lease's fence, and COMMIT, which the failure skips. Checked
 * patches (lock commits) are checked on the lease's snapshots first ({@link leaseWriteSql}).
 */
export async function multiSimpleCommit(
  ctx: PgContext,
  conn: Conn,
  writes: readonly DocWrite[],
  lease: WriteScope,
): Promise<WriteResult | undefined> {
  if (writes.length < 2 || writes.length > 50) return undefined;
  const ids = new Set(writes.map((w) => docId(w.model, w.key)));
  if (ids.size !== writes.length || writes.some((w) => !lease.covers(w.model, w.key))) {
    return undefined;
  }
  const parts: string[] = [];
  let checked = false;
  for (const w of writes) {
    const part = await leaseWriteSql(ctx, w, lease);
    if (!part) return undefined;
    parts.push(part.sql);
    checked ||= part.checked;
  }
  // The UPDATEs as separate statements of one message, then a check that fails (division by
  // zero) unless every row now carries this lease's fence (unique: drawn from the fence sequence
  // for this lease alone, and a lease commits once), i.e. unless every UPDATE matched. A failed
  // statement skips the rest of the message, COMMIT included; the transaction is rolled back.
  // (Several statements cost the server far less than one statement of data-modifying CTEs.)
  const check = fenceCheck(ctx, writes, lease.fence);
  // Checked writes (see leaseWriteSql) run inside a savepoint: when one of their documents moved,
  // the lease's transaction is rolled back to it and the general path checks the merges.
  const sql = `${checked ? 'SAVEPOINT lockstep_checked; ' : ''}${parts.join('; ')}; ${check}; COMMIT`;
  let rows: Raw[];
  try {
    const res = await conn.query(sql);
    rows = writes.map((_, i) => res[checked ? i + 1 : i]?.rows[0] as Raw);
  } catch (err) {
    if (sqlState(err) !== '22012') throw err;
    if (checked) {
      await conn.query('ROLLBACK TO SAVEPOINT lockstep_checked');
      return undefined;
    }
    rows = [];
  }
  await lease.end();
  if (rows.length === writes.length) {
    const docs: StoredDoc[] = [];
    for (const [i, r] of rows.entries()) {
      docs[i] = {
        key: r.key as string,
        version: Number(r.version),
        data: JSON.parse(r.data as string) as Data,
        incarnation: String(r.incarnation),
      };
    }
    return {
      applied: true,
      docs,
      results: writes.map((w) => (w as PatchWrite).ops.map(() => null)),
    };
  }
  for (let i = 0; i < writes.length; i++) {
    const why = await whyRefused(ctx, writes[i] as PatchWrite, i, lease);
    if (why) return why;
  }
  return refuse('conflict', 0, 'a document changed while the commit ran');
}
