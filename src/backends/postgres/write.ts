/**
 * The write path: a batch dispatched by shape (single statement, combined patch, general
 * transaction) and retried from scratch while nothing was written; a batch given `timeoutMs` or
 * `signal` waits for row locks (default-action exclusive leases) only that long.
 */
import { BackendError, LockTimeoutError } from '../../errors.js';
import type { DocWrite, WriteOptions, WriteResult } from '../../store/backend.js';
import { batch } from './batch.js';
import { cancelBackend } from './cancel.js';
import type { Combiner } from './combine.js';
import type { Conn } from './conn.js';
import type { PgContext } from './context.js';
import { backoff, fromDriver, RetryBatch, unknownOutcome } from './errors.js';
import { ensure } from './migrations.js';
import { DEFAULT_ACTION, docId, lockName } from './rows.js';
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
  options?: WriteOptions,
): Promise<WriteResult> {
  const models = new Set(writes.map((w) => w.model));
  const giveUp =
    options !== undefined && (options.timeoutMs !== undefined || options.signal !== undefined)
      ? new GiveUp(ctx, writes, options)
      : undefined;
  try {
    return await attempts(ctx, combiner, writes, models, giveUp);
  } finally {
    giveUp?.dispose();
  }
}

async function attempts(
  ctx: PgContext,
  combiner: Combiner,
  writes: readonly DocWrite[],
  models: Set<string>,
  giveUp: GiveUp | undefined,
): Promise<WriteResult> {
  for (let attempt = 0; ; attempt++) {
    try {
      if (giveUp) return await boundedAttempt(ctx, combiner, writes, giveUp);
      let fast: WriteResult | undefined;
      try {
        fast = await fastWrite(ctx, writes);
      } catch (err) {
        // Outcome: a single autocommit statement (create, put, delete, a set/unset patch — the
        // one `update` sends as its compare-and-set): if the connection dropped after it was
        // sent, it may have committed, so outcomeUnknown; a refused connection sent nothing.
        // A reply is exact: applied with its row, or zero rows (nothing written).
        const unknown = unknownOutcome(err);
        if (unknown) throw unknown;
        throw err;
      }
      if (fast) {
        // The row moved without the combiner: what it remembers is stale.
        combiner.forget(docId(writes[0]?.model ?? '', writes[0]?.key ?? ''));
        return fast;
      }
      if (writes.length === 1 && writes[0]?.kind === 'patch' && writes[0].ttlMs === undefined) {
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

/**
 * One attempt of a write bounded by `timeoutMs`/`signal`, on a connection of its own (not through
 * the combiner, whose group may serve callers with other bounds): the same single statement or
 * general transaction, and when the bound passes while it runs, its statement is cancelled.
 *
 * Outcome: a cancelled statement (57014) rolled back — an autocommit statement commits only when
 * it completes, and a cancel that fails a statement of the final message skips its COMMIT — so
 * nothing was written and the caller gets LockTimeoutError or `signal.reason`. A statement that
 * completed although the cancel was sent reports its success as it is. The connection a cancel
 * was sent for is destroyed, so a late cancel cannot hit a later query.
 */
async function boundedAttempt(
  ctx: PgContext,
  combiner: Combiner,
  writes: readonly DocWrite[],
  giveUp: GiveUp,
): Promise<WriteResult> {
  giveUp.throwIfDone();
  const conn = await ctx.connect();
  giveUp.watch(conn);
  try {
    let fast: WriteResult | undefined;
    try {
      fast = await fastWrite(ctx, writes, (c) => conn.client.query(c));
    } catch (err) {
      const unknown = unknownOutcome(err);
      if (unknown) throw unknown;
      throw err;
    }
    for (const w of writes) combiner.forget(docId(w.model, w.key));
    if (fast) return fast;
    return await batch(ctx, conn, writes, undefined);
  } catch (err) {
    if (giveUp.reason !== undefined && sqlState(err) === '57014') throw giveUp.reason;
    throw err;
  } finally {
    await conn.done(giveUp.unwatch());
  }
}

/** The bound of one write: a timer at `timeoutMs` and the caller's signal; cancels the statement. */
class GiveUp {
  reason: unknown;
  readonly #ctx: PgContext;
  readonly #signal: AbortSignal | undefined;
  readonly #timer: NodeJS.Timeout | undefined;
  readonly #onAbort: () => void;
  #conn: Conn | undefined;
  #cancelled = false;

  constructor(ctx: PgContext, writes: readonly DocWrite[], options: WriteOptions) {
    this.#ctx = ctx;
    this.#signal = options.signal;
    const started = performance.now();
    this.#onAbort = () => this.#fire(options.signal?.reason);
    if (this.#signal?.aborted) this.reason = this.#signal.reason;
    else this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
    if (options.timeoutMs !== undefined) {
      const name = writes.map((w) => lockName(w.model, [w.key], DEFAULT_ACTION)).join(', ');
      this.#timer = setTimeout(
        () => this.#fire(new LockTimeoutError(name, performance.now() - started)),
        Math.min(2_147_483_647, Math.max(0, options.timeoutMs)),
      );
    }
  }

  throwIfDone(): void {
    if (this.reason !== undefined) throw this.reason;
  }

  /** The attempt runs on `conn`: a bound passing now cancels its statement. */
  watch(conn: Conn): void {
    this.#conn = conn;
    this.#cancelled = false;
    if (this.reason !== undefined) this.#cancel();
  }

  /** The attempt ended; true when a cancel was sent for its connection (destroy it). */
  unwatch(): boolean {
    this.#conn = undefined;
    return this.#cancelled;
  }

  dispose(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#signal?.removeEventListener('abort', this.#onAbort);
  }

  #fire(reason: unknown): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.#cancel();
  }

  #cancel(): void {
    const conn = this.#conn;
    if (!conn || this.#cancelled) return;
    this.#cancelled = true;
    void cancelBackend(this.#ctx, conn.pid);
  }
}
