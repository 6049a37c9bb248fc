/**
 * The boundary: the one layer in front of every backend. `createStore(backend)` wraps the backend
 * in it, so input checks, refusals of writes outside a lease, in-process deadlock tracking and lock
 * names are written once and behave the same on every backend (see "The boundary" in
 * `backend.ts`). A backend behind it implements semantics only.
 *
 * - `read` / `write` / `acquire`: checked by `checks.ts` (ValidationError, nothing reaches the
 *   backend); an already aborted signal rejects with its reason.
 * - Deadlocks (when the backend `supports.inProcessDeadlocks`): each lease wait and each plain
 *   write to a document a task of this process holds is recorded in the wait-for graph of
 *   `src/sync/tracked-leases.ts`, with lock ids built from `backend.namespace`; a wait that would
 *   close a cycle gets DeadlockError before anything queues on the backend.
 * - Leases come back wrapped: a commit that names a document outside the lease is a
 *   ValidationError (the lease is released, nothing written); the lease leaves the wait-for graph
 *   when it commits, is released, or is lost.
 *
 * @example
 * ```ts
 * const backend = bounded(memory()); // what createStore does
 * await backend.write([{ kind: 'create', model: 'counter', key: 'c1', data: { n: 0 } }]);
 * ```
 */

import { BackendError, ValidationError } from '../errors.js';
import { anyTracked, type TrackedLease, trackLease, trackWrite } from '../sync/tracked-leases.js';
import type {
  Backend,
  BackendCapabilities,
  ClaimedJob,
  ClaimRequest,
  ConsumeResult,
  Consumption,
  DocRef,
  DocWrite,
  EnqueueRequest,
  EnqueueResult,
  Lease,
  LeaseRequest,
  LimitRef,
  PermitKind,
  PermitLease,
  PermitRequest,
  QueueBackend,
  QueueStats,
  StoredDoc,
  StoredJob,
  WriteOptions,
  WriteResult,
} from './backend.js';
import {
  checkClaim,
  checkClaimRef,
  checkConsumptions,
  checkEnqueue,
  checkJobRef,
  checkJobStep,
  checkLeaseRequest,
  checkLimitRef,
  checkPermitName,
  checkPermitRequest,
  checkRefs,
  checkWriteOptions,
  checkWrites,
} from './checks.js';
import { DEFAULT_ACTION, docName, lockName, permitName } from './names.js';

const EMPTY: WriteResult = { applied: true, docs: [], results: [] };

/** The in-process lock id of (model, key, action) in the data space `namespace`. */
function lockId(namespace: string, model: string, key: string, action: string): string {
  return `${namespace}\u0000${model}\u0000${key}\u0000${action}`;
}

/**
 * A backend behind the boundary. Made by {@link bounded}.
 *
 * @example
 * ```ts
 * const b = bounded(memory());
 * b.inner; // the backend itself
 * ```
 */
export class Bounded implements Backend {
  /** The backend behind the boundary. */
  readonly inner: Backend;
  readonly name: string;
  readonly namespace: string;
  readonly supports: BackendCapabilities;
  /** The queue primitives, checked (see {@link BoundQueues}); undefined when the backend has none. */
  readonly queues: QueueBackend | undefined;
  readonly #track: boolean;
  /** Tracked leases not yet committed or released: `close()` takes them out of the graph. */
  readonly #tracked = new Set<{ untrack(): void }>();

  /** @internal use {@link bounded}. */
  constructor(inner: Backend) {
    this.inner = inner;
    this.name = inner.name;
    this.namespace = inner.namespace;
    this.supports = inner.supports;
    this.#track = inner.supports.inProcessDeadlocks;
    this.queues =
      inner.queues === undefined
        ? undefined
        : new BoundQueues(inner.queues, (writes) =>
            this.#track && anyTracked() ? this.#trackWrite(writes) : undefined,
          );
  }

