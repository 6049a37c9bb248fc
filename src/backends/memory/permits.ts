/**
 * Named permit pools of the memory backend (mutexes, rwlocks, semaphores): one in-process
 * {@link WaitQueue} per pool — FIFO, weighted, woken by direct hand-off, the same queue as
 * src/sync's `Semaphore` — with a fence counter, expiry timers for leases that do not renew,
 * and nothing kept for an idle pool.
 *
 * Expiry: the process clock. A renewing lease of this backend never expires while the process
 * runs (its holder is in this process: if the holder stalls, so does everyone). With
 * `renew: false` a lease ends `leaseMs` after its grant (or its last `extend`).
 *
 * @example
 * ```ts
 * const permits = new Permits(() => closed);
 * const lease = await permits.acquire({ kind: 'mutex', name: 'x', permits: 1, weight: 1,
 *   leaseMs: 30_000, renew: true, nowait: false });
 * await lease?.release();
 * ```
 */
import { LeaseLostError, ValidationError } from '../../errors.js';
import type { PermitKind, PermitLease, PermitRequest } from '../../store/backend.js';
import { permitName } from '../../store/names.js';
import { acquireUnits, Pending, type Permit, UnitPermit } from '../../sync/permit.js';
import { WaitQueue } from '../../sync/wait-queue.js';
import { closedError } from './closed.js';

/** setTimeout's largest delay; longer leases are capped to it (about 24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;

/** One pool: its queue (capacity = permits) and how many leases it has out. */
interface Pool {
  readonly id: string;
  readonly queue: WaitQueue;
  readonly label: string;
}

/**
 * Every pool of one memory backend.
 *
 * @example
 * ```ts
 * permits.stats(); // { pools: 0, leases: 0, timers: 0 } when idle
 * ```
 */
export class Permits {
  readonly #pools = new Map<string, Pool>();
  readonly #leases = new Set<MemoryPermit>();
  readonly #closed: () => boolean;
  /** One counter for every pool: strictly increasing per pool, as the contract asks. */
  #fence = 0;
  #timers = 0;

  constructor(closed: () => boolean) {
    this.#closed = closed;
  }

