/**
 * Every error Lockstep throws on purpose extends {@link LockstepError} and carries a stable
 * `code`, so callers can branch on `err.code` without parsing messages.
 *
 * @example
 * ```ts
 * import { LockstepError } from 'lockstep';
 * try {
 *   await mutex.acquire({ timeoutMs: 50 });
 * } catch (err) {
 *   if (err instanceof LockstepError && err.code === 'LOCK_TIMEOUT') retryLater();
 * }
 * ```
 */

/** The stable codes, one per error class. */
export type LockstepErrorCode =
  | 'LOCK_TIMEOUT'
  | 'LOCK_BUSY'
  | 'DEADLOCK'
  | 'LEASE_LOST'
  | 'CONFLICT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'INVALID'
  | 'BACKEND';

/** Base class of every Lockstep error. `code` is stable across versions. */
export class LockstepError extends Error {
  readonly code: LockstepErrorCode;
  constructor(code: LockstepErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A waiter gave up after `timeoutMs`. Nothing was acquired and nothing stays queued. */
export class LockTimeoutError extends LockstepError {
  /** The lock (or key list) that was waited for. */
  readonly lock: string;
  /** How long the waiter waited, in milliseconds. */
  readonly waitedMs: number;
  constructor(lock: string, waitedMs: number) {
    super(
      'LOCK_TIMEOUT',
      `timed out after ${Math.round(waitedMs)} ms waiting for ${lock}; raise timeoutMs, or shorten the work done while holding it`,
    );
    this.lock = lock;
    this.waitedMs = waitedMs;
  }
}

/** The lock was held and the caller asked not to wait (`nowait`). */
export class LockBusyError extends LockstepError {
  readonly lock: string;
  constructor(lock: string) {
    super(
      'LOCK_BUSY',
      `${lock} is held by someone else and nowait was set; try again later or wait for it`,
    );
    this.lock = lock;
  }
}

/**
 * Waiting would close a wait-for cycle (or re-enter a held exclusive lock). `cycle` names the
 * locks involved, in wait order. Take several keys in one call (canonical order) to avoid it.
 */
export class DeadlockError extends LockstepError {
  readonly cycle: readonly string[];
  constructor(cycle: readonly string[], detail?: string) {
    super(
      'DEADLOCK',
      `${detail ?? 'deadlock detected'}: ${cycle.join(' -> ')}; take all keys in one acquire call so they are locked in one canonical order`,
    );
    this.cycle = cycle;
  }
}

/**
 * The lease expired or was taken over before the commit; nothing was written (for a document
 * lock). A named lock's `run` says instead what its callback did: it ran, without the lock at
 * the end.
 */
export class LeaseLostError extends LockstepError {
  readonly lock: string;
  constructor(lock: string, detail?: string, outcome = 'nothing was written') {
    super(
      'LEASE_LOST',
      `lease on ${lock} was lost${detail ? ` (${detail})` : ''}; ${outcome}. Raise leaseMs or keep the critical section shorter`,
    );
    this.lock = lock;
  }
}

/** Optimistic retries ran out, or a field changed under a lock since it was read. */
export class ConflictError extends LockstepError {
  readonly key: string;
  constructor(key: string, detail: string) {
    super('CONFLICT', `conflict on ${key}: ${detail}`);
    this.key = key;
  }
}

/** The document does not exist. */
export class NotFoundError extends LockstepError {
  readonly key: string;
  constructor(model: string, key: string) {
    super('NOT_FOUND', `${model} ${JSON.stringify(key)} does not exist; create it first`);
    this.key = key;
  }
}

/** A create hit an existing key (the uniqueness constraint). */
export class AlreadyExistsError extends LockstepError {
  readonly key: string;
  constructor(model: string, key: string) {
    super(
      'ALREADY_EXISTS',
      `${model} ${JSON.stringify(key)} already exists; use put() to overwrite or update() to change it`,
    );
    this.key = key;
  }
}

/** One problem found by validation (the Standard Schema issue shape). */
export interface ValidationIssue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
}

/** Data failed the model's schema (or the input was malformed); nothing was written. */
export class ValidationError extends LockstepError {
  readonly issues: readonly ValidationIssue[];
  constructor(what: string, issues: readonly ValidationIssue[]) {
    const first = issues
      .slice(0, 3)
      .map((i) => {
        const path = (i.path ?? [])
          .map((p) => String(typeof p === 'object' && p !== null ? p.key : p))
          .join('.');
        return path ? `${path}: ${i.message}` : i.message;
      })
      .join('; ');
    super(
      'INVALID',
      `${what} is invalid: ${first}${issues.length > 3 ? ` (+${issues.length - 3} more)` : ''}; nothing was written`,
    );
    this.issues = issues;
  }
}

/**
 * The backend (Redis, PostgreSQL) failed: connection lost, timeout, server error. `cause` is the
 * driver's error. When `outcomeUnknown` is true the write may or may not have been applied
 * (the connection dropped after sending it); read before retrying.
 */
export class BackendError extends LockstepError {
  readonly outcomeUnknown: boolean;
  constructor(message: string, options: { cause?: unknown; outcomeUnknown?: boolean } = {}) {
    super('BACKEND', message, { cause: options.cause });
    this.outcomeUnknown = options.outcomeUnknown ?? false;
  }
}