  read(refs: readonly DocRef[]): Promise<Array<StoredDoc | undefined>> {
    try {
      checkRefs(refs);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.inner.read(refs);
  }

  write(writes: readonly DocWrite[], options?: WriteOptions): Promise<WriteResult> {
    let tracked: TrackedLease | undefined;
    try {
      checkWrites(writes);
      checkWriteOptions(options);
      options?.signal?.throwIfAborted();
      if (writes.length === 0) return Promise.resolve(EMPTY);
      if (this.#track && anyTracked()) tracked = this.#trackWrite(writes);
    } catch (err) {
      return Promise.reject(err);
    }
    let p: Promise<WriteResult>;
    try {
      p = options === undefined ? this.inner.write(writes) : this.inner.write(writes, options);
    } catch (err) {
      // A backend that throws instead of rejecting must not leave the wait in the graph.
      tracked?.abandoned();
      return Promise.reject(err);
    }
    if (tracked === undefined) return p;
    const t = tracked;
    return p.finally(() => t.abandoned());
  }

  /**
   * Rate-limit consumptions with a batch (see `Backend.consume`): the consumptions and the batch
   * are checked like a write's, and the batch's waits are tracked like a plain write's.
   */
  consume(
    consumptions: readonly Consumption[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<ConsumeResult> {
    let tracked: TrackedLease | undefined;
    try {
      checkConsumptions(consumptions);
      checkWrites(writes, 'consume');
      checkWriteOptions(options);
      options?.signal?.throwIfAborted();
      if (writes.length > 0 && this.#track && anyTracked()) tracked = this.#trackWrite(writes);
    } catch (err) {
      return Promise.reject(err);
    }
    let p: Promise<ConsumeResult>;
    try {
      if (this.inner.consume === undefined) throw noRateLimits(this.name, 'consume');
      p = this.inner.consume(consumptions, writes, options);
    } catch (err) {
      tracked?.abandoned();
      return Promise.reject(err);
    }
    if (tracked === undefined) return p;
    const t = tracked;
    return p.finally(() => t.abandoned());
  }

  resetLimit(ref: LimitRef): Promise<void> {
    try {
      checkLimitRef(ref, 'resetLimit');
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.inner.resetLimit === undefined) {
      return Promise.reject(noRateLimits(this.name, 'resetLimit'));
    }
    return this.inner.resetLimit(ref);
  }

  /** A plain write waits for in-process holders of its documents' default-action locks. */
  #trackWrite(writes: readonly DocWrite[]): TrackedLease | undefined {
    const ids: string[] = new Array(writes.length);
    for (let i = 0; i < writes.length; i++) {
      const w = writes[i] as DocWrite;
      ids[i] = lockId(this.namespace, w.model, w.key, DEFAULT_ACTION);
    }
    return trackWrite(ids);
  }

  acquire(request: LeaseRequest): Promise<Lease | undefined> {
    let tracked: TrackedLease | undefined;
    try {
      checkLeaseRequest(request);
      request.signal?.throwIfAborted();
      if (this.#track) {
        const { model, keys, action } = request;
        tracked = trackLease(
          keys.map((k) => lockId(this.namespace, model, k, action)),
          (i) => lockName(model, [keys[i] as string], action),
          request.mode === 'exclusive',
          request.nowait || request.skipLocked,
        );
      }
    } catch (err) {
      return Promise.reject(err);
    }
    // Not `async`, and one `then`: every promise of a lock costs twice with async context
    // tracking on (the deadlock detector's AsyncLocalStorage).
    let p: Promise<Lease | undefined>;
    try {
      p = this.inner.acquire(request);
    } catch (err) {
      tracked?.abandoned();
      return Promise.reject(err);
    }
    if (tracked === undefined) return p.then((lease) => lease && new BoundLease(lease, request));
    const t = tracked;
    const live = this.#tracked;
    return p.then(
      (lease) => {
        if (!lease) {
          t.abandoned();
          return undefined;
        }
        t.granted(() => lease.lost);
        const bound = new BoundLease(lease, request, t, live);
        live.add(bound);
        return bound;
      },
      (err: unknown) => {
        t.abandoned();
        throw err;
      },
    );
  }

  /**
   * A permit of a named pool. Checked here (ValidationError, nothing queued); mutexes and
   * rwlocks take part in the wait-for graph like document leases (a writer exclusive, a reader
   * shared). Semaphores of more than one permit do not: a count is not an owner, and a cycle
   * through one is not a certain deadlock.
   */
  acquirePermit(request: PermitRequest): Promise<PermitLease | undefined> {
    let tracked: TrackedLease | undefined;
    try {
      checkPermitRequest(request);
      request.signal?.throwIfAborted();
      if (this.inner.acquirePermit === undefined) throw unsupported(this.inner.name);
      if (this.#track && (request.kind !== 'semaphore' || request.permits === 1)) {
        const { kind, name } = request;
        tracked = trackLease(
          [`${this.namespace}\u0000\u0001${kind}\u0000${name}`],
          () => permitName(kind, name),
          request.weight === request.permits,
          request.nowait,
        );
      }
    } catch (err) {
      return Promise.reject(err);
    }
    let p: Promise<PermitLease | undefined>;
    try {
      p = this.inner.acquirePermit(request);
    } catch (err) {
      tracked?.abandoned();
      return Promise.reject(err);
    }
    if (tracked === undefined) return p.then((lease) => lease && new BoundPermit(lease));
    const t = tracked;
    return p.then(
      (lease) => {
        if (!lease) {
          t.abandoned();
          return undefined;
        }
        t.granted(() => lease.lost);
        const bound = new BoundPermit(lease, t, this.#tracked);
        this.#tracked.add(bound);
        return bound;
      },
      (err: unknown) => {
        t.abandoned();
        throw err;
      },
    );
  }

  /** Units of a named pool held now (the name checked here). */
  permitsHeld(kind: PermitKind, name: string): Promise<number> {
    try {
      if (kind !== 'mutex' && kind !== 'rwlock' && kind !== 'semaphore') {
        throw new ValidationError('permitsHeld', [
          { message: `kind must be "mutex", "rwlock" or "semaphore", got ${String(kind)}` },
        ]);
      }
      checkPermitName(kind, name);
      if (this.inner.permitsHeld === undefined) throw unsupported(this.inner.name);
      return this.inner.permitsHeld(kind, name);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Closes the backend; leases still open (the backend ends them) leave the wait-for graph, so
   * nothing of this store stays tracked.
   */
  async close(): Promise<void> {
    try {
      await this.inner.close();
    } finally {
      for (const lease of [...this.#tracked]) lease.untrack();
    }
  }
}

/** A lease behind the boundary: commits only its own documents, and leaves the graph when done. */
class BoundLease implements Lease {
  readonly #inner: Lease;
  readonly #request: LeaseRequest;
  #tracked: TrackedLease | undefined;
  readonly #live: Set<{ untrack(): void }> | undefined;

  /**
   * A lost lease no longer holds its keys, so a cycle through it is not one (its waiter gets in):
   * the graph asks `lease.lost` while it looks for a cycle (see `granted`), which costs nothing
   * per lock, where listening to `lease.signal` would make an AbortSignal for every lease.
   */
  constructor(
    inner: Lease,
    request: LeaseRequest,
    tracked?: TrackedLease,
    live?: Set<{ untrack(): void }>,
  ) {
    this.#inner = inner;
    this.#request = request;
    this.#tracked = tracked;
    this.#live = live;
  }

  get docs(): ReadonlyArray<StoredDoc | undefined> {
    return this.#inner.docs;
  }
  get fences(): readonly number[] {
    return this.#inner.fences;
  }
  get lost(): boolean {
    return this.#inner.lost;
  }
  get signal(): AbortSignal {
    return this.#inner.signal;
  }

  /** @internal leaves the wait-for graph (commit, release, or the backend's close). Idempotent. */
  untrack(): void {
    const t = this.#tracked;
    if (t === undefined) return;
    this.#tracked = undefined;
    this.#live?.delete(this);
    t.released();
  }

  commit(writes: readonly DocWrite[]): Promise<WriteResult> {
    try {
      checkWrites(writes, 'lease commit');
      const { model, keys } = this.#request;
      for (let i = 0; i < writes.length; i++) {
        const w = writes[i] as DocWrite;
        if (w.model !== model || !keys.includes(w.key)) {
          throw new ValidationError(`lease commit #${i}`, [
            {
              message: `${docName(w.model, w.key)} is not held by this lease (${lockName(model, keys, this.#request.action)}); nothing was written`,
            },
          ]);
        }
      }
    } catch (err) {
      return this.release().then(() => Promise.reject(err));
    }
    if (this.#tracked === undefined) return this.#inner.commit(writes);
    return this.#inner.commit(writes).then(
      (r) => {
        this.untrack();
        return r;
      },
      (err: unknown) => {
        this.untrack();
        throw err;
      },
    );
  }

  release(): Promise<boolean> {
    if (this.#tracked === undefined) return this.#inner.release();
    return this.#inner.release().then(
      (held) => {
        this.untrack();
        return held;
      },
      (err: unknown) => {
        this.untrack();
        throw err;
      },
    );
  }
}

/** A backend of another package that has not implemented named locks yet. */
function unsupported(name: string): BackendError {
  return new BackendError(
    `the ${name} backend does not implement named locks (acquirePermit): upgrade it or use a backend that does`,
  );
}

/** A permit behind the boundary: leaves the wait-for graph when released or closed. */
class BoundPermit implements PermitLease {
  readonly #inner: PermitLease;
  #tracked: TrackedLease | undefined;
  readonly #live: Set<{ untrack(): void }> | undefined;

  constructor(inner: PermitLease, tracked?: TrackedLease, live?: Set<{ untrack(): void }>) {
    this.#inner = inner;
    this.#tracked = tracked;
    this.#live = live;
  }
  get fence(): number {
    return this.#inner.fence;
  }
  get lost(): boolean {
    return this.#inner.lost;
  }
  get signal(): AbortSignal {
    return this.#inner.signal;
  }
  extend(ms?: number): Promise<void> {
    if (ms !== undefined && !(typeof ms === 'number' && Number.isFinite(ms) && ms > 0)) {
      return Promise.reject(
        new ValidationError('permit.extend', [
          { message: `ms must be a positive number of milliseconds, got ${String(ms)}` },
        ]),
      );
    }
    return this.#inner.extend(ms);
  }
  /** @internal leaves the wait-for graph (release, or the backend's close). Idempotent. */
  untrack(): void {
    const t = this.#tracked;
    if (t === undefined) return;
    this.#tracked = undefined;
    this.#live?.delete(this);
    t.released();
  }
  release(): Promise<boolean> {
    if (this.#tracked === undefined) return this.#inner.release();
    return this.#inner.release().finally(() => this.untrack());
  }
}

/**
 * Puts `backend` behind the boundary (idempotent: a bounded backend is returned as is).
 *
 * @example
 * ```ts
 * const store = createStore(redis({ url })); // createStore calls bounded() itself
 * const checked = bounded(myBackend);        // for code that talks to the contract directly
 * ```
 */
export function bounded(backend: Backend): Bounded {
  return backend instanceof Bounded ? backend : new Bounded(backend);
}

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

/** A backend without rate limits (see "Rate limits and expiring documents" in backend.ts). */
function noRateLimits(name: string, method: string): BackendError {
  return new BackendError(
    `the ${name} backend does not implement rate limits (${method}): use the memory, Redis or PostgreSQL backend for store.rateLimiter`,
  );
}
