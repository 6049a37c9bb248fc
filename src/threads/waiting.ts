/**
 * How a thread waits for its ticket of a {@link SharedQueue} without blocking its event loop, and
 * the {@link Permit} it gets: `acquireShared` (timeout, abort signal), `runShared` (`run(fn)`),
 * and the keep-alive that a pending `Atomics.waitAsync` does not provide.
 *
 * Two traps of `Atomics.waitAsync` (Node 20) are handled here:
 * - a pending `waitAsync` does not keep the thread alive: a worker whose only work is waiting for
 *   a lock would exit, and a main thread could end with exit code 13 before its wake-up arrives.
 *   While this thread has a live waiter, one ref'ed interval timer keeps its loop alive (made
 *   once, then `ref()`/`unref()`ed: the thread exits by itself once nothing waits);
 * - a `waitAsync` cannot be cancelled: a waiter that times out or is aborted marks its ticket
 *   abandoned in shared memory and notifies its own slot, so its pending wait settles at once
 *   and is ignored. Each wait also carries a timeout ({@link RECHECK_MS}) after which the waiter
 *   looks at the queue again, so a wake-up that never arrives delays it, never strands it
 *   (counted in `waitCounters.rescued`).
 *
 * @example
 * ```ts
 * import { Mutex } from 'lockstep/threads';
 * const mutex = Mutex.from(workerData.mutex);
 * using permit = await mutex.acquire({ timeoutMs: 1_000 }); // the event loop keeps running
 * ```
 */
import { LockTimeoutError } from '../errors.js';
import { type AcquireOptions, type Permit, UnitPermit } from '../sync/permit.js';
import { checkFunction, invalid, parseOptions } from './options.js';
import { FULL, SharedQueue, TAKEN } from './shared-queue.js';

/** A waiter looks at the queue again after this long without a wake-up. */
export const RECHECK_MS = 500;

/** With the ring full, a newcomer tries to queue again after this long. */
const FULL_RETRY_MS = 1;

/** Counters for tests and benchmarks. @internal */
export const waitCounters = {
  /** Waiters that found themselves served only at a recheck (their wake-up did not arrive). */
  rescued: 0,
  /** Times a newcomer found the ring full and retried. */
  fullRetries: 0,
};

function noop(): void {}

/** `Atomics.waitAsync` (ES2024; present in Node >= 16, absent from this project's lib). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      index: number,
      value: number,
      timeoutMs: number,
    ):
      | { async: false; value: 'not-equal' | 'timed-out' }
      | { async: true; value: Promise<'ok' | 'timed-out'> };
  }
).waitAsync;

let alive = 0;
let keeper: ReturnType<typeof setInterval> | undefined;

/** One more live waiter on this thread: keep the event loop alive. */
function hold(): void {
  if (alive++ !== 0) return;
  if (keeper === undefined) keeper = setInterval(noop, 1 << 30);
  else keeper.ref();
}

/** One live waiter fewer: let the thread exit once none is left. */
function letGo(): void {
  if (--alive === 0) keeper?.unref();
}

/** Live waiters of this thread (for tests). @internal */
export function liveWaiters(): number {
  return alive;
}

const PENDING = 0;
const DONE = 1;

/** One queued acquisition of this thread. */
class Waiter {
  state = PENDING;
  ticket = 0;
  queued = false;
  resolve: (p: Permit) => void = noop;
  reject: (reason: unknown) => void = noop;
  timer: ReturnType<typeof setTimeout> | undefined = undefined;
  retry: ReturnType<typeof setTimeout> | undefined = undefined;
  signal: AbortSignal | undefined = undefined;
  private readonly started = performance.now();
  private readonly onWake = (r: 'ok' | 'not-equal' | 'timed-out'): void => this.check(r);

  constructor(
    readonly queue: SharedQueue,
    readonly units: number,
    readonly label: string,
    readonly timeoutMs: number | undefined,
  ) {}

  /** The abort listener (EventTarget calls `handleEvent`). */
  handleEvent(): void {
    if (this.signal !== undefined) this.giveUp(this.signal.reason);
  }

  /** Queues a ticket (or retries later when the ring is full) and waits for it. */
  enter(): void {
    const r = this.queue.enqueue(this.units);
    if (r === TAKEN) {
      this.grant();
      return;
    }
    if (r === FULL) {
      waitCounters.fullRetries++;
      this.retry = setTimeout(() => {
        this.retry = undefined;
        this.enter();
      }, FULL_RETRY_MS);
      return;
    }
    this.ticket = this.queue.ticket;
    this.queued = true;
    this.sleep();
  }

  private sleep(): void {
    const q = this.queue;
    const r = waitAsync(q.a, q.slotOf(this.ticket), SharedQueue.waitingWord(), RECHECK_MS);
    if (r.async) r.value.then(this.onWake);
    else this.check(r.value);
  }

  private check(r: 'ok' | 'not-equal' | 'timed-out'): void {
    if (this.state !== PENDING) return;
    if (this.queue.served(this.ticket)) {
      if (r === 'timed-out') waitCounters.rescued++;
      this.grant();
      return;
    }
    if (r === 'not-equal') {
      // Our slot changed but head has not passed us: cannot happen while we are queued; look
      // again shortly rather than spin.
      setTimeout(this.onWake, 1, 'timed-out');
      return;
    }
    this.sleep();
  }

