/**
 * What every in-process primitive shares: the {@link Permit} it hands out, the
 * {@link AcquireOptions} every acquire takes (timeout, abort signal), input validation, and the
 * `run(fn)` helpers that release on return and on throw.
 *
 * @example
 * ```ts
 * import { Mutex } from 'lockstep';
 * const mutex = new Mutex();
 * {
 *   using permit = await mutex.acquire({ timeoutMs: 1_000 });
 *   // critical section; released at the end of the block, even on throw
 * }
 * ```
 */
import { LockTimeoutError, ValidationError } from '../errors.js';
import { Waiter, type WaitQueue } from './wait-queue.js';

/**
 * Options every acquire takes.
 *
 * @example
 * ```ts
 * await mutex.acquire({ timeoutMs: 500, signal: AbortSignal.timeout(2_000) });
 * ```
 */
export interface AcquireOptions {
  /**
   * Gives up with `signal.reason` when aborted (at once if already aborted), leaving nothing
   * queued.
   */
  signal?: AbortSignal;
  /**
   * Gives up with `LockTimeoutError` after this many milliseconds (0: only if free right now).
   * Must be a non-negative number; `Infinity` (or omitted) waits forever.
   */
  timeoutMs?: number;
}

/**
 * Proof of holding a lock. `release()` is idempotent; a permit is `Disposable`, so `using`
 * releases it at the end of the block.
 *
 * @example
 * ```ts
 * const permit = await mutex.acquire();
 * try { await work(); } finally { permit.release(); }
 * ```
 */
export interface Permit extends Disposable {
  /** Gives the lock back. Calling it again does nothing. */
  release(): void;
}

/** setTimeout's largest delay; longer timeouts mean "no timeout". */
const MAX_TIMER_MS = 2_147_483_647;

/** Validated options. @internal */
export interface ParsedOptions {
  timeoutMs: number | undefined;
  signal: AbortSignal | undefined;
}

/**
 * The error for bad input to a primitive: a `ValidationError` (code `INVALID`, like every bad
 * input in Lockstep) naming the call (`what`), the argument (`path`) and what to give instead.
 * `outcome` ends the message: what the refused call left as it was.
 *
 * @example
 * ```ts
 * throw invalid('Mutex.acquire', ['timeoutMs'], 'must be >= 0, got -1');
 * // ValidationError: Mutex.acquire is invalid: timeoutMs: must be >= 0, got -1; nothing was acquired or queued
 * ```
 * @internal
 */
export function invalid(
  what: string,
  path: readonly (string | number)[],
  message: string,
  outcome = 'nothing was acquired or queued',
): ValidationError {
  const err = new ValidationError(what, [{ message, path }]);
  // ValidationError speaks of writes (the store's case); a lock call says what it left alone.
  err.message = err.message.replace(/nothing was written$/, outcome);
  return err;
}

/** The outcome of a refused constructor call. @internal */
export const NOTHING_CREATED = 'nothing was created';

/** Throws a ValidationError saying what is wrong with `o`. @internal */
export function parseOptions(o: AcquireOptions, what: string): ParsedOptions {
  checkOptionsObject(o, what);
  const { timeoutMs, signal } = o;
  if (timeoutMs !== undefined) {
    if (typeof timeoutMs !== 'number') {
      throw invalid(
        what,
        ['timeoutMs'],
        `must be a number of milliseconds, got ${describeValue(timeoutMs)}`,
      );
    }
    if (!(timeoutMs >= 0)) {
      throw invalid(
        what,
        ['timeoutMs'],
        `must be >= 0 (0: only if free now; Infinity or omitted: wait forever), got ${timeoutMs}`,
      );
    }
  }
  if (signal !== undefined) {
    if (
      signal === null ||
      typeof signal !== 'object' ||
      typeof (signal as AbortSignal).addEventListener !== 'function' ||
      typeof (signal as AbortSignal).aborted !== 'boolean'
    ) {
      throw invalid(
        what,
        ['signal'],
        `must be an AbortSignal (an AbortController's signal, AbortSignal.timeout(ms)...), got ${describeValue(signal)}`,
      );
    }
  }
  return {
    timeoutMs: timeoutMs === undefined || timeoutMs > MAX_TIMER_MS ? undefined : timeoutMs,
    signal,
  };
}

/** Throws a ValidationError unless `o` is an object (an options bag). @internal */
export function checkOptionsObject(o: unknown, what: string, outcome?: string): void {
  if (o === null || typeof o !== 'object') {
    throw invalid(
      what,
      ['options'],
      `must be an object of options (or omitted), got ${describeValue(o)}`,
      outcome,
    );
  }
}

/** Throws a ValidationError unless `n` is a positive safe integer. @internal */
export function checkPositiveInteger(
  n: unknown,
  what: string,
  name: string,
  outcome?: string,
): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n <= 0) {
    throw invalid(what, [name], `must be a positive integer, got ${describeValue(n)}`, outcome);
  }
  return n;
}

