/**
 * A document lease behind the boundary (`boundary.ts`): its commit may touch only the lease's own
 * documents (anything else is a ValidationError, the lease released, nothing written), and it
 * leaves the in-process wait-for graph when it commits, is released, or is lost.
 *
 * @example
 * ```ts
 * const lease = await bounded(memory()).acquire(request); // a BoundLease
 * ```
 */
import { ValidationError } from '../errors.js';
import type { TrackedLease } from '../sync/tracked-leases.js';
import type { DocWrite, Lease, LeaseRequest, StoredDoc, WriteResult } from './backend.js';
import { checkWrites } from './checks.js';
import { docName, lockName } from './names.js';

/** A lease behind the boundary: commits only its own documents, and leaves the graph when done. */
export class BoundLease implements Lease {
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