  private settle(): void {
    this.state = DONE;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.retry !== undefined) clearTimeout(this.retry);
    if (this.signal !== undefined) this.signal.removeEventListener('abort', this);
    letGo();
  }

  grant(): void {
    this.settle();
    this.resolve(new UnitPermit(this.queue, this.units));
  }

  giveUp(reason: unknown): void {
    if (this.state !== PENDING) return;
    // Served at the same moment: the grant wins (the caller gets the lock, nothing is lost).
    if (this.queued && !this.queue.abandon(this.ticket)) {
      this.grant();
      return;
    }
    this.settle();
    this.reject(reason);
  }

  timedOut(): void {
    this.timer = undefined;
    const waited = Math.max(this.timeoutMs ?? 0, performance.now() - this.started);
    this.giveUp(new LockTimeoutError(this.label, waited));
  }
}

/**
 * Takes `units` of `queue`, waiting in FIFO order if needed (ticket queue in shared memory).
 * `label` names the lock in errors, `what` the method in validation errors.
 * @internal
 */
export function acquireShared(
  queue: SharedQueue,
  units: number,
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
  if (queue.tryTake(units)) return Promise.resolve(new UnitPermit(queue, units));
  if (timeoutMs === 0) return Promise.reject(new LockTimeoutError(label, 0));
  const w = new Waiter(queue, units, label, timeoutMs);
  const p = new Promise<Permit>((resolve, reject) => {
    w.resolve = resolve;
    w.reject = reject;
  });
  hold();
  if (timeoutMs !== undefined) w.timer = setTimeout(() => w.timedOut(), timeoutMs);
  if (signal !== undefined) {
    w.signal = signal;
    signal.addEventListener('abort', w);
  }
  w.enter();
  return p;
}

/** A private word to sleep on for a millisecond (the ring-full retry of a blocking acquire). */
const nap = new Int32Array(new SharedArrayBuffer(4));

/**
 * Takes `units` of `queue`, BLOCKING this thread until granted (FIFO, same queue as the async
 * waiters) or until `timeoutMs` (LockTimeoutError; nothing stays queued). For code in a worker
 * that cannot await; on a thread with an event loop to keep running, use the async acquire.
 * @internal
 */
export function acquireSharedSync(
  queue: SharedQueue,
  units: number,
  label: string,
  o: { timeoutMs?: number } | undefined,
  what: string,
): Permit {
  let timeoutMs: number | undefined;
  if (o !== undefined) {
    const parsed = parseOptions(o, what);
    if (parsed.signal !== undefined) {
      throw invalid(what, 'a blocking acquire cannot watch an AbortSignal; use timeoutMs');
    }
    timeoutMs = parsed.timeoutMs;
  }
  if (queue.tryTake(units)) return new UnitPermit(queue, units);
  if (timeoutMs === 0) throw new LockTimeoutError(label, 0);
  const started = performance.now();
  const deadline = timeoutMs === undefined ? Infinity : started + timeoutMs;
  for (;;) {
    const r = queue.enqueue(units);
    if (r === TAKEN) return new UnitPermit(queue, units);
    if (r !== FULL) break;
    if (performance.now() >= deadline) {
      throw new LockTimeoutError(label, performance.now() - started);
    }
    Atomics.wait(nap, 0, 0, 1);
  }
  const ticket = queue.ticket;
  const slot = queue.slotOf(ticket);
  const word = SharedQueue.waitingWord();
  for (;;) {
    if (queue.served(ticket)) return new UnitPermit(queue, units);
    const left = deadline - performance.now();
    if (left <= 0) {
      if (!queue.abandon(ticket)) return new UnitPermit(queue, units);
      throw new LockTimeoutError(label, Math.max(timeoutMs ?? 0, performance.now() - started));
    }
    Atomics.wait(queue.a, slot, word, Math.min(left, RECHECK_MS));
  }
}

/** True for a promise or any thenable. */
function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    v !== null &&
    (typeof v === 'object' || typeof v === 'function') &&
    typeof (v as PromiseLike<unknown>).then === 'function'
  );
}

/** Runs `fn` while `units` of `queue` are held, giving them back on return, throw or settle. */
function runHeld<T>(queue: SharedQueue, units: number, fn: () => T | Promise<T>): Promise<T> {
  let r: T | Promise<T>;
  try {
    r = fn();
  } catch (err) {
    queue.give(units);
    return Promise.reject(err);
  }
  if (!isThenable(r)) {
    queue.give(units);
    return Promise.resolve(r);
  }
  return Promise.resolve(r).then(
    (v) => {
      queue.give(units);
      return v;
    },
    (err: unknown) => {
      queue.give(units);
      throw err;
    },
  );
}

/**
 * `run(fn)` of a shared primitive: inline when free (a synchronous `fn` runs before `run`
 * returns), otherwise queued in FIFO order.
 * @internal
 */
export function runShared<T>(
  queue: SharedQueue,
  units: number,
  label: string,
  fn: () => T | Promise<T>,
  o: AcquireOptions | undefined,
  what: string,
): Promise<T> {
  try {
    checkFunction(fn, what);
    if (o !== undefined) {
      const { signal } = parseOptions(o, what);
      if (signal?.aborted) return Promise.reject(signal.reason);
    }
  } catch (err) {
    return Promise.reject(err);
  }
  if (queue.tryTake(units)) return runHeld(queue, units, fn);
  return acquireShared(queue, units, label, o, what).then((permit) => {
    let r: T | Promise<T>;
    try {
      r = fn();
    } catch (err) {
      permit.release();
      throw err;
    }
    if (!isThenable(r)) {
      permit.release();
      return r;
    }
    return Promise.resolve(r).finally(() => permit.release());
  });
}
