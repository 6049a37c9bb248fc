/**
 * Taking a lease: one `BEGIN IMMEDIATE` transaction that looks for live conflicting leases on
 * every key (same action; exclusive conflicts with anything, shared with exclusive), and when
 * there are none, removes the expired ones, takes a fence from the counter, inserts one row per
 * key (expiring `leaseMs` from now on the machine's clock) and reads the documents: the snapshot
 * the holder works on is read while the lease is already held.
 *
 * When a key is held, `nowait` throws LockBusyError, `skipLocked` resolves undefined, and
 * otherwise the request waits for a wake-up (a lease ended, in this or another process) or for
 * the blocking lease's expiry, then tries again, bounded by `timeoutMs` and `signal`. Waiters are
 * not queued in the database: after a wake-up they race, and within one process they retry in
 * arrival order.
 *
 * @example
 * ```ts
 * const lease = await acquireLease(ctx, leases, request);
 * ```
 */
import { LockBusyError, LockTimeoutError } from '../../errors.js';
import type { LeaseRequest, StoredDoc } from '../../store/backend.js';
import { lockName } from '../../store/names.js';
import { boundedWait, writesInFlight } from '../postgres/program-order.js';
import type { SqliteContext } from './context.js';
import { type LeaseHost, SqliteLease } from './lease.js';
import { storedDoc } from './rows.js';
import { type Busy, immediate, retryBusy } from './transaction.js';

/** What a successful attempt read once the lease rows were in. */
export interface Grant {
  readonly token: string;
  readonly fence: number;
  readonly expiresAt: number;
  readonly docs: Array<StoredDoc | undefined>;
}

/** A conflicting lease holds a key until at least this moment (machine clock ms). */
export interface Held {
  readonly heldUntil: number;
}

/** The program-order id of a document (what `write` registers in-flight writes under). */
export function orderId(ctx: SqliteContext, model: string, key: string): string {
  return `sqlite:${ctx.file ?? 'memory'}\u0000${model}\u0000${key}`;
}

/** One synchronous attempt to take the lease. */
export function tryAcquire(ctx: SqliteContext, req: LeaseRequest): Grant | Held | Busy {
  const st = ctx.statements;
  return immediate<Grant | Held>(ctx, () => {
    const now = Date.now();
    let heldUntil: number | undefined;
    for (const key of req.keys) {
      for (const r of st.liveLeases.all(req.model, key, req.action, now)) {
        if (req.mode === 'exclusive' || r.exclusive === 1) {
          if (heldUntil === undefined || r.expires_at < heldUntil) heldUntil = r.expires_at;
        }
      }
    }
    if (heldUntil !== undefined) return { value: { heldUntil }, write: false };
    const token = ctx.newToken();
    const fence = (st.nextFence.get() as { value: number }).value;
    const expiresAt = now + req.leaseMs;
    const exclusive = req.mode === 'exclusive' ? 1 : 0;
    const docs: Array<StoredDoc | undefined> = [];
    for (const key of req.keys) {
      st.purgeExpired.run(req.model, key, req.action, now);
      st.insertLease.run(req.model, key, req.action, token, exclusive, expiresAt, fence);
      const row = st.selectDoc.get(req.model, key);
      docs.push(row === undefined ? undefined : storedDoc(key, row));
    }
    return { value: { token, fence, expiresAt, docs }, write: true };
  });
}

/** Takes a lease for `req` (see the file header); undefined only with `skipLocked`. */
export async function acquireLease(
  ctx: SqliteContext,
  host: LeaseHost,
  req: LeaseRequest,
): Promise<SqliteLease | undefined> {
  await ctx.ready();
  ctx.checkOpen();
  const started = Date.now();
  const deadline = req.timeoutMs === undefined ? undefined : started + req.timeoutMs;
  const signal = req.signal;
  if (signal?.aborted) throw signal.reason;
  const name = lockName(req.model, req.keys, req.action);
  // Program order: this process's writes issued before the lease was asked for land first.
  const before = writesInFlight(req.keys.map((k) => orderId(ctx, req.model, k)));
  if (before.length > 0) await boundedWait(Promise.all(before), 1000, signal);
  let unwatch: (() => void) | undefined;
  try {
    for (;;) {
      ctx.checkOpen();
      if (signal?.aborted) throw signal.reason;
      const gen = ctx.channel.generation;
      const out = await retryBusy(ctx, 'acquire', () => tryAcquire(ctx, req), {
        deadline,
        started,
        lock: name,
        signal,
      });
      if ('token' in out) return new SqliteLease(ctx, host, req, out);
      if (req.nowait) throw new LockBusyError(name);
      if (req.skipLocked) return undefined;
      if (unwatch === undefined) {
        // Watch first, then try again at once: a release in between is not missed.
        unwatch = ctx.channel.watch();
        continue;
      }
      if (deadline !== undefined && Date.now() >= deadline) {
        throw new LockTimeoutError(name, Date.now() - started);
      }
      await ctx.channel.changed(gen, out.heldUntil, {
        deadline,
        started,
        lock: name,
        signal,
        cancels: ctx.cancels,
      });
    }
  } finally {
    unwatch?.();
  }
}
