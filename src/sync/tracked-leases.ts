/**
 * The in-process wait-for graph for leases held through a server (a database or Redis).
 *
 * A server sees cycles between its own sessions, but not one that goes through the client: a
 * nested `lock()` waits in JavaScript while the outer lease sits idle on its connection, so the
 * server only sees an idle holder and a waiter, never the cycle. Within one process we can see
 * it: the store runs each `Model.lock` as one task (`runAsTask`, for backends that declare
 * `supports.inProcessDeadlocks`), and the boundary (`src/store/boundary.ts`) records here what
 * each lease's task holds and waits for — and each plain write that would wait for a holder of
 * this process — in the same
 * wait-for graph the in-process `LockTable` uses (`deadlock.ts`), so cycles that mix leases and
 * `LockTable` locks are found too. A wait that would close a cycle fails at once with
 * DeadlockError, before the lease queues on the server; cycles through other processes are not
 * seen here (they end at the caller's `timeoutMs`).
 *
 * Lock ids are opaque strings: a backend must make them unique per server, namespace, model, key
 * and action (two ids for the same lock hide a cycle; one id for two locks reports a false one).
 * Zero dependencies beyond this folder and the error classes.
 *
 * @example
 * ```ts
 * const tracked = trackLease(['pg\u0000db\u0000account\u0000ann\u0000default'], ['account "ann"'], true, false);
 * try {
 *   const lease = await takeOnServer(); // waits on the server
 *   tracked.granted();                  // now held; call tracked.released() when it ends
 * } catch (err) {
 *   tracked.abandoned();
 *   throw err;
 * }
 * ```
 */
import { DeadlockError } from '../errors.js';
import {
  addWait,
  findCycle,
  removeWait,
  Task,
  type TrackedEntry,
  type TrackedWait,
  taskStorage,
} from './deadlock.js';
import { Waiter, WaitQueue } from './wait-queue.js';

class Entry implements TrackedEntry {
  readonly id: string;
  #name: string | (() => string);
  owner: Task | null = null;
  ownerLost: (() => boolean) | null = null;
  shared: Map<Task, number> | null = null;
  /** Queued waits, in arrival order (capacity 0: the queue never wakes anyone, it only orders). */
  readonly queue = new WaitQueue(0);
  seq = 0;
  constructor(id: string, name: string | (() => string)) {
    this.id = id;
    this.#name = name;
  }
  /** Built on first use (a cycle to report): most locks never need their name. */
  get name(): string {
    if (typeof this.#name !== 'string') this.#name = this.#name();
    return this.#name;
  }
}

class Wait extends Waiter implements TrackedWait {
  readonly task: Task;
  readonly exclusive: boolean;
  readonly entry: Entry;
  readonly seq: number;
  constructor(task: Task, exclusive: boolean, entry: Entry, seq: number) {
    super(1);
    this.task = task;
    this.exclusive = exclusive;
    this.entry = entry;
    this.seq = seq;
  }
  wake(): void {}
}

/** Every lock this process holds or waits for through server leases, by lock id. */
const entries = new Map<string, Entry>();

/**
 * One lease's part in the wait-for graph: waiting from {@link trackLease} until `granted()`
 * (then held until `released()`) or `abandoned()`. Call exactly one of `granted()` /
 * `abandoned()`; `released()` is idempotent.
 *
 * @example
 * ```ts
 * const tracked = trackLease(ids, names, true, false); // DeadlockError if it would close a cycle
 * tracked.granted();  // the server granted the lease
 * tracked.released(); // its commit, release or expiry
 * ```
 */
export class TrackedLease {
  readonly #task: Task;
  readonly #exclusive: boolean;
  readonly #entries: Entry[];
  #waits: Wait[] = [];
  #held = false;

  /** @internal use {@link trackLease}. */
  constructor(task: Task, exclusive: boolean, list: Entry[]) {
    this.#task = task;
    this.#exclusive = exclusive;
    this.#entries = list;
  }

  /** @internal */
  wait(): void {
    this.#waits = this.#entries.map((e) => {
      const w = new Wait(this.#task, this.#exclusive, e, e.seq++);
      e.queue.push(w);
      addWait(this.#task, w);
      return w;
    });
  }

  #unwait(): void {
    for (const w of this.#waits) {
      w.entry.queue.remove(w);
      removeWait(this.#task, w);
    }
    this.#waits = [];
  }

