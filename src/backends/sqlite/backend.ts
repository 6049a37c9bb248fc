/**
 * The SQLite backend: the Backend contract (see `src/store/backend.ts`) on one SQLite file
 * through better-sqlite3 12, correct across the processes of one machine.
 *
 * Design:
 * - Tables (`migrations.ts`): `lockstep_docs` (one row per document: JSON data, version,
 *   per-field versions, incarnation), `lockstep_leases` (one row per lease and key, with its
 *   fence and its expiry on the machine's clock, which every process on the machine shares) and
 *   `lockstep_meta` (the fence counter).
 * - WAL journal; `synchronous = FULL` by default: every acknowledged commit is on disk and
 *   survives a power loss or OS crash. With `synchronous: 'normal'` a process crash still loses
 *   nothing, but a power loss may roll back the last commits acknowledged before it (the file
 *   stays consistent).
 * - The event loop never waits for another process: `busy_timeout = 0`, every write is one
 *   `BEGIN IMMEDIATE ... COMMIT` run synchronously (no transaction is held across an await, so no
 *   connection of ours ever holds the write lock for longer than its statements run), and a
 *   transaction that meets another connection's write lock is retried after a short async pause
 *   (`transaction.ts`). `BEGIN IMMEDIATE` takes the write lock before reading, so a write never
 *   meets SQLITE_BUSY_SNAPSHOT (a deferred transaction that read first would).
 * - Batches are evaluated by the memory backend's evaluator on the rows they touch, inside the
 *   transaction (`batch.ts`): every op, guard and refusal behaves exactly as on memory.
 * - Plain writes check the write gate in their transaction: a live exclusive lease of the default
 *   action on one of their documents makes them wait (`write.ts`).
 * - Leases (`acquire.ts`, `lease.ts`, `commit.ts`): rows with a random token, renewed every
 *   leaseMs/3 while held; a killed holder's rows simply expire, so its keys are free within
 *   `leaseMs`; a commit checks its rows in its own transaction, so a holder stopped past its
 *   lease is refused with reason `fence` and writes nothing.
 * - Waiting (`wakeups.ts`): a lease's end writes one byte into `<file>-lockstep-wake`, which every
 *   process with a waiter watches (`fs.watch`); waiters also wake at the blocking lease's expiry.
 *   Nothing runs while idle; a named-lock waiter refreshes its queue row once a second.
 * - Named pools (`permits.ts`): holder and FIFO waiter rows per pool, granted by weight in queue
 *   order, fenced per pool; a dead waiter's row lapses within a few seconds.
 * - Deadlocks: nested locks in opposite orders within one process are found by the boundary's
 *   wait-for graph (`supports.inProcessDeadlocks`); across processes they end at `timeoutMs`.
 *
 * Files: `options.ts`, `context.ts` (connection, statements, settings), `migrations.ts`,
 * `transaction.ts` (BEGIN IMMEDIATE and async busy retries), `errors.ts`, `rows.ts`, `batch.ts`,
 * `reading.ts`, `write.ts`, `acquire.ts`, `lease.ts`, `commit.ts`, `leases.ts`, `permits.ts`,
 * `wakeups.ts`, `checkpoints.ts` (WAL checkpoints in a worker thread).
 */

import type { Database } from 'better-sqlite3';
import type {
  Backend,
  BackendCapabilities,
  DocRef,
  DocWrite,
  Lease,
  LeaseRequest,
  PermitKind,
  PermitLease,
  PermitRequest,
  StoredDoc,
  WriteOptions,
  WriteResult,
} from '../../store/backend.js';
import { trackWrites } from '../postgres/program-order.js';
import { orderId } from './acquire.js';
import { SqliteContext } from './context.js';
import { toBackendError } from './errors.js';
import { ttlRefusal } from './expiry.js';
import { Leases } from './leases.js';
import type { BackendSettings } from './options.js';
import { Permits } from './permits.js';
import { readNow } from './reading.js';
import { BUSY, retryBusy } from './transaction.js';
import { isResult, type NotYet, tryWrite, writeSlow } from './write.js';

/**
 * The SQLite {@link Backend}. Made by `sqlite()`; hand it to `createStore`.
 *
 * @example
 * ```ts
 * const backend = sqlite({ path: './state.db' });
 * const store = createStore(backend);
 * ```
 */
export class SqliteBackend implements Backend {
  readonly name = 'sqlite';
  /** The database file's real path: backends on the same file share documents and locks. */
  readonly namespace: string;
  readonly supports: BackendCapabilities;
  readonly #ctx: SqliteContext;
  readonly #leases: Leases;
  readonly #permits: Permits;
  #closing: Promise<void> | undefined;

