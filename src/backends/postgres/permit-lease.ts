/**
 * A held permit lease, whatever holds it on the server (a session's advisory lock for mutexes and
 * rwlocks, `permit-locks.ts`; a holder row for semaphores, `permit-rows.ts`): the bookkeeping they
 * share — renewal while held, `lost` and the lazy `signal`, `extend(ms)`, and an idempotent
 * `release()` that says whether the lease still held. The subclass says how to renew, extend and
 * release on the server.
 */
import { LeaseLostError } from '../../errors.js';
import type { PermitLease, PermitRequest } from '../../store/backend.js';
import type { Conn } from './conn.js';

/** The largest delay a Node timer takes. */
const MAX_TIMER = 2_147_483_647;

/** Whoever took the permit: told once it ended (released, or lost and cleaned up). */
export interface PermitHost {
  forget(permit: HeldPermit): void;
}

/** The display name of a pool in messages (`semaphore "payments"`). */
export function permitName(kind: string, name: string): string {
  return `${kind} ${JSON.stringify(name)}`;
}

/**
 * @internal a held permit. `conn` is the connection the permit keeps until it ends (its lease
 * transaction, or the connection its renewals and release run on: a holder never needs a free
 * pool connection to give its units back, so waiters filling the pool cannot block a release).
 *
 * @example
 * ```ts
 * class SessionPermit extends HeldPermit { ... }
 * const held = await permit.release(); // true: it still held
 * ```
 */
export abstract class HeldPermit implements PermitLease {
  readonly fence: number;
  readonly name: string;
  protected readonly conn: Conn;
  readonly #host: PermitHost;
  readonly #renew: boolean;
  /** The lease's length now: the request's leaseMs, or the last `extend(ms)`. */
  #leaseMs: number;
  /** When the lease expires if nobody renews it, on this process's clock (an estimate). */
  #deadline: number;
  #renewTimer: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  #renewing = false;
  /** Release began (or the permit was cleaned up after it was lost): no longer the caller's. */
  #settled = false;
  #released: Promise<boolean> | undefined;
  #lostReason: LeaseLostError | undefined;
  #lostSignal: AbortController | undefined;

