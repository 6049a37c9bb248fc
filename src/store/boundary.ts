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
 * - Leases come back wrapped (`bound-lease.ts`): a commit that names a document outside the
 *   lease is a ValidationError (the lease is released, nothing written); the lease leaves the
 *   wait-for graph when it commits, is released, or is lost. Named-lock permits likewise
 *   (`bound-permit.ts`), and the queue primitives are checked by `bound-queues.ts`.
 * - Rate limits (`consume`, `resetLimit`) and named locks (`acquirePermit`, `permitsHeld`) are
 *   checked here; a backend without them is refused with BackendError.
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
  ConsumeResult,
  Consumption,
  DocRef,
  DocWrite,
  Lease,
  LeaseRequest,
  LimitRef,
  PermitKind,
  PermitLease,
  PermitRequest,
  QueueBackend,
  StoredDoc,
  WriteOptions,
  WriteResult,
} from './backend.js';
import { BoundLease } from './bound-lease.js';
import { BoundPermit } from './bound-permit.js';
import { BoundQueues } from './bound-queues.js';
import {
  checkConsumptions,
  checkLeaseRequest,
  checkLimitRef,
  checkPermitName,
  checkPermitRequest,
  checkRefs,
  checkWriteOptions,
  checkWrites,
} from './checks.js';
import { DEFAULT_ACTION, lockName, permitName } from './names.js';

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

/** A backend of another package that has not implemented named locks yet. */
function unsupported(name: string): BackendError {
  return new BackendError(
    `the ${name} backend does not implement named locks (acquirePermit): upgrade it or use a backend that does`,
  );
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

/** A backend without rate limits (see "Rate limits and expiring documents" in backend.ts). */
function noRateLimits(name: string, method: string): BackendError {
  return new BackendError(
    `the ${name} backend does not implement rate limits (${method}): use the memory, Redis or PostgreSQL backend for store.rateLimiter`,
  );
}
