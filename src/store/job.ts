/**
 * `Job<T>`: one claimed job of a `store.queue` — its payload, attempt and fence, the claim's
 * lease (renewed while a worker's handler runs, watched by a local deadline so that `signal`
 * aborts the moment the claim is known lost) and the fenced steps that end it: `complete`
 * (effects committed atomically with it), `retry`, `fail`, and `extend`.
 */
import { LeaseLostError, ValidationError } from '../errors.js';
import type { ClaimedJob, DocWrite, QueueBackend } from './backend.js';
import { MAX_JOB_ERROR } from './checks.js';
import type { LockContext } from './lock-context.js';
import { type OpBatch, refusalError } from './model.js';

/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2_147_483_647;

/** Full-jitter exponential backoff: how a queue spaces out the retries of a failing job. */
export interface Backoff {
  /** The first retry waits up to this long (then 2x, 4x, ... up to `maxMs`). */
  readonly baseMs: number;
  /** The cap of the exponential growth. */
  readonly maxMs: number;
}

/**
 * A retry's delay after attempt `attempt` (1-based): uniform in [0, min(maxMs, baseMs * 2^(attempt-1))].
 *
 * @example
 * ```ts
 * backoffDelay({ baseMs: 1000, maxMs: 60_000 }, 3); // somewhere in [0, 4000]
 * ```
 */
export function backoffDelay(b: Backoff, attempt: number): number {
  const cap = Math.min(b.maxMs, b.baseMs * 2 ** Math.max(0, Math.min(attempt - 1, 52)));
  return Math.floor(Math.random() * cap);
}

/** What a job needs of its queue. */
export interface JobHost {
  readonly queues: QueueBackend;
  readonly name: string;
  readonly leaseMs: number;
  readonly maxAttempts: number;
  readonly backoff: Backoff;
}

/** Options of {@link Job.retry}. */
export interface RetryOptions {
  /** Claimable again after this long (server clock). Default: the queue's backoff for this attempt. */
  delayMs?: number;
  /** Kept as the job's last error. */
  error?: string;
}

/** The message a job keeps for a thrown value. */
export function errorText(err: unknown): string {
  const s =
    err instanceof Error
      ? `${err.name}: ${err.message}`
      : typeof err === 'string'
        ? err
        : String(err);
  return s.length > MAX_JOB_ERROR ? s.slice(0, MAX_JOB_ERROR) : s;
}

/**
 * A claimed job. Made by `queue.claim()` and handed to `queue.work()` handlers; every step is
 * fenced: once the claim is lost (its lease expired, another worker claimed the job again) they
 * reject with LeaseLostError and change nothing.
 *
 * @example
 * ```ts
 * const job = await q.claim({ timeoutMs: 1000 });
 * if (job) await job.complete([Order.ops(job.data.order, (o) => o.charged.set(true))]);
 * ```
 */
export class Job<T> {
  /** The job's id (unique in its queue). */
  readonly id: string;
  /** The payload, as the queue's schema parsed it on enqueue. */
  readonly data: T;
  /** 1 on the job's first run, +1 per claim. */
  readonly attempt: number;
  /** This claim's fencing token: strictly greater than every earlier claim's of this job. */
  readonly fence: number;
  readonly #host: JobHost;
  #ac: AbortController | undefined;
  #lost = false;
  #done: 'completed' | 'retried' | 'failed' | undefined;
  /** The claim holds at least until then (local clock, taken before each request was sent). */
  #deadline: number;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #context: LockContext | undefined;
  /** When the claim or its last renewal was sent (local clock). */
  #renewedAt: number;
  #renewing = false;

  /** @internal made by the queue from a claim; `sentAt` is when the claim request was sent. */
  constructor(host: JobHost, claimed: ClaimedJob, sentAt: number) {
    this.#host = host;
    this.id = claimed.id;
    this.data = claimed.data as T;
    this.attempt = claimed.attempt;
    this.fence = claimed.fence;
    this.#deadline = sentAt + host.leaseMs;
    this.#renewedAt = sentAt;
  }

  /** True once the claim is known lost (its `signal` aborted); every step then rejects. */
  get lost(): boolean {
    return this.#lost;
  }

  /** True once the job was completed, retried or failed by this claim. */
  get settled(): boolean {
    return this.#done !== undefined;
  }

  /**
   * Aborted (reason: a LeaseLostError) the moment the claim is known lost: a renewal refused, or
   * the lease's deadline passed without a confirmed renewal. Never aborted by complete/retry/fail.
   */
  get signal(): AbortSignal {
    if (this.#ac === undefined) {
      this.#ac = new AbortController();
      if (this.#lost) this.#ac.abort(this.#lostError('the claim was lost'));
      else if (this.#done === undefined) this.#armDeadline();
    }
    return this.#ac.signal;
  }

  /** @internal The handler's context: this claim's signal and fence. */
  get context(): LockContext {
    this.#context ??= new JobContext(this);
    return this.#context;
  }

  #what(): string {
    return `job ${JSON.stringify(this.id)} of queue ${this.#host.name}`;
  }

  #lostError(detail: string): LeaseLostError {
    return new LeaseLostError(this.#what(), detail);
  }

  #markLost(detail: string): LeaseLostError {
    const err = this.#lostError(detail);
    if (!this.#lost) {
      this.#lost = true;
      this.#stopTimers();
      this.#ac?.abort(err);
    }
    return err;
  }

