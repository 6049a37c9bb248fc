/**
 * Lease renewal for one backend: ONE timer renews every held lease that asks for it, instead of
 * an interval per lease. A lease is renewed every third of its `leaseMs` (at least every 10 ms);
 * most locks end long before their first renewal is due, and then cost no timer at all (with a
 * timer per lease, every lock created and cleared one, and with AsyncLocalStorage on, ran its
 * hooks). The timer runs at the shortest period among the held leases; a lease is renewed at most
 * half a period early or late (every third of leaseMs, give or take a sixth), so always well
 * before it expires. It stops at its first run that finds no lease held (not at once: on a hot
 * key, one lease ends just before the next is granted, and the timer would restart on every
 * lock), and it never keeps the process alive (unref); close() stops it.
 */

/** A lease as the renewer sees it. */
export interface Renewable {
  /** Sends one renewal (called again only after the previous one settled). */
  renew(): Promise<void>;
}

interface Entry {
  readonly every: number;
  due: number;
  inFlight: boolean;
}

/**
 * The renewals of one backend.
 *
 * @example
 * ```ts
 * const renewals = new Renewals();
 * renewals.add(lease, 30_000); // lease.renew() every 10 s while held
 * renewals.delete(lease);      // committed or released
 * renewals.stop();             // closing the backend
 * ```
 */
export class Renewals {
  readonly #leases = new Map<Renewable, Entry>();
  #timer: NodeJS.Timeout | undefined;
  #period = Number.POSITIVE_INFINITY;

  /** Renews `lease` every third of `leaseMs` until {@link delete}. */
  add(lease: Renewable, leaseMs: number): void {
    const every = Math.max(10, Math.floor(leaseMs / 3));
    this.#leases.set(lease, { every, due: performance.now() + every, inFlight: false });
    if (!this.#timer || every < this.#period) this.#start(every);
  }

  /** Stops renewing `lease` (idempotent). */
  delete(lease: Renewable): void {
    this.#leases.delete(lease);
  }

  /** Stops the timer and forgets every lease (closing the backend). */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#period = Number.POSITIVE_INFINITY;
    this.#leases.clear();
  }

  #start(period: number): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#period = period;
    this.#timer = setInterval(() => this.#sweep(), period);
    this.#timer.unref();
  }

  #sweep(): void {
    if (this.#leases.size === 0) {
      this.stop();
      return;
    }
    const now = performance.now();
    let shortest = Number.POSITIVE_INFINITY;
    for (const [lease, e] of this.#leases) {
      if (e.every < shortest) shortest = e.every;
      // Due within half a period: renew now rather than a whole period late.
      if (e.inFlight || e.due - now > this.#period / 2) continue;
      e.inFlight = true;
      e.due = now + e.every;
      void lease.renew().finally(() => {
        e.inFlight = false;
      });
    }
    // The lease that set the period may be gone: run no more often than the others need.
    if (shortest > this.#period) this.#start(shortest);
  }
}
