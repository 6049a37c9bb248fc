/**
 * The general write transaction: lock every touched row in canonical order (model, then key in
 * "C" order), evaluate the batch on the pre-images (see `planner.ts`), then write and COMMIT, or
 * ROLLBACK. Inside a lease it runs in the lease's transaction and stamps the lease's fence.
 */
import { BackendError } from '../../errors.js';
import type { DocWrite, WriteResult } from '../../store/backend.js';
import { type Conn, toError } from './conn.js';
import type { PgContext } from './context.js';
import { RetryBatch } from './errors.js';
import { fillIncarnations, planWrites, refuse } from './planner.js';
import { docId, parseRow, type Raw, type Row } from './rows.js';
import type { WriteScope } from './scope.js';
import { COLUMNS, isConnectionLoss, lit, sqlState } from './sql.js';

/**
 * The general batch: lock the touched rows in canonical order, evaluate every write on the
 * pre-images in JavaScript (reference semantics), then write and COMMIT, or ROLLBACK.
 * With a lease, runs inside the lease's transaction and stamps the lease's fence.
 */
export async function batch(
  ctx: PgContext,
  conn: Conn,
  writes: readonly DocWrite[],
  lease: WriteScope | undefined,
  onPlanned?: (result: WriteResult & { applied: true }) => void,
  /** The transaction is already open (rate-limit consumptions ran in it): send no BEGIN. */
  begun = false,
): Promise<WriteResult> {
  // The documents touched, and which of them must be (re)read under a row lock.
  const pre = new Map<string, Row | undefined>();
  const need = new Map<string, Set<string>>();
  for (const w of writes) {
    const id = docId(w.model, w.key);
    if (pre.has(id) || need.get(w.model)?.has(w.key)) continue;
    const known = lease?.lockedRow(w.model, w.key);
    if (known) {
      pre.set(id, known);
    } else {
      let s = need.get(w.model);
      if (!s) need.set(w.model, (s = new Set()));
      s.add(w.key);
    }
  }
  const selects = [...need.keys()]
    .sort()
    .map(
      (m) =>
        `SELECT ${COLUMNS} FROM ${ctx.table(m)} WHERE key IN (${[...(need.get(m) as Set<string>)]
          .map(lit)
          .join(', ')}) ORDER BY key FOR NO KEY UPDATE`,
    );
  if (!lease || selects.length > 0) {
    const res = await conn.query((lease || begun ? '' : 'BEGIN; ') + selects.join('; '));
    const offset = lease || begun ? 0 : 1;
    const sortedModels = [...need.keys()].sort();
    sortedModels.forEach((m, i) => {
      const rows = (res[offset + i]?.rows ?? []) as Raw[];
      const byKey = new Map(rows.map((r) => [r.key as string, parseRow(r)]));
      for (const k of need.get(m) as Set<string>) pre.set(docId(m, k), byKey.get(k));
    });
  }
  const plan = await planWrites(ctx, writes, pre, lease);
  if (!plan.ok) {
    if (lease) await lease.end();
    else await conn.query('ROLLBACK');
    return plan.refusal;
  }
  // The result is known before the final message is sent: a lease commit whose reply is lost
  // reports it once the server says the transaction committed (lost-commit.ts).
  onPlanned?.(plan.result);
  try {
    fillIncarnations(plan, await conn.query([...plan.sql, 'COMMIT'].join('; ')));
  } catch (err) {
    const state = sqlState(err);
    if (state === '23505') {
      // A document missing at read time was created meanwhile.
      await conn.query('ROLLBACK').catch(() => {});
      if (!lease) throw new RetryBatch('a row appeared');
      const i = writes.findIndex((w) => w.kind === 'create' && !pre.get(docId(w.model, w.key)));
      return i >= 0
        ? refuse('exists', i)
        : refuse('conflict', 0, 'the document was created by someone else meanwhile');
    }
    if (state === '22P02' || state === '22P05' || state === '54000') {
      await conn.query('ROLLBACK').catch(() => {});
      return refuse('invalid', 0, `PostgreSQL refused the data: ${toError(err).message}`);
    }
    // Outcome: this message ends with COMMIT. A lost reply may hide a COMMIT that ran: a plain
    // write says outcomeUnknown; a lease commit rethrows, and commit.ts settles it exactly by the
    // lease transaction's status (every statement here matches its row-locked row or fails, so
    // "committed" means every write landed). Any statement error skipped the COMMIT: not written.
    if (!lease && (isConnectionLoss(err) || conn.dead !== undefined)) {
      throw new BackendError(
        `lost the PostgreSQL connection while committing a write; it may or may not have been applied (read before retrying): ${toError(err).message}`,
        { cause: err, outcomeUnknown: true },
      );
    }
    throw err;
  }
  return plan.result;
}
