/**
 * A lease's commit: ONE `BEGIN IMMEDIATE` transaction that checks the lease's rows (present,
 * with our token, not expired on the machine's clock: else refused with reason `fence`, nothing
 * written), evaluates and writes the batch (`batch.ts`), and deletes the lease rows, whatever the
 * outcome. A commit is never gated: the lease is what gates plain writers.
 *
 * A batch with an async post-check keeps the lease (still renewing) while the check runs outside
 * the transaction, then installs the plan if the rows did not move, else evaluates again.
 *
 * @example
 * ```ts
 * const result = await commitLease(ctx, lease, writes);
 * ```
 */
import type { DocWrite, WriteResult } from '../../store/backend.js';
import { docName } from '../../store/names.js';
import { type Refusal, refuse } from '../memory/batch.js';
import { appliedResult, type Evaluated, evaluateBatch, persist, stillCurrent } from './batch.js';
import type { SqliteContext } from './context.js';
import type { SqliteLease } from './lease.js';
import { immediate, retryBusy } from './transaction.js';

/** Deletes the lease's rows (inside the transaction). */
function dropRows(ctx: SqliteContext, lease: SqliteLease): void {
  const req = lease.request;
  for (const key of req.keys)
    ctx.statements.deleteLease.run(req.model, key, req.action, lease.token);
}

/** Why the lease no longer holds (inside the transaction), or undefined. */
function fenceRefusal(ctx: SqliteContext, lease: SqliteLease, now: number): Refusal | undefined {
  if (lease.lost) return refuse(0, 'fence', `the lease was lost: ${lease.lostWhy}`);
  const req = lease.request;
  for (const key of req.keys) {
    const row = ctx.statements.leaseExpiry.get(req.model, key, req.action, lease.token);
    if (row === undefined)
      return refuse(0, 'fence', 'another holder took the lease after it expired');
    if (row.expires_at <= now) return refuse(0, 'fence', 'the lease expired before the commit');
  }
  return undefined;
}

/** One synchronous attempt; `checking` when a post-check is async. */
function tryCommit(
  ctx: SqliteContext,
  lease: SqliteLease,
  writes: readonly DocWrite[],
  expected: Evaluated | undefined,
) {
  return immediate<WriteResult | { checking: Evaluated }>(ctx, () => {
    const fenced = fenceRefusal(ctx, lease, Date.now());
    if (fenced) {
      dropRows(ctx, lease);
      return { value: fenced, write: true };
    }
    if (expected && stillCurrent(ctx, writes, expected.plan)) {
      persist(ctx, writes, expected);
      dropRows(ctx, lease);
      return { value: appliedResult(expected.plan), write: true };
    }
    const e = evaluateBatch(ctx, writes, lease);
    if (e.plan.pending !== undefined) return { value: { checking: e }, write: false };
    if (e.plan.refusal) {
      dropRows(ctx, lease);
      return { value: e.plan.refusal, write: true };
    }
    persist(ctx, writes, e);
    dropRows(ctx, lease);
    return { value: appliedResult(e.plan), write: true };
  });
}

/** Commits `writes` under `lease` and ends it (see the file header). */
export async function commitLease(
  ctx: SqliteContext,
  lease: SqliteLease,
  writes: readonly DocWrite[],
): Promise<WriteResult> {
  ctx.checkOpen();
  try {
    return await commitLoop(ctx, lease, writes);
  } catch (err) {
    // a post-check threw, or the database failed: nothing was written; give the keys back
    await lease.release();
    throw err;
  }
}

async function commitLoop(
  ctx: SqliteContext,
  lease: SqliteLease,
  writes: readonly DocWrite[],
): Promise<WriteResult> {
  let expected: Evaluated | undefined;
  for (;;) {
    const out = await retryBusy(ctx, 'commit', () => tryCommit(ctx, lease, writes, expected));
    if ('applied' in out) return out;
    const e = out.checking;
    const pending = e.plan.pending ?? [];
    const outcomes = await Promise.all(pending.map((p) => p.promise));
    for (let i = 0; i < outcomes.length; i++) {
      const issues = outcomes[i];
      if (issues && issues.length > 0) {
        const index = (pending[i] as { index: number }).index;
        const w = writes[index] as DocWrite;
        await lease.release();
        return refuse(
          index,
          'invalid',
          `the post-image of ${docName(w.model, w.key)} fails the schema`,
          issues,
        );
      }
    }
    if (e.plan.refusal) {
      await lease.release();
      return e.plan.refusal;
    }
    expected = e;
  }
}
