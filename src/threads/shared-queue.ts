/**
 * The one FIFO wait queue under every cross-thread primitive, kept in a `SharedArrayBuffer`
 * (the shared-memory twin of src/sync/wait-queue.ts).
 *
 * Layout (one `Int32Array` over the buffer):
 * - a header: a guard word, the capacity in units, the units free, the queue's `head` and `next`
 *   tickets, the number of live waiters, the ring and holder-table sizes, a magic word and the
 *   primitive's kind;
 * - a ring of `ring` slots, one per queued ticket (`ticket & (ring - 1)`): the waiter's state word
 *   (`owner << 2 | WAITING` or `ABANDONED`, 0 when empty) and the units it wants;
 * - a holder table: (owner, units held) per thread that holds units, so that what a dead thread
 *   held can be given back.
 *
 * A caller takes a ticket (`next++`) and waits until `head` has passed it; whoever gives units back
 * serves the tickets at `head`, in order, while their weight fits (no barging: a newcomer never
 * overtakes a queued ticket, even when enough units are free for it). A waiter that gives up
 * marks its slot ABANDONED (O(1)); an abandoned ticket is skipped when it reaches the head, and if
 * it was the head it is skipped at once, so whoever it blocked is served now. The owner of a
 * thread is `threadId + 1`.
 *
 * Every change of the header, ring and holder table happens under the guard word (a spin lock
 * held for a few dozen instructions, never across an await; it holds the owner's tag). Waiting
 * for a ticket never touches it: waiters sleep with `Atomics.waitAsync` on their own slot word,
 * which the dispatcher clears and notifies on grant. A waiter knows it was served when `head` has
 * passed its ticket (tickets wrap around 2^32: compared by signed difference).
 *
 * A thread stopped while inside the guard (`worker.terminate()` landing in the few instructions of
 * an acquire or release call) leaves the guard word holding its tag: `reclaim` (run on the
 * worker's `exit` by `watch`) takes it back. Every step under the guard writes its words between
 * two points where V8 can stop a thread (a call or a loop's back edge), so the queue it leaves is
 * consistent. Until that `exit` event is handled, other threads touching this primitive spin on
 * the guard (napping 50 us at a time); so would the watching thread itself if it touched the
 * primitive synchronously before handling the event, which is the one case not recovered.
 *
 * @example
 * ```ts
 * const q = SharedQueue.create(KIND_MUTEX, 1, { ring: 64 });
 * q.tryTake(1);            // true: taken synchronously
 * const t = q.enqueue(1);  // a ticket (nothing free): wait until q.served(t)
 * q.give(1);               // hands the unit to ticket t and notifies its slot
 * ```
 * @internal
 */
import { threadId } from 'node:worker_threads';
import { invalid } from './options.js';

/** The owner tag of this thread in shared memory (0 means nobody). */
export const ME = threadId + 1;

const GUARD = 0;
const CAPACITY = 1;
const AVAIL = 2;
const HEAD = 3;
const NEXT = 4;
const QUEUED = 5;
const RING = 6;
const HOLDERS = 7;
const MAGIC = 8;
const KIND = 9;
/** Units held by holders the full holder table could not record. */
const UNTRACKED = 10;
const HEADER = 12;

const MAGIC_VALUE = 0x4c4b_5354; // "LKST"

/** Slot states (low two bits of the state word; the owner tag is above them). */
const WAITING = 1;
const ABANDONED = 2;

/** Kinds of primitive, written in the header so that `from(handle)` checks what it opens. */
export const KIND_MUTEX = 1;
export const KIND_RWLOCK = 2;
export const KIND_SEMAPHORE = 3;

const KIND_NAMES = ['', 'Mutex', 'RWLock', 'Semaphore'];

/** `enqueue` found the ring full: nothing was queued. */
export const FULL = 1;
/** `enqueue` took the units at once: nothing was queued. */
export const TAKEN = 2;

