/**
 * The one FIFO wait queue under every in-process primitive (the same design as tokio's batch
 * semaphore under its `Mutex` and `RwLock`).
 *
 * A {@link WaitQueue} owns `capacity` units. A caller takes `weight` units at once:
 * - synchronously, when nobody is queued and enough units are free (the fast path);
 * - otherwise it is appended to an intrusive doubly-linked list of {@link Waiter}s.
 *
 * When units come back, they are handed directly to the head of the queue, in order (no
 * barging: a newcomer never overtakes a waiter, even if enough units happen to be free for it).
 * A waiter that gives up (timeout, abort) is unlinked in O(1); if it was the head, the waiters
 * it was blocking are woken at once (this is how a timed-out writer wakes the readers queued
 * behind it).
 *
 * - `Mutex` is a queue of capacity 1.
 * - `RWLock` is a queue of capacity {@link MAX_UNITS}: a reader takes 1, a writer takes all of
 *   them. FIFO hand-off makes it write-preferring: once a writer is queued, later readers queue
 *   behind it.
 * - `Semaphore(n)` is a queue of capacity n with weighted takes.
 * - `LockTable` keeps one queue per (key, action), like an `RWLock`.
 *
 * @example
 * ```ts
 * const q = new WaitQueue(1);
 * q.tryTake(1); // true: taken synchronously
 * q.tryTake(1); // false: busy, nothing queued
 * q.give(1);    // hands the unit to the first waiter, if any
 * ```
 * @internal
 */

/** Units a reader-writer style queue owns: a writer takes all of them, a reader one. */
export const MAX_UNITS = 0x3fff_ffff;

/**
 * A node of a {@link WaitQueue}. Subclasses implement {@link Waiter.wake}, which the queue calls
 * once the waiter's units have been taken for it and it has left the queue.
 * @internal
 */
export abstract class Waiter {
  /** Previous node while queued. */
  prev: Waiter | null = null;
  /** Next node while queued. */
  next: Waiter | null = null;
  /** True while linked into a queue. */
  queued = false;
  /** Units wanted. */
  readonly weight: number;

  constructor(weight: number) {
    this.weight = weight;
  }

  /** The units were taken for this waiter and it left the queue: it now holds them. */
  abstract wake(): void;
}

/**
 * FIFO queue plus unit accounting. See the module comment.
 * @internal
 */
export class WaitQueue {
  /** First waiter (the one served next). */
  head: Waiter | null = null;
  /** Last waiter. */
  tail: Waiter | null = null;
  /** Number of queued waiters. */
  length = 0;
  /** Units not currently held. */
  available: number;
  /** Units in total. */
  readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.available = capacity;
  }

  /** Takes `weight` units synchronously if nobody is queued and enough are free. */
  tryTake(weight: number): boolean {
    if (this.head === null && this.available >= weight) {
      this.available -= weight;
      return true;
    }
    return false;
  }

  /** Appends a waiter. The caller checked that {@link tryTake} failed. */
  push(w: Waiter): void {
    w.queued = true;
    w.next = null;
    const tail = this.tail;
    w.prev = tail;
    if (tail === null) this.head = w;
    else tail.next = w;
    this.tail = w;
    this.length++;
  }

  /**
   * Unlinks a queued waiter in O(1) (timeout, abort). If it was the head, whoever it was
   * blocking is served now. Returns false if the waiter was not queued (already woken).
   */
  remove(w: Waiter): boolean {
    if (!w.queued) return false;
    const wasHead = w === this.head;
    this.unlink(w);
    if (wasHead && this.head !== null) this.dispatch();
    return true;
  }

  /** Returns `weight` units and hands them to the waiters at the head, in order. */
  give(weight: number): void {
    this.available += weight;
    if (this.head !== null) this.dispatch();
  }

  /** True when nothing is held and nobody waits. */
  get idle(): boolean {
    return this.head === null && this.available === this.capacity;
  }

  /** Serves the head while it fits. Re-reads the state each turn, so `wake` may re-enter. */
  dispatch(): void {
    let h = this.head;
    while (h !== null && h.weight <= this.available) {
      this.available -= h.weight;
      this.unlink(h);
      h.wake();
      h = this.head;
    }
  }

  private unlink(w: Waiter): void {
    const { prev, next } = w;
    if (prev === null) this.head = next;
    else prev.next = next;
    if (next === null) this.tail = prev;
    else next.prev = prev;
    w.prev = null;
    w.next = null;
    w.queued = false;
    this.length--;
  }
}
