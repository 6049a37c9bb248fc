/**
 * The PostgreSQL backend: the Backend contract (see `src/store/backend.ts`) on PostgreSQL >= 12.
 *
 * Design (why it is fast and correct):
 * - One table per model in the configured schema: `key text COLLATE "C" PRIMARY KEY, version,
 *   fence, data jsonb, field_versions jsonb, data_version, incarnation, created_at, updated_at`.
 *   `field_versions[f]` is the version that last wrote field `f` by a patch and `data_version`
 *   the version of the last whole-document write (create/put), so "field f was written after
 *   version v" is `max(data_version, field_versions[f]) > v` (used by `fieldsUnchangedSince`);
 *   `incarnation` (from the fence sequence) tells a document deleted and created again apart.
 * - Post-images are computed in JavaScript with the reference semantics (`applyOps`,
 *   `firstFalseGuard` from `src/store/apply-ops.ts`), on rows locked `FOR NO KEY UPDATE` inside
 *   the transaction, so every op and guard behaves exactly as on every other backend (jsonb
 *   arithmetic is decimal, JavaScript's is IEEE: computing in SQL would differ on 0.1 + 0.2).
 *   Numbers travel as JSON text and come back as JSON text, so every double round-trips exactly.
 * - `write`, by shape (fewest round trips that stay all-or-nothing):
 *   - one create / put / unconditional delete: ONE autocommit statement;
 *   - one patch of only `set`/`unset` without guards or post-check (what `update` sends): ONE
 *     `UPDATE ... WHERE version = $v [AND field checks] RETURNING`, the post-image by jsonb
 *     `-`/`||`;
 *   - one patch with ops/guards/post-check (what `apply` sends): `BEGIN; SELECT ... FOR NO KEY
 *     UPDATE`, evaluate, `UPDATE ...; COMMIT` (two round trips; the post-check must run between
 *     them). Patches of the same document arriving while one is in flight are COMBINED into the
 *     next transaction (each evaluated on its predecessor's result, each getting its own result),
 *     so a hot document costs two round trips per group, not per patch;
 *   - anything else: the same two round trips over every touched row, locked in one canonical
 *     order (model, then key in "C" order).
 * - `acquire`: ONE round trip `BEGIN; SELECT set_config(lock_timeout), set_config(
 *   idle_in_transaction_session_timeout), pg_advisory_xact_lock(...), nextval(fence),
 *   txid_current(); SELECT rows`. A lease is transaction-level advisory locks on hash(schema,
 *   model, key, action), taken in key order: missing keys and named actions lock like any other.
 *   Exclusive leases of the default action also lock their rows `FOR NO KEY UPDATE` for the
 *   lease's life, so every plain writer of those rows (ours from any process, and any other SQL)
 *   waits for the holder, and the holder's commit never meets a conflict from one. Shared leases
 *   and named actions take no row lock (plain writers go through; a named action's commit is
 *   still field-checked). A plain write given `timeoutMs`/`signal` stops waiting by cancelling
 *   its statement (nothing written). Never await a plain write of a document you hold from inside
 *   `lock()`: the boundary refuses it in-process (DeadlockError); without it, it would wait for you.
 *   A lock commit of `set`/`unset` patches is ONE round trip (`UPDATE ...; COMMIT`; several
 *   documents: one UPDATE per document, then a check that fails unless every row now carries the
 *   lease's fence, then COMMIT, all in one message: a failed statement skips the COMMIT).
 * - Leases are the transaction: a dead holder's session ends and its locks go with it; a holder
 *   idle past `leaseMs` has its session ended by the server (idle_in_transaction_session_timeout),
 *   so it can never commit (refused with reason `fence`). `renew: true` keeps the session busy with
 *   a cheap `SELECT 1` every leaseMs/3 while the caller's function runs. `lease.signal` aborts when
 *   the session ends, a renewal fails, or (renew: false) at leaseMs.
 * - Deadlocks: PostgreSQL reports cycles between waiting sessions (40P01 → DeadlockError). Nested
 *   `lock()` calls wait through JavaScript, which no server sees: the boundary's in-process
 *   wait-for graph (src/store/boundary.ts) ends such cycles within one process; across processes
 *   they end at `timeoutMs` (or the lease).
 * - Fences come from a sequence taken after the locks are held: strictly increasing across
 *   holders, never reused even when a holder's transaction is rolled back. A lease commit stamps
 *   its fence on the rows it writes. An unknown COMMIT outcome (connection dropped while
 *   committing) is settled by the lease transaction's id: `txid_status()` once it is no longer in
 *   progress (committed → applied, aborted → nothing written), else outcomeUnknown.
 *
 * Where each behaviour lives (one concept per file):
 * - `context.ts`: the shared state (pool, settings, table names, checking out a connection);
 * - `conn.ts`: a checked-out connection that tracks its transaction and notices its death;
 * - `rows.ts`: raw rows and their decoding, document ids, lock names, the "C" key order;
 * - `reading.ts`: `read`; `migrations.ts`: tables created on demand or by `migrate()`;
 * - `write.ts`: a batch dispatched by shape, retried while nothing was written;
 * - `single-statement.ts`: create / put / unconditional delete / simple patch as ONE statement;
 * - `patch-sql.ts`: the single-statement set/unset patch SQL, and why it matched no row;
 * - `combine.ts`: per-document combining (group commit) and the remembered-row cache;
 * - `batch.ts`: the general transaction (rows locked in canonical order);
 * - `planner.ts`: evaluating writes on pre-images (reference semantics), refusals, final SQL;
 * - `scope.ts`: what a write runs in (a lease's transaction), as the write paths see it;
 * - `acquire.ts`: taking a lease; `lease.ts`: a held lease (renewal, loss, release);
 * - `commit.ts`: a lease's commit by shape; `lost-commit.ts`: settling a lost commit reply;
 * - `leases.ts`: the open leases of a backend; `cancel.ts`: cancelling a waiting statement;
 * - `guards.ts`: guards on the pre-image (field-to-field refs, the first false guard);
 * - `program-order.ts`: a lease waits for this process's writes issued before it;
 * - `errors.ts`: SQLSTATE classification and the retry backoff;
 * - `permits.ts`: named permits (mutex, rwlock, semaphore) by kind; `permit-locks.ts`: mutexes
 *   and rwlocks as advisory locks held by a transaction; `permit-rows.ts`: semaphores as holder
 *   rows under a FIFO gate lock; `permit-listener.ts`: the LISTEN connection waking semaphore
 *   waiters; `permit-lease.ts`: a held permit (renewal, loss, extend, release);
 * - `queues.ts`: job queues (`queue-sql.ts` their table and statements, `queue-wakeups.ts` LISTEN).
 */
