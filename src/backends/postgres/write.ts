/**
 * The write path: a batch dispatched by shape (single statement, combined patch, general
 * transaction) and retried from scratch while nothing was written.
 */
import { BackendError } from '../../errors.js';
import type { DocWrite, WriteResult } from '../../store/backend.js';
import { batch } from './batch.js';
import type { Combiner } from './combine.js';
import type { PgContext } from './context.js';
import { backoff, fromDriver, RetryBatch, unknownOutcome } from './errors.js';
import { ensure } from './migrations.js';
import { docId } from './rows.js';
import { fastWrite } from './single-statement.js';
import { sqlState } from './sql.js';

/**
 * @internal one batch, by shape: a single statement where possible, a single-document patch
 * through the combiner, else the general transaction; retried from scratch while nothing was
 * written (missing table, deadlock, serialization failure, a row that appeared meanwhile).
 *
 * @example
 * ```ts
 * const result = await write(ctx, combiner, writes);
 * ```
 */
export async function write(
  ctx: PgContext,
  combiner: Combiner,
  writes: readonly DocWrite[],
): Promise<WriteResult> {
  const models = new Set(writes.map((w) => w.model));
  for (let attempt = 0; ; attempt++) {
    try {
      let fast: WriteResult | undefined;
      try {
        fast = await fastWrite(ctx, writes);
      } catch (err) {
        // A single autocommit statement: if the connection dropped after it was sent, it may
        // have committed.
        const unknown = unknownOutcome(err);
        if (unknown) throw unknown;
        throw err;
      }
      if (fast) {
        // The row moved without the combiner: what it remembers is stale.
        combiner.forget(docId(writes[0]?.model ?? '', writes[0]?.key ?? ''));
        return fast;
      }
      if (writes.length === 1 && writes[0]?.kind === 'patch') {
        return await combiner.combine(writes[0]);
      }
      for (const w of writes) combiner.forget(docId(w.model, w.key));
      const conn = await ctx.connect();
      try {
        return await batch(ctx, conn, writes, undefined);
      } finally {
        await conn.done();
      }
    } catch (err) {
      const state = sqlState(err);
      if ((state === '42P01' || state === '3F000') && attempt < 3) {
        await ensure(ctx, models, err);
        continue;
      }
      // Nothing was written in all of these cases: retry the batch from scratch.
      if ((err instanceof RetryBatch || state === '40P01' || state === '40001') && attempt < 8) {
        await backoff(attempt);
        continue;
      }
      if (err instanceof RetryBatch) {
        throw new BackendError('write kept racing with concurrent creates; retry it', {
          cause: err,
        });
      }
      throw fromDriver(err, 'writing');
    }
  }
}
