/**
 * `Worker`: what `queue.work(handler, options)` runs — `concurrency` claim loops, each waiting
 * (without polling) for a job, running the handler with the claim renewed, then completing the job
 * with the handler's return, or retrying it with backoff on a throw (dead-lettering the last
 * attempt). `close()` stops claiming and waits for the running handlers.
 */
import { setMaxListeners } from 'node:events';
import { LeaseLostError, ValidationError } from '../errors.js';
import { errorText, type Job } from './job.js';
import type { LockContext } from './lock-context.js';

/** A job handler: its return completes the job, a throw retries it (see {@link Worker}). */
export type JobHandler<T> = (job: Job<T>, ctx: LockContext) => unknown;

/** Options of `queue.work`. */
export interface WorkOptions {
  /** Handlers running at once (default 1). */
  concurrency?: number;
  /** Aborting it closes the worker (as `close()`). */
  signal?: AbortSignal;
  /**
   * Called with what went wrong outside a handler's own throw: a backend error while claiming or
   * completing, a completion refused (the claim was lost). Default: ignored (the job comes back
   * when its lease expires).
   */
  onError?: (err: unknown, job?: Job<unknown>) => void;
}

/** What a worker needs of its queue. */
export interface WorkSource<T> {
  claim(options: { signal: AbortSignal }): Promise<Job<T> | undefined>;
  readonly maxAttempts: number;
  readonly leaseMs: number;
}

/** After a backend error in a claim loop: wait this long before claiming again. */
const ERROR_PAUSE_MS = 100;

/**
 * A running set of claim loops over one queue. Made by `queue.work(handler, options)`.
 *
 * @example
 * ```ts
 * const worker = q.work(async (job) => send(job.data), { concurrency: 16 });
 * await worker.close(); // stop claiming, let running jobs finish
 * ```
 */
export class Worker {
  readonly #ac = new AbortController();
  readonly #loops: Promise<void>[] = [];
  readonly #onError: ((err: unknown, job?: Job<unknown>) => void) | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = () => this.#ac.abort(new Error('worker closed'));
  #running = 0;
  #closing: Promise<void> | undefined;
  /** Jobs whose handler runs: one sweep timer renews them all (none while nothing runs). */
  readonly #active = new Set<Job<unknown>>();
  #sweep: NodeJS.Timeout | undefined;
  readonly #every: number;

  /** @internal use `queue.work(handler, options)`. */
  constructor(source: WorkSource<unknown>, handler: JobHandler<unknown>, options: WorkOptions) {
    this.#every = Math.max(1, Math.floor(source.leaseMs / 6));
    // One abort listener per claim loop on one signal: not a leak.
    setMaxListeners(0, this.#ac.signal);
    const n = options.concurrency ?? 1;
    if (!(Number.isSafeInteger(n) && n >= 1)) {
      throw new ValidationError('work', [
        { message: `concurrency must be a positive integer, got ${String(n)}` },
      ]);
    }
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
      throw new ValidationError('work', [{ message: 'signal must be an AbortSignal' }]);
    }
    if (options.onError !== undefined && typeof options.onError !== 'function') {
      throw new ValidationError('work', [{ message: 'onError must be a function' }]);
    }
    this.#onError = options.onError;
    this.#signal = options.signal;
    if (options.signal?.aborted) this.#ac.abort(options.signal.reason);
    else options.signal?.addEventListener('abort', this.#onAbort, { once: true });
    for (let i = 0; i < n; i++) this.#loops.push(this.#loop(source, handler));
  }

  /** Handlers running right now. */
  get running(): number {
    return this.#running;
  }

  #report(err: unknown, job?: Job<unknown>): void {
    try {
      this.#onError?.(err, job);
    } catch {
      // a reporter's own failure must not stop the worker
    }
  }

  async #loop(source: WorkSource<unknown>, handler: JobHandler<unknown>): Promise<void> {
    const signal = this.#ac.signal;
    while (!signal.aborted) {
      let job: Job<unknown> | undefined;
      try {
        job = await source.claim({ signal });
      } catch (err) {
        if (signal.aborted) return;
        this.#report(err);
        await pause(ERROR_PAUSE_MS, signal);
        continue;
      }
      if (job === undefined) continue;
      this.#running += 1;
      try {
        await this.#run(job, handler, source.maxAttempts);
      } finally {
        this.#running -= 1;
      }
    }
  }

  #startSweep(): void {
    if (this.#sweep !== undefined) return;
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const j of this.#active) j.renewIfDue(now);
    }, this.#every);
  }

  async #run(job: Job<unknown>, handler: JobHandler<unknown>, maxAttempts: number): Promise<void> {
    this.#active.add(job);
    this.#startSweep();
    try {
      let threw = false;
      let error: unknown;
      try {
        await handler(job, job.context);
      } catch (err) {
        threw = true;
        error = err;
      }
      if (job.settled || job.lost) return;
      try {
        if (!threw) await job.complete();
        else if (job.attempt >= maxAttempts) await job.fail(error);
        else await job.retry({ error: errorText(error) });
      } catch (err) {
        // A lost claim: another worker has (or will have) the job; nothing of this run was kept.
        if (!(err instanceof LeaseLostError) || this.#onError !== undefined) this.#report(err, job);
      }
    } finally {
      job.release();
      this.#active.delete(job);
      if (this.#active.size === 0 && this.#sweep !== undefined) {
        clearInterval(this.#sweep);
        this.#sweep = undefined;
      }
    }
  }

  /**
   * Stops claiming (waiting claims end at once) and resolves once every running handler has
   * finished and its job was completed, retried or failed. Idempotent.
   *
   * @example
   * ```ts
   * process.on('SIGTERM', () => worker.close());
   * ```
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#ac.abort(new Error('worker closed'));
      this.#signal?.removeEventListener('abort', this.#onAbort);
      this.#closing = Promise.all(this.#loops).then(() => undefined);
    }
    return this.#closing;
  }
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