/** Throws a ValidationError unless `fn` is a function. @internal */
export function checkFunction(fn: unknown, what: string): void {
  if (typeof fn !== 'function') {
    throw invalid(what, ['fn'], `must be a function to run, got ${describeValue(fn)}`);
  }
}

/** A short description of a bad value for error messages. @internal */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v == null) return String(v);
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : typeof v;
}

/** True for a promise or any thenable. @internal */
export function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    v !== null &&
    (typeof v === 'object' || typeof v === 'function') &&
    typeof (v as PromiseLike<unknown>).then === 'function'
  );
}

function noop(): void {}

/**
 * The timeout and abort signal of one waiter, allocated only when it has either: waiters without
 * options stay small. It is the abort listener itself (EventTarget calls `handleEvent`).
 * @internal
 */
class Armed {
  timer: ReturnType<typeof setTimeout> | undefined = undefined;
  signal: AbortSignal | undefined = undefined;
  constructor(
    readonly owner: { giveUp(reason: unknown): void; lockName(): string },
    readonly started: number,
    /** The whole timeout, in ms (for the error). */
    readonly limit: number,
  ) {}

  /** The abort listener. */
  handleEvent(): void {
    const signal = this.signal;
    if (signal !== undefined) this.owner.giveUp(signal.reason);
  }
}

function onTimer(a: Armed): void {
  a.timer = undefined;
  // Timers run on the event loop's clock, which may lag performance.now() by a millisecond:
  // the waiter did wait its whole timeout.
  const waited = Math.max(a.limit, performance.now() - a.started);
  a.owner.giveUp(new LockTimeoutError(a.owner.lockName(), waited));
}

/**
 * A queued request with a promise, a timeout and an abort signal. Subclasses say how to leave
 * their queue ({@link Pending.unqueue}) and what to clean up after giving up
 * ({@link Pending.afterGiveUp}).
 * @internal
 */
export abstract class Pending<T> extends Waiter {
  resolve: (value: T) => void = noop;
  reject: (reason: unknown) => void = noop;
  /** Timeout and signal, if any. */
  armed: Armed | null = null;

  /** The lock's name for error messages. */
  abstract lockName(): string;
  /** Leaves the queue; false if no longer queued (already granted). */
  abstract unqueue(): boolean;
  /** Bookkeeping after a timeout or abort (entry cleanup, wait-for graph). */
  afterGiveUp(): void {}

  /** Creates the promise this waiter settles. */
  promise(): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** Starts the timeout and listens to the signal. */
  arm(
    timeoutMs: number | undefined,
    signal: AbortSignal | undefined,
    started: number,
    limit = timeoutMs ?? 0,
  ): void {
    const a = new Armed(this, started, limit);
    this.armed = a;
    if (timeoutMs !== undefined) a.timer = setTimeout(onTimer, timeoutMs, a);
    if (signal !== undefined) {
      a.signal = signal;
      signal.addEventListener('abort', a);
    }
  }

  /** Stops the timeout and the signal listener (on grant or give-up). */
  disarm(): void {
    const a = this.armed;
    if (a === null) return;
    this.armed = null;
    if (a.timer !== undefined) clearTimeout(a.timer);
    if (a.signal !== undefined) a.signal.removeEventListener('abort', a);
  }

  /** Leaves the queue (waking whoever it blocked) and rejects with `reason`. */
  giveUp(reason: unknown): void {
    if (!this.unqueue()) return;
    this.disarm();
    this.afterGiveUp();
    this.reject(reason);
  }
}

/**
 * The permit handed out synchronously (fast path): three fields, so that an uncontended
 * `tryAcquire()+release()` costs next to nothing.
 * @internal
 */
/** Where a permit's units go back: the in-process {@link WaitQueue}, or a shared-memory queue. */
export interface UnitHome {
  give(units: number): void;
}

export class UnitPermit implements Permit {
  private released = false;
  private readonly home: UnitHome;
  private readonly weight: number;

  constructor(home: UnitHome, weight: number) {
    this.home = home;
    this.weight = weight;
  }

