/**
 * The lock callback's context: what every lock-like API (`Model.lock`, named locks, job handlers)
 * hands its callback besides the data — the lease's `signal` (aborted the moment the lease is
 * known lost) and its fencing tokens, for the caller to pass to systems outside the store.
 *
 * @example
 * ```ts
 * await Account.lock('ann', async (a, ctx) => {
 *   await fetch(url, { signal: ctx.signal, headers: { 'x-fence': String(ctx.fence) } });
 *   a.balance -= 10;
 * });
 * ```
 */

/** What a lock callback receives with its drafts. */
export interface LockContext {
  /** Aborted (reason: a `LeaseLostError`) the moment the lease is known lost. */
  readonly signal: AbortSignal;
  /** The fencing tokens, one per key in the order the caller gave them (one element for a name). */
  readonly fences: readonly number[];
  /** `fences[0]`. */
  readonly fence: number;
}

/**
 * A {@link LockContext} over a lease and its fences (in the caller's key order). The signal is
 * asked of the lease only when the callback reads it: most callbacks never do, and an
 * AbortSignal costs more to make than the rest of an in-memory lock.
 *
 * @example
 * ```ts
 * const ctx = lockContext(lease, [lease.fences[0]]);
 * ```
 */
export function lockContext(
  lease: { readonly signal: AbortSignal },
  fences: readonly number[],
): LockContext {
  return new LeaseContext(lease, fences);
}

class LeaseContext implements LockContext {
  readonly fences: readonly number[];
  readonly fence: number;
  readonly #lease: { readonly signal: AbortSignal };
  constructor(lease: { readonly signal: AbortSignal }, fences: readonly number[]) {
    this.#lease = lease;
    this.fences = fences;
    this.fence = fences[0] as number;
  }
  get signal(): AbortSignal {
    return this.#lease.signal;
  }
}