  /** `leftMs`: how long the server gives the lease from now (its expiry on the server's clock). */
  constructor(host: PermitHost, conn: Conn, req: PermitRequest, fence: number, leftMs: number) {
    this.#host = host;
    this.conn = conn;
    this.fence = fence;
    this.name = permitName(req.kind, req.name);
    this.#renew = req.renew;
    this.#leaseMs = req.leaseMs;
    this.#deadline = performance.now() + Math.min(leftMs, req.leaseMs);
    // Whatever holds the lease, the connection it runs on going away means we cannot renew or
    // release it any more: known lost (for a session lease, the server already freed it).
    conn.onDeath(() => this.lose('its PostgreSQL session ended'));
    if (this.#renew) this.#armRenewal();
  }

  /** Renews once on the server: true when the lease still held and now expires leaseMs from now. */
  protected abstract renewOnce(ms: number): Promise<boolean>;
  /** Gives the units back on the server: true when the lease still held until then. */
  protected abstract releaseOnce(): Promise<boolean>;
  /** Returns the connection (and undoes whatever the server still holds, best effort). */
  protected abstract cleanUp(): Promise<void>;

  #armRenewal(): void {
    clearInterval(this.#renewTimer);
    // A third of the lease: two renewals may be slow or lost before the lease runs out.
    const every = Math.max(1, Math.floor(this.#leaseMs / 3));
    this.#renewTimer = setInterval(() => {
      if (this.#settled || this.#renewing || this.#lostReason !== undefined) return;
      this.#renewing = true;
      const ms = this.#leaseMs;
      this.renewOnce(ms).then(
        (held) => {
          this.#renewing = false;
          if (held) this.#deadline = Math.max(this.#deadline, performance.now() + ms);
          else this.lose('it expired before it was renewed');
        },
        () => {
          this.#renewing = false;
          this.lose('renewing it failed');
        },
      );
    }, every);
    this.#renewTimer.unref();
  }

  /**
   * Made on first read (most permits are never asked): aborted with a LeaseLostError the moment
   * the permit is known lost. Never aborted by release.
   */
  get signal(): AbortSignal {
    if (this.#lostSignal === undefined) {
      this.#lostSignal = new AbortController();
      if (this.#lostReason !== undefined) this.#lostSignal.abort(this.#lostReason);
      else if (!this.#renew && !this.#settled) this.#armExpiry();
    }
    return this.#lostSignal.signal;
  }

  /** Without renewal, the lease ends at its deadline: the signal says so at that moment. */
  #armExpiry(): void {
    clearTimeout(this.#expiryTimer);
    const left = this.#deadline - performance.now();
    if (left <= 0) {
      this.lose(this.#expiredWhy());
      return;
    }
    this.#expiryTimer = setTimeout(
      () => this.lose(this.#expiredWhy()),
      Math.min(MAX_TIMER, Math.ceil(left)),
    );
    this.#expiryTimer.unref();
  }

  #expiredWhy(): string {
    return `it expired after ${this.#leaseMs} ms without renewal`;
  }

  /** Lost before it was released; a released permit is not lost afterwards. */
  get lost(): boolean {
    if (this.#lostReason !== undefined) return true;
    if (this.#settled) return false;
    if (this.conn.dead !== undefined) return true;
    return !this.#renew && performance.now() > this.#deadline;
  }

  /** Records the loss (aborting the signal if one was made) and stops renewing. */
  protected lose(why: string): void {
    if (this.#settled || this.#lostReason !== undefined) return;
    this.#lostReason = new LeaseLostError(this.name, why);
    this.#stopTimers();
    this.#lostSignal?.abort(this.#lostReason);
  }

  /**
   * Pushes the expiry to `ms` from now (server clock) and makes `ms` the lease's length for the
   * renewals that follow. Rejects with LeaseLostError (and marks the permit lost) when it no
   * longer held.
   */
  async extend(ms?: number): Promise<void> {
    const next = ms ?? this.#leaseMs;
    if (this.#settled) throw new LeaseLostError(this.name, 'it was already released');
    if (this.lost) {
      this.lose('it was lost before extend()');
      throw this.#lostReason as LeaseLostError;
    }
    let held = false;
    try {
      held = await this.renewOnce(next);
    } catch {
      held = false;
    }
    if (!held) {
      this.lose('extend() found it expired');
      throw this.#lostReason ?? new LeaseLostError(this.name, 'extend() found it expired');
    }
    this.#leaseMs = next;
    this.#deadline = performance.now() + next;
    if (this.#renew && !this.#settled) this.#armRenewal();
    if (!this.#renew && this.#lostSignal !== undefined && !this.#settled) this.#armExpiry();
  }

  /**
   * Gives the units back (waking the waiters they admit). Idempotent, never throws: true when the
   * permit still held at release, false when it had been lost. A second call resolves the same.
   */
  release(): Promise<boolean> {
    this.#released ??= this.#release();
    return this.#released;
  }

  async #release(): Promise<boolean> {
    const wasLost = this.lost;
    this.#settled = true;
    this.#stopTimers();
    let held = false;
    if (!wasLost) {
      try {
        held = await this.releaseOnce();
      } catch {
        // The session is gone or broken: what it held went with it (or expires on its own), at
        // some moment before now; nothing confirms it still held, so false.
      }
    }
    // A lost permit still gives back what the server may keep (a holder row until it expires).
    await this.cleanUp().catch(() => {});
    this.#host.forget(this);
    return held;
  }

  #stopTimers(): void {
    clearInterval(this.#renewTimer);
    clearTimeout(this.#expiryTimer);
    this.#renewTimer = undefined;
    this.#expiryTimer = undefined;
  }
}
