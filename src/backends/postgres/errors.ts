/**
 * Error classification by SQLSTATE (walking `.cause`), and the retry policy for errors after which
 * nothing was written (deadlock 40P01, serialization failure 40001, a row that appeared meanwhile).
 */
import { BackendError, DeadlockError, LockBusyError, LockstepError } from '../../errors.js';
import { toError } from './conn.js';
import { isConnectionLoss, sqlState } from './sql.js';

/** Thrown inside a batch when the caller should retry it from scratch (a row appeared meanwhile). */
export class RetryBatch extends Error {}

/**
 * `classify` for errors that came from the driver; anything else (a post-check that threw, a
 * caller's bug) is rethrown exactly as it was, as the memory backend does.
 */
export function fromDriver(err: unknown, what: string): unknown {
  if (sqlState(err) === undefined && !isConnectionLoss(err)) return err;
  return classify(err, what);
}

/**
 * For an error thrown by a single autocommit statement: when the connection dropped after the
 * statement was sent (not a refused connection), it may have committed, so the caller gets a
 * BackendError with `outcomeUnknown`. Undefined for every other error.
 */
export function unknownOutcome(err: unknown): BackendError | undefined {
  const code = (err as { code?: unknown }).code;
  if (!isConnectionLoss(err) || code === 'ECONNREFUSED' || code === 'ENOTFOUND') return undefined;
  return new BackendError(
    `lost the PostgreSQL connection during a write; it may or may not have been applied (read before retrying): ${toError(err).message}`,
    { cause: err, outcomeUnknown: true },
  );
}

export async function backoff(attempt: number): Promise<void> {
  const ms = Math.random() * Math.min(100, 2 ** attempt);
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * Maps a driver error to a Lockstep error by SQLSTATE (walking `.cause`): 40P01 → DeadlockError,
 * 55P03 → LockBusyError, connection loss → BackendError; anything else → BackendError with the
 * driver's error as `cause`. (23505 becomes AlreadyExistsError where the key is known: a create
 * is refused with reason `exists`.) Lockstep errors pass through unchanged.
 *
 * @example
 * ```ts
 * try { await client.query(sql); } catch (err) { throw classify(err, 'moving stock'); }
 * ```
 */
export function classify(err: unknown, what: string): Error {
  if (err instanceof LockstepError) return err;
  const state = sqlState(err);
  if (state === '40P01') return new DeadlockError([what], 'PostgreSQL detected a deadlock');
  if (state === '55P03') return new LockBusyError(what);
  if (isConnectionLoss(err)) {
    return new BackendError(
      `lost the PostgreSQL connection while ${what}: ${toError(err).message}`,
      {
        cause: err,
      },
    );
  }
  return new BackendError(
    `PostgreSQL failed while ${what}${state ? ` (SQLSTATE ${state})` : ''}: ${toError(err).message}`,
    { cause: err },
  );
}
