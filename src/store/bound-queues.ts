/**
 * The queue primitives behind the boundary (`boundary.ts`): every queue request checked
 * (`checks.ts`, queue section) and the write batches it carries tracked like a plain write.
 */
import { ValidationError } from '../errors.js';
import type { TrackedLease } from '../sync/tracked-leases.js';
import type {
  ClaimedJob,
  ClaimRequest,
  DocWrite,
  EnqueueRequest,
  EnqueueResult,
  QueueBackend,
  QueueStats,
  StoredJob,
  WriteOptions,
  WriteResult,
} from './backend.js';
import {
  checkClaim,
  checkClaimRef,
  checkEnqueue,
  checkJobRef,
  checkJobStep,
  checkWriteOptions,
  checkWrites,
} from './checks.js';

const EMPTY: WriteResult = { applied: true, docs: [], results: [] };

/**
 * The queue primitives behind the boundary: every request is checked (`checks.ts`, queue
 * section) before it reaches the backend, an already aborted signal rejects with its reason, and
 * the `write` batches they carry (enqueue's writes, complete's effects) are checked and tracked
 * like a plain write.
 *
 * @example
 * ```ts
 * const queues = bounded(memory()).queues; // a BoundQueues
 * await queues.claim({ queue: 'mail', leaseMs: 30_000, timeoutMs: 0 });
 * ```
 */
export class BoundQueues implements QueueBackend {
  readonly #inner: QueueBackend;
  readonly #track: (writes: readonly DocWrite[]) => TrackedLease | undefined;

  /** @internal made by {@link Bounded}. */
  constructor(
    inner: QueueBackend,
    track: (writes: readonly DocWrite[]) => TrackedLease | undefined,
  ) {
    this.#inner = inner;
    this.#track = track;
  }

  /** Runs `call` after `check`, with the batch's wait tracked; every failure is a rejection. */
  #guarded<T>(check: () => void, writes: readonly DocWrite[], call: () => Promise<T>): Promise<T> {
    let tracked: TrackedLease | undefined;
    let p: Promise<T>;
    try {
      check();
      if (writes.length > 0) tracked = this.#track(writes);
      p = call();
    } catch (err) {
      tracked?.abandoned();
      return Promise.reject(err);
    }
    if (tracked === undefined) return p;
    const t = tracked;
    return p.finally(() => t.abandoned());
  }

  enqueue(
    jobs: readonly EnqueueRequest[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<EnqueueResult> {
    return this.#guarded(
      () => {
        checkEnqueue(jobs);
        checkWrites(writes, 'enqueue');
        checkWriteOptions(options);
        options?.signal?.throwIfAborted();
      },
      writes,
      () =>
        jobs.length === 0 && writes.length === 0
          ? Promise.resolve({ ...EMPTY, jobs: [] })
          : this.#inner.enqueue(jobs, writes, options),
    );
  }

  claim(request: ClaimRequest): Promise<ClaimedJob | undefined> {
    return this.#guarded(
      () => {
        checkClaim(request);
        request.signal?.throwIfAborted();
      },
      [],
      () => this.#inner.claim(request),
    );
  }

  complete(
    queue: string,
    id: string,
    fence: number,
    effects: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<WriteResult> {
    return this.#guarded(
      () => {
        checkClaimRef('complete', queue, id, fence);
        checkWrites(effects, 'complete');
        checkWriteOptions(options);
        options?.signal?.throwIfAborted();
      },
      effects,
      () => this.#inner.complete(queue, id, fence, effects, options),
    );
  }

  retry(
    queue: string,
    id: string,
    fence: number,
    delayMs: number,
    error?: string,
  ): Promise<boolean> {
    return this.#guarded(
      () => {
        checkClaimRef('retry', queue, id, fence);
        checkJobStep('retry', delayMs, error);
      },
      [],
      () => this.#inner.retry(queue, id, fence, delayMs, error),
    );
  }

  fail(queue: string, id: string, fence: number, error: string): Promise<boolean> {
    return this.#guarded(
      () => {
        checkClaimRef('fail', queue, id, fence);
        checkJobStep('fail', 0, error);
        if (typeof error !== 'string')
          throw new ValidationError('fail', [{ message: 'error must be a string' }]);
      },
      [],
      () => this.#inner.fail(queue, id, fence, error),
    );
  }

  extend(queue: string, id: string, fence: number, ms: number): Promise<boolean> {
    return this.#guarded(
      () => {
        checkClaimRef('extend', queue, id, fence);
        checkJobStep('extend', ms, undefined, true);
      },
      [],
      () => this.#inner.extend(queue, id, fence, ms),
    );
  }

  getJob(queue: string, id: string): Promise<StoredJob | undefined> {
    return this.#guarded(
      () => checkJobRef('get', queue, id),
      [],
      () => this.#inner.getJob(queue, id),
    );
  }

  queueStats(queue: string): Promise<QueueStats> {
    return this.#guarded(
      () => checkJobRef('stats', queue, '-'),
      [],
      () => this.#inner.queueStats(queue),
    );
  }

  retryFailed(queue: string, id: string): Promise<boolean> {
    return this.#guarded(
      () => checkJobRef('retryFailed', queue, id),
      [],
      () => this.#inner.retryFailed(queue, id),
    );
  }
}
