/**
 * A held lease: renews itself while held (a failed renewal marks it lost), commits through the
 * commit script (fenced: refused once the lease is lost) and releases idempotently, never hiding
 * the caller's own error behind a release failure. It knows when it is lost: `lost` and `signal`
 * (a refused renewal, renewals failing past leaseMs, leaseMs passed with `renew: false`).
 * (Commits outside the lease and the in-process wait-for graph are the boundary's,
 * src/store/boundary.ts.)
 */
import { LeaseLostError } from '../../errors.js';
import type { DocWrite, Lease, LeaseRequest, StoredDoc, WriteResult } from '../../store/backend.js';
import type { DocKeys } from './keys.js';
import type { Renewals } from './renewals.js';
import type { ScriptName } from './scripts.js';

/** What a lease needs from its backend. */
export interface LeaseHost {
  _script(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown>;
  _release(keys5: string[], owner: string): Promise<boolean>;
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
  /** Made when `signal` is first read (most locks never read it: no AbortController each). */
  #lostSignal: AbortController | undefined;
  #lostReason: LeaseLostError | undefined;
  /** Renewing (the lease is in the backend's renewals). */
  #renewing = false;
  /**
   * When the last successful renewal was SENT (or the lease granted): the server's expiry is at
   * least this + leaseMs, since the script set it to its own now + leaseMs after this moment.
   */
  #lastOk: number;
  readonly #renewals: Renewals;
  readonly #backend: LeaseHost;
  readonly #owner: string;
  readonly #keys5: string[];
  readonly #docKeys: DocKeys[];
  readonly #request: LeaseRequest;
  readonly #lockName: () => string;
  readonly #incarnations: Map<string, string>;
  /**
   * Marks the lease lost when it has expired on the server for all we know: at leaseMs after the
   * grant with `renew: false`, and at leaseMs after the last successful renewal's send while a
   * renewal is in flight or failing. Unref'd; cleared at commit, release and close.
   */
  #expiry: NodeJS.Timeout | undefined;
  /** What release() answered (a second call answers the same). */
  #released: Promise<boolean> | undefined;

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
      renewals: Renewals;
      /** `performance.now()` at (or just before) the grant on the server. */
      grantedAt: number;
    },
  ) {
    this.#lastOk = o.grantedAt;
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
    if (!o.request.renew) {
      // Redis frees the keys leaseMs after the grant: the lease is lost then.
      this.#armExpiry('it was not renewed (renew: false) and leaseMs passed');
    } else {
      this.#renewing = true;
      this.#renewals.add(this, o.request.leaseMs);
    }
  }

  get lost(): boolean {
    return this.#lost;
  }

  get signal(): AbortSignal {
    if (!this.#lostSignal) {
      this.#lostSignal = new AbortController();
      if (this.#lostReason) this.#lostSignal.abort(this.#lostReason);
    }
    return this.#lostSignal.signal;
  }

  /**
   * @internal one renewal (the backend's renewals call it every third of leaseMs while held): a
   * refusal marks the lease lost, and so does a lease not renewed for leaseMs.
   */
  renew(): Promise<void> {
    const leaseMs = this.#request.leaseMs;
    const leaseKeys = this.#keys5.filter((_, i) => i % 5 === 0);
    const sent = performance.now();
    // Until this renewal is answered, the lease is known to hold only until lastOk + leaseMs:
    // a renewal that hangs (or fails) past that marks it lost then, not at its own timeout.
    if (!this.#expiry) this.#armExpiry('its renewal did not reach Redis before leaseMs passed');
    return this.#backend._script('renew', leaseKeys, [this.#owner, Math.ceil(leaseMs)]).then(
      (ok) => {
        if (!this.#renewing) return;
        if (ok === 1) {
          this.#lastOk = sent;
          this.#clearExpiry();
        } else this.#markLost('its renewal was refused: the lease expired or was taken over');
      },
      () => {
        // A failed renewal: the expiry timer armed above marks the lease lost at lastOk +
        // leaseMs unless a later renewal gets through first.
      },
    );
  }

  /** Marks the lease lost at lastOk + leaseMs (see `#expiry`). */
  #armExpiry(why: string): void {
    this.#clearExpiry();
    const left = this.#lastOk + this.#request.leaseMs - performance.now();
    this.#expiry = setTimeout(() => this.#markLost(why), Math.max(0, left));
    this.#expiry.unref();
  }

  #clearExpiry(): void {
    if (this.#expiry) clearTimeout(this.#expiry);
    this.#expiry = undefined;
  }

  /** Known lost: `lost` turns true and `signal` aborts with LeaseLostError (once). */
  #markLost(why: string): void {
    if (this.#done) return;
    if (!this.#lost) {
      this.#lost = true;
      this.#lostReason = new LeaseLostError(this.#lockName(), why);
      this.#lostSignal?.abort(this.#lostReason);
    }
    this._stop();
  }

  /** @internal the backend closed: nothing renews the lease any more, it is lost. */
  _closed(): void {
    this.#markLost('its backend was closed');
  }

  /** @internal stops renewing and the expiry timer (commit, release, close). */
  _stop(): void {
    this.#clearExpiry();
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
      // The outcome is unknown (BackendError with outcomeUnknown, passed on as it is: never a
      // refusal). Make sure the lease does not linger until it expires. The release cannot undo
      // a commit that ran (it finds the lease gone and only serves the next waiter); if it
      // overtakes one that has not run yet, that commit is then refused (fence). Either way the
      // caller was told the truth: unknown.
      void this.#backend._release(this.#keys5, this.#owner).catch(() => {});
      throw err;
    }
  }

  /**
   * Resolves true only when the release script found our owner entry live on every key (the
   * lease still held); false when it was lost or taken over, or when the release did not reach
   * Redis (unknown: the lease then expires on its own after leaseMs). After a commit, whether
   * that commit found the lease held. A second call resolves what the first did.
   */
  release(): Promise<boolean> {
    if (this.#released) return this.#released;
    if (this.#done) {
      // Committed (the commit released the lease) or a commit is under way.
      this.#released = Promise.resolve(!this.#lost);
      return this.#released;
    }
    this.#done = true;
    this._stop();
    this.#backend._forget(this);
    // Once this side declared the lease lost (its signal aborted: the local deadline passed, the
    // earliest moment the server may have let go), release answers false even if the server's
    // key had not expired yet: the holder was already told it lost, and the answer must agree.
    const lostBefore = this.#lost;
    this.#released = this.#backend._release(this.#keys5, this.#owner).then(
      (held) => {
        if (!held) this.#lost = true;
        return held && !lostBefore;
      },
      // Never hide the caller's own error behind a release failure.
      () => false,
    );
    return this.#released;
  }

  /** @internal for debugging. */
  toString(): string {
    return `RedisLease(${this.#lockName()}, ${this.#docKeys.length} keys)`;
  }
}