import type { Pool } from 'pg';
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
  StoredDoc,
  WriteOptions,
  WriteResult,
} from '../../store/backend.js';
import { Combiner } from './combine.js';
import { PgContext } from './context.js';
import { ExpirySweep, ttlOf } from './expiry.js';
import { Leases } from './leases.js';
import { migrate } from './migrations.js';
import type { BackendSettings } from './options.js';
import { Permits } from './permits.js';
import { trackWrites } from './program-order.js';
import { PgQueues } from './queues.js';
import { consume, LIMITS, resetLimit } from './rate-limits.js';
import { read } from './reading.js';
import { docId } from './rows.js';
import { write } from './write.js';

export { classify } from './errors.js';
export type { BackendSettings, PostgresOptions } from './options.js';
export { DEFAULT_ACTION } from './rows.js';

/**
 * The PostgreSQL {@link Backend}. Made by `postgres()`; hand it to `createStore`. A thin class:
 * each behaviour lives in the file named after it (see the list above).
 *
 * @example
 * ```ts
 * const backend = postgres({ url: process.env.DATABASE_URL, schema: 'app' });
 * const store = createStore(backend);
 * await backend.migrate(['account']); // optional: tables are also created on first use
 * ```
 */
export class PostgresBackend implements Backend {
  readonly name = 'postgres';
  /** The database and the schema: backends with both equal share documents and locks. */
  readonly namespace: string;
  readonly supports: BackendCapabilities;
  /** The schema holding the model tables. */
  readonly schema: string;
  readonly #ctx: PgContext;
  readonly #combiner: Combiner;
  readonly #sweep: ExpirySweep;
  readonly #leases: Leases;
  readonly #permits: Permits;
  /** Job queues (see `queues.ts`). */
  readonly queues: PgQueues;

