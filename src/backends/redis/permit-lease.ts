/**
 * A held permit of a named pool on Redis: renews itself while held (one shared timer,
 * renewals.ts; a refused renewal marks it lost), `extend(ms)`, an idempotent `release()` that
 * says whether the units were still held, and knows when it is lost: `lost` and a lazily made
 * `signal` (a refused renewal, renewals failing past the expiry, `renew: false` past leaseMs, the
 * backend closed).
 */
import { LeaseLostError } from '../../errors.js';
import type { PermitLease, PermitRequest } from '../../store/backend.js';
import type { Renewals } from './renewals.js';

/** What a permit needs from its pool. */
export interface PermitOps {
  readonly renewals: Renewals;
  /**
   * Pushes the expiry to `ms` from now (server clock): `renew` never shortens it, `extend` sets
   * it. Resolves whether the units were still held.
   */
  renew(ms: number, how: 'renew' | 'extend'): Promise<boolean>;
  /** Gives the units back; resolves whether they were still held. */
  release(): Promise<boolean>;
  /** The permit is done with (released or lost): the pool stops tracking it. */
  forget(): void;
}

/**
 * One held permit; see PermitLease in src/store/backend.ts.
 *
 * @example
 * ```ts
 * const permit = await backend.acquirePermit(request); // a RedisPermit
 * await permit?.extend(60_000);
 * await permit?.release(); // true: it still held
 * ```
 */
export class RedisPermit implements PermitLease {
  readonly fence: number;
  readonly #ops: PermitOps;
  readonly #request: PermitRequest;
  readonly #lockName: () => string;
  #lost = false;
  #done = false;
  #lostSignal: AbortController | undefined;
  #lostReason: LeaseLostError | undefined;
  #renewing = false;
  /**
   * Until when (performance.now() time) the units are known to be held: the server set their
   * expiry from its own clock after the call that set it was sent, so at least send + ms.
   */
  #knownUntil: number;
  /** Marks the permit lost at #knownUntil while nothing is known to push it (unref'd). */
  #expiry: NodeJS.Timeout | undefined;
  #released: Promise<boolean> | undefined;

  constructor(
    ops: PermitOps,
    o: {
      request: PermitRequest;
      /** The pool's name, for messages (built on demand). */
      lockName: () => string;
      fence: number;
      /** `performance.now()` at (or just before) the grant on the server. */
      grantedAt: number;
    },
  ) {
    this.#ops = ops;
    this.#request = o.request;
    this.#lockName = o.lockName;
    this.fence = o.fence;
    this.#knownUntil = o.grantedAt + o.request.leaseMs;
    if (!o.request.renew) {
      this.#armExpiry('it was not renewed (renew: false) and its lease passed');
    } else {
      this.#renewing = true;
      ops.renewals.add(this, o.request.leaseMs);
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

  /** @internal one renewal (renewals.ts calls it every third of leaseMs while held). */
  renew(): Promise<void> {
    const leaseMs = this.#request.leaseMs;
    const sent = performance.now();
    // Until this renewal is answered, the units are known to hold only until #knownUntil.
    if (!this.#expiry) this.#armExpiry('its renewal did not reach Redis before its lease passed');
    return this.#ops.renew(Math.ceil(leaseMs), 'renew').then(
      (ok) => {
        if (!this.#renewing) return;
        if (!ok) {
          this.#markLost('its renewal was refused: the lease expired');
          return;
        }
        this.#knownUntil = Math.max(this.#knownUntil, sent + leaseMs);
        this.#clearExpiry();
      },
      () => {
        // Failed: the timer armed above marks the permit lost at #knownUntil unless a later
        // renewal gets through first.
      },
    );
  }

  /**
   * Pushes the expiry to `ms` (default leaseMs) from now, server clock; rejects with
   * LeaseLostError when the permit was already lost or released.
   *
   * @example
   * ```ts
   * await permit.extend(60_000); // a long step ahead: hold a minute from now
   * ```
   */
  async extend(ms: number = this.#request.leaseMs): Promise<void> {
    if (this.#lost) throw this.#lostReason ?? new LeaseLostError(this.#lockName(), 'it was lost');
    if (this.#done) throw new LeaseLostError(this.#lockName(), 'it was released');
    const sent = performance.now();
    const ok = await this.#ops.renew(Math.ceil(ms), 'extend');
    if (this.#done) {
      if (this.#lost) throw this.#lostReason ?? new LeaseLostError(this.#lockName());
      return;
    }
    if (!ok) {
      this.#markLost('extend() found it expired');
      throw this.#lostReason as LeaseLostError;
    }
    this.#knownUntil = sent + ms;
    // Renewals (every third of leaseMs) keep up with any extension at least leaseMs long; a
    // shorter one, or no renewals, is watched by the timer.
    if (!this.#renewing || ms < this.#request.leaseMs) {
      this.#armExpiry('its extension passed without a renewal');
    } else this.#clearExpiry();
  }

  #armExpiry(why: string): void {
    this.#clearExpiry();
    this.#expiry = setTimeout(
      () => this.#markLost(why),
      Math.max(0, this.#knownUntil - performance.now()),
    );
    this.#expiry.unref();
  }

  #clearExpiry(): void {
    if (this.#expiry) clearTimeout(this.#expiry);
    this.#expiry = undefined;
  }

  #markLost(why: string): void {
    if (this.#done) return;
    if (!this.#lost) {
      this.#lost = true;
      this.#lostReason = new LeaseLostError(this.#lockName(), why);
      this.#lostSignal?.abort(this.#lostReason);
    }
    this.#stop();
    this.#ops.forget();
  }

  /** @internal the backend closed: nothing renews the permit any more, it is lost. */
  _closed(): void {
    this.#markLost('its backend was closed');
  }

  #stop(): void {
    this.#clearExpiry();
    if (!this.#renewing) return;
    this.#renewing = false;
    this.#ops.renewals.delete(this);
  }

  /**
   * Gives the units back; true when they were still held (the release script found the owner's
   * live entry, and the permit was not known lost before), false when lost or when the release
   * did not reach Redis (they lapse on their own then). A second call resolves what the first did; never throws.
   */
  release(): Promise<boolean> {
    if (this.#released) return this.#released;
    // Known lost already (the timer fires at the earliest moment the server may have let go):
    // false, whatever the server still says; the release still frees the units at once.
    const known = this.#lost;
    this.#done = true;
    this.#stop();
    this.#ops.forget();
    this.#released = this.#ops.release().then(
      (held) => {
        if (!held) this.#lost = true;
        return held && !known;
      },
      () => false,
    );
    return this.#released;
  }
}
