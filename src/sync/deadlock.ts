/**
 * Deadlock detection for {@link LockTable}: a wait-for graph over *tasks*, checked each time a
 * task is about to wait.
 *
 * A task is one logical flow of work, identified through `AsyncLocalStorage`: each
 * `LockTable.run` call is a task, and so is each {@link runAsTask} call (wrap code that uses
 * `acquire()` directly in it). Tasks nest: a task started inside another is its child, and a
 * parent is taken to wait for what its children wait for (it awaits them), while siblings (say
 * `Promise.all` of several `run`s) are separate tasks that simply queue for each other. Plain
 * `acquire()` calls belong to the current task; outside any task each is a task of its own.
 *
 * Edges: a task waiting for a lock waits for every holder it conflicts with, and for every
 * conflicting waiter queued ahead of it (FIFO: those are served first). Cycles can only be
 * closed by a new wait (a grant moves a waiter that was already ahead into the holders), so
 * checking each new wait keeps the graph acyclic and reports every deadlock at once, to the task
 * that would close it. Re-acquiring a lock held by the task or one of its ancestors is such a
 * cycle (unless the table is reentrant).
 *
 * @example
 * ```ts
 * import { LockTable, runAsTask } from 'lockstep';
 * const table = new LockTable();
 * await runAsTask(async () => {
 *   using a = await table.acquire('A');
 *   using b = await table.acquire('B'); // DeadlockError if another task holds B and waits for A
 * });
 * ```
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { checkFunction } from './permit.js';
import type { Waiter, WaitQueue } from './wait-queue.js';

/**
 * One logical flow of work: the node of the wait-for graph.
 * @internal
 */
export class Task {
  /** The task this one was started in, if any. */
  readonly parent: Task | null;
  /** The queued waits of this task and of its descendants (usually zero or one). */
  readonly waits: TrackedWait[] = [];
  /** How many grants this task itself holds, in tables that track tasks. */
  holds = 0;
  /** How many of `waits` are this task's own. */
  queued = 0;

  constructor(parent: Task | null = null) {
    this.parent = parent;
  }
}

/** True if `a` is `task` or one of its ancestors. @internal */
export function inChain(a: Task, task: Task): boolean {
  for (let t: Task | null = task; t !== null; t = t.parent) if (t === a) return true;
  return false;
}

/** Records that `task` waits (`w`): on it and on every ancestor. @internal */
export function addWait(task: Task, w: TrackedWait): void {
  task.queued++;
  for (let t: Task | null = task; t !== null; t = t.parent) t.waits.push(w);
}

/** Forgets a wait recorded by {@link addWait}. @internal */
export function removeWait(task: Task, w: TrackedWait): void {
  task.queued--;
  for (let t: Task | null = task; t !== null; t = t.parent) {
    const i = t.waits.indexOf(w);
    if (i >= 0) t.waits.splice(i, 1);
  }
}

/** A lock as the detector sees it. @internal */
export interface TrackedEntry {
  /** The lock's name, as `DeadlockError.cycle` shows it. */
  readonly name: string;
  /** The task holding it exclusively, if any. */
  owner: Task | null;
  /**
   * For a lock held through a server lease: true once that lease is known lost (expired, taken
   * over). A lost holder blocks nobody — its waiters get the lock — so it closes no cycle.
   */
  ownerLost?: (() => boolean) | null;
  /** Tasks holding it shared, with their count, if any. */
  shared: Map<Task, number> | null;
  /** Its waiters (all of them {@link TrackedWait}s). */
  readonly queue: WaitQueue;
}

/** A queued wait as the detector sees it. @internal */
export interface TrackedWait extends Waiter {
  readonly task: Task;
  readonly exclusive: boolean;
  readonly entry: TrackedEntry;
  /** Position in the entry's queue: increases with each waiter. */
  readonly seq: number;
}

/** Where tasks live. One for all tables, so cycles across tables are found too. @internal */
export const taskStorage: AsyncLocalStorage<Task> = new AsyncLocalStorage<Task>();

