import { DeadlockError, LockBusyError, LockTimeoutError } from '../errors.js';
import {
  addWait,
  findCycle,
  inChain,
  removeWait,
  Task,
  type TrackedEntry,
  type TrackedWait,
  taskStorage,
} from './deadlock.js';
import {
  type AcquireOptions,
  checkFunction,
  checkOptionsObject,
  describeValue,
  invalid,
  NOTHING_CREATED,
  Pending,
  type Permit,
  parseOptions,
  runHolding,
} from './permit.js';
import { MAX_UNITS, WaitQueue } from './wait-queue.js';

/**
 * Options of {@link LockTable.acquire}, {@link LockTable.tryAcquire} and {@link LockTable.run}.
 *
 * @example
 * ```ts
 * await table.acquire(['a', 'b'], { mode: 'shared', action: 'read-profile', timeoutMs: 100 });
 * ```
 */
export interface LockOptions extends AcquireOptions {
  /** `exclusive` (default): one holder. `shared`: any number of shared holders, no exclusive. */
  mode?: 'exclusive' | 'shared';
  /**
   * Locks are identified by (key, action): locks on one key with different actions never block
   * each other. Default: the unnamed action.
   */
  action?: string;
}

/**
 * Options of the {@link LockTable} constructor.
 *
 * @example
 * ```ts
 * const table = new LockTable({ detectDeadlocks: true, reentrant: true });
 * ```
 */
export interface LockTableOptions {
  /**
   * Reject with `DeadlockError`, at once, a wait that would close a wait-for cycle between
   * tasks (see {@link runAsTask}). Default: false — it makes Node track async contexts for the
   * whole process (see docs/benchmarks.md for the cost); turn it on where deadlocks are possible.
   */
  detectDeadlocks?: boolean;
  /**
   * A task may re-acquire a lock that it, or a task it runs inside (an outer `run`), already
   * holds — exclusive: in any mode; shared: shared — and gets it at once (an async RLock).
   * Without it, re-acquiring an exclusive lock you hold is a `DeadlockError` when
   * `detectDeadlocks` is on (and waits until its timeout otherwise). Upgrading shared to
   * exclusive is never granted this way.
   */
  reentrant?: boolean;
  /** Names the table in error messages. */
  name?: string;
}

/** One lock of the table: (key, action). It is its own wait queue (one object per lock). */
class LockEntry extends WaitQueue implements TrackedEntry {
  owner: Task | null = null;
  /** Exclusive grants of `owner` (reentrancy); only counted when the table tracks tasks. */
  depth = 0;
  shared: Map<Task, number> | null = null;
  /** Next waiter position. */
  seq = 0;
  readonly key: string;
  readonly action: string;
  readonly bucket: Map<string, LockEntry>;

  constructor(key: string, action: string, bucket: Map<string, LockEntry>) {
    super(MAX_UNITS);
    this.key = key;
    this.action = action;
    this.bucket = bucket;
  }

  get name(): string {
    return this.action === '' ? this.key : `${this.key} (action ${JSON.stringify(this.action)})`;
  }

  /** The queue (itself), as the deadlock detector sees it. */
  get queue(): WaitQueue {
    return this;
  }
}

/** A request as parsed once: its keys (canonical order), mode, action, deadline. */
class Request {
  constructor(
    readonly table: LockTable,
    readonly keys: readonly string[],
    readonly exclusive: boolean,
    readonly action: string,
    readonly timeoutMs: number | undefined,
    readonly signal: AbortSignal | undefined,
    readonly task: Task | undefined,
    /** performance.now() at the start, when there is a timeout or a signal. */
    readonly started: number,
  ) {}

