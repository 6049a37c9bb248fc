/**
 * Committing a lease: the lease's writes inside its transaction, by shape (one set/unset patch
 * in ONE round trip, a checked one on the lease's snapshot, several documents in one message, or
 * the general batch), fenced, field-checked, and released whatever the outcome. A lost reply is
 * settled by `lost-commit.ts`.
 */
import type { DocWrite, WriteResult } from '../../store/backend.js';
import { batch } from './batch.js';
import type { Combiner } from './combine.js';
import type { Conn } from './conn.js';
import type { PgContext } from './context.js';
import { fromDriver } from './errors.js';
import type { PgLease } from './lease.js';
import { resolveLostCommit } from './lost-commit.js';
import {
  checkedSnapshotCommit,
  fenceCheck,
  multiSimpleCommit,
  simplePatchResult,
  simplePatchSql,
} from './patch-sql.js';
import { docId, type Raw } from './rows.js';
import { isConnectionLoss, sqlState } from './sql.js';

/**
 * @internal a lease's commit: its writes in its transaction, then COMMIT; the lease is released
 * whatever the outcome.
 *
 * @example
 * ```ts
 * const result = await commitLease(ctx, combiner, lease, conn, writes);
 * ```
 */
export async function commitLease(
  ctx: PgContext,
  combiner: Combiner,
  lease: PgLease,
  conn: Conn,
  writes: readonly DocWrite[],
): Promise<WriteResult> {
  let planned: (WriteResult & { applied: true }) | undefined;
  try {
    for (const w of writes) combiner.forget(docId(w.model, w.key));
    const simple =
      writes.length === 1 && lease.covers(writes[0]?.model ?? '', writes[0]?.key ?? '')
        ? simplePatchSql(ctx, writes[0] as DocWrite, lease)
        : undefined;
    if (simple) {
      // One round trip: the UPDATE, the fence check (fails unless the UPDATE matched, which skips
      // the COMMIT: the transaction commits only if the write landed, see fenceCheck), COMMIT.
      // Zero rows: nothing written, then explain. A lost reply is settled below.
      const w = writes[0] as DocWrite;
      let rows: Raw[] = [];
      try {
        const res = await conn.query(`${simple}; ${fenceCheck(ctx, [w], lease.fence)}; COMMIT`);
        rows = (res[0]?.rows ?? []) as Raw[];
      } catch (err) {
        if (sqlState(err) !== '22012') throw err;
      }
      await lease.end();
      return await simplePatchResult(ctx, w, rows, lease);
    }
    if (writes.length === 1) {
      const checked = await checkedSnapshotCommit(ctx, conn, writes[0] as DocWrite, lease);
      if (checked) return checked;
    }
    const multi = await multiSimpleCommit(ctx, conn, writes, lease);
    if (multi) return multi;
    return await batch(ctx, conn, writes, lease, (r) => {
      planned = r;
    });
  } catch (err) {
    // The connection dropped: whatever was sent last may have committed (every path ends in a
    // message holding COMMIT). Never answer "not written" from here without the server's word.
    if (isConnectionLoss(err) || conn.dead !== undefined) {
      return resolveLostCommit(ctx, lease, writes, err, planned);
    }
    throw fromDriver(err, `committing ${lease.name}`);
  } finally {
    await lease.end();
  }
}