/**
 * Runs `fn` as one task for `LockTable` deadlock detection and reentrancy: every `acquire` made
 * inside it (across `await`s) belongs to this task. Inside another task it is a child of it.
 * `LockTable.run` does this by itself; use it when you call `acquire()` directly and keep the
 * lock across awaits that take more locks.
 *
 * @example
 * ```ts
 * await runAsTask(async () => {
 *   const permit = await table.acquire('account:1');
 *   try { await transfer(); } finally { permit.release(); }
 * });
 * ```
 */
export function runAsTask<T>(fn: () => T): T {
  checkFunction(fn, 'runAsTask');
  return taskStorage.run(new Task(taskStorage.getStore() ?? null), fn);
}

/** Per search: how far each entry's queue was already scanned (by seq), per requester mode. */
interface Scanned {
  all: number;
  exclusiveOnly: number;
}

/**
 * Would `task` waiting for `entry` (in `exclusive` mode, at the end of its queue) close a
 * wait-for cycle? Returns the cycle as lock names in wait order (first == last), or undefined.
 * @internal
 */
export function findCycle(
  task: Task,
  entry: TrackedEntry,
  exclusive: boolean,
): string[] | undefined {
  // Edges point at holders and queued waiters: if neither `task` nor an ancestor (which waits
  // for what `task` waits for) is one, no cycle can come back to them.
  let involved = false;
  for (let t: Task | null = task; t !== null; t = t.parent) {
    if (t.holds > 0 || t.queued > 0) {
      involved = true;
      break;
    }
  }
  if (!involved) return undefined;
  const path: string[] = [entry.name];
  const visited = new Set<Task>();
  const scanned = new Map<TrackedEntry, Scanned>();
  if (blockedBy(task, entry, exclusive, Number.POSITIVE_INFINITY, scanned, (b) => reaches(b))) {
    path.push(entry.name);
    return path;
  }
  return undefined;

  // True if `from` is `task` or an ancestor, or waits (transitively) for one; extends `path`.
  function reaches(from: Task): boolean {
    if (inChain(from, task)) return true;
    if (visited.has(from)) return false;
    visited.add(from);
    for (const w of from.waits) {
      path.push(w.entry.name);
      if (blockedBy(task, w.entry, w.exclusive, w.seq, scanned, reaches)) return true;
      path.pop();
    }
    return false;
  }
}

/**
 * Calls `visit` on each task a waiter (mode `exclusive`, position `seq`) of `entry` waits for,
 * until one returns true. Queue prefixes already scanned in this search are skipped: their
 * tasks were visited already.
 */
function blockedBy(
  target: Task,
  entry: TrackedEntry,
  exclusive: boolean,
  seq: number,
  scanned: Map<TrackedEntry, Scanned>,
  visit: (t: Task) => boolean,
): boolean {
  if (entry.owner !== null && !entry.ownerLost?.() && visit(entry.owner)) return true;
  if (exclusive && entry.shared !== null) {
    for (const t of entry.shared.keys()) if (visit(t)) return true;
  }
  let s = scanned.get(entry);
  if (s === undefined) {
    s = { all: -1, exclusiveOnly: -1 };
    scanned.set(entry, s);
  }
  const covered = exclusive ? s.all : Math.max(s.all, s.exclusiveOnly);
  if (covered >= seq) return false;
  if (exclusive) s.all = seq;
  else s.exclusiveOnly = seq;
  for (
    let w = entry.queue.head as TrackedWait | null;
    w !== null;
    w = w.next as TrackedWait | null
  ) {
    if (w.seq >= seq) break;
    if (w.seq < covered) continue;
    // A waiter whose only wait is this one waits for a subset of what this scan visits.
    if (exclusive && w.task.waits.length === 1 && !inChain(w.task, target)) continue;
    if ((exclusive || w.exclusive) && visit(w.task)) return true;
  }
  return false;
}
