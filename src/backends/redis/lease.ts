/**
 * A held lease: renews itself while held (a failed renewal marks it lost), commits through the
 * commit script (fenced: refused once the lease is lost) and releases idempotently, never hiding
 * the caller's own error behind a release failure. While held it is a hold in the in-process
 * wait-for graph (when the backend tracks tasks), until its commit, release, close or expiry.
 */
import { LeaseLostError, ValidationError } from '../../errors.js';
import type { DocWrite, Lease, LeaseRequest, StoredDoc, WriteResult } from '../../store/backend.js';
import type { TrackedLease } from '../../sync/tracked-leases.js';
import type { DocKeys } from './keys.js';
import type { Renewals } from './renewals.js';
import type { ScriptName } from './scripts.js';

/** What a lease needs from its backend. */
export interface LeaseHost {
  _script(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown>;
  _release(keys5: string[], owner: string): Promise<void>;
  _commit(
    lease: RedisLease,
    owner: string,
    keys5: string[],
    writes: readonly DocWrite[],
    incarnations: Map<string, string>,
  ): Promise<WriteResult>;
  _forget(lease: RedisLease): void;
}

/**
 * One held lease; see the Lease contract in src/store/backend.ts.
 *
 * @example
 * ```ts
 * const lease = await backend.acquire(request); // a RedisLease
 * await lease?.commit([{ kind: 'patch', model: 'account', key: 'ann', ops }]);
 * ```
 */
export class RedisLease implements Lease {
  readonly docs: ReadonlyArray<StoredDoc | undefined>;
  readonly fences: readonly number[];
  #lost = false;
  #done = false;
  readonly #lostSignal = new AbortController();
  /** Renewing (the lease is in the backend's renewals). */
  #renewing = false;
  /** When the last renewal succeeded (or the lease was granted). */
  #lastOk = performance.now();
  readonly #renewals: Renewals;
  readonly #backend: LeaseHost;
  readonly #owner: string;
  readonly #keys5: string[];
  readonly #docKeys: DocKeys[];
  readonly #request: LeaseRequest;
  readonly #lockName: () => string;
  readonly #incarnations: Map<string, string>;
  readonly #tracked: TrackedLease | undefined;
  /** Untracks a lease that is not renewed once it has expired in Redis. */
  #expiry: NodeJS.Timeout | undefined;

  constructor(
    backend: LeaseHost,
    o: {
      owner: string;
      keys5: string[];
      docKeys: DocKeys[];
      request: LeaseRequest;
      /** The lock's name, for messages (built on demand). */
      lockName: () => string;
      docs: Array<StoredDoc | undefined>;
      fences: number[];
      incarnations: Map<string, string>;
      tracked: TrackedLease | undefined;
      renewals: Renewals;
    },
  ) {
    this.#renewals = o.renewals;
    this.#backend = backend;
    this.#owner = o.owner;
    this.#keys5 = o.keys5;
    this.#docKeys = o.docKeys;
    this.#request = o.request;
    this.#lockName = o.lockName;
    this.docs = o.docs;
    this.fences = o.fences;
    this.#incarnations = o.incarnations;
    this.#tracked = o.tracked;
    if (o.tracked) {
      o.tracked.granted();
      if (!o.request.renew) {
        // Redis frees the key after leaseMs: stop holding it in the graph too (a cycle through a
        // lapsed lease is not one: its waiter gets the key).
        this.#expiry = setTimeout(() => this._untrack(), Math.ceil(o.request.leaseMs));
        this.#expiry.unref();
      }
    }
    if (o.request.renew) {
      this.#renewing = true;
      this.#renewals.add(this, o.request.leaseMs);
    }
  }

  get lost(): boolean {
    return this.#lost;
  }

  get signal(): AbortSignal {
    return this.#lostSignal.signal;
  }

  /**
   * @internal one renewal (the backend's renewals call it every third of leaseMs while held): a
   * refusal marks the lease lost, and so does a lease not renewed for leaseMs.
   */
  renew(): Promise<void> {
    const leaseMs = this.#request.leaseMs;
    const leaseKeys = this.#keys5.filter((_, i) => i % 5 === 0);
    return this.#backend._script('renew', leaseKeys, [this.#owner, Math.ceil(leaseMs)]).then(
      (ok) => {
        if (ok === 1) this.#lastOk = performance.now();
        else this.#markLost();
      },
      () => {
        if (performance.now() - this.#lastOk >= leaseMs) this.#markLost();
      },
    );
  }

  #markLost(): void {
    if (!this.#lost) {
      this.#lostSignal.abort(
        new LeaseLostError(this.#lockName(), 'its renewal was refused or did not reach Redis'),
      );
    }
    this.#lost = true;
    this._stop();
    this._untrack();
  }

  /** @internal the lease no longer holds its keys in the wait-for graph (idempotent). */
  _untrack(): void {
    if (this.#expiry) clearTimeout(this.#expiry);
    this.#expiry = undefined;
    this.#tracked?.released();
  }

  /** @internal stops renewing (commit, release, close). */
  _stop(): void {
    if (!this.#renewing) return;
    this.#renewing = false;
    this.#renewals.delete(this);
  }

  async commit(writes: readonly DocWrite[]): Promise<WriteResult> {
    if (this.#done) {
      return {
        applied: false,
        reason: 'fence',
        index: 0,
        detail: 'this lease was already committed or released',
      };
    }
    this.#done = true;
    this._stop();
    const allowed = new Set(this.#request.keys);
    for (const [i, w] of writes.entries()) {
      if (w.model !== this.#request.model || !allowed.has(w.key)) {
        await this.release();
        throw new ValidationError(`lock commit write ${i}`, [
          { message: `${w.model} ${JSON.stringify(w.key)} is not covered by this lease` },
        ]);
      }
    }
    try {
      const r = await this.#backend._commit(
        this,
        this.#owner,
        this.#keys5,
        writes,
        this.#incarnations,
      );
      if (!r.applied && r.reason === 'fence') this.#lost = true;
      return r;
    } catch (err) {
      // Outcome unknown or bad input: make sure the lease does not linger until it expires.
      void this.#backend._release(this.#keys5, this.#owner).catch(() => {});
      throw err;
    } finally {
      // Committed (the lease is released in the same script), refused, or released above.
      this._untrack();
    }
  }

  async release(): Promise<boolean> {
    const first = !this.#done;
    this.#done = true;
    this._stop();
    this.#backend._forget(this);
    if (!first && this.#released) return !this.#lost;
    this.#released = true;
    try {
      await this.#backend._release(this.#keys5, this.#owner);
    } catch {
      // Never hide the caller's own error: the lease expires on its own after leaseMs.
    } finally {
      this._untrack();
    }
    return !this.#lost;
  }

  #released = false;

  /** @internal for debugging. */
  toString(): string {
    return `RedisLease(${this.#lockName()}, ${this.#docKeys.length} keys)`;
  }
}
