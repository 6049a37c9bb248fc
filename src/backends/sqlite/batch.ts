/**
 * A batch inside one write transaction: the touched rows are loaded into a scratch copy of the
 * memory backend's documents, the batch is evaluated there by the memory backend's evaluator
 * (`../memory/batch.ts`: the reference semantics of every op, guard, refusal and field version,
 * shared rather than copied), and an accepted plan is written back row by row.
 *
 * A post-check that returns a Promise cannot run inside the transaction (nothing of Lockstep's
 * holds a transaction across an await): the transaction is rolled back, the checks are awaited,
 * and a later transaction installs the very same plan only if every touched row is still at the
 * version and incarnation it was evaluated on ({@link stillCurrent}); else the batch is evaluated
 * again.
 *
 * @example
 * ```ts
 * const { docs, plan } = evaluateBatch(ctx, writes, undefined);
 * if (!plan.pending && !plan.refusal) persist(ctx, docs, plan);
 * ```
 */

import type { DocWrite, WriteResult } from '../../store/backend.js';
import { type CommitContext, evaluate, install, type Plan } from '../memory/batch.js';
import { Documents } from '../memory/documents.js';
import type { SqliteContext } from './context.js';
import { encodeEntry, entryOf } from './rows.js';

/** The memory evaluator's documents, holding only the rows a batch touches. */
class Scratch extends Documents {
  readonly #ctx: SqliteContext;
  constructor(ctx: SqliteContext) {
    super();
    this.#ctx = ctx;
  }
  override newIncarnation(): string {
    return this.#ctx.newIncarnation();
  }
}

/** An evaluated batch and the scratch documents it was evaluated on. */
export interface Evaluated {
  readonly docs: Documents;
  readonly plan: Plan;
}

/** Loads the rows `writes` touch (inside the transaction) and evaluates the batch on them. */
export function evaluateBatch(
  ctx: SqliteContext,
  writes: readonly DocWrite[],
  commit: CommitContext | undefined,
): Evaluated {
  const docs = new Scratch(ctx);
  const select = ctx.statements.selectDoc;
  for (const w of writes) {
    const table = docs.table(w.model);
    if (table.has(w.key)) continue;
    const row = select.get(w.model, w.key);
    if (row !== undefined) table.set(w.key, entryOf(row));
  }
  return { docs, plan: evaluate(docs, writes, commit) };
}

/** The distinct documents of a batch, in first-appearance order (the order of a plan's slots). */
function distinct(writes: readonly DocWrite[]): Array<readonly [string, string]> {
  if (writes.length === 1) {
    const w = writes[0] as DocWrite;
    return [[w.model, w.key]];
  }
  const seen = new Set<string>();
  const out: Array<readonly [string, string]> = [];
  for (const w of writes) {
    const id = `${w.model}\u0000${w.key}`; // model names hold no NUL: unambiguous
    if (seen.has(id)) continue;
    seen.add(id);
    out.push([w.model, w.key]);
  }
  return out;
}

/** True when every row the plan was evaluated on is still at that version and incarnation. */
export function stillCurrent(ctx: SqliteContext, writes: readonly DocWrite[], plan: Plan): boolean {
  const select = ctx.statements.selectDoc;
  const ids = distinct(writes);
  for (let i = 0; i < plan.slots.length; i++) {
    const s = plan.slots[i] as Plan['slots'][number];
    const [model, key] = ids[i] as readonly [string, string];
    const row = select.get(model, key);
    if (s.base === undefined) {
      if (row !== undefined) return false;
    } else if (
      row === undefined ||
      row.version !== s.baseVersion ||
      row.incarnation !== s.base.incarnation
    ) {
      return false;
    }
  }
  return true;
}

/** Installs an accepted plan on its scratch documents and writes every touched row back. */
export function persist(ctx: SqliteContext, writes: readonly DocWrite[], e: Evaluated): void {
  const { upsertDoc, deleteDoc } = ctx.statements;
  install(e.plan);
  for (const [model, key] of distinct(writes)) {
    const entry = e.docs.get(model, key);
    if (entry === undefined) {
      deleteDoc.run(model, key);
    } else {
      const [data, fv] = encodeEntry(entry);
      upsertDoc.run(model, key, entry.version, data, entry.replacedAt, fv, entry.incarnation);
    }
  }
}

/** The applied result of an accepted plan. */
export function appliedResult(plan: Plan): WriteResult {
  return { applied: true, docs: plan.docs, results: plan.results };
}
