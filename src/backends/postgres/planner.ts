/**
 * The write planner: evaluates a batch in order on the pre-images with the reference semantics
 * (guards, ops, post-checks, versions, field conflicts, incarnations), and either refuses it (with
 * the reason and the index of the write) or gives the SQL of the final rows, in canonical order.
 */
import type { QueryResult } from 'pg';
import {
  applyOps,
  cloneJson,
  copyJson,
  describeGuard,
  firstFalseGuard,
  NotJsonError,
} from '../../store/apply-ops.js';
import type {
  Data,
  DocWrite,
  Json,
  RefusalReason,
  StoredDoc,
  WriteResult,
} from '../../store/backend.js';
import type { PgContext } from './context.js';
import { compareC, docId, type Raw, type Row } from './rows.js';
import type { WriteScope } from './scope.js';
import { expiresAtSql, FENCE_SEQUENCE, ident, jsonbProblem, lit } from './sql.js';

export interface DocState {
  readonly model: string;
  readonly key: string;
  readonly pre: Row | undefined;
  exists: boolean;
  version: number;
  data: Data;
  fieldVersions: Record<string, number>;
  dataVersion: number;
  touched: boolean;
  /** Deleted and created again within the batch. */
  recreated: boolean;
  /** The incarnation as text; undefined once (re)created in this batch (the INSERT assigns it). */
  incarnation: string | undefined;
  /** Docs of this batch waiting for the incarnation the INSERT (or re-create) returns. */
  pending: Array<{ incarnation: string }>;
  /** The expiry to write: a TTL in ms, null for none, undefined to keep the row's. */
  expiry?: number | null;
}

/** A result doc of a batch; its incarnation comes from the INSERT when the batch creates it. */
export function docOf(s: DocState, key: string, data: Data): StoredDoc {
  // Filled in by the INSERT's result when the batch (re)creates the document.
  const doc = { key, version: s.version, data, incarnation: s.incarnation ?? '' };
  if (s.incarnation === undefined) s.pending.push(doc);
  return doc;
}

/** Gives the docs waiting for an incarnation the value their statement returned. */
export function fillIncarnations(
  plan: Extract<Plan, { ok: true }>,
  results: readonly QueryResult[],
): void {
  plan.fill.forEach((docs, i) => {
    const row = results[i]?.rows[0] as Raw | undefined;
    if (!docs || !row) return;
    for (const d of docs) d.incarnation = String(row.incarnation);
  });
}

export type Refusal = Extract<WriteResult, { applied: false }>;

export function refuse(
  reason: RefusalReason,
  index: number,
  detail?: string,
  issues?: Refusal['issues'],
): Refusal {
  return {
    applied: false,
    reason,
    index,
    ...(detail !== undefined ? { detail } : {}),
    ...(issues !== undefined ? { issues } : {}),
  };
}

/** The outcome of evaluating a batch against pre-images: the SQL to run, or a refusal. */
export type Plan =
  | {
      readonly ok: true;
      readonly sql: string[];
      readonly result: WriteResult & { applied: true };
      readonly states: Map<string, DocState>;
      /** Per statement of `sql`: the docs to fill with the incarnation it returns. */
      readonly fill: Array<Array<{ incarnation: string }> | undefined>;
    }
  | { readonly ok: false; readonly refusal: Refusal };

