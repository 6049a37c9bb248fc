/**
 * Expiry in the memory backend: its clock (monotonic, this process's: the memory backend's
 * "server" is this process) and the sweeper that reclaims what expired (expiring documents and
 * idle rate-limit keys) with one unref'd timer, which stops when nothing is left to expire.
 *
 * @example
 * ```ts
 * const sweeper = new Sweeper<string>((key) => map.delete(key));
 * sweeper.set('k', now() + 1000); // reclaimed about a second from now
 * ```
 */

/** The memory backend's clock in milliseconds (monotonic; only differences mean anything). */
export function now(): number {
  return performance.now();
}

/** A sweep runs at most this often (one pass over every expiring item). */
const SWEEP_EVERY_MS = 1000;

/**
 * Items due to expire, reclaimed by one timer: it fires at the earliest due time (at most every
 * {@link SWEEP_EVERY_MS}), calls `expire` for each item whose time has come, and stops when no
 * item is left. Readers must still check the due time themselves (a lazy check): the sweep only
 * reclaims storage.
 *
 * @example
 * ```ts
 * const s = new Sweeper<object>((item) => table.delete(item));
 * s.set(item, now() + ttlMs);
 * s.delete(item); // written again without a TTL
 * ```
 */
export class Sweeper<K> {
  readonly #due = new Map<K, number>();
  readonly #expire: (item: K) => void;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Number.POSITIVE_INFINITY;
  #lastSweep = Number.NEGATIVE_INFINITY;

  constructor(expire: (item: K) => void) {
    this.#expire = expire;
  }

  /** Items waiting to expire. */
  get size(): number {
    return this.#due.size;
  }

  /** Timers running (0 or 1). */
  get timers(): number {
    return this.#timer === undefined ? 0 : 1;
  }

  /** `item` expires at `at` (this module's clock). */
  set(item: K, at: number): void {
    this.#due.set(item, at);
    if (at < this.#timerAt) this.#schedule(at);
  }

  /** `item` no longer expires (deleted, or written again without a TTL). */
  delete(item: K): void {
    this.#due.delete(item);
    if (this.#due.size === 0) this.stop();
  }

  /** Stops the timer (nothing left to expire). */
  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
  }

  #closed = false;

  /** Stops for good and forgets every item (the backend closed). */
  close(): void {
    this.#closed = true;
    this.#due.clear();
    this.stop();
  }

  #schedule(at: number): void {
    if (this.#closed) return;
    const when = Math.max(at, this.#lastSweep + SWEEP_EVERY_MS);
    if (this.#timer !== undefined) {
      if (when >= this.#timerAt) return;
      clearTimeout(this.#timer);
    }
    this.#timerAt = when;
    this.#timer = setTimeout(() => this.#sweep(), Math.max(0, Math.ceil(when - now())));
    this.#timer.unref();
  }

  #sweep(): void {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const t = now();
    this.#lastSweep = t;
    let next = Number.POSITIVE_INFINITY;
    for (const [item, at] of this.#due) {
      if (at <= t) {
        this.#due.delete(item);
        this.#expire(item);
      } else if (at < next) next = at;
    }
    if (next !== Number.POSITIVE_INFINITY) this.#schedule(next);
  }
}
