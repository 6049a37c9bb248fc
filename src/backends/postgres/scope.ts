/**
 * What a write runs in ({@link WriteScope}): a plain write runs in no scope, a lease's commit in
 * the lease's transaction. The write paths (batch, patch SQL, planner) see only this interface,
 * never the lease class, so they do not depend on how leases are taken or committed.
 */
import type { StoredDoc } from '../../store/backend.js';
import type { Row } from './rows.js';

/**
 * The lease transaction a commit runs in, as the write paths see it.
 *
 * @example
 * ```ts
 * if (scope.covers(w.model, w.key)) sql = simplePatchSql(ctx, w, scope);
 * ```
 */
export interface WriteScope {
  /** The lease's fencing token: every row the commit writes carries it. */
  readonly fence: number;
  /** The lease holds `key` of `model`. */
  covers(model: string, key: string): boolean;
  /**
   * The row as read, and row-locked, when the lease was taken (exclusive leases of the default
   * action): nobody can have written it since, so it is the pre-image. Undefined otherwise.
   */
  lockedRow(model: string, key: string): Row | undefined;
  /** The incarnation of `key` when the lease read it (undefined when missing or not covered). */
  incarnation(model: string, key: string): number | undefined;
  /** The document as the lease read it (undefined when missing or not covered). */
  snapshot(model: string, key: string): StoredDoc | undefined;
  /** Ends the lease's transaction (ROLLBACK unless it committed) and returns its connection. */
  end(): Promise<void>;
}
