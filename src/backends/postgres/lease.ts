/**
 * A held lease: an open transaction on one connection, renewed while the caller's function runs,
 * lost when its session ends, a renewal fails, or (with `renew: false`) it outlives `leaseMs`.
 * It is the {@link WriteScope} its commit runs in; committing itself is the host's (`commit.ts`).
 */
import { LeaseLostError } from '../../errors.js';
import type { DocWrite, Lease, LeaseRequest, StoredDoc, WriteResult } from '../../store/backend.js';
import type { Conn } from './conn.js';
import { refuse } from './planner.js';
import { lockName, type Row, storedDoc } from './rows.js';
import type { WriteScope } from './scope.js';

/** What a lease needs from whoever took it: committing it, and forgetting it once it ended. */
export interface LeaseHost {
  commit(lease: PgLease, conn: Conn, writes: readonly DocWrite[]): Promise<WriteResult>;
  forget(lease: PgLease): void;
}

/** What the acquire statement read once the locks were held. */
export interface Grant {
  readonly rows: Map<string, Row>;
  readonly fence: number;
  /** The lease transaction's id (`txid_current()`), to settle a commit whose reply was lost. */
  readonly txid: string;
  /** The rows are locked `FOR NO KEY UPDATE` for the lease's life (default action, exclusive). */
  readonly rowLocked: boolean;
}

/**
 * A held lease: an open transaction on one connection.
 *
 * @example
 * ```ts
 * const lease = new PgLease(host, conn, request, grant);
 * await lease.commit([{ kind: 'patch', model, key, ops }]);
 * ```
 */
export class PgLease implements Lease, WriteScope {
  readonly docs: ReadonlyArray<StoredDoc | undefined>;
  readonly fences: readonly number[];
  readonly fence: number;
  readonly txid: string;
  readonly name: string;
  /** The server process of the lease's session (to tell when it is gone after a lost reply). */
  readonly pid: number | undefined;
  readonly #host: LeaseHost;
  readonly #conn: Conn;
  readonly #req: LeaseRequest;
  readonly #rows: Map<string, Row>;
  readonly #rowLocked: boolean;
  readonly #keys: Set<string>;
  readonly #deadline: number;
  #timer: NodeJS.Timeout | undefined;
  #renewFailed: unknown;
  /** Commit or release began: the lease is no longer the caller's to lose. */
  #settled = false;
  #deadBeforeCommit = false;
  #released: Promise<boolean> | undefined;
  #ended = false;
  /** Cleared when its commit found it lost (fence) or failed. */
  #heldToEnd = true;
  #lostSignal: AbortController | undefined;
  #lostReason: LeaseLostError | undefined;