/** Evaluates the writes in order on the pre-images; the SQL of the final rows, or a refusal. */
export async function planWrites(
  ctx: PgContext,
  writes: readonly DocWrite[],
  pre: Map<string, Row | undefined>,
  lease: WriteScope | undefined,
): Promise<Plan> {
  const states = new Map<string, DocState>();
  const docs: Array<StoredDoc | undefined> = [];
  const results: Json[][] = [];
  for (let i = 0; i < writes.length; i++) {
    const w = writes[i] as DocWrite;
    const id = docId(w.model, w.key);
    if (lease && !lease.covers(w.model, w.key)) {
      return {
        ok: false,
        refusal: refuse(
          'invalid',
          i,
          `${w.model} ${JSON.stringify(w.key)} is not held by this lease`,
        ),
      };
    }
    let s = states.get(id);
    if (!s) {
      const stored = pre.get(id);
      // An expired row is no document: a create over it re-creates (the row is replaced).
      const row = stored?.expired ? undefined : stored;
      s = {
        model: w.model,
        key: w.key,
        pre: stored,
        exists: row !== undefined,
        version: row?.version ?? 0,
        data: row?.data ?? {},
        fieldVersions: row ? { ...row.fieldVersions } : {},
        dataVersion: row?.dataVersion ?? 0,
        touched: false,
        recreated: false,
        incarnation: row ? String(row.incarnation) : undefined,
        pending: [],
      };
      states.set(id, s);
    }
    switch (w.kind) {
      case 'create':
      case 'put': {
        if (w.kind === 'create' && s.exists) return { ok: false, refusal: refuse('exists', i) };
        const data = copyData(w.data);
        if (typeof data === 'string') return { ok: false, refusal: refuse('invalid', i, data) };
        if (!s.exists) {
          // A new life: a new incarnation, assigned by the INSERT (or the re-create UPDATE).
          if (s.pre !== undefined) s.recreated = true;
          s.incarnation = undefined;
          s.pending = [];
        }
        s.version = w.kind === 'create' || !s.exists ? 1 : s.version + 1;
        s.exists = true;
        s.data = data;
        s.dataVersion = s.version;
        s.fieldVersions = {};
        s.touched = true;
        s.expiry = w.ttlMs ?? null;
        docs.push(docOf(s, w.key, cloneJson(data)));
        results.push([]);
        break;
      }
      case 'delete': {
        if (!s.exists) {
          if (w.expectVersion !== undefined) return { ok: false, refusal: refuse('missing', i) };
          docs.push(undefined);
          results.push([false]);
          break;
        }
        if (w.expectVersion !== undefined && w.expectVersion !== s.version) {
          return {
            ok: false,
            refusal: refuse(
              'version',
              i,
              `expected version ${w.expectVersion}, found ${s.version}`,
            ),
          };
        }
        s.exists = false;
        s.touched = true;
        s.recreated = false;
        docs.push(undefined);
        results.push([true]);
        break;
      }
      case 'patch': {
        if (!s.exists) return { ok: false, refusal: refuse('missing', i) };
        if (w.expectVersion !== undefined && w.expectVersion !== s.version) {
          return {
            ok: false,
            refusal: refuse(
              'version',
              i,
              `expected version ${w.expectVersion}, found ${s.version}`,
            ),
          };
        }
        if (w.expectIncarnation !== undefined && w.expectIncarnation !== s.incarnation) {
          return {
            ok: false,
            refusal: refuse(
              'version',
              i,
              'the document was deleted and created again since it was read',
            ),
          };
        }
        // Guards are well-formed (the boundary checked them); evaluated on the pre-image read
        // under the row lock in this transaction, so the first false one is exact.
        const guards = w.guards ?? [];
        const falseAt = firstFalseGuard(s.data, guards);
        if (falseAt >= 0) {
          return {
            ok: false,
            refusal: {
              ...refuse(
                'guard',
                i,
                `guard #${falseAt} (${describeGuard(guards[falseAt] as (typeof guards)[number])}) is false`,
              ),
              guard: falseAt,
            },
          };
        }
        if (w.fieldsUnchangedSince !== undefined) {
          const since = w.fieldsUnchangedSince;
          if (typeof since !== 'number' || !Number.isSafeInteger(since)) {
            return {
              ok: false,
              refusal: refuse(
                'invalid',
                i,
                `fieldsUnchangedSince must be an integer, got ${String(since)}`,
              ),
            };
          }
          if (s.version < since) {
            return {
              ok: false,
              refusal: refuse(
                'conflict',
                i,
                `it was deleted and created again since version ${since}`,
              ),
            };
          }
          const readAs = lease?.incarnation(w.model, w.key);
          if (readAs !== undefined && (s.pre?.incarnation !== readAs || s.recreated)) {
            return {
              ok: false,
              refusal: refuse('conflict', i, 'it was deleted and created again since it was read'),
            };
          }

          for (const op of w.ops) {
            const last = Math.max(s.dataVersion, s.fieldVersions[op.field] ?? 0);
            if (last > w.fieldsUnchangedSince) {
              return {
                ok: false,
                refusal: refuse(
                  'conflict',
                  i,
                  `field ${JSON.stringify(op.field)} was written at version ${last}, after version ${w.fieldsUnchangedSince}`,
                ),
              };
            }
          }
        }
        const applied = applyOps(s.data, w.ops);
        if (!applied.ok) return { ok: false, refusal: refuse('invalid', i, applied.detail) };
        if (w.check) {
          let issues = w.check(applied.data);
          if (issues instanceof Promise) issues = await issues;
          if (issues && issues.length > 0) {
            return {
              ok: false,
              refusal: refuse('invalid', i, 'the document after the ops fails the schema', issues),
            };
          }
        }
        if (w.ttlMs !== undefined) {
          // The expiry moves (even without ops).
          s.expiry = w.ttlMs;
          s.touched = true;
        }
        if (w.ops.length === 0) {
          // No ops: nothing is written and the version does not move (the checks above held).
          docs.push(docOf(s, w.key, cloneJson(s.data)));
          results.push([]);
          break;
        }
        s.version += 1;
        for (const op of w.ops) s.fieldVersions[op.field] = s.version;
        s.data = applied.data;
        s.touched = true;
        docs.push(docOf(s, w.key, cloneJson(applied.data)));
        results.push(applied.results);
        break;
      }
      default: {
        const kind = (w as { kind?: unknown }).kind;
        return {
          ok: false,
          refusal: refuse('invalid', i, `unknown write kind ${JSON.stringify(kind)}`),
        };
      }
    }
  }
  // The final rows, in canonical order.
  const sql: string[] = [];
  const fill: Array<Array<{ incarnation: string }> | undefined> = [];
  const fence = lease ? String(lease.fence) : undefined;
  const ordered = [...states.values()].sort((a, b) =>
    a.model < b.model ? -1 : a.model > b.model ? 1 : compareC(a.key, b.key),
  );
  for (const s of ordered) {
    if (!s.touched) continue;
    const t = ctx.table(s.model);
    const k = lit(s.key);
    if (!s.exists) {
      if (s.pre) {
        sql.push(`DELETE FROM ${t} WHERE key = ${k}`);
        fill.push(undefined);
      }
      continue;
    }
    const text = JSON.stringify(s.data);
    const problem = jsonbProblem(text);
    if (problem) {
      const i = writes.findIndex((w) => w.model === s.model && w.key === s.key);
      return { ok: false, refusal: refuse('invalid', Math.max(0, i), problem) };
    }
    const data = `${lit(text)}::jsonb`;
    const fv = `${lit(JSON.stringify(s.fieldVersions))}::jsonb`;
    const expiry = s.expiry === undefined ? '' : `, expires_at = ${expiresAtSql(s.expiry)}`;
    if (s.pre) {
      sql.push(
        `UPDATE ${t} SET version = ${s.version}, data = ${data}, field_versions = ${fv}, data_version = ${s.dataVersion}${fence ? `, fence = ${fence}` : ''}, updated_at = now()${s.recreated ? `, created_at = now(), incarnation = nextval('${ident(ctx.schema)}.${ident(FENCE_SEQUENCE)}')` : ''}${expiry} WHERE key = ${k} RETURNING incarnation`,
      );
      fill.push(s.pending.length > 0 ? s.pending : undefined);
    } else {
      sql.push(
        `INSERT INTO ${t} (key, version, fence, data, field_versions, data_version, expires_at) VALUES (${k}, ${s.version}, ${fence ?? 0}, ${data}, ${fv}, ${s.dataVersion}, ${expiresAtSql(s.expiry ?? null)}) RETURNING incarnation`,
      );
      fill.push(s.pending);
    }
  }
  return { ok: true, sql, result: { applied: true, docs, results }, states, fill };
}

export function copyData(data: Data): Data | string {
  try {
    const c = copyJson(data, 'data');
    if (c === null || typeof c !== 'object' || Array.isArray(c)) return 'data must be an object';
    return c as Data;
  } catch (err) {
    if (err instanceof NotJsonError) return err.message;
    throw err;
  }
}
