/**
 * In-process deadlock detection for PostgreSQL leases: PostgreSQL's lock ids and names in the
 * shared wait-for graph of `src/sync/tracked-leases.ts`.
 *
 * PostgreSQL finds cycles between sessions that wait for each other, but a nested `lock()` waits
 * through JavaScript: the outer holder's session sits idle while its inner lock waits on another
 * session, so no server can see that cycle. Within one process we can: the store runs each
 * `Model.lock` as one task (because this backend says `tracksTasks`), and every lease records
 * what its task holds and waits for there. A wait that would close a cycle fails at once with
 * DeadlockError instead of waiting; cycles through other processes still end at `timeoutMs`.
 */
import type { LeaseRequest } from '../../store/backend.js';
import { type TrackedLease, trackLease } from '../../sync/tracked-leases.js';
import type { PgContext } from './context.js';
import { lockName } from './rows.js';

export { TrackedLease, trackedLocks } from '../../sync/tracked-leases.js';

/**
 * Registers a PostgreSQL lease about to wait for `sortedKeys` of `req` in the current task (lock
 * id: database, schema, model, key, action). Throws DeadlockError when waiting would close a
 * cycle of tasks in this process; nowait and skipLocked never wait, so they are never refused.
 *
 * @example
 * ```ts
 * const tracked = beginLease(ctx, req, [...req.keys].sort(compareC));
 * ```
 */
export function beginLease(
  ctx: PgContext,
  req: LeaseRequest,
  sortedKeys: readonly string[],
): TrackedLease {
  return trackLease(
    sortedKeys.map((k) => [ctx.dbId, ctx.schema, req.model, k, req.action].join('\u0000')),
    sortedKeys.map((k) => lockName(req.model, [k], req.action)),
    req.mode === 'exclusive',
    req.nowait || req.skipLocked,
  );
}

/**
 * A lease handle recorded nowhere: the boundary (`src/store/boundary.ts`) tracks every backend's
 * leases in the wait-for graph itself, so this backend no longer does.
 *
 * @example
 * ```ts
 * const tracked = untrackedLease(); // granted()/released()/abandoned() do nothing
 * ```
 */
export function untrackedLease(): TrackedLease {
  return trackLease([], [], false, true);
}