  constructor(host: LeaseHost, conn: Conn, req: LeaseRequest, grant: Grant) {
    this.#host = host;
    this.#conn = conn;
    this.#req = req;
    this.#rows = grant.rows;
    this.#rowLocked = grant.rowLocked;
    this.#keys = new Set(req.keys);
    this.fence = grant.fence;
    this.txid = grant.txid;
    this.pid = conn.pid;
    this.name = lockName(req.model, req.keys, req.action);
    this.docs = req.keys.map((k) => {
      const r = grant.rows.get(k);
      return r && !r.expired ? storedDoc(r) : undefined;
    });
    this.fences = req.keys.map(() => grant.fence);
    this.#deadline = performance.now() + req.leaseMs;
    // The session ending (server timeout, terminated, network) loses the lease at once.
    conn.onDeath(() => this.#lose('its PostgreSQL session ended'));
    if (req.renew) {
      // Renewal keeps the session busy so idle_in_transaction_session_timeout never fires.
      const every = Math.max(1, Math.floor(req.leaseMs / 3));
      this.#timer = setInterval(() => {
        if (this.#settled || this.#conn.dead !== undefined) return;
        this.#conn.query('SELECT 1').catch((err: unknown) => {
          this.#renewFailed ??= err;
          this.#lose('renewing it failed');
        });
      }, every);
      this.#timer.unref();
    }
    // Without renewal the server ends the idle session at leaseMs; the signal says so at that
    // moment too (a timer made only when someone reads the signal: see `signal`).
  }

  /**
   * Made on first read (most leases are never asked): aborted with a LeaseLostError the moment
   * the lease is known lost — its session ended, a renewal failed, or (renew: false) leaseMs
   * passed since the grant. Never aborted by commit or release.
   */
  get signal(): AbortSignal {
    if (this.#lostSignal === undefined) {
      this.#lostSignal = new AbortController();
      if (this.#lostReason !== undefined) {
        this.#lostSignal.abort(this.#lostReason);
      } else if (!this.#req.renew && !this.#settled) {
        const left = this.#deadline - performance.now();
        if (left <= 0) this.#lose(this.#expiredWhy());
        else {
          this.#timer = setTimeout(
            () => this.#lose(this.#expiredWhy()),
            Math.min(2_147_483_647, Math.ceil(left)),
          );
          this.#timer.unref();
        }
      }
    }
    return this.#lostSignal.signal;
  }

  #expiredWhy(): string {
    return `it expired after leaseMs (${this.#req.leaseMs} ms) without renewal`;
  }

  /** Lost before it ended; a lease that ended by commit or release is not lost afterwards. */
  get lost(): boolean {
    if (this.#lostReason !== undefined) return true;
    if (this.#settled) return false;
    return (
      this.#conn.dead !== undefined ||
      this.#renewFailed !== undefined ||
      (!this.#req.renew && performance.now() > this.#deadline)
    );
  }

  /** Records that the lease was lost before it ended (aborting the signal if one was made). */
  #markLost(why: string): void {
    this.#lostReason ??= new LeaseLostError(this.name, why);
    this.#lostSignal?.abort(this.#lostReason);
  }

  /** @internal the lease was known lost before its commit was sent (nothing was sent). */
  get wasDeadBeforeCommit(): boolean {
    return this.#deadBeforeCommit;
  }

  lockedRow(model: string, key: string): Row | undefined {
    if (!this.#rowLocked || model !== this.#req.model) return undefined;
    return this.#rows.get(key);
  }

  incarnation(model: string, key: string): number | undefined {
    if (model !== this.#req.model) return undefined;
    const r = this.#rows.get(key);
    return r && !r.expired ? r.incarnation : undefined;
  }

  snapshot(model: string, key: string): StoredDoc | undefined {
    if (model !== this.#req.model) return undefined;
    const at = this.#req.keys.indexOf(key);
    return at < 0 ? undefined : this.docs[at];
  }

  covers(model: string, key: string): boolean {
    return model === this.#req.model && this.#keys.has(key);
  }

  async commit(writes: readonly DocWrite[]): Promise<WriteResult> {
    if (this.#settled) {
      return refuse('fence', 0, 'the lease was already committed or released');
    }
    if (this.lost) {
      // Nothing is sent: exact, the lease's transaction never commits.
      this.#markLost('it was lost before the commit');
      this.#settled = true;
      this.#stopTimer();
      this.#deadBeforeCommit = true;
      await this.end();
      return refuse('fence', 0, 'the lease was lost before the commit; nothing was written');
    }
    this.#settled = true;
    this.#stopTimer();
    if (writes.length === 0) {
      await this.end();
      return { applied: true, docs: [], results: [] };
    }
    try {
      const r = await this.#host.commit(this, this.#conn, writes);
      // A fence refusal here means the lease turned out lost at its commit.
      if (!r.applied && r.reason === 'fence') {
        this.#heldToEnd = false;
        this.#markLost(r.detail ?? 'its commit found it lost');
      }
      return r;
    } catch (err) {
      this.#heldToEnd = false;
      throw err;
    }
  }

  /**
   * Ends the lease without writing: true when it still held, i.e. its transaction was open and
   * its ROLLBACK succeeded (the locks were ours until then); false when it was lost before.
   * After a commit: true unless the commit found the lease lost. Idempotent: a second call
   * resolves what the first did.
   */
  release(): Promise<boolean> {
    this.#released ??= this.#release();
    return this.#released;
  }

  async #release(): Promise<boolean> {
    // After a commit: whether the lease held until the commit ended it.
    if (this.#settled) return this.#lostReason === undefined && this.#heldToEnd;
    if (this.lost) {
      this.#markLost('it was lost before it was released');
      this.#settled = true;
      this.#stopTimer();
      await this.end();
      return false;
    }
    this.#settled = true;
    this.#stopTimer();
    let held = false;
    try {
      await this.#conn.query('ROLLBACK');
      held = true;
    } catch {
      // The session is gone or broken: the locks went with it, at some moment before now. A lost
      // ROLLBACK reply also lands here: the lease may have held until then, but nothing confirms
      // it, so false (a release writes nothing either way: no data outcome depends on it).
    }
    await this.end();
    return held;
  }

  /** Ends the transaction (ROLLBACK unless it committed) and returns the connection. */
  async end(): Promise<void> {
    this.#settled = true;
    this.#stopTimer();
    if (this.#ended) return;
    this.#ended = true;
    this.#host.forget(this);
    await this.#conn.done();
  }

  #lose(why: string): void {
    if (this.#settled || this.#lostReason !== undefined) return;
    this.#stopTimer();
    this.#markLost(why);
  }

  #stopTimer(): void {
    if (this.#timer) {
      clearInterval(this.#timer);
      clearTimeout(this.#timer);
    }
    this.#timer = undefined;
  }
}
