/**
 * What the memory backend reports for leak checks.
 *
 * @example
 * ```ts
 * const { leases, locks, timers } = backend.stats(); // all 0 once every lock() has returned
 * ```
 */

/**
 * Counts of what the backend holds; every count but `documents` is 0 when idle.
 *
 * @example
 * ```ts
 * const { leases, locks, timers } = backend.stats(); // all 0 once every lock() has returned
 * ```
 */
export interface MemoryStats {
  /** Stored documents, all models together. */
  readonly documents: number;
  /** Leases taken and not yet committed, released or expired. */
  readonly leases: number;
  /** Keys held or waited for in the lock table. */
  readonly locks: number;
  /** Named-lock pools with a holder or a waiter (mutexes, rwlocks, semaphores). */
  readonly permitPools: number;
  /** Named-lock leases held and not yet released or expired. */
  readonly permitLeases: number;
  /** Lease expiry timers running (document and named-lock leases). */
  readonly timers: number;
  /** Documents reserved by a write whose async post-check is being re-run. */
  readonly reservations: number;
  /**
   * Documents plain writes must queue for: held by an exclusive default-action lease, or with a
   * plain write queued or running behind one.
   */
  readonly gated: number;
  /** Job queues held: with jobs (waiting, delayed, active or failed) or claimers. */
  readonly queues: number;
  /** Claims waiting for a job. */
  readonly claimers: number;
  /** Queue timers running (only while claimers wait for a delay or an expiry). */
  readonly queueTimers: number;
  /** Rate-limit keys with state (0 once every window has passed / every bucket is full). */
  readonly limitKeys: number;
  /** Documents written with a TTL and not yet reclaimed. */
  readonly expiring: number;
  /** Sweep timers running (rate limits and expiring documents; 0 when nothing can expire). */
  readonly sweeps: number;
}
