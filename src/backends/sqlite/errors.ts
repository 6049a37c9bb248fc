/**
 * SQLite errors: telling "another connection holds the write lock" (retry later, without
 * blocking) from real failures, and wrapping the driver's errors in Lockstep's BackendError.
 *
 * @example
 * ```ts
 * if (isBusy(err)) await backoff.next(); else throw toBackendError(err, 'write');
 * ```
 */
import { BackendError } from '../../errors.js';

/** The driver's error code (`SQLITE_BUSY`, `SQLITE_BUSY_SNAPSHOT`, ...), if any. */
export function sqliteCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * True when the statement failed because another connection holds a lock it needs
 * (SQLITE_BUSY and its extended codes, SQLITE_LOCKED): nothing was done, try again later.
 */
export function isBusy(err: unknown): boolean {
  const code = sqliteCode(err);
  return code !== undefined && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

/** The error of a call on a closed backend. */
export function closedError(): BackendError {
  return new BackendError('the SQLite backend is closed; create a new one with sqlite()');
}

/** A driver error as BackendError (a Lockstep error passes through unchanged). */
export function toBackendError(err: unknown, what: string): Error {
  if (err instanceof BackendError) return err;
  if (
    err instanceof Error &&
    'code' in err &&
    typeof err.code === 'string' &&
    err.code.startsWith('SQLITE')
  ) {
    return new BackendError(`SQLite ${what} failed: ${err.message} (${err.code})`, { cause: err });
  }
  if (err instanceof Error && /database connection is not open/.test(err.message)) {
    return new BackendError(
      `SQLite ${what} failed: the database connection was closed; create a new backend`,
      { cause: err },
    );
  }
  return err instanceof Error ? err : new BackendError(`SQLite ${what} failed: ${String(err)}`);
}