  /** True until released. */
  get held(): boolean {
    return !this.released;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.home.give(this.weight);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

const PENDING = 0;
const HELD = 1;
const RELEASED = 2;

/**
 * The permit of a `Mutex`, `RWLock` or `Semaphore`: while queued it is the waiter, once granted
 * it is the permit itself (one object per acquisition).
 * @internal
 */
export class QueuePermit extends Pending<Permit> implements Permit {
  private state = PENDING;
  private readonly home: WaitQueue;
  private readonly label: string;

  constructor(home: WaitQueue, weight: number, label: string) {
    super(weight);
    this.home = home;
    this.label = label;
  }

  /** True until released. */
  get held(): boolean {
    return this.state === HELD;
  }

  release(): void {
    if (this.state !== HELD) return;
    this.state = RELEASED;
    this.home.give(this.weight);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  wake(): void {
    if (this.armed !== null) this.disarm();
    this.state = HELD;
    this.resolve(this);
  }

  lockName(): string {
    return this.label;
  }

  unqueue(): boolean {
    return this.home.remove(this);
  }
}

/**
 * Takes `weight` units of `home`, waiting in FIFO order if needed. `label` names the lock in
 * errors. `what` names the method in validation errors.
 * @internal
 */
export function acquireUnits(
  home: WaitQueue,
  weight: number,
  label: string,
  o: AcquireOptions | undefined,
  what: string,
): Promise<Permit> {
  let timeoutMs: number | undefined;
  let signal: AbortSignal | undefined;
  if (o !== undefined) {
    try {
      ({ timeoutMs, signal } = parseOptions(o, what));
    } catch (err) {
      return Promise.reject(err);
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
  }
  if (home.tryTake(weight)) return Promise.resolve(new UnitPermit(home, weight));
  if (timeoutMs === 0) return Promise.reject(new LockTimeoutError(label, 0));
  const w = new QueuePermit(home, weight, label);
  const p = w.promise();
  home.push(w);
  if (timeoutMs !== undefined || signal !== undefined) w.arm(timeoutMs, signal, performance.now());
  return p;
}

/**
 * Runs `fn` while `weight` units of `home` are held (the caller took them), releasing them when
 * `fn` returns, throws or its promise settles. A synchronous `fn` runs inline: no promise is
 * created per hand-off, only the one returned.
 * @internal
 */
export function runTaken<T>(home: WaitQueue, weight: number, fn: () => T | Promise<T>): Promise<T> {
  let r: T | Promise<T>;
  try {
    r = fn();
  } catch (err) {
    home.give(weight);
    return Promise.reject(err);
  }
  if (isThenable(r)) {
    return Promise.resolve(r).then(
      (v) => {
        home.give(weight);
        return v;
      },
      (err: unknown) => {
        home.give(weight);
        throw err;
      },
    );
  }
  home.give(weight);
  return Promise.resolve(r);
}

/** Runs `fn` holding `permit`, releasing it afterwards (also on throw). @internal */
export function runHolding<T>(permit: Permit, fn: () => T | Promise<T>): Promise<T> | T {
  let r: T | Promise<T>;
  try {
    r = fn();
  } catch (err) {
    permit.release();
    throw err;
  }
  if (isThenable(r)) {
    return Promise.resolve(r).then(
      (v) => {
        permit.release();
        return v;
      },
      (err: unknown) => {
        permit.release();
        throw err;
      },
    );
  }
  permit.release();
  return r;
}

/**
 * A queued `run(fn)`. `fn` starts through a promise reaction registered when `run` was called,
 * so it runs in the caller's async context (AsyncLocalStorage stores, LockTable tasks), never
 * inside someone else's `release()`. `run`'s promise settles with `fn`'s outcome directly (no
 * promise adoption).
 * @internal
 */
class RunWaiter<T> extends Pending<T> {
  private readonly home: WaitQueue;
  private readonly label: string;
  private readonly fn: () => T | Promise<T>;
  private open: () => void = noop;

  constructor(home: WaitQueue, weight: number, label: string, fn: () => T | Promise<T>) {
    super(weight);
    this.home = home;
    this.label = label;
    this.fn = fn;
  }

  /** Call in the caller's context: returns `run`'s promise and arms the start of `fn`. */
  start(): Promise<T> {
    const result = this.promise();
    new Promise<void>((resolve) => {
      this.open = resolve;
    }).then(() => this.exec());
    return result;
  }

  wake(): void {
    if (this.armed !== null) this.disarm();
    this.open();
  }

  private exec(): void {
    let r: T | Promise<T>;
    try {
      r = this.fn();
    } catch (err) {
      this.home.give(this.weight);
      this.reject(err);
      return;
    }
    if (!isThenable(r)) {
      this.home.give(this.weight);
      this.resolve(r);
      return;
    }
    r.then(
      (v) => {
        this.home.give(this.weight);
        this.resolve(v as T);
      },
      (err: unknown) => {
        this.home.give(this.weight);
        this.reject(err);
      },
    );
  }

  lockName(): string {
    return this.label;
  }

  unqueue(): boolean {
    return this.home.remove(this);
  }
}

/**
 * `run(fn)` of a unit-based primitive: inline when free (synchronous body: no promise per
 * hand-off), otherwise queued in FIFO order behind earlier waiters.
 * @internal
 */
export function runUnits<T>(
  home: WaitQueue,
  weight: number,
  label: string,
  fn: () => T | Promise<T>,
  o: AcquireOptions | undefined,
  what: string,
): Promise<T> {
  let timeoutMs: number | undefined;
  let signal: AbortSignal | undefined;
  try {
    checkFunction(fn, what);
    if (o !== undefined) ({ timeoutMs, signal } = parseOptions(o, what));
  } catch (err) {
    return Promise.reject(err);
  }
  if (signal?.aborted) return Promise.reject(signal.reason);
  if (home.tryTake(weight)) return runTaken(home, weight, fn);
  if (timeoutMs === 0) return Promise.reject(new LockTimeoutError(label, 0));
  const w = new RunWaiter(home, weight, label, fn);
  const p = w.start();
  home.push(w);
  if (timeoutMs !== undefined || signal !== undefined) w.arm(timeoutMs, signal, performance.now());
  return p;
}