  /** @internal use `sqlite()`. */
  constructor(db: Database, ownDb: boolean, settings: BackendSettings) {
    this.#ctx = new SqliteContext(db, ownDb, settings);
    this.namespace = `sqlite:${this.#ctx.file ?? `memory:${Math.random().toString(36).slice(2)}`}`;
    this.supports = {
      sharedAcrossProcesses: this.#ctx.file !== undefined,
      durable: this.#ctx.file !== undefined,
      inProcessDeadlocks: settings.detectDeadlocks,
      serverDeadlocks: false,
    };
    this.#leases = new Leases(this.#ctx);
    this.#permits = new Permits(this.#ctx);
  }

  /** The better-sqlite3 connection this backend uses (yours, or the one it opened). */
  get database(): Database {
    return this.#ctx.db;
  }

  /** Open leases of this backend (0 when idle; for leak checks). */
  get openLeases(): number {
    return this.#leases.size;
  }

  /** Open permit leases of this backend (0 when idle; for leak checks). */
  get openPermits(): number {
    return this.#permits.size;
  }

  /**
   * Fresh snapshots, one per ref (undefined where missing), from one consistent snapshot.
   *
   * @example
   * ```ts
   * const [a] = await backend.read([{ model: 'account', key: 'a' }]);
   * ```
   */
  read(refs: readonly DocRef[]): Promise<Array<StoredDoc | undefined>> {
    const ctx = this.#ctx;
    try {
      ctx.checkOpen();
      if (ctx.isReady) {
        const out = readNow(ctx, refs);
        if (out !== BUSY) return Promise.resolve(out);
      }
      return (async () => {
        await ctx.ready();
        return retryBusy(ctx, 'read', () => readNow(ctx, refs));
      })().catch((err: unknown) => {
        throw toBackendError(err, 'read');
      });
    } catch (err) {
      return Promise.reject(toBackendError(err, 'read'));
    }
  }

  /**
   * One atomic, guarded batch in one transaction; waits while a default-action exclusive lease
   * holds one of its documents, bounded by `options`.
   *
   * @example
   * ```ts
   * await backend.write([{ kind: 'patch', model: 'c', key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] }]);
   * ```
   */
  write(writes: readonly DocWrite[], options?: WriteOptions): Promise<WriteResult> {
    const ctx = this.#ctx;
    try {
      ctx.checkOpen();
      if (writes.length === 0) return Promise.resolve({ applied: true, docs: [], results: [] });
      const ttl = ttlRefusal(writes);
      if (ttl) return Promise.reject(ttl);
      let first: NotYet | undefined;
      if (ctx.isReady) {
        const now = tryWrite(ctx, writes);
        if (isResult(now)) return Promise.resolve(now);
        first = now;
      }
      const p = (async () => {
        await ctx.ready();
        return writeSlow(ctx, writes, options, first);
      })().catch((err: unknown) => {
        throw toBackendError(err, 'write');
      });
      trackWrites(
        writes.map((w) => orderId(ctx, w.model, w.key)),
        p,
      );
      return p;
    } catch (err) {
      return Promise.reject(toBackendError(err, 'write'));
    }
  }

  /**
   * Takes a lease (rows in `lockstep_leases`, fenced), then reads the keys.
   *
   * @example
   * ```ts
   * const lease = await backend.acquire({ model: 'c', keys: ['k'], action: 'default',
   *   mode: 'exclusive', leaseMs: 30_000, renew: true, nowait: false, skipLocked: false });
   * ```
   */
  acquire(request: LeaseRequest): Promise<Lease | undefined> {
    return this.#leases.acquire(request).catch((err: unknown) => {
      throw toBackendError(err, 'acquire');
    });
  }

  /**
   * Takes `weight` units of a named pool: FIFO by weight across every process on the file,
   * fenced, woken without polling (see `permits.ts`).
   *
   * @example
   * ```ts
   * const p = await backend.acquirePermit({ kind: 'mutex', name: 'nightly', permits: 1, weight: 1,
   *   leaseMs: 30_000, renew: true, nowait: false });
   * await p?.release();
   * ```
   */
  acquirePermit(request: PermitRequest): Promise<PermitLease | undefined> {
    return this.#permits.acquire(request).catch((err: unknown) => {
      throw toBackendError(err, 'acquirePermit');
    });
  }

  /**
   * Units of the pool `(kind, name)` held by live leases now (machine clock).
   *
   * @example
   * ```ts
   * await backend.permitsHeld('semaphore', 'uploads'); // 0 when nobody holds it
   * ```
   */
  permitsHeld(kind: PermitKind, name: string): Promise<number> {
    return this.#permits.held(kind, name).catch((err: unknown) => {
      throw toBackendError(err, 'permitsHeld');
    });
  }

  /**
   * Cancels waits, releases open leases and closes the connection if this backend opened it
   * (never a `database` you passed).
   *
   * @example
   * ```ts
   * await backend.close();
   * ```
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#ctx.beginClose();
      try {
        await Promise.all([this.#leases.releaseAll(), this.#permits.releaseAll()]);
      } finally {
        this.#ctx.finishClose();
      }
    })();
    return this.#closing;
  }
}