  /** The lock's name for errors: the table, the key(s), the mode and action. */
  describe(waitingFor?: string): string {
    const t = this.table.label;
    const mode = this.exclusive ? '' : ' (shared)';
    const action = this.action === '' ? '' : ` action ${JSON.stringify(this.action)}`;
    if (this.keys.length === 1) return `${t} key ${JSON.stringify(this.keys[0])}${action}${mode}`;
    const all = this.keys.map((k) => JSON.stringify(k)).join(', ');
    const at = waitingFor === undefined ? '' : `, waiting for ${JSON.stringify(waitingFor)}`;
    return `${t} keys [${all}]${action}${mode}${at}`;
  }
}

/** One granted (key, action) lock. The permit of a single-key acquisition. */
class Grant implements Permit {
  private released = false;
  constructor(
    private readonly table: LockTable,
    readonly entry: LockEntry,
    /** Exclusive grant (counted in `entry.depth` when tracking) vs one shared unit. */
    readonly exclusive: boolean,
    readonly task: Task | undefined,
  ) {
    if (task !== undefined) task.holds++;
  }

  /** True until released. */
  get held(): boolean {
    return !this.released;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.task !== undefined) this.task.holds--;
    this.table.releaseGrant(this);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/** The permit of a multi-key acquisition: releases every key, in reverse order. */
class MultiGrant implements Permit {
  private released = false;
  constructor(private readonly grants: Grant[]) {}

