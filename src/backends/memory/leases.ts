/**
 * Leases of the memory backend: built on the in-process {@link LockTable} (FIFO, deadlock
 * detection), with fencing tokens per lock identity and expiry timers, so that a holder that
 * lost its lease can never write.
 *
 * @example
 * ```ts
 * const leases = new Leases(docs, writer, () => closed);
 * const lease = await leases.acquire(request); // undefined when skipLocked found it busy
 * ```
 */
import { LeaseLostError, LockBusyError } from '../../errors.js';
import type { DocWrite, Lease, LeaseRequest, StoredDoc, WriteResult } from '../../store/backend.js';
import { DEFAULT_ACTION, lockName } from '../../store/names.js';
import { LockTable } from '../../sync/lock-table.js';
import type { Permit } from '../../sync/permit.js';
import { type CommitContext, type Refusal, refuse } from './batch.js';
import { closedError } from './closed.js';
import { type Documents, snapshot } from './documents.js';
import { lockId, WriteGate } from './gate.js';
import type { Writer } from './writer.js';

/** setTimeout's largest delay; longer leases are capped to it (about 24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;

/** What a lease may ask of its backend (the lease table's private methods, bound). */
interface LeaseHost {
  closed(): boolean;
  readonly writer: Writer;
  fenceHolds(mode: 'exclusive' | 'shared', fence: number, fenceIds: readonly string[]): boolean;
  leaseEnded(lease: MemoryLease, fence: number, fenceIds: readonly string[]): void;
  /** Plain writes queue here while an exclusive default-action lease holds their documents. */
  readonly gate: WriteGate;
  /** +1 when an expiry timer starts, -1 when it stops. */
  timer(delta: 1 | -1): void;
}

/**
 * Every live lease of one backend: the lock table, the current exclusive fence per lock
 * identity, and the count of expiry timers.
 *
 * @example
 * ```ts
 * leases.stats(); // { leases: 0, locks: 0, timers: 0 } when idle
 * ```
 */
export class Leases {
  readonly #docs: Documents;
  readonly #closed: () => boolean;
  readonly #locks = new LockTable({ detectDeadlocks: false });
  /** Plain writes wait here for exclusive default-action leases (shares the lock table). */
  readonly gate = new WriteGate(this.#locks);
  readonly #leases = new Set<MemoryLease>();
  /** Current exclusive holder's fence per lock identity (model, key, action). */
  readonly #fenceOf = new Map<string, number>();
  #fenceCounter = 0;
  #timers = 0;
  /** What leases may do to their backend; kept off the public surface. */
  readonly #host: LeaseHost;

  constructor(docs: Documents, writer: Writer, closed: () => boolean) {
    this.#docs = docs;
    this.#closed = closed;
    this.#host = {
      closed,
      writer,
      fenceHolds: (mode, fence, ids) => this.#fenceHolds(mode, fence, ids),
      leaseEnded: (lease, fence, ids) => this.#leaseEnded(lease, fence, ids),
      gate: this.gate,
      timer: (delta) => {
        this.#timers += delta;
      },
    };
  }

  /** Live leases, lock-table keys and expiry timers (all 0 when idle). */
  stats(): { leases: number; locks: number; timers: number } {
    return { leases: this.#leases.size, locks: this.#locks.size, timers: this.#timers };
  }

  /** Takes a lease on `request.keys` (FIFO, no polling), then reads them. */
  async acquire(request: LeaseRequest): Promise<Lease | undefined> {
    if (this.#closed()) throw closedError();
    const req = request;
    const { model, keys, action } = req;
    // Lock identity (model, key, action): the action is the LockTable's own dimension, and
    // `model:key` is unambiguous because model names hold no ':'.
    const ids =
      keys.length === 1 ? lockId(model, keys[0] as string) : keys.map((k) => lockId(model, k));
    let permit: Permit | undefined;
    if (req.nowait || req.skipLocked) {
      permit = this.#locks.tryAcquire(ids, { mode: req.mode, action });
      if (!permit) {
        if (req.skipLocked) return undefined;
        throw new LockBusyError(lockName(model, keys, action));
      }
    } else {
      permit = await this.#locks.acquire(ids, {
        mode: req.mode,
        action,
        timeoutMs: req.timeoutMs,
        signal: req.signal,
      });
    }
    if (this.#closed()) {
      permit.release();
      throw closedError();
    }
    const fence = ++this.#fenceCounter;
    // Fence identity: lock id, NUL, action (lock ids hold no NUL: keys cannot contain one).
    const fenceIds =
      typeof ids === 'string' ? [`${ids}\u0000${action}`] : ids.map((id) => `${id}\u0000${action}`);
    if (req.mode === 'exclusive') for (const id of fenceIds) this.#fenceOf.set(id, fence);
    const table = this.#docs.existingTable(model);
    const docs: Array<StoredDoc | undefined> = new Array(keys.length);
    const incarnations: Array<string | undefined> = new Array(keys.length);
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i] as string;
      const e = table && this.#docs.live(table, k);
      docs[i] = e ? snapshot(k, e.version, e.data, e.incarnation) : undefined;
      incarnations[i] = e?.incarnation;
    }
    // In the same synchronous step as the read: a plain write issued from now on waits for it.
    const gates = req.mode === 'exclusive' && action === DEFAULT_ACTION;
    if (gates) {
      if (typeof ids === 'string') this.gate.hold(ids);
      else for (const id of ids) this.gate.hold(id);
    }
    const lease = new MemoryLease(
      this.#host,
      req,
      permit,
      fence,
      fenceIds,
      gates ? ids : undefined,
      docs,
      incarnations,
    );
    this.#leases.add(lease);
    if (!req.renew) lease.startTimer(Math.min(req.leaseMs, MAX_TIMER_MS));
    return lease;
  }

  /** Ends every live lease: each is marked lost (with `why`) and its keys released. */
  expireAll(why: string): void {
    for (const lease of [...this.#leases]) lease.expire(why);
  }

  /** A lease's fence still holds on every key. */
  #fenceHolds(mode: 'exclusive' | 'shared', fence: number, fenceIds: readonly string[]): boolean {
    for (const id of fenceIds) {
      const cur = this.#fenceOf.get(id);
      if (mode === 'exclusive' ? cur !== fence : cur !== undefined && cur > fence) return false;
    }
    return true;
  }

  /** Called once by a lease when it ends (commit, release, expiry, close). */
  #leaseEnded(lease: MemoryLease, fence: number, fenceIds: readonly string[]): void {
    this.#leases.delete(lease);
    for (const id of fenceIds) if (this.#fenceOf.get(id) === fence) this.#fenceOf.delete(id);
  }
}

