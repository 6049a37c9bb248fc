/**
 * Write transactions that never block the event loop: `BEGIN IMMEDIATE` (the write lock is taken
 * up front, so a transaction never meets SQLITE_BUSY_SNAPSHOT halfway, as a deferred one that
 * read first would), run synchronously, then COMMIT. With `busy_timeout = 0` a transaction that
 * meets another connection's write lock fails at once; {@link retryBusy} tries it again after a
 * short, growing, asynchronous pause (0.5 ms up to 16 ms), for `busyTimeoutMs` at most.
 *
 * Nothing of Lockstep's holds a transaction across an `await`: every transaction is one
 * synchronous step, so another process waits for the write lock only while a statement runs.
 *
 * @example
 * ```ts
 * const out = immediate(ctx, () => ({ value: 1, write: true })); // 1, or BUSY
 * const value = await retryBusy(ctx, 'write', () => immediate(ctx, work), bound);
 * ```
 */
import { BackendError, LockTimeoutError } from '../../errors.js';
import type { SqliteContext } from './context.js';
import { closedError, isBusy } from './errors.js';
import type { Cancel } from './wakeups.js';

/** Another connection holds the write lock: nothing was done. */
export const BUSY: unique symbol = Symbol('busy');
export type Busy = typeof BUSY;

/** What a transaction body returns: its value, and whether to COMMIT (else ROLLBACK). */
export interface TxOutcome<T> {
  readonly value: T;
  readonly write: boolean;
}

/**
 * Runs `body` in one `BEGIN IMMEDIATE` transaction, synchronously: its value, or {@link BUSY}
 * when the write lock was taken (nothing done). Whatever `body` throws rolls back and rethrows.
 */
export function immediate<T>(ctx: SqliteContext, body: () => TxOutcome<T>): T | Busy {
  const st = ctx.statements;
  try {
    st.begin.run();
  } catch (err) {
    if (isBusy(err)) return BUSY;
    throw err;
  }
  let out: TxOutcome<T>;
  try {
    out = body();
  } catch (err) {
    rollback(ctx);
    if (isBusy(err)) return BUSY;
    throw err;
  }
  if (!out.write) {
    rollback(ctx);
    return out.value;
  }
  try {
    st.commit.run();
  } catch (err) {
    rollback(ctx);
    if (isBusy(err)) return BUSY;
    throw err;
  }
  ctx.afterCommit();
  return out.value;
}

function rollback(ctx: SqliteContext): void {
  if (ctx.db.inTransaction) {
    try {
      ctx.statements.rollback.run();
    } catch {
      // the transaction is already gone
    }
  }
}

/** How a busy retry is bounded: the caller's lock wait, if any, else `busyTimeoutMs`. */
export interface BusyBound {
  /** Machine clock ms: give up with LockTimeoutError(`lock`) at this moment. */
  readonly deadline?: number | undefined;
  readonly started?: number;
  readonly lock?: string;
  readonly signal?: AbortSignal | undefined;
}

/**
 * Calls `attempt` until it returns something other than {@link BUSY}, pausing asynchronously
 * between tries; fails with LockTimeoutError at the bound's deadline, with BackendError after
 * `busyTimeoutMs`, with `signal.reason` on abort, or with closedError when the backend closes.
 */
export async function retryBusy<T>(
  ctx: SqliteContext,
  what: string,
  attempt: () => T | Busy,
  bound: BusyBound = {},
): Promise<T> {
  const first = attempt();
  if (first !== BUSY) return first;
  const started = Date.now();
  let pause = 0.5;
  for (;;) {
    const now = Date.now();
    if (bound.deadline !== undefined && now >= bound.deadline) {
      throw new LockTimeoutError(bound.lock ?? what, now - (bound.started ?? started));
    }
    if (now - started >= ctx.settings.busyTimeoutMs) {
      throw new BackendError(
        `SQLite ${what}: another connection held the database's write lock for over ${ctx.settings.busyTimeoutMs} ms; end long transactions on this file, or raise busyTimeoutMs`,
      );
    }
    let ms = pause * (0.5 + Math.random());
    if (bound.deadline !== undefined) ms = Math.min(ms, Math.max(0, bound.deadline - now));
    await sleep(ms, bound.signal, ctx.cancels);
    if (ctx.closed) throw closedError();
    pause = Math.min(16, pause * 2);
    const out = attempt();
    if (out !== BUSY) return out;
  }
}

/** Waits `ms`; rejects with `signal.reason` on abort or with what close() cancels with. */
function sleep(ms: number, signal: AbortSignal | undefined, cancels: Set<Cancel>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const end = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      cancels.delete(onCancel);
    };
    const onAbort = () => {
      end();
      reject(signal?.reason);
    };
    const onCancel: Cancel = (error) => {
      end();
      reject(error);
    };
    const timer = setTimeout(() => {
      end();
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
    cancels.add(onCancel);
  });
}