  /** True until released. */
  get held(): boolean {
    return !this.released;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    releaseAll(this.grants);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

function releaseAll(grants: Grant[]): void {
  let first: unknown;
  let failed = false;
  for (let i = grants.length - 1; i >= 0; i--) {
    try {
      grants[i]!.release();
    } catch (err) {
      if (!failed) first = err;
      failed = true;
    }
  }
  if (failed) throw first;
}

/** A queued wait for one entry. Resolves with its {@link Grant}. */
class TableWaiter extends Pending<Grant> implements TrackedWait {
  readonly seq: number;
  constructor(
    readonly request: Request,
    readonly entry: LockEntry,
    readonly task: Task,
  ) {
    super(request.exclusive ? MAX_UNITS : 1);
    this.seq = entry.seq++;
  }

  get exclusive(): boolean {
    return this.request.exclusive;
  }

  wake(): void {
    if (this.armed !== null) this.disarm();
    const table = this.request.table;
    if (table.tracking) {
      table.recordHolder(this.entry, this.request.exclusive, this.task);
      removeWait(this.task, this);
    }
    this.resolve(
      new Grant(table, this.entry, this.request.exclusive, table.tracking ? this.task : undefined),
    );
  }

  lockName(): string {
    return this.request.describe(this.entry.key);
  }

  unqueue(): boolean {
    return this.entry.remove(this);
  }

  override afterGiveUp(): void {
    if (this.request.table.tracking) removeWait(this.task, this);
    this.request.table.dropIfIdle(this.entry);
  }
}

const EMPTY_OPTIONS: LockOptions = {};

/**
 * Locks by key, created on demand and removed when idle (a million distinct keys leave
 * `size === 0`). Each (key, action) is a FIFO, write-preferring reader-writer lock: `mode:
 * 'shared'` or `'exclusive'`. Several keys are taken in one canonical (sorted) order, all or
 * nothing: on timeout or abort the keys already taken are released. With `detectDeadlocks`, a
 * wait that would close a wait-for cycle between tasks is rejected at once with
 * `DeadlockError` (`.cycle` names the keys).
 *
 * @example
 * ```ts
 * import { LockTable } from 'lockstep';
 * const table = new LockTable({ detectDeadlocks: true });
 *
 * // bank transfer: both accounts, canonical order, all or nothing
 * await table.run([from, to], async () => {
 *   accounts[from] -= amount;
 *   accounts[to] += amount;
 * }, { timeoutMs: 1_000 });
 *
 * // shared readers
 * const balance = await table.run(from, () => accounts[from], { mode: 'shared' });
 * ```
 */
export class LockTable {
  /** True if holders and waiters are tracked per task (deadlock detection or reentrancy). */
  readonly tracking: boolean;
  private readonly detect: boolean;
  private readonly reentrant: boolean;
  /** @internal */
  readonly label: string;
  private readonly main = new Map<string, LockEntry>();
  private readonly byAction = new Map<string, Map<string, LockEntry>>();
  private count = 0;

  constructor(options?: LockTableOptions) {
    const what = 'new LockTable()';
    if (options !== undefined) checkOptionsObject(options, what, NOTHING_CREATED);
    const { detectDeadlocks = false, reentrant = false, name } = options ?? {};
    const mustBe = (field: string, kind: string, v: unknown) =>
      invalid(what, [field], `must be ${kind}, got ${describeValue(v)}`, NOTHING_CREATED);
    if (typeof detectDeadlocks !== 'boolean') {
      throw mustBe('detectDeadlocks', 'a boolean', detectDeadlocks);
    }
    if (typeof reentrant !== 'boolean') throw mustBe('reentrant', 'a boolean', reentrant);
    if (name !== undefined && typeof name !== 'string') throw mustBe('name', 'a string', name);
    this.detect = detectDeadlocks;
    this.reentrant = reentrant;
    this.tracking = detectDeadlocks || reentrant;
    this.label = name === undefined ? 'LockTable' : `LockTable ${JSON.stringify(name)}`;
  }

  /** How many locks exist (held or waited for). 0 when idle: idle locks are removed. */
  get size(): number {
    return this.count;
  }

  /**
   * Takes the lock(s) on `keys`, waiting in FIFO order. Several keys are taken in canonical
   * (sorted) order, all or nothing. Rejects with `LockTimeoutError` after `timeoutMs`, with
   * `signal.reason` when aborted (keys already taken are released), and with `DeadlockError`
   * if waiting would close a wait-for cycle (when `detectDeadlocks` is on).
   *
   * @example
   * ```ts
   * using permit = await table.acquire(['acct:1', 'acct:2'], { timeoutMs: 500 });
   * ```
   */
  acquire(keys: string | readonly string[], options?: LockOptions): Promise<Permit> {
    try {
      const r = this.begin(keys, options, 'LockTable.acquire', undefined);
      return r instanceof Promise ? r : Promise.resolve(r);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Takes the lock(s) only if all are free right now (and nobody is queued for them); otherwise
   * returns `undefined` and changes nothing. `timeoutMs` and `signal` are not used (but a bad one
   * is refused like anywhere else).
   *
   * @example
   * ```ts
   * const permit = table.tryAcquire('job:42');
   * if (!permit) return 'busy';
   * ```
   */
  tryAcquire(keys: string | readonly string[], options?: LockOptions): Permit | undefined {
    return this.tryIn(keys, options, 'LockTable.tryAcquire').permit;
  }

  /**
   * Like {@link LockTable.tryAcquire} but throws `LockBusyError` instead of returning undefined.
   *
   * @example
   * ```ts
   * using permit = table.acquireNowait('job:42'); // LockBusyError if held
   * ```
   */
  acquireNowait(keys: string | readonly string[], options?: LockOptions): Permit {
    const { permit, list, exclusive, action } = this.tryIn(
      keys,
      options,
      'LockTable.acquireNowait',
    );
    if (permit === undefined) {
      throw new LockBusyError(
        new Request(this, list, exclusive, action, undefined, undefined, undefined, 0).describe(),
      );
    }
    return permit;
  }

  /** tryAcquire, validating all of its input first (named `what` in errors). */
  private tryIn(
    keys: string | readonly string[],
    options: LockOptions | undefined,
    what: string,
  ): { permit: Permit | undefined; list: readonly string[]; exclusive: boolean; action: string } {
    const list = normalizeKeys(keys, what);
    const o = options === undefined ? EMPTY_OPTIONS : options;
    const { exclusive, action } = parseLockOptions(o, what);
    // Not used here, but a bad timeoutMs or signal is a mistake all the same.
    if (options !== undefined) parseOptions(o, what);
    const result = { permit: undefined as Permit | undefined, list, exclusive, action };
    const task = this.tracking ? (taskStorage.getStore() ?? new Task()) : undefined;
    const existing = action === '' ? this.main : this.byAction.get(action);
    if (existing !== undefined) {
      for (const key of list) {
        const e = existing.get(key);
        if (e !== undefined && !this.canGrantNow(e, exclusive, task)) return result;
      }
    }
    const bucket = this.bucketOf(action);
    if (list.length === 1) {
      result.permit = this.grantNow(
        this.entryOf(bucket, list[0] as string, action),
        exclusive,
        task,
      );
      return result;
    }
    const grants: Grant[] = [];
    for (const key of list) {
      grants.push(this.grantNow(this.entryOf(bucket, key, action), exclusive, task)!);
    }
    result.permit = new MultiGrant(grants);
    return result;
  }

  /**
   * Runs `fn` holding the lock(s) on `keys` and releases them when `fn` returns, throws or
   * settles. Runs as a task (see {@link runAsTask}), so nested calls are checked for deadlocks.
   * When the locks are free and `fn` is synchronous, `fn` runs inline.
   *
   * @example
   * ```ts
   * await table.run(['acct:1', 'acct:2'], async () => move(1, 2, 100));
   * ```
   */
  run<T>(
    keys: string | readonly string[],
    fn: () => T | Promise<T>,
    options?: LockOptions,
  ): Promise<T> {
    try {
      checkFunction(fn, 'LockTable.run');
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.tracking) {
      const task = new Task(taskStorage.getStore() ?? null);
      return taskStorage.run(task, () => this.runIn(keys, fn, options, task));
    }
    return this.runIn(keys, fn, options, undefined);
  }

  private runIn<T>(
    keys: string | readonly string[],
    fn: () => T | Promise<T>,
    options: LockOptions | undefined,
    task: Task | undefined,
  ): Promise<T> {
    let r: Permit | Promise<Permit>;
    try {
      r = this.begin(keys, options, 'LockTable.run', task);
    } catch (err) {
      return Promise.reject(err);
    }
    if (r instanceof Promise) return r.then((permit) => runHolding(permit, fn));
    try {
      const v = runHolding(r, fn);
      return v instanceof Promise ? v : Promise.resolve(v);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Parses, validates, then grants synchronously (a Permit) or starts waiting (a Promise). */
  private begin(
    keys: string | readonly string[],
    options: LockOptions | undefined,
    what: string,
    task: Task | undefined,
  ): Permit | Promise<Permit> {
    const list = normalizeKeys(keys, what);
    const o = options === undefined ? EMPTY_OPTIONS : options;
    const { exclusive, action } = parseLockOptions(o, what);
    const { timeoutMs, signal } = options === undefined ? NO_WAIT_OPTIONS : parseOptions(o, what);
    if (signal?.aborted) throw signal.reason;
    if (this.tracking && task === undefined) task = taskStorage.getStore() ?? new Task();
    const bucket = this.bucketOf(action);
    if (list.length === 1) {
      const entry = this.entryOf(bucket, list[0]!, action);
      const g = this.grantNow(entry, exclusive, task);
      if (g !== undefined) return g;
      const started = timeoutMs !== undefined || signal !== undefined ? performance.now() : 0;
      const req = new Request(this, list, exclusive, action, timeoutMs, signal, task, started);
      return this.wait(req, entry);
    }
    const grants: Grant[] = [];
    for (let i = 0; i < list.length; i++) {
      const entry = this.entryOf(bucket, list[i]!, action);
      const g = this.grantNow(entry, exclusive, task);
      if (g !== undefined) {
        grants.push(g);
        continue;
      }
      const started = timeoutMs !== undefined || signal !== undefined ? performance.now() : 0;
      const req = new Request(this, list, exclusive, action, timeoutMs, signal, task, started);
      return this.waitRest(req, i, entry, grants);
    }
    return new MultiGrant(grants);
  }

  /** Multi-key: waits for key `i` (whose entry is `entry`), then takes the rest in order. */
  private async waitRest(
    req: Request,
    i: number,
    entry: LockEntry,
    grants: Grant[],
  ): Promise<Permit> {
    try {
      grants.push(await this.wait(req, entry));
      for (i++; i < req.keys.length; i++) {
        if (req.signal?.aborted) throw req.signal.reason;
        const e = this.entryOf(this.bucketOf(req.action), req.keys[i]!, req.action);
        grants.push(this.grantNow(e, req.exclusive, req.task) ?? (await this.wait(req, e)));
      }
    } catch (err) {
      releaseAll(grants);
      throw err;
    }
    return new MultiGrant(grants);
  }

  /** Queues `req` on `entry` (after the deadlock check). Drops the entry if it gives up. */
  private wait(req: Request, entry: LockEntry): Promise<Grant> {
    let remaining = req.timeoutMs;
    if (remaining !== undefined) {
      const waited = performance.now() - req.started;
      remaining -= waited;
      if (remaining <= 0) {
        this.dropIfIdle(entry);
        throw new LockTimeoutError(req.describe(entry.key), waited);
      }
    }
    const task = req.task ?? UNTRACKED;
    if (this.detect) {
      const cycle = findCycle(task, entry, req.exclusive);
      if (cycle !== undefined) {
        this.dropIfIdle(entry);
        throw new DeadlockError(
          cycle,
          cycle.length === 2
            ? `deadlock detected: this task already holds ${JSON.stringify(entry.name)}${
                this.reentrant ? ' shared and asked for it exclusively (no upgrades)' : ''
              }, waiting for it again would wait forever${
                this.reentrant ? '' : ' (make the table with reentrant: true to allow re-entry)'
              }`
            : 'deadlock detected: waiting would close a wait-for cycle',
        );
      }
    }
    const w = new TableWaiter(req, entry, task);
    const p = w.promise();
    entry.push(w);
    if (this.tracking) addWait(task, w);
    if (remaining !== undefined || req.signal !== undefined)
      w.arm(remaining, req.signal, req.started, req.timeoutMs);
    return p;
  }

  /** True if `grantNow` would succeed. */
  private canGrantNow(e: LockEntry, exclusive: boolean, task: Task | undefined): boolean {
    if (task !== undefined && this.reentrant) {
      if (e.owner !== null && inChain(e.owner, task)) return true;
      if (!exclusive && sharedInChain(e, task)) return true;
    }
    const q = e;
    return q.head === null && q.available >= (exclusive ? MAX_UNITS : 1);
  }

  /** Grants `e` now if possible (free, or re-entry), recording the holder; else undefined. */
  private grantNow(e: LockEntry, exclusive: boolean, task: Task | undefined): Grant | undefined {
    if (task !== undefined && this.reentrant) {
      if (e.owner !== null && inChain(e.owner, task)) {
        e.depth++;
        return new Grant(this, e, true, task);
      }
      if (!exclusive && sharedInChain(e, task)) {
        e.available -= 1; // re-entry overtakes queued writers: they wait for us anyway
        this.recordHolder(e, false, task);
        return new Grant(this, e, false, task);
      }
    }
    if (!e.tryTake(exclusive ? MAX_UNITS : 1)) return undefined;
    if (task !== undefined) this.recordHolder(e, exclusive, task);
    return new Grant(this, e, exclusive, task);
  }

  /** @internal */
  recordHolder(e: LockEntry, exclusive: boolean, task: Task): void {
    if (exclusive) {
      e.owner = task;
      e.depth = 1;
    } else {
      if (e.shared === null) e.shared = new Map();
      e.shared.set(task, (e.shared.get(task) ?? 0) + 1);
    }
  }

  /** @internal */
  releaseGrant(g: Grant): void {
    const e = g.entry;
    if (g.exclusive) {
      if (this.tracking) {
        if (--e.depth > 0) return;
        e.owner = null;
      }
      e.give(MAX_UNITS);
    } else {
      if (this.tracking && g.task !== undefined && e.shared !== null) {
        const n = (e.shared.get(g.task) ?? 1) - 1;
        if (n > 0) e.shared.set(g.task, n);
        else {
          e.shared.delete(g.task);
          if (e.shared.size === 0) e.shared = null;
        }
      }
      e.give(1);
    }
    if (e.idle) this.drop(e);
  }

  /** @internal */
  dropIfIdle(e: LockEntry): void {
    if (e.idle) this.drop(e);
  }

  private drop(e: LockEntry): void {
    if (e.bucket.get(e.key) === e) {
      e.bucket.delete(e.key);
      this.count--;
      // Empty per-action maps are kept for reuse (actions are usually a few fixed names), up to
      // a bound, so that many distinct actions still cannot grow the table without limit.
      if (e.bucket.size === 0 && e.action !== '' && this.byAction.size > MAX_IDLE_ACTIONS) {
        this.byAction.delete(e.action);
      }
    }
  }

  private bucketOf(action: string): Map<string, LockEntry> {
    if (action === '') return this.main;
    let b = this.byAction.get(action);
    if (b === undefined) {
      b = new Map();
      this.byAction.set(action, b);
    }
    return b;
  }

  private entryOf(bucket: Map<string, LockEntry>, key: string, action: string): LockEntry {
    let e = bucket.get(key);
    if (e === undefined) {
      e = new LockEntry(key, action, bucket);
      bucket.set(key, e);
      this.count++;
    }
    return e;
  }
}

/** True if `task` or an ancestor holds `e` shared. */
function sharedInChain(e: LockEntry, task: Task): boolean {
  if (e.shared === null) return false;
  for (let t: Task | null = task; t !== null; t = t.parent) if (e.shared.has(t)) return true;
  return false;
}

/** How many per-action maps may stay allocated while empty. */
const MAX_IDLE_ACTIONS = 64;

/** The task of waiters in tables that do not track tasks. */
const UNTRACKED = new Task();

const NO_WAIT_OPTIONS = { timeoutMs: undefined, signal: undefined };

/** Validates keys; returns them deduplicated in canonical (sorted) order. */
function normalizeKeys(keys: string | readonly string[], what: string): readonly string[] {
  if (typeof keys === 'string') return [keys];
  if (!Array.isArray(keys)) {
    throw invalid(
      what,
      ['keys'],
      `must be a key (a string) or an array of keys, got ${describeValue(keys)}`,
    );
  }
  if (keys.length === 0) throw invalid(what, ['keys'], 'the list is empty; give at least one key');
  for (let i = 0; i < keys.length; i++) {
    if (typeof keys[i] !== 'string') {
      throw invalid(what, ['keys', i], `must be a string, got ${describeValue(keys[i])}`);
    }
  }
  // Always a copy: a waiting request must not see the caller's array change.
  if (keys.length === 1) return [keys[0] as string];
  if (keys.length === 2) {
    const a = keys[0] as string;
    const b = keys[1] as string;
    return a === b ? [a] : a < b ? [a, b] : [b, a];
  }
  const sorted = [...keys].sort();
  let n = 1;
  for (let i = 1; i < sorted.length; i++) if (sorted[i] !== sorted[n - 1]) sorted[n++] = sorted[i]!;
  sorted.length = n;
  return sorted;
}

function parseLockOptions(o: LockOptions, what: string): { exclusive: boolean; action: string } {
  checkOptionsObject(o, what);
  const { mode, action } = o;
  if (mode !== undefined && mode !== 'exclusive' && mode !== 'shared') {
    throw invalid(what, ['mode'], `must be 'exclusive' or 'shared', got ${describeValue(mode)}`);
  }
  if (action !== undefined && typeof action !== 'string') {
    throw invalid(what, ['action'], `must be a string, got ${describeValue(action)}`);
  }
  return { exclusive: mode !== 'shared', action: action ?? '' };
}
