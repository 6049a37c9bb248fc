/**
 * LeasePermit: what `acquire` of a named lock (`store.mutex`, `store.rwlock`, `store.semaphore`)
 * hands back — proof of holding units of a named pool under a lease, with its fence and its
 * `signal`, released by `release()` or `await using`.
 *
 * @example
 * ```ts
 * await using permit = await store.mutex('nightly-report').acquire();
 * await s3.put(key, body, { headers: { 'x-fence': String(permit.fence) } });
 * ```
 */
import type { PermitLease } from './backend.js';

/**
 * A held permit of a named lock. `release()` is idempotent; `await using` releases it at the end
 * of the block.
 *
 * @example
 * ```ts
 * const permit = await store.semaphore('api', { permits: 5 }).acquire({ timeoutMs: 1_000 });
 * try { await callApi({ signal: permit.signal }); } finally { await permit.release(); }
 * ```
 */
export interface LeasePermit extends AsyncDisposable {
  /**
   * The fencing token: strictly greater than every earlier permit's of this lock. Hand it to
   * the systems you write to, so that they refuse a stale holder's writes.
   */
  readonly fence: number;
  /** Aborted (reason: a `LeaseLostError`) the moment the permit is known lost. */
  readonly signal: AbortSignal;
  /** True once the permit is known lost (expired, renewal failed, connection gone). */
  readonly lost: boolean;
  /** Gives the permit back (and wakes whoever it admits). Calling it again does nothing. */
  release(): Promise<void>;
  /**
   * Pushes the lease's expiry to `ms` (default the lock's `leaseMs`) from now, on the server's
   * clock. Rejects with `LeaseLostError` if the permit was already lost.
   */
  extend(ms?: number): Promise<void>;
}

/**
 * @internal The {@link LeasePermit} over a backend's permit lease: remembers its first
 * release, so that `release()` is idempotent and {@link HeldPermit.end} tells whether it held.
 *
 * @example
 * ```ts
 * const permit = new HeldPermit(lease);
 * const held = await permit.end(); // false: it had been lost
 * ```
 */
export class HeldPermit implements LeasePermit {
  readonly #lease: PermitLease;
  #released: Promise<boolean> | undefined;

  constructor(lease: PermitLease) {
    this.#lease = lease;
  }
  get fence(): number {
    return this.#lease.fence;
  }
  get signal(): AbortSignal {
    return this.#lease.signal;
  }
  get lost(): boolean {
    return this.#lease.lost;
  }
  /** Releases once; resolves whether the permit still held (and was not known lost) then. */
  end(): Promise<boolean> {
    this.#released ??= this.#lease.release().then((held) => held && !this.#lease.lost);
    return this.#released;
  }
  release(): Promise<void> {
    return this.end().then(() => undefined);
  }
  extend(ms?: number): Promise<void> {
    return this.#lease.extend(ms);
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }
}
