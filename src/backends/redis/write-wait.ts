/**
 * A plain write waiting for an exclusive lease of the default action (backend.ts, "Unwritten
 * rules"): after its first "locked" answer the writer registers a waiter id on this backend's
 * wake-up channel and sends the batch again at once, now queueing itself on every document of
 * the batch (write_gate in lib.lua); then it waits for the pub/sub wake-up that the lease's
 * release or commit sends it, with a timer only as a fallback for a lease that expires silently
 * (its holder died), and sends the batch again. `timeoutMs` and `signal` (WriteOptions) end the
 * wait with LockTimeoutError or the signal's reason, close() with BackendError: nothing was
 * written then, and the writer's queue entries are taken out (`leave`) so that they do not hold
 * the next lock holders back until they lapse.
 */
import { BackendError, LockTimeoutError } from '../../errors.js';
import type { DocRef, WriteOptions } from '../../store/backend.js';
import { DEFAULT_ACTION, lockName } from '../../store/names.js';
import type { DocKeys } from './keys.js';
import type { Wakeups } from './wakeups.js';
import { nextId } from './wire.js';
import type { LockWait } from './writes.js';

/** What a waiting write needs from its backend. */
export interface WriteWaitHost {
  readonly wakeups: Wakeups;
  /** This backend's wake-up channel. */
  readonly channel: string;
  readonly instance: string;
  /** A queued waiter's entry lives this long unless refreshed. */
  readonly waiterTtlMs: number;
  /** Runs the leave script for waiter `wid` on the default-action queues of `docs`. */
  leave(wid: string, docs: readonly DocKeys[]): Promise<void>;
  /**
   * Registers `cancel` with close(), which calls it and then waits for the returned `left` to
   * be called (once the writer has left its queues). Returns the unregistration.
   */
  cancellable(cancel: (error: unknown) => void): { left(): void };
}

/**
 * The wait of one plain write batch.
 *
 * @example
 * ```ts
 * const result = await path.runBatch(plan, send, () => new WriteWait(host, plan.docs, plan.refs, options, started));
 * ```
 */
export class WriteWait implements LockWait {
  queue: LockWait['queue'];
  readonly #host: WriteWaitHost;
  readonly #docs: readonly DocKeys[];
  readonly #refs: readonly DocRef[];
  readonly #options: WriteOptions | undefined;
  readonly #started: number;
  readonly #wid: string;
  #woken = false;
  #notify: (() => void) | undefined;
  #cancelled: { error: unknown } | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #onAbort: (() => void) | undefined;
  #registration: { left(): void } | undefined;
  /** The doc (index into refs) the last "locked" answer named, for the timeout's message. */
  #lockedDoc = 0;

  /**
   * `docs`/`refs`: the batch's documents; `started`: when the write was called
   * (`performance.now()`), from which `options.timeoutMs` counts.
   */
  constructor(
    host: WriteWaitHost,
    docs: readonly DocKeys[],
    refs: readonly DocRef[],
    options: WriteOptions | undefined,
    started: number,
  ) {
    this.#host = host;
    this.#docs = docs;
    this.#refs = refs;
    this.#options = options;
    this.#started = started;
    this.#wid = nextId(host.instance, 'w');
  }

  async locked(docIndex: number, retryMs: number): Promise<void> {
    this.#lockedDoc = docIndex;
    if (this.queue === undefined) {
      // The first "locked": the batch was not queued yet. Register for wake-ups BEFORE the
      // queueing attempt, so that no wake-up sent after it can be missed, then go again at once.
      // (A wait on a lock held by this very flow is the boundary's DeadlockError, before this.)
      this.#start();
      const subscribing = this.#host.wakeups.subscribe();
      if (subscribing) await subscribing;
      this.#stopIfCancelled();
      this.queue = { q: this.#wid, ch: this.#host.channel, qt: this.#host.waiterTtlMs };
      return;
    }
    this.#stopIfCancelled();
    if (this.#woken) {
      this.#woken = false;
      return;
    }
    // The fallback: look again when the lease would expire if its holder stopped renewing, and
    // at least every half entry ttl (each attempt refreshes the queue entries).
    const fallbackMs = Math.min(retryMs + 2, this.#host.waiterTtlMs / 2);
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, fallbackMs);
      this.#notify = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.#notify = undefined;
    this.#woken = false;
    this.#stopIfCancelled();
  }

  finish(ran: boolean): Promise<void> | undefined {
    this.#host.wakeups.waiters.delete(this.#wid);
    if (this.#deadline) clearTimeout(this.#deadline);
    if (this.#onAbort) this.#options?.signal?.removeEventListener('abort', this.#onAbort);
    const registration = this.#registration;
    // The batch ran: its script took the entries out already. Otherwise (gave up, or a reply
    // lost) they may stand: take them out now.
    if (ran || this.queue === undefined) {
      registration?.left();
      return undefined;
    }
    return this.#host
      .leave(this.#wid, this.#docs)
      .catch(() => {
        /* the entries lapse on their own after the waiter ttl */
      })
      .finally(() => registration?.left());
  }

  #start(): void {
    this.#host.wakeups.waiters.set(this.#wid, () => {
      this.#woken = true;
      this.#notify?.();
    });
    this.#registration = this.#host.cancellable((error) => this.#cancel(error));
    const signal = this.#options?.signal;
    if (signal) {
      if (signal.aborted) this.#cancel(signal.reason);
      this.#onAbort = () => this.#cancel(signal.reason);
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
    const timeoutMs = this.#options?.timeoutMs;
    if (timeoutMs !== undefined) {
      const timedOut = () => {
        const ref = this.#refs[this.#lockedDoc] ?? this.#refs[0];
        this.#cancel(
          new LockTimeoutError(
            lockName(ref?.model ?? '?', [ref?.key ?? '?'], DEFAULT_ACTION),
            performance.now() - this.#started,
          ),
        );
      };
      const left = timeoutMs - (performance.now() - this.#started);
      if (left <= 0) timedOut();
      else this.#deadline = setTimeout(timedOut, left);
    }
  }

  #cancel(error: unknown): void {
    this.#cancelled ??= { error: error ?? new BackendError('the write was cancelled') };
    this.#notify?.();
  }

  #stopIfCancelled(): void {
    if (this.#cancelled) throw this.#cancelled.error;
  }
}