  #armDeadline(): void {
    if (this.#ac === undefined || this.#done !== undefined || this.#lost) return;
    if (this.#deadlineTimer !== undefined) clearTimeout(this.#deadlineTimer);
    const ms = Math.min(MAX_TIMER_MS, Math.max(0, this.#deadline - Date.now()));
    this.#deadlineTimer = setTimeout(() => {
      this.#deadlineTimer = undefined;
      if (Date.now() >= this.#deadline)
        this.#markLost('its lease expired before a renewal was confirmed');
      else this.#armDeadline();
    }, ms);
  }

  #stopTimers(): void {
    if (this.#deadlineTimer !== undefined) clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
  }

  /**
   * @internal For a worker's renewal sweep: extends the claim (in the background) when its last
   * renewal was sent at least a third of the lease ago; a failed renewal is retried at the next
   * sweep until the deadline says the claim is lost.
   */
  renewIfDue(now: number): void {
    if (this.#done !== undefined || this.#lost || this.#renewing) return;
    if (now - this.#renewedAt < this.#host.leaseMs / 3) return;
    this.#renewing = true;
    this.extend().then(
      () => {
        this.#renewing = false;
      },
      () => {
        this.#renewing = false;
      },
    );
  }

  #begin(step: string): void {
    if (this.#done !== undefined) {
      throw new ValidationError(this.#what(), [
        { message: `${step}: the job was already ${this.#done} by this claim` },
      ]);
    }
    if (this.#lost) throw this.#lostError('the claim was lost before this step');
  }

  #settle(how: 'completed' | 'retried' | 'failed'): void {
    this.#done = how;
    this.#stopTimers();
  }

  /**
   * Completes the job, committing `effects` (from `Model.ops`, `createOp`, `putOp`, `deleteOp`)
   * in the same atomic step: both happen, or neither. Rejects with LeaseLostError (nothing
   * written) when the claim was lost; a refused effect (a guard, a missing document) rejects
   * with its error and leaves the job claimed.
   *
   * @example
   * ```ts
   * await job.complete([Order.ops(job.data.orderId, (o) => o.charged.set(true))]);
   * ```
   */
  async complete(effects: readonly OpBatch[] = []): Promise<void> {
    this.#begin('complete');
    if (!Array.isArray(effects)) {
      throw new ValidationError(`complete of ${this.#what()}`, [
        { message: 'effects must be an array of Model.ops(...) parts' },
      ]);
    }
    const writes: DocWrite[] = [];
    for (const b of effects) {
      if (b?.job !== undefined) {
        throw new ValidationError(`complete of ${this.#what()}`, [
          { message: 'a job cannot enqueue in its completion; enqueue with store.apply instead' },
        ]);
      }
      const w = b?.pending !== undefined ? await b.pending : b?.write;
      writes.push(w as DocWrite);
    }
    const r = await this.#host.queues.complete(this.#host.name, this.id, this.fence, writes);
    if (r.applied) {
      this.#settle('completed');
      return;
    }
    if (r.reason === 'fence') throw this.#markLost(r.detail ?? 'the claim was lost');
    throw refusalError(r, writes);
  }

  /**
   * Gives the job back to be claimed again after `delayMs` (default: the queue's full-jitter
   * backoff for this attempt), whatever `maxAttempts` says (a worker's throw dead-letters the
   * last attempt instead).
   *
   * @example
   * ```ts
   * await job.retry({ delayMs: 5_000, error: 'the mail server said 421' });
   * ```
   */
  async retry(options: RetryOptions = {}): Promise<void> {
    this.#begin('retry');
    const delay = options.delayMs ?? backoffDelay(this.#host.backoff, this.attempt);
    const ok = await this.#host.queues.retry(
      this.#host.name,
      this.id,
      this.fence,
      delay,
      options.error,
    );
    if (!ok) throw this.#markLost('the claim was lost before the retry');
    this.#settle('retried');
  }

  /**
   * Dead-letters the job: it is kept as `failed` with `error`, for `q.get(id)` and `q.retryFailed(id)`.
   *
   * @example
   * ```ts
   * await job.fail(new Error('the card was declined'));
   * ```
   */
  async fail(error: unknown): Promise<void> {
    this.#begin('fail');
    const ok = await this.#host.queues.fail(this.#host.name, this.id, this.fence, errorText(error));
    if (!ok) throw this.#markLost('the claim was lost before the failure was recorded');
    this.#settle('failed');
  }

  /**
   * Pushes the claim's expiry to `ms` (default the queue's `leaseMs`) from now, server clock.
   * Rejects with LeaseLostError when the claim was already lost.
   *
   * @example
   * ```ts
   * await job.extend(60_000); // a long step ahead
   * ```
   */
  async extend(ms?: number): Promise<void> {
    this.#begin('extend');
    const lease = ms ?? this.#host.leaseMs;
    const sentAt = Date.now();
    this.#renewedAt = sentAt;
    const ok = await this.#host.queues.extend(this.#host.name, this.id, this.fence, lease);
    if (!ok) throw this.#markLost('the claim was lost before it was extended');
    if (this.#done === undefined && !this.#lost) {
      this.#deadline = sentAt + lease;
      if (this.#deadlineTimer !== undefined) this.#armDeadline();
    }
  }

  /** @internal Stop the timers without settling (the worker is done with the job). */
  release(): void {
    this.#stopTimers();
  }
}

/** A job handler's {@link LockContext}: the claim's signal (made when read) and fence. */
class JobContext implements LockContext {
  readonly #job: Job<unknown>;
  readonly fences: readonly number[];
  readonly fence: number;
  constructor(job: Job<unknown>) {
    this.#job = job;
    this.fence = job.fence;
    this.fences = [job.fence];
  }
  get signal(): AbortSignal {
    return this.#job.signal;
  }
}