/** A lease held by this process on one or more keys. */
class MemoryLease implements Lease, CommitContext {
  readonly docs: ReadonlyArray<StoredDoc | undefined>;
  readonly fences: readonly number[];
  readonly #backend: LeaseHost;
  readonly #req: LeaseRequest;
  readonly #permit: Permit;
  readonly #fence: number;
  readonly #fenceIds: readonly string[];
  /** The documents this lease gates for plain writes (exclusive, default action), else undefined. */
  readonly #gated: string | readonly string[] | undefined;
  /** Per key of the request: the incarnation read when the lease was taken (undefined: missing). */
  readonly #incarnations: Array<string | undefined>;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lost = false;
  #lostWhy = '';
  /** Made on first use: most locks never look at their signal. */
  #lostSignal: AbortController | undefined;
  #ended = false;
  /** Set by the first commit (or the end): a lease commits at most once. */
  #spent = false;

  constructor(
    backend: LeaseHost,
    req: LeaseRequest,
    permit: Permit,
    fence: number,
    fenceIds: readonly string[],
    gated: string | readonly string[] | undefined,
    docs: Array<StoredDoc | undefined>,
    incarnations: Array<string | undefined>,
  ) {
    this.#backend = backend;
    this.#req = req;
    this.#permit = permit;
    this.#fence = fence;
    this.#fenceIds = fenceIds;
    this.#gated = gated;
    this.docs = docs;
    this.fences = req.keys.map(() => fence);
    this.#incarnations = incarnations;
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
    this.#backend.timer(1);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#backend.timer(-1);
      this.expire(`it expired after leaseMs (${this.#req.leaseMs} ms) without renewal`);
    }, ms);
    this.#timer.unref?.();
  }

  /** Marks the lease lost and lets waiters in. */
  expire(why: string): void {
    if (this.#ended) return;
    this.#lost = true;
    this.#lostWhy = why;
    this.#end();
    if (this.#lostSignal) this.#abortLost();
  }

  #abortLost(): void {
    this.#lostSignal?.abort(
      new LeaseLostError(
        lockName(this.#req.model, this.#req.keys, this.#req.action),
        this.#lostWhy,
      ),
    );
  }

  #end(): void {
    this.#spent = true;
    if (this.#ended) return;
    this.#ended = true;
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#backend.timer(-1);
    }
    this.#backend.leaseEnded(this, this.#fence, this.#fenceIds);
    const gated = this.#gated;
    if (gated !== undefined) {
      const gate = this.#backend.gate;
      if (typeof gated === 'string') gate.unhold(gated);
      else for (const id of gated) gate.unhold(id);
    }
    // Lets the next waiter in: a lease, or plain writes queued behind this one.
    this.#permit.release();
  }

  #fenceRefusal(): Refusal | undefined {
    if (this.#lost) return refuse(0, 'fence', `the lease was lost: ${this.#lostWhy}`);
    if (this.#ended) return refuse(0, 'fence', 'the lease already ended (committed or released)');
    if (!this.#backend.fenceHolds(this.#req.mode, this.#fence, this.#fenceIds)) {
      return refuse(0, 'fence', 'another holder took the lease');
    }
    return undefined;
  }

  commit(writes: readonly DocWrite[]): Promise<WriteResult> {
    if (this.#spent) {
      return Promise.resolve(
        this.#fenceRefusal() ?? refuse(0, 'fence', 'the lease is already committing'),
      );
    }
    this.#spent = true;
    let pending: Promise<WriteResult>;
    try {
      const early = this.#fenceRefusal();
      if (early) {
        this.#end();
        return Promise.resolve(early);
      }
      if (this.#backend.closed()) throw closedError();
      // Common case: fence check, apply and release in one synchronous step.
      const writer = this.#backend.writer;
      const now = writer.commitNow(writes, this);
      if (now !== undefined && !('slots' in now)) {
        this.#end();
        return Promise.resolve(now);
      }
      pending = writer.run(writes, this, now);
    } catch (err) {
      this.#end();
      return Promise.reject(err);
    }
    return pending.finally(() => this.#end());
  }

  async release(): Promise<boolean> {
    this.#end();
    return !this.#lost;
  }

  /** @internal {@link CommitContext}: checked in the same synchronous step as the install. */
  precondition(): Refusal | undefined {
    return this.#fenceRefusal();
  }

  /** @internal {@link CommitContext}: the incarnation of `key` when the lease was taken. */
  incarnationAtRead(_model: string, key: string): string | undefined {
    return this.#incarnations[this.#req.keys.indexOf(key)];
  }
}