/** Slot words to notify once the guard is released (preallocated: no allocation under it). */
const toWake = new Int32Array(1024);
let toWakeCount = 0;

/** Sizes of a new queue. @internal */
export interface QueueSizes {
  /** Ring slots: the most tickets queued at once (rounded up to a power of two). */
  ring: number;
  /** Holder-table entries: the most threads holding units at once that can be recovered. */
  holders: number;
}

/** Counters for tests and benchmarks. @internal */
export const counters = {
  /** Guard acquisitions that had to spin. */
  guardSpins: 0,
  /** Guard words taken back from a dead owner. */
  guardSteals: 0,
};

/** Rounds `n` up to a power of two. */
function pow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** The ticket queue over one shared buffer. @internal */
export class SharedQueue {
  readonly buffer: SharedArrayBuffer;
  readonly a: Int32Array;
  readonly capacity: number;
  private readonly mask: number;
  private readonly holderBase: number;
  private readonly holderCount: number;
  /** The holder-table entry this thread used last (checked first). */
  private hint: number;
  /** `enqueue`'s ticket (valid when it returned neither FULL nor TAKEN). */
  ticket = 0;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    const a = new Int32Array(buffer);
    this.a = a;
    this.capacity = a[CAPACITY]!;
    this.mask = a[RING]! - 1;
    this.holderBase = HEADER + 2 * a[RING]!;
    this.holderCount = a[HOLDERS]!;
    this.hint = this.holderBase;
  }

  /** A new queue of `capacity` units in a new shared buffer. */
  static create(kind: number, capacity: number, sizes: QueueSizes): SharedQueue {
    const ring = pow2(Math.max(2, sizes.ring));
    const holders = Math.max(1, sizes.holders);
    const buffer = new SharedArrayBuffer(4 * (HEADER + 2 * ring + 2 * holders));
    const a = new Int32Array(buffer);
    a[CAPACITY] = capacity;
    a[AVAIL] = capacity;
    a[RING] = ring;
    a[HOLDERS] = holders;
    a[MAGIC] = MAGIC_VALUE;
    Atomics.store(a, KIND, kind);
    return new SharedQueue(buffer);
  }

  /** Opens the queue of a handle's buffer, checking it is one of `kind`. */
  static open(buffer: unknown, kind: number, what: string): SharedQueue {
    if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < 4 * HEADER) {
      throw invalid(
        what,
        `expected the .handle of a lockstep/threads ${KIND_NAMES[kind]} (a SharedArrayBuffer inside), got ${buffer instanceof SharedArrayBuffer ? 'a buffer too small' : 'no shared buffer'}`,
      );
    }
    const a = new Int32Array(buffer);
    const found = Atomics.load(a, KIND);
    if (a[MAGIC] !== MAGIC_VALUE || found !== kind) {
      throw invalid(
        what,
        `this buffer is not a ${KIND_NAMES[kind]}${a[MAGIC] === MAGIC_VALUE ? ` (it is a ${KIND_NAMES[found] ?? 'unknown kind'})` : ''}; pass the .handle of a ${KIND_NAMES[kind]}`,
      );
    }
    return new SharedQueue(buffer);
  }

  // ---- the guard ----

  private lock(): void {
    if (Atomics.compareExchange(this.a, GUARD, 0, ME) !== 0) this.lockSlow(0);
  }

  /** Spins, then naps in 50 us steps; takes the guard back from `dead` (a reclaim). */
  private lockSlow(dead: number): void {
    const a = this.a;
    counters.guardSpins++;
    for (let spins = 0; ; spins++) {
      const cur = Atomics.load(a, GUARD);
      if (cur === 0 || cur === ME || (dead !== 0 && cur === dead)) {
        // ME: a section of this thread threw half-way (synchronous code: nobody else of this
        // thread is inside); dead: its owner is gone.
        if (Atomics.compareExchange(a, GUARD, cur, ME) === cur) {
          if (cur !== 0) counters.guardSteals++;
          return;
        }
        continue;
      }
      if (spins > 200) Atomics.wait(a, GUARD, cur, 0.05);
    }
  }

  private unlock(): void {
    Atomics.store(this.a, GUARD, 0);
    if (toWakeCount !== 0) this.flush();
  }

  private flush(): void {
    const a = this.a;
    const n = toWakeCount;
    toWakeCount = 0;
    for (let i = 0; i < n; i++) Atomics.notify(a, toWake[i]!);
  }

  // ---- holder table (under the guard) ----

  private hold(owner: number, units: number): void {
    const a = this.a;
    const h = this.hint;
    if (a[h] === owner) {
      a[h + 1]! += units;
      return;
    }
    let free = -1;
    const end = this.holderBase + 2 * this.holderCount;
    for (let k = this.holderBase; k < end; k += 2) {
      const o = a[k];
      if (o === owner) {
        a[k + 1]! += units;
        if (owner === ME) this.hint = k;
        return;
      }
      if (o === 0 && free < 0) free = k;
    }
    if (free < 0) {
      a[UNTRACKED]! += units;
      return;
    }
    a[free] = owner;
    a[free + 1] = units;
    if (owner === ME) this.hint = free;
  }

  private unhold(owner: number, units: number): void {
    const a = this.a;
    let k = this.hint;
    if (a[k] !== owner) {
      const end = this.holderBase + 2 * this.holderCount;
      for (k = this.holderBase; k < end && a[k] !== owner; k += 2);
      if (k === end) {
        a[UNTRACKED]! -= units;
        return;
      }
    }
    const left = a[k + 1]! - units;
    a[k + 1] = left;
    if (left === 0) a[k] = 0;
  }

  // ---- operations ----

  /** Takes `units` now if nobody is queued and enough are free. */
  tryTake(units: number): boolean {
    const a = this.a;
    this.lock();
    const ok = a[HEAD] === a[NEXT] && a[AVAIL]! >= units;
    if (ok) {
      this.hold(ME, units);
      a[AVAIL]! -= units; // plain: published by the guard's release
    }
    Atomics.store(a, GUARD, 0);
    return ok;
  }

  /**
   * Takes `units` now if possible (TAKEN), else queues a ticket for this thread (its number in
   * {@link ticket}; returns 0), or FULL when the ring has no free slot (nothing queued).
   */
  enqueue(units: number): number {
    const a = this.a;
    this.lock();
    const head = a[HEAD]!;
    const next = a[NEXT]!;
    let r = 0;
    if (head === next && a[AVAIL]! >= units) {
      this.hold(ME, units);
      Atomics.store(a, AVAIL, a[AVAIL]! - units);
      r = TAKEN;
    } else if (((next - head) | 0) > this.mask) {
      r = FULL;
    } else {
      const s = HEADER + 2 * (next & this.mask);
      a[s + 1] = units;
      Atomics.store(a, s, (ME << 2) | WAITING);
      Atomics.store(a, NEXT, (next + 1) | 0);
      Atomics.store(a, QUEUED, a[QUEUED]! + 1);
      this.ticket = next;
    }
    Atomics.store(a, GUARD, 0);
    return r;
  }

  /** The state-word index a ticket's waiter sleeps on. */
  slotOf(ticket: number): number {
    return HEADER + 2 * (ticket & this.mask);
  }

  /** The value of a waiting ticket's state word (what `waitAsync` expects). */
  static waitingWord(): number {
    return (ME << 2) | WAITING;
  }

  /** True once `head` has passed `ticket` (it was served; not valid for an abandoned ticket). */
  served(ticket: number): boolean {
    return ((Atomics.load(this.a, HEAD) - ticket) | 0) > 0;
  }

  /** Gives back `units` this thread held and serves the head of the queue. */
  give(units: number): void {
    const a = this.a;
    this.lock();
    this.unhold(ME, units);
    a[AVAIL]! += units;
    if (a[HEAD] !== a[NEXT]) this.dispatch();
    this.unlock();
  }

  /**
   * This thread's waiter of `ticket` gives up: true if it left the queue (whoever it blocked is
   * served now), false if it had been served already (it holds its units).
   */
  abandon(ticket: number): boolean {
    const a = this.a;
    this.lock();
    if (((a[HEAD]! - ticket) | 0) > 0) {
      Atomics.store(a, GUARD, 0);
      return false;
    }
    const s = this.slotOf(ticket);
    Atomics.store(a, s, ABANDONED);
    Atomics.store(a, QUEUED, a[QUEUED]! - 1);
    // waitAsync cannot be cancelled: the waiter's pending wait is woken (and ignored) now.
    toWake[toWakeCount++] = s;
    if (a[HEAD] === ticket) this.dispatch();
    this.unlock();
    return true;
  }

  /**
   * Takes back what the dead thread `owner` held and drops its queued tickets, then serves the
   * queue. Only for a thread that has exited. Returns the units given back.
   */
  reclaim(owner: number): { units: number; waiters: number } {
    const a = this.a;
    if (Atomics.compareExchange(a, GUARD, 0, ME) !== 0) this.lockSlow(owner);
    let units = 0;
    let waiters = 0;
    const end = this.holderBase + 2 * this.holderCount;
    for (let k = this.holderBase; k < end; k += 2) {
      if (a[k] === owner) {
        const held = a[k + 1]!;
        a[k] = 0;
        a[k + 1] = 0;
        Atomics.store(a, AVAIL, a[AVAIL]! + held);
        units += held;
      }
    }
    const word = (owner << 2) | WAITING;
    for (let t = a[HEAD]!; t !== a[NEXT]; t = (t + 1) | 0) {
      const s = this.slotOf(t);
      if (a[s] === word) {
        Atomics.store(a, s, ABANDONED);
        Atomics.store(a, QUEUED, a[QUEUED]! - 1);
        waiters++;
      }
    }
    this.dispatch();
    this.unlock();
    return { units, waiters };
  }

  /** Serves the head while it fits, skipping abandoned tickets (under the guard). */
  private dispatch(): void {
    const a = this.a;
    for (;;) {
      const head = a[HEAD]!;
      if (head === a[NEXT]) break;
      const s = HEADER + 2 * (head & this.mask);
      const word = a[s]!;
      if ((word & 3) === WAITING) {
        const units = a[s + 1]!;
        const avail = a[AVAIL]!;
        if (units > avail) break;
        // A thread can only be stopped at a call or a loop's back edge: each turn's writes are
        // done between two of them, so a holder stopped here leaves a consistent queue.
        this.hold(word >>> 2, units);
        Atomics.store(a, AVAIL, avail - units);
        Atomics.store(a, QUEUED, a[QUEUED]! - 1);
        if (toWakeCount < toWake.length) toWake[toWakeCount++] = s;
        else Atomics.notify(a, s); // a thousand grants at once: notify under the guard
      }
      Atomics.store(a, s, 0);
      Atomics.store(a, HEAD, (head + 1) | 0);
    }
  }

  // ---- reads (no guard) ----

  /** Units free now. */
  get available(): number {
    return Atomics.load(this.a, AVAIL);
  }

  /** Live waiters (abandoned tickets not counted). */
  get waiting(): number {
    return Atomics.load(this.a, QUEUED);
  }

  /** Tickets in the ring, abandoned ones included (0 when idle). */
  get ticketsInRing(): number {
    return (Atomics.load(this.a, NEXT) - Atomics.load(this.a, HEAD)) | 0;
  }

  /** Units held by threads the holder table could not record. */
  get untracked(): number {
    return Atomics.load(this.a, UNTRACKED);
  }
}
