/**
 * A held lease: one row per key in `lockstep_leases`, with a random token and an expiry on the
 * machine's clock. While held it is renewed (`renew: true`) every `leaseMs / 3` by moving the
 * expiry forward, only if it has not passed (a lapsed lease is never revived); a renewal that
 * finds its rows gone or expired, or an expiry reached without renewal, marks it lost and aborts
 * its signal. Its commit (`commit.ts`) checks the rows in the same transaction as the writes, so
 * a holder stopped past its lease can never write: another holder may have taken the keys.
 *
 * @example
 * ```ts
 * const lease = new SqliteLease(ctx, host, request, grant);
 * await lease.release(); // true: it still held
 * ```
 */

import { LeaseLostError } from '../../errors.js';
import type { DocWrite, Lease, LeaseRequest, StoredDoc, WriteResult } from '../../store/backend.js';
import { lockName } from '../../store/names.js';
import type { CommitContext, Refusal } from '../memory/batch.js';
import type { Grant } from './acquire.js';
import { commitLease } from './commit.js';
import type { SqliteContext } from './context.js';
import { closedError } from './errors.js';
import { ttlRefusal } from './expiry.js';
import { BUSY, immediate, retryBusy } from './transaction.js';

/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2_147_483_647;
/** A renewal that met the write lock tries again this soon. */
const RENEW_RETRY_MS = 5;

/** What a lease needs from the backend's set of open leases. */
export interface LeaseHost {
  forget(lease: SqliteLease): void;
}

/**
 * A lease held by this backend.
 *
 * @example
 * ```ts
 * const r = await lease.commit([{ kind: 'patch', model, key, ops }]);
 * ```
 */
export class SqliteLease implements Lease, CommitContext {
  readonly docs: ReadonlyArray<StoredDoc | undefined>;
  readonly fences: readonly number[];
  readonly fence: number;
  readonly token: string;
  readonly request: LeaseRequest;
  readonly name: string;
  readonly #ctx: SqliteContext;
  readonly #host: LeaseHost;
  /** Machine clock ms: the expiry written by the last successful grant or renewal. */
  #expiresAt: number;
  #timer: NodeJS.Timeout | undefined;
  #lost = false;
  #lostWhy = '';
  #lostSignal: AbortController | undefined;
  /** Commit or release began: a lease commits at most once. */
  #spent = false;
  #ended = false;
  #released: Promise<boolean> | undefined;

  constructor(ctx: SqliteContext, host: LeaseHost, req: LeaseRequest, grant: Grant) {
    this.#ctx = ctx;
    this.#host = host;
    this.request = req;
    this.token = grant.token;
    this.fence = grant.fence;
    this.fences = req.keys.map(() => grant.fence);
    this.docs = grant.docs;
    this.#expiresAt = grant.expiresAt;
    this.name = lockName(req.model, req.keys, req.action);
    this.#schedule();
  }

  get lost(): boolean {
    return this.#lost;
  }

  get signal(): AbortSignal {
    this.#lostSignal ??= new AbortController();
    if (this.#lost && !this.#lostSignal.signal.aborted) this.#abortLost();
    return this.#lostSignal.signal;
  }

  /** Why the lease was lost ('' while it holds). */
  get lostWhy(): string {
    return this.#lostWhy;
  }

  /** True once commit or release began. */
  get spent(): boolean {
    return this.#spent;
  }

  #schedule(): void {
    if (this.#ended) return;
    const req = this.request;
    const now = Date.now();
    const at = req.renew
      ? Math.min(now + Math.max(1, Math.floor(req.leaseMs / 3)), this.#expiresAt)
      : this.#expiresAt;
    this.#setTimer(Math.max(0, at - now), () => {
      if (req.renew) this.#renew();
      else if (!this.#spent)
        this.markLost(`it expired after leaseMs (${req.leaseMs} ms) without renewal`);
    });
  }

  #setTimer(ms: number, fn: () => void): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        fn();
      },
      Math.min(MAX_TIMER_MS, ms),
    );
    this.#timer.unref();
  }

  /** Moves the expiry forward, if the lease still holds. */
  #renew(): void {
    if (this.#ended || this.#ctx.closed) return;
    const req = this.request;
    const st = this.#ctx.statements;
    let out: boolean | typeof BUSY;
    const next = Date.now() + req.leaseMs;
    try {
      out = immediate(this.#ctx, () => {
        const now = Date.now();
        let all = true;
        for (const key of req.keys) {
          const r = st.renewLease.run(next, req.model, key, req.action, this.token, now);
          if (r.changes !== 1) all = false;
        }
        return { value: all, write: all };
      });
    } catch (err) {
      this.markLost(`its renewal failed: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    if (out === BUSY) {
      if (Date.now() >= this.#expiresAt) {
        this.markLost('it could not be renewed before it expired (the database stayed locked)');
      } else this.#setTimer(RENEW_RETRY_MS, () => this.#renew());
      return;
    }
    if (!out) {
      this.markLost('it expired or was taken over before it was renewed');
      return;
    }
    this.#expiresAt = next;
    this.#schedule();
  }

  /** Marks the lease lost (aborting its signal); its rows are left to expire or to the commit. */
  markLost(why: string): void {
    if (this.#lost || this.#ended) return;
    this.#lost = true;
    this.#lostWhy = why;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#lostSignal) this.#abortLost();
  }

  #abortLost(): void {
    this.#lostSignal?.abort(new LeaseLostError(this.name, this.#lostWhy));
  }

  /** Stops renewing, forgets the lease and wakes waiters (its rows are gone). */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#spent = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#host.forget(this);
    this.#ctx.channel.notify();
  }

  commit(writes: readonly DocWrite[]): Promise<WriteResult> {
    const ttl = ttlRefusal(writes);
    if (ttl) return this.release().then(() => Promise.reject(ttl));
    if (this.#spent) {
      const why = this.#lost ? `the lease was lost: ${this.#lostWhy}` : 'the lease already ended';
      return Promise.resolve<Refusal>({ applied: false, reason: 'fence', index: 0, detail: why });
    }
    this.#spent = true;
    return commitLease(this.#ctx, this, writes).finally(() => this.end());
  }

  release(): Promise<boolean> {
    this.#released ??= this.#release();
    return this.#released;
  }

  async #release(): Promise<boolean> {
    if (this.#ended) return !this.#lost;
    this.#spent = true;
    const req = this.request;
    try {
      if (!this.#ctx.db.open) throw closedError();
      const held = await retryBusy(this.#ctx, 'release', () =>
        immediate(this.#ctx, () => {
          const st = this.#ctx.statements;
          const now = Date.now();
          let all = true;
          for (const key of req.keys) {
            const row = st.leaseExpiry.get(req.model, key, req.action, this.token);
            if (row === undefined || row.expires_at <= now) all = false;
            st.deleteLease.run(req.model, key, req.action, this.token);
          }
          return { value: all, write: true };
        }),
      );
      return held && !this.#lost;
    } catch {
      // closed or failing: the rows expire on their own
      return false;
    } finally {
      this.end();
    }
  }

  /** @internal {@link CommitContext}: the fence is checked by the commit's transaction. */
  precondition(): Refusal | undefined {
    return undefined;
  }

  /** @internal {@link CommitContext}: the incarnation of `key` when the lease was taken. */
  incarnationAtRead(_model: string, key: string): string | undefined {
    return this.docs[this.request.keys.indexOf(key)]?.incarnation;
  }
}
