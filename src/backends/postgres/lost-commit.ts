/**
 * Settling a lease commit whose reply was lost (the connection dropped after the COMMIT may have
 * reached the server). The answer must be exact: the lease's transaction id, taken when the lease
 * was granted, is looked up with `txid_status()` once the old session is gone — committed means
 * applied, aborted means nothing was written; anything else is `BackendError{outcomeUnknown}`.
 *
 * Why not the fence on the row (what this did before): another holder queued on the key takes it
 * the moment the lost COMMIT releases the locks and stamps its own fence, so "the fence differs"
 * cannot tell "never committed" from "committed, then overwritten" — it reported LEASE_LOST for a
 * write that had landed.
 */
import { BackendError } from '../../errors.js';
import type { DocWrite, StoredDoc, WriteResult } from '../../store/backend.js';
import type { PgContext } from './context.js';
import { refuse } from './planner.js';
import { read } from './reading.js';
import { sqlState } from './sql.js';

/** The lease whose commit's reply was lost, as the resolution needs it. */
export interface LostCommit {
  readonly name: string;
  /** The lease transaction's id (txid_current() at acquire). */
  readonly txid: string;
  /** The server process of its session. */
  readonly pid: number | undefined;
  /** The lease was known lost before anything of the commit was sent. */
  readonly wasDeadBeforeCommit: boolean;
}

/**
 * Settles a lost commit reply: applied (the docs as they are now, the results the commit computed
 * when it had them), refused with `fence` when the transaction certainly did not commit, or throws
 * `BackendError` with `outcomeUnknown: true` when the server cannot say.
 *
 * @example
 * ```ts
 * catch (err) { if (isConnectionLoss(err)) return resolveLostCommit(ctx, lease, writes, err); }
 * ```
 */
export async function resolveLostCommit(
  ctx: PgContext,
  lease: LostCommit,
  writes: readonly DocWrite[],
  err: unknown,
  planned?: WriteResult & { applied: true },
): Promise<WriteResult> {
  const unknown = (cause: unknown, why: string) =>
    new BackendError(
      `the connection dropped while committing ${lease.name} and ${why}; the commit may or may not have been applied (read before retrying)`,
      { cause, outcomeUnknown: true },
    );
  // 25P03: the server ended the session for idling past leaseMs, before it read our commit:
  // nothing of it ran. (The FATAL is what the client reads on its next message.)
  if (sqlState(err) === '25P03' || lease.wasDeadBeforeCommit) {
    return refuse(
      'fence',
      0,
      'the lease expired: its PostgreSQL session was ended before the commit',
    );
  }
  let status: string | null;
  try {
    // The transaction ends (committed or rolled back) no later than its session, and its status
    // is final once it is not 'in progress'. If it stays in progress (the server has not noticed
    // the dead socket yet), end the session: it is this lease's own, recognised by its pid AND
    // its transaction id still being the lease's (a pid can be reused once ours is gone; the
    // xid cannot be ours then), so no one else's session is ever touched.
    status = await settledStatus(ctx, lease.txid);
    if (status === 'in progress' && lease.pid !== undefined) {
      await ctx.pool.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_xid::text = ($2::bigint % 4294967296)::text`,
        [lease.pid, lease.txid],
      );
      status = await settledStatus(ctx, lease.txid);
    }
  } catch (e) {
    throw unknown(e, 'its outcome could not be looked up');
  }
  if (status === 'aborted') {
    // Rolled back (the session died before COMMIT ran, or a statement of the commit failed):
    // nothing was written, and the lease is gone.
    return refuse(
      'fence',
      0,
      'the lease was lost: its transaction was rolled back, nothing was written',
    );
  }
  if (status !== 'committed') {
    // 'in progress' (the session still lives) or null (too old to tell): not settled.
    throw unknown(err, `PostgreSQL reports its transaction as ${String(status)}`);
  }
  // It committed. The documents as they are now (another holder may have written since), and the
  // results the commit computed before it sent COMMIT when the path had them (set/unset patches:
  // null per op; delete: it existed, as it was row-locked or the delete would not be fenced).
  let docs: Array<StoredDoc | undefined>;
  try {
    docs = await read(
      ctx,
      writes.map((w) => ({ model: w.model, key: w.key })),
    );
  } catch (e) {
    if (planned) return planned;
    // Committed, but the result cannot be built: never a plain error (that reads as "not
    // written"); outcomeUnknown tells the caller to read before retrying.
    throw new BackendError(
      `committed ${lease.name} (its transaction committed), but reading the documents back failed; read before retrying`,
      { cause: e, outcomeUnknown: true },
    );
  }
  return {
    applied: true,
    // A document the commit created gets its incarnation from the row (the plan cannot know it).
    docs: writes.map((w, i) => {
      if (w.kind === 'delete') return undefined;
      const p = planned?.docs[i];
      return p && p.incarnation !== '' ? p : docs[i];
    }),
    results:
      planned?.results ??
      writes.map((w) =>
        w.kind === 'patch' ? w.ops.map(() => null) : w.kind === 'delete' ? [true] : [],
      ),
  };
}

/** txid_status of `txid`, polled every 20 ms for up to 2 s while it is 'in progress'. */
async function settledStatus(ctx: PgContext, txid: string): Promise<string | null> {
  let status: string | null = null;
  for (let i = 0; i < 100; i++) {
    const r = await ctx.pool.query('SELECT txid_status($1::bigint) AS s', [txid]);
    status = (r.rows[0] as { s: string | null } | undefined)?.s ?? null;
    if (status !== 'in progress') return status;
    await new Promise((res) => setTimeout(res, 20));
  }
  return status;
}