  /** @internal use {@link postgres}. */
  constructor(pool: Pool, ownPool: boolean, settings: BackendSettings) {
    this.#ctx = new PgContext(pool, ownPool, settings);
    this.schema = settings.schema;
    this.namespace = `postgres:${this.#ctx.dbId}#${settings.schema}`;
    this.supports = {
      sharedAcrossProcesses: true,
      durable: true,
      inProcessDeadlocks: settings.detectDeadlocks,
      serverDeadlocks: true,
    };
    this.#combiner = new Combiner(this.#ctx);
    this.#sweep = new ExpirySweep(this.#ctx);
    this.#leases = new Leases(this.#ctx, this.#combiner);
    this.#permits = new Permits(this.#ctx);
    this.queues = new PgQueues(this.#ctx, this.#combiner);
  }

  /** The pool this backend uses (yours, or the one it created from `url`). */
  get pool(): Pool {
    return this.#ctx.pool;
  }

  /**
   * Creates the schema, the fence sequence and the tables of `models` if they do not exist
   * (idempotent, safe to run concurrently from many processes).
   *
   * @example
   * ```ts
   * await backend.migrate(['account', 'campaign']);
   * ```
   */
  migrate(models: readonly string[] = []): Promise<void> {
    return migrate(this.#ctx, models);
  }

  /** Fresh snapshots, one per ref (undefined where missing). One round trip. */
  read(refs: readonly DocRef[]): Promise<Array<StoredDoc | undefined>> {
    return read(this.#ctx, refs);
  }

  /** One atomic, guarded batch (see the contract). */
  async write(writes: readonly DocWrite[], options?: WriteOptions): Promise<WriteResult> {
    this.#ctx.checkOpen();
    if (writes.length === 0) return { applied: true, docs: [], results: [] };
    const p = write(this.#ctx, this.#combiner, writes, options);
    if (writes.some((w) => ttlOf(w) !== undefined)) this.#expiring(writes, p);
    trackWrites(
      writes.map((w) => docId(this.schema, docId(w.model, w.key))),
      p,
    );
    return p;
  }

  /**
   * Rate-limit consumptions (and a batch) in one transaction on the server's clock (see
   * rate-limits.ts).
   *
   * @example
   * ```ts
   * const { admissions } = await backend.consume([{ name: 'api', algorithm: 'token-bucket',
   *   key: 'ann', limit: 10, windowMs: 1000, cost: 1, record: true }], []);
   * ```
   */
  consume(
    consumptions: readonly Consumption[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<ConsumeResult> {
    for (const w of writes) this.#combiner.forget(docId(w.model, w.key));
    const p = consume(this.#ctx, this.#sweep, consumptions, writes, options);
    if (writes.length > 0) {
      trackWrites(
        writes.map((w) => docId(this.schema, docId(w.model, w.key))),
        p,
      );
    }
    return p;
  }

  /**
   * Forgets one rate-limit key (its row and entries).
   *
   * @example
   * ```ts
   * await backend.resetLimit({ name: 'api', algorithm: 'token-bucket', key: 'ann' });
   * ```
   */
  resetLimit(ref: LimitRef): Promise<void> {
    return resetLimit(this.#ctx, ref);
  }

  /** @internal deletes every expired rate-limit row now (the sweep's timer does it by itself). */
  sweepLimits(): Promise<number> {
    return this.#sweep.sweep(LIMITS);
  }

  /** @internal rate-limit sweep timers running (0 once the latest window has passed). */
  get limitTimers(): number {
    return this.#sweep.timers;
  }

  /** Schedules the sweep of the tables an applied batch wrote expiring documents into. */
  #expiring(writes: readonly DocWrite[], p: Promise<WriteResult>): void {
    p.then(
      (r) => {
        if (!r.applied) return;
        for (const w of writes) {
          const ttl = ttlOf(w);
          if (ttl !== undefined) this.#sweep.touched(w.model, ttl);
        }
      },
      () => {},
    );
  }

  /** Takes a lease: one transaction holding advisory (and, for the default action, row) locks. */
  acquire(request: LeaseRequest): Promise<Lease | undefined> {
    return this.#leases.acquire(request);
  }

  /**
   * Takes units of a named pool: an advisory lock held by a transaction (mutex, rwlock), or a
   * holder row under the pool's FIFO gate (semaphore); see `permits.ts`.
   */
  acquirePermit(request: PermitRequest): Promise<PermitLease | undefined> {
    return this.#permits.acquire(request);
  }

  /** Units of a named pool held now by live leases (the server's lock table, or unexpired rows). */
  permitsHeld(kind: PermitKind, name: string): Promise<number> {
    return this.#permits.held(kind, name);
  }

  /**
   * @internal what this backend keeps open for named permits: granted permits not yet released,
   * and its listening connection (0 or 1). Both are 0 when idle.
   */
  get permitResources(): { permits: number; listeners: number } {
    return { permits: this.#permits.open, listeners: this.#permits.listener.connections };
  }

  /** Releases open leases and ends the pool if this backend created it (never a pool you passed). */
  async close(): Promise<void> {
    if (this.#ctx.closed) return;
    this.#ctx.closed = true;
    this.#sweep.close();
    await this.#leases.releaseAll();
    await this.#permits.releaseAll();
    await this.queues.close();
    await Promise.allSettled(this.#ctx.ensuring.values());
    if (this.#ctx.ownPool) await this.#ctx.pool.end();
  }
}
