import {
  type AcquireOptions,
  acquireUnits,
  checkOptionsObject,
  describeValue,
  invalid,
  NOTHING_CREATED,
  type Permit,
  runUnits,
  UnitPermit,
} from './permit.js';
import { WaitQueue } from './wait-queue.js';

/**
 * Options of {@link Mutex}.
 *
 * @example
 * ```ts
 * const mutex = new Mutex({ name: 'orders' }); // errors say: Mutex "orders"
 * ```
 */
export interface MutexOptions {
  /** Names the mutex in error messages. */
  name?: string;
}

/**
 * An async mutual-exclusion lock: FIFO, no barging (a release hands the lock directly to the
 * first waiter), synchronous when free.
 *
 * @example
 * ```ts
 * import { Mutex } from 'lockstep';
 * const mutex = new Mutex({ name: 'cache' });
 *
 * // run(): released on return and on throw; a synchronous body runs inline when free.
 * const value = await mutex.run(async () => refresh(cache));
 *
 * // acquire(): a Disposable permit.
 * {
 *   using permit = await mutex.acquire({ timeoutMs: 1_000 });
 *   await refresh(cache);
 * }
 * ```
 */
export class Mutex {
  private readonly queue = new WaitQueue(1);
  private readonly label: string;

  constructor(options?: MutexOptions) {
    this.label = nameOf('Mutex', options);
  }

  /**
   * Waits for the lock (FIFO). Rejects with `LockTimeoutError` after `timeoutMs`, or with
   * `signal.reason` when aborted; either way nothing stays queued.
   *
   * @example
   * ```ts
   * using permit = await mutex.acquire({ timeoutMs: 100 });
   * ```
   */
  acquire(options?: AcquireOptions): Promise<Permit> {
    return acquireUnits(this.queue, 1, this.label, options, 'Mutex.acquire');
  }

  /**
   * Takes the lock if it is free and nobody is queued; otherwise returns `undefined` and queues
   * nothing.
   *
   * @example
   * ```ts
   * const permit = mutex.tryAcquire();
   * if (permit) try { work(); } finally { permit.release(); }
   * ```
   */
  tryAcquire(): Permit | undefined {
    return this.queue.tryTake(1) ? new UnitPermit(this.queue, 1) : undefined;
  }

  /**
   * Runs `fn` holding the lock and releases it when `fn` returns, throws or settles. When the
   * lock is free and `fn` is synchronous, `fn` runs inline (before `run` returns).
   *
   * @example
   * ```ts
   * const n = await mutex.run(() => ++counter);
   * ```
   */
  run<T>(fn: () => T | Promise<T>, options?: AcquireOptions): Promise<T> {
    return runUnits(this.queue, 1, this.label, fn, options, 'Mutex.run');
  }

  /** True while someone holds the lock. */
  get isLocked(): boolean {
    return this.queue.available === 0;
  }

  /** How many callers are queued. */
  get waiting(): number {
    return this.queue.length;
  }
}

/**
 * `Kind "name"` for error messages; validates the constructor's options (a `ValidationError`
 * for bad ones).
 * @internal
 */
export function nameOf(kind: string, options: { name?: string } | undefined): string {
  if (options === undefined) return kind;
  const what = `new ${kind}()`;
  checkOptionsObject(options, what, NOTHING_CREATED);
  const { name } = options;
  if (name === undefined) return kind;
  if (typeof name !== 'string') {
    throw invalid(what, ['name'], `must be a string, got ${describeValue(name)}`, NOTHING_CREATED);
  }
  return `${kind} ${JSON.stringify(name)}`;
}