  /** Counts for leak checks: all 0 when idle. */
  stats(): { pools: number; leases: number; timers: number } {
    return { pools: this.#pools.size, leases: this.#leases.size, timers: this.#timers };
  }

  /** Units of `(kind, name)` held now. */
  held(kind: PermitKind, name: string): number {
    const pool = this.#pools.get(poolId(kind, name));
    return pool === undefined ? 0 : pool.queue.capacity - pool.queue.available;
  }

  acquire(req: PermitRequest): Promise<PermitLease | undefined> {
    if (this.#closed()) return Promise.reject(closedError());
    const id = poolId(req.kind, req.name);
    let pool = this.#pools.get(id);
    if (pool === undefined) {
      pool = { id, queue: new WaitQueue(req.permits), label: permitName(req.kind, req.name) };
      this.#pools.set(id, pool);
    } else if (pool.queue.capacity !== req.permits) {
      return Promise.reject(
        new ValidationError(pool.label, [
          {
            message: `it is in use with ${pool.queue.capacity} permits, not ${req.permits}: every client must give the same permits for one name`,
          },
        ]),
      );
    }
    const p = pool;
    if (p.queue.tryTake(req.weight)) {
      return Promise.resolve(this.#grant(p, req, new UnitPermit(p.queue, req.weight)));
    }
    if (req.nowait) {
      this.#dropIfIdle(p);
      return Promise.resolve(undefined);
    }
    return acquireUnits(
      p.queue,
      req.weight,
      p.label,
      { timeoutMs: req.timeoutMs, signal: req.signal },
      'acquirePermit',
    ).then(
      (permit) => this.#grant(p, req, permit),
      (err: unknown) => {
        this.#dropIfIdle(p);
        throw err;
      },
    );
  }

  #grant(pool: Pool, req: PermitRequest, permit: Permit): MemoryPermit {
    this.#fence += 1;
    const lease = new MemoryPermit(this, pool, req, permit, this.#fence);
    this.#leases.add(lease);
    if (!req.renew) lease.startTimer(Math.min(req.leaseMs, MAX_TIMER_MS));
    return lease;
  }

  /** @internal a lease ended (release or expiry): its units are back; drop an idle pool. */
  ended(lease: MemoryPermit, pool: Pool): void {
    this.#leases.delete(lease);
    this.#dropIfIdle(pool);
  }

  /** @internal +1 when an expiry timer starts, -1 when it stops. */
  timer(delta: 1 | -1): void {
    this.#timers += delta;
  }

  #dropIfIdle(pool: Pool): void {
    if (pool.queue.idle && this.#pools.get(pool.id) === pool) this.#pools.delete(pool.id);
  }

  /** Ends every wait (the closed error) and every lease (lost). */
  expireAll(why: string): void {
    for (const pool of [...this.#pools.values()]) {
      // Waiters first: a lease's units must not be handed to a wait that is about to end.
      for (let w = pool.queue.head; w !== null; ) {
        const next = w.next;
        if (w instanceof Pending) w.giveUp(closedError());
        w = next;
      }
    }
    for (const lease of [...this.#leases]) lease.expire(why);
  }
}

function poolId(kind: PermitKind, name: string): string {
  return `${kind}\u0000${name}`;
}

/** One held permit lease; see `PermitLease` in src/store/backend.ts. */
class MemoryPermit implements PermitLease {
  readonly fence: number;
  readonly #host: Permits;
  readonly #pool: Pool;
  readonly #req: PermitRequest;
  readonly #permit: Permit;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lost = false;
  #lostWhy = '';
  #ended = false;
  /** Made on first use: most holders never look at their signal. */
  #lostSignal: AbortController | undefined;

  constructor(host: Permits, pool: Pool, req: PermitRequest, permit: Permit, fence: number) {
    this.#host = host;
    this.#pool = pool;
    this.#req = req;
    this.#permit = permit;
    this.fence = fence;
  }

  get lost(): boolean {
    return this.#lost;
  }

  get signal(): AbortSignal {
    this.#lostSignal ??= new AbortController();
    if (this.#lost && !this.#lostSignal.signal.aborted) this.#abortLost();
    return this.#lostSignal.signal;
  }

  startTimer(ms: number): void {
    this.#stopTimer();
    this.#host.timer(1);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#host.timer(-1);
      this.expire(`it expired after ${this.#req.leaseMs} ms without renewal`);
    }, ms);
    this.#timer.unref?.();
  }

  #stopTimer(): void {
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#host.timer(-1);
  }

  /** Marks the lease lost and gives its units to the waiters. */
  expire(why: string): void {
    if (this.#ended) return;
    this.#lost = true;
    this.#lostWhy = why;
    this.#end();
    if (this.#lostSignal) this.#abortLost();
  }

  #lostError(): LeaseLostError {
    return new LeaseLostError(this.#pool.label, this.#lostWhy);
  }

  #abortLost(): void {
    this.#lostSignal?.abort(this.#lostError());
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#stopTimer();
    this.#permit.release();
    this.#host.ended(this, this.#pool);
  }

  extend(ms?: number): Promise<void> {
    if (this.#lost) return Promise.reject(this.#lostError());
    if (this.#ended) {
      return Promise.reject(new LeaseLostError(this.#pool.label, 'it was already released'));
    }
    // A renewing lease does not expire in this process; one that does not renew restarts its
    // clock at `ms` (default leaseMs).
    if (!this.#req.renew) this.startTimer(Math.min(ms ?? this.#req.leaseMs, MAX_TIMER_MS));
    return Promise.resolve();
  }

  release(): Promise<boolean> {
    this.#end();
    return Promise.resolve(!this.#lost);
  }
}