  /**
   * The lease was granted: its waits become holds. `isLost` (asked only while a cycle is being
   * looked for) tells when an exclusive hold no longer blocks anyone because the lease was lost.
   */
  granted(isLost?: () => boolean): void {
    this.#unwait();
    for (let i = 0; i < this.#entries.length; i++) {
      // A lease that never waited (nowait, skipLocked) had no queue entry to keep its entry in
      // the map meanwhile: hold the entry the map has now, so other leases see this hold.
      let e = this.#entries[i] as Entry;
      const now = entries.get(e.id);
      if (now === undefined) entries.set(e.id, e);
      else if (now !== e) this.#entries[i] = e = now;
      if (this.#exclusive) {
        e.owner = this.#task;
        e.ownerLost = isLost ?? null;
      } else {
        e.shared ??= new Map();
        e.shared.set(this.#task, (e.shared.get(this.#task) ?? 0) + 1);
      }
      this.#task.holds += 1;
    }
    this.#held = true;
  }

  /** The wait ended without a lease (timeout, busy, abort, error). */
  abandoned(): void {
    this.#unwait();
    this.#tidy();
  }

  /** The lease's transaction ended. Idempotent. */
  released(): void {
    if (!this.#held) return;
    this.#held = false;
    for (const e of this.#entries) {
      if (this.#exclusive) {
        if (e.owner === this.#task) {
          e.owner = null;
          e.ownerLost = null;
        }
      } else if (e.shared) {
        const n = (e.shared.get(this.#task) ?? 0) - 1;
        if (n > 0) e.shared.set(this.#task, n);
        else e.shared.delete(this.#task);
        if (e.shared.size === 0) e.shared = null;
      }
      this.#task.holds -= 1;
    }
    this.#tidy();
  }

  #tidy(): void {
    for (const e of this.#entries) {
      if (e.owner === null && e.shared === null && e.queue.head === null) {
        if (entries.get(e.id) === e) entries.delete(e.id);
      }
    }
  }
}

/**
 * Registers a lease about to wait for `ids` (lock ids, with their display names for
 * `DeadlockError.cycle`) in the current task, in `exclusive` or shared mode. Throws DeadlockError
 * (and registers nothing) when waiting would close a cycle of tasks in this process. With
 * `noWait` (nowait, skipLocked) nothing waits, so no cycle can be closed and none is checked.
 * Call it before the lease queues on the server, so a refused wait leaves nothing there.
 *
 * @example
 * ```ts
 * const tracked = trackLease(['redis\u0000app:{account:ann}:l:default'], ['account "ann"'], true, false);
 * ```
 */
export function trackLease(
  ids: readonly string[],
  names: readonly string[] | ((i: number) => string),
  exclusive: boolean,
  noWait: boolean,
): TrackedLease {
  const task = taskStorage.getStore() ?? new Task(null);
  const list = ids.map((id, i) => {
    let e = entries.get(id);
    if (!e) {
      const name = typeof names === 'function' ? () => names(i) : (names[i] ?? id);
      entries.set(id, (e = new Entry(id, name)));
    }
    return e;
  });
  const t = new TrackedLease(task, exclusive, list);
  if (!noWait) {
    for (const e of list) {
      const cycle = findCycle(task, e, exclusive);
      if (cycle) {
        t.abandoned();
        throw new DeadlockError(
          cycle,
          'waiting would close a cycle of nested locks held in this process',
        );
      }
    }
    t.wait();
  }
  return t;
}

/** An entry as the detector sees it, with only its exclusive owner (a plain write waits for nothing else). */
const NO_QUEUE = new WaitQueue(0);

/**
 * Registers a plain write about to touch the documents whose default-action lock ids are `ids`:
 * a write waits only for an exclusive holder of those locks (not for shared holders nor queued
 * waiters), so only a lock held exclusively by a task of this process can make it wait. Returns
 * undefined at once (no allocation) when no such lock is held here. Otherwise throws DeadlockError
 * when the wait would close a cycle — a task writing a document it holds itself is the shortest
 * one —, or records the wait (call `abandoned()` once the write settles).
 *
 * @example
 * ```ts
 * const tracked = trackWrite([id]); // DeadlockError inside that lock's own fn
 * try { await backend.write(writes); } finally { tracked?.abandoned(); }
 * ```
 */
export function trackWrite(ids: readonly string[]): TrackedLease | undefined {
  if (entries.size === 0) return undefined;
  let list: Entry[] | undefined;
  for (const id of ids) {
    const e = entries.get(id);
    if (e !== undefined && e.owner !== null && !e.ownerLost?.()) (list ??= []).push(e);
  }
  if (list === undefined) return undefined;
  const task = taskStorage.getStore() ?? new Task(null);
  for (const e of list) {
    const view: TrackedEntry = {
      name: e.name,
      owner: e.owner,
      ownerLost: e.ownerLost,
      shared: null,
      queue: NO_QUEUE,
    };
    const cycle = findCycle(task, view, false);
    if (cycle) {
      throw new DeadlockError(
        cycle,
        cycle.length === 2
          ? "a plain write would wait for a lock held by the same flow; change the document through the lock's draft instead"
          : 'waiting would close a cycle of nested locks held in this process',
      );
    }
  }
  const t = new TrackedLease(task, false, list);
  t.wait();
  return t;
}

/**
 * True when some lock of this process is held or waited for through leases: until then a plain
 * write cannot wait for an in-process holder, and {@link trackWrite} need not be asked.
 *
 * @example
 * ```ts
 * if (anyTracked()) trackWrite(ids);
 * ```
 */
export function anyTracked(): boolean {
  return entries.size > 0;
}

/**
 * How many locks this process tracks through leases (0 when idle: nothing leaks).
 *
 * @example
 * ```ts
 * await store.close();
 * trackedLocks(); // 0
 * ```
 */
export function trackedLocks(): number {
  return entries.size;
}
