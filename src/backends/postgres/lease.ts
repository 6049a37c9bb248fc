/**
 * A held lease: an open transaction on one connection, renewed while the caller's function runs,
 * lost when its session ends or it outlives `leaseMs`.
 */
import type { DocWrite, Lease, LeaseRequest, StoredDoc, WriteResult } from '../../store/backend.js';
import type { Conn } from './conn.js';
import type { Leases } from './leases.js';
import { refuse } from './planner.js';
import { lockName, type Row, storedDoc } from './rows.js';
import type { TrackedLease } from './tasks.js';

/** A held lease: an open transaction on one connection. */
export class PgLease implements Lease {
  readonly docs: ReadonlyArray<StoredDoc | undefined>;
  readonly fences: readonly number[];
  readonly fence: number;
  readonly name: string;
  readonly #backend: Leases;
  readonly #conn: Conn;
  readonly #req: LeaseRequest;
  readonly #rows: Map<string, Row>;
  readonly #rowLocked: boolean;
  readonly #keys: Set<string>;
  readonly #deadline: number;
  #timer: NodeJS.Timeout | undefined;
  #renewFailed: unknown;
  #settled = false;
  #deadBeforeCommit = false;
  readonly #lostSignal = new AbortController();
  readonly #tracked: TrackedLease;

  constructor(
    backend: Leases,
    conn: Conn,
    req: LeaseRequest,
    rows: Map<string, Row>,
    fence: number,
    rowLocked: boolean,
    tracked: TrackedLease,
  ) {
    this.#tracked = tracked;
    tracked.granted();
    this.#backend = backend;
    this.#conn = conn;
    this.#req = req;
    this.#rows = rows;
    this.#rowLocked = rowLocked && req.mode === 'exclusive';
    this.#keys = new Set(req.keys);
    this.fence = fence;
    this.name = lockName(req.model, req.keys, req.action);
    this.docs = req.keys.map((k) => {
      const r = rows.get(k);
      return r ? storedDoc(r) : undefined;
    });
    this.fences = req.keys.map(() => fence);
    this.#deadline = performance.now() + req.leaseMs;
    if (req.renew) {
      const every = Math.max(1, Math.floor(req.leaseMs / 3));
      this.#timer = setInterval(() => {
        if (this.#settled || this.#conn.dead !== undefined) return;
        this.#conn.query('SELECT 1').catch((err: unknown) => {
          this.#renewFailed ??= err;
        });
      }, every);
      this.#timer.unref();
    }
  }

  get signal(): AbortSignal {
    return this.#lostSignal.signal;
  }

  get lost(): boolean {
    return (
      this.#conn.dead !== undefined ||
      this.#renewFailed !== undefined ||
      (!this.#req.renew && performance.now() > this.#deadline)
    );
  }

  /** @internal */
  get wasDeadBeforeCommit(): boolean {
    return this.#deadBeforeCommit;
  }

  /** @internal the row read (and locked) at acquire, for the default action's exclusive leases. */
  lockedRow(model: string, key: string): Row | undefined {
    if (!this.#rowLocked || model !== this.#req.model) return undefined;
    return this.#rows.get(key);
  }

  /** @internal the incarnation of `key` when the lease read it (undefined if it was missing). */
  incarnation(model: string, key: string): number | undefined {
    if (model !== this.#req.model) return undefined;
    return this.#rows.get(key)?.incarnation;
  }

  /** @internal the document as the lease read it (undefined if it was missing or not covered). */
  snapshot(model: string, key: string): StoredDoc | undefined {
    if (model !== this.#req.model) return undefined;
    const at = this.#req.keys.indexOf(key);
    return at < 0 ? undefined : this.docs[at];
  }

  /** @internal */
  covers(model: string, key: string): boolean {
    return model === this.#req.model && this.#keys.has(key);
  }

  async commit(writes: readonly DocWrite[]): Promise<WriteResult> {
    if (this.#settled) {
      return refuse('fence', 0, 'the lease was already committed or released');
    }
    this.#stopRenew();
    if (this.lost) {
      this.#deadBeforeCommit = true;
      await this.releaseConn();
      return refuse('fence', 0, 'the lease expired before the commit; nothing was written');
    }
    if (writes.length === 0) {
      await this.releaseConn();
      return { applied: true, docs: [], results: [] };
    }
    return this.#backend.commitLease(this, this.#conn, writes);
  }

  async release(): Promise<boolean> {
    const held = !this.lost;
    await this.releaseConn();
    return held;
  }

  /** @internal ends the transaction (ROLLBACK unless committed) and returns the connection. */
  async releaseConn(): Promise<void> {
    this.#stopRenew();
    if (this.#settled) return;
    this.#settled = true;
    this.#backend.forget(this);
    try {
      await this.#conn.done();
    } finally {
      this.#tracked.released();
    }
  }

  #stopRenew(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
