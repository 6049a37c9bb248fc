/**
 * Job queues of the PostgreSQL backend (`backend.queues`, semantics in `src/store/backend.ts`),
 * on one table per schema (`queue-sql.ts`):
 * - claim: ONE message — expired claims come back (or fail on their last attempt), then the next
 *   due job is taken with `FOR UPDATE SKIP LOCKED` and stamped active with a new fence and an
 *   expiry on `clock_timestamp()`; a claim that finds nothing LISTENs (`queue-wakeups.ts`) and
 *   looks once more, then sleeps until a NOTIFY of its queue or the next due time;
 * - complete: `BEGIN; DELETE … WHERE <the claim holds> RETURNING` then the effects through the
 *   general write transaction (`batch.ts`, rows locked in canonical order) and COMMIT: both or
 *   neither. Without effects, ONE autocommit DELETE;
 * - enqueue with writes: `BEGIN; INSERT jobs …; NOTIFY` then the writes' transaction and COMMIT
 *   (a NOTIFY is delivered only on commit); alone, ONE autocommit message;
 * - retry, fail, extend, retryFailed: ONE fenced UPDATE each.
 */
import type { QueryResult } from 'pg';
import { BackendError } from '../../errors.js';
import type {
  ClaimedJob,
  ClaimRequest,
  DocWrite,
  EnqueuedJob,
  EnqueueRequest,
  EnqueueResult,
  JobState,
  Json,
  QueueBackend,
  QueueStats,
  StoredJob,
  WriteOptions,
  WriteResult,
} from '../../store/backend.js';
import { wakeOrTimeout } from '../../sync/wake-or-timeout.js';
import { batch } from './batch.js';
import type { Combiner } from './combine.js';
import type { Conn } from './conn.js';
import type { PgContext } from './context.js';
import { backoff, fromDriver, RetryBatch } from './errors.js';
import { ensure } from './migrations.js';
import { refuse } from './planner.js';
import { trackWrites } from './program-order.js';
import {
  channel,
  claimSql,
  EXPIRED_LAST,
  heldWhere,
  JOB_COLUMNS,
  jobsDdl,
  jobsTable,
  jobValues,
  NOW_MS,
  nextDueSql,
  notifySql,
} from './queue-sql.js';
import { type Sleeper, Wakeups } from './queue-wakeups.js';
import { docId, RAW, type Raw, resultsOf } from './rows.js';
import type { WriteScope } from './scope.js';
import { FENCE_SEQUENCE, ident, lit, lockHash, sqlState } from './sql.js';

/** A job id as the table holds it (a bigint); anything else names no job. */
const ID = /^[1-9][0-9]{0,17}$/;

function num(v: string | null | undefined): number {
  return v === null || v === undefined ? 0 : Number(v);
}

/** A job row (JOB_COLUMNS) as the contract shows it, its state as of the row's `now`. */
function parseJob(r: Raw): StoredJob {
  const now = num(r.now);
  const runAt = num(r.run_at);
  const expiresAt = num(r.expires_at);
  const attempt = num(r.attempt);
  const maxAttempts = num(r.max_attempts);
  let state: JobState;
  let error = r.error ?? undefined;
  if (r.state === 'failed') state = 'failed';
  else if (r.state === 'active' && expiresAt > now) state = 'active';
  else if (r.state === 'active' && attempt >= maxAttempts) {
    state = 'failed';
    error = EXPIRED_LAST;
  } else if (r.state === 'pending' && runAt > now) state = 'delayed';
  else state = 'waiting';
  const out: { -readonly [K in keyof StoredJob]: StoredJob[K] } = {
    id: String(r.id),
    queue: String(r.queue),
    data: JSON.parse(String(r.data)) as Json,
    state,
    priority: num(r.priority),
    runAt,
    attempt,
    fence: num(r.fence),
    maxAttempts,
  };
  if (r.key !== null && r.key !== undefined) out.key = r.key;
  if (error !== undefined && error !== null) out.error = error;
  return out;
}

/** A write scope for a transaction this module opened: no lease, rows read under lock, one stamp. */
function txScope(conn: Conn, stamp: number): WriteScope {
  return {
    fence: stamp,
    covers: () => true,
    lockedRow: () => undefined,
    incarnation: () => undefined,
    snapshot: () => undefined,
    end: async () => {
      await conn.query('ROLLBACK');
    },
  };
}

/**
 * The queue primitives of one PostgreSQL backend.
 *
 * @example
 * ```ts
 * const queues = new PgQueues(ctx, combiner);
 * const job = await queues.claim({ queue: 'mail', leaseMs: 30_000, timeoutMs: 1000 });
 * ```
 */
export class PgQueues implements QueueBackend {
  readonly #ctx: PgContext;
  readonly #combiner: Combiner;
  readonly #table: string;
  readonly #wakeups: Wakeups;
  #ready: Promise<void> | undefined;

  constructor(ctx: PgContext, combiner: Combiner) {
    this.#ctx = ctx;
    this.#combiner = combiner;
    this.#table = jobsTable(ctx.schema);
    this.#wakeups = new Wakeups(ctx, channel(ctx.schema));
  }

  /** Claimers waiting and whether the LISTEN connection is held (0/false when idle). */
  stats(): { sleepers: number; listening: boolean } {
    return this.#wakeups.stats();
  }

  /** The jobs table exists (created once per backend instance when autoMigrate allows). */
  #ensure(): Promise<void> {
    if (this.#ready === undefined) {
      const p = this.#migrate();
      this.#ready = p;
      p.catch(() => {
        if (this.#ready === p) this.#ready = undefined;
      });
    }
    return this.#ready;
  }

  async #migrate(): Promise<void> {
    if (!this.#ctx.autoMigrate) return;
    const conn = await this.#ctx.connect();
    try {
      await conn.query(
        `BEGIN; SELECT pg_advisory_xact_lock(${lockHash('lockstep-ddl', this.#ctx.schema)}); ${jobsDdl(this.#ctx.schema)}; COMMIT`,
      );
    } catch (err) {
      throw fromDriver(err, 'creating the jobs table');
    } finally {
      await conn.done();
    }
  }

  /** One autocommit message; results per statement. */
  async #run(text: string, what: string): Promise<QueryResult[]> {
    await this.#ensure();
    try {
      return resultsOf(
        (await this.#ctx.pool.query({ text, types: RAW })) as unknown as
          | QueryResult
          | QueryResult[],
      );
    } catch (err) {
      throw fromDriver(err, what);
    }
  }

  /**
   * Runs `writes` in a transaction this module opened with `head` (its first message, after
   * BEGIN; its last statement returns the rows `check` inspects): `check` says whether to go on
   * (else ROLLBACK and `refused`). Retried from scratch while nothing was written.
   */
  async #transaction<T>(
    head: string,
    writes: readonly DocWrite[],
    check: (res: QueryResult[]) => T | undefined,
    refused: () => WriteResult,
  ): Promise<{ result: WriteResult; value: T | undefined }> {
    await this.#ensure();
    const models = new Set(writes.map((w) => w.model));
    for (let attempt = 0; ; attempt++) {
      const conn = await this.#ctx.connect();
      try {
        const res = await conn.query(
          `BEGIN; ${head}; SELECT nextval('${ident(this.#ctx.schema)}.${ident(FENCE_SEQUENCE)}') AS stamp`,
        );
        const value = check(res.slice(1, -1));
        if (value === undefined) {
          await conn.query('ROLLBACK');
          return { result: refused(), value };
        }
        const stamp = num((res[res.length - 1]?.rows[0] as Raw | undefined)?.stamp);
        for (const w of writes) this.#combiner.forget(docId(w.model, w.key));
        const p = batch(this.#ctx, conn, writes, txScope(conn, stamp));
        trackWrites(
          writes.map((w) => docId(this.#ctx.schema, docId(w.model, w.key))),
          p,
        );
        const result = await p;
        return { result, value: result.applied ? value : undefined };
      } catch (err) {
        const state = sqlState(err);
        if ((state === '42P01' || state === '3F000') && attempt < 3) {
          await conn.done();
          await ensure(this.#ctx, models, err);
          continue;
        }
        if ((err instanceof RetryBatch || state === '40P01' || state === '40001') && attempt < 8) {
          await conn.done();
          await backoff(attempt);
          continue;
        }
        if (conn.dead !== undefined) {
          throw new BackendError(
            'lost the PostgreSQL connection while committing a queue step; it may or may not have been applied',
            { cause: err, outcomeUnknown: true },
          );
        }
        throw fromDriver(err, 'a queue transaction');
      } finally {
        await conn.done();
      }
    }
  }

  /** The INSERT (and NOTIFY) statements of `jobs`, and how to read their ids back. */
  #insert(jobs: readonly EnqueueRequest[]): {
    sql: string;
    read: (res: QueryResult[]) => EnqueuedJob[] | undefined;
  } {
    // Within one request, a key repeated returns the first job of it.
    const first = new Map<string, number>();
    const rows: EnqueueRequest[] = [];
    const slot: number[] = [];
    for (const j of jobs) {
      const k = j.key === undefined ? undefined : `${j.queue}\u0000${j.key}`;
      if (k !== undefined && first.has(k)) {
        slot.push(first.get(k) as number);
        continue;
      }
      if (k !== undefined) first.set(k, rows.length);
      slot.push(rows.length);
      rows.push(j);
    }
    const keyed = rows.filter((r) => r.key !== undefined);
    const parts = [
      `INSERT INTO ${this.#table} (queue, state, priority, run_at, max_attempts, key, data) VALUES ${rows.map(jobValues).join(', ')} ON CONFLICT (queue, key) WHERE key IS NOT NULL AND state IN ('pending', 'active') DO NOTHING RETURNING id, queue, key`,
    ];
    if (keyed.length > 0) {
      parts.push(
        `SELECT id, queue, key FROM ${this.#table} WHERE state IN ('pending', 'active') AND (queue, key) IN (${keyed.map((r) => `(${lit(r.queue)}, ${lit(r.key as string)})`).join(', ')})`,
      );
    }
    const counts = new Map<string, number>();
    for (const r of rows) counts.set(r.queue, (counts.get(r.queue) ?? 0) + 1);
    for (const [q, n] of counts) parts.push(notifySql(this.#ctx.schema, q, n));
    const read = (res: QueryResult[]): EnqueuedJob[] | undefined => {
      const inserted = (res[0]?.rows ?? []) as Raw[];
      const byKey = new Map<string, { id: string; created: boolean }>();
      const plain: string[] = [];
      for (const r of inserted) {
        if (r.key === null) plain.push(String(r.id));
        else byKey.set(`${r.queue}\u0000${r.key}`, { id: String(r.id), created: true });
      }
      if (keyed.length > 0) {
        for (const r of (res[1]?.rows ?? []) as Raw[]) {
          const k = `${r.queue}\u0000${r.key}`;
          if (!byKey.has(k)) byKey.set(k, { id: String(r.id), created: false });
        }
      }
      const made: EnqueuedJob[] = [];
      let p = 0;
      for (const r of rows) {
        if (r.key === undefined) {
          const id = plain[p++];
          if (id === undefined) return undefined;
          made.push({ id, created: true });
        } else {
          const got = byKey.get(`${r.queue}\u0000${r.key}`);
          // The key's job ended between the INSERT and the SELECT: enqueue again.
          if (got === undefined) return undefined;
          made.push(got);
        }
      }
      // A repeated key: the second mention is the first one's job, not created again.
      return slot.map((s, i) => {
        const m = made[s] as EnqueuedJob;
        return slot.indexOf(s) === i ? m : { id: m.id, created: false };
      });
    };
    return { sql: parts.join('; '), read };
  }

  async enqueue(
    jobs: readonly EnqueueRequest[],
    writes: readonly DocWrite[],
    _options?: WriteOptions,
  ): Promise<EnqueueResult> {
    this.#ctx.checkOpen();
    if (jobs.length === 0 && writes.length > 0) {
      // Nothing to enqueue: the plain batch.
      const { result } = await this.#transaction(
        'SELECT 1',
        writes,
        () => true,
        () => refuse('fence', 0),
      );
      return result.applied ? { ...result, jobs: [] } : result;
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      const { sql, read } = this.#insert(jobs);
      if (writes.length === 0) {
        const made = read(await this.#run(sql, 'enqueueing'));
        if (made !== undefined) return { applied: true, docs: [], results: [], jobs: made };
        continue;
      }
      let retry = false;
      const { result, value } = await this.#transaction(
        sql,
        writes,
        (res) => {
          const made = read(res);
          if (made === undefined) retry = true;
          return made;
        },
        () => refuse('fence', 0),
      );
      if (retry) continue;
      if (!result.applied) return result;
      return { ...result, jobs: value as EnqueuedJob[] };
    }
    throw new BackendError(
      'enqueue kept racing with the completion of a job of the same key; retry it',
    );
  }

  /** One look: claims a due job, or undefined. */
  async #claimOnce(queue: string, leaseMs: number): Promise<ClaimedJob | undefined> {
    const res = await this.#run(claimSql(this.#ctx.schema, queue, leaseMs, 1), 'claiming a job');
    const row = res[1]?.rows[0] as Raw | undefined;
    return row === undefined ? undefined : parseJob(row);
  }

  async claim(request: ClaimRequest): Promise<ClaimedJob | undefined> {
    this.#ctx.checkOpen();
    const { queue, leaseMs, timeoutMs, signal } = request;
    const first = await this.#claimOnce(queue, leaseMs);
    if (first !== undefined || timeoutMs === 0) return first;
    const deadline =
      timeoutMs === undefined ? Number.POSITIVE_INFINITY : performance.now() + timeoutMs;
    for (;;) {
      signal?.throwIfAborted();
      let woken!: () => void;
      const wake = new Promise<void>((r) => {
        woken = r;
      });
      const sleeper: Sleeper = { queue, wake: () => woken() };
      try {
        await abortable(this.#wakeups.add(sleeper), signal);
        // Listening now: a job enqueued from here on notifies us; one more look for earlier ones.
        const job = await this.#claimOnce(queue, leaseMs);
        if (job !== undefined) return job;
        const res = await this.#run(nextDueSql(this.#ctx.schema, queue), 'claiming a job');
        const due = (res[0]?.rows[0] as Raw | undefined)?.wait;
        const left = deadline - performance.now();
        if (left <= 0) return undefined;
        const ms = Math.min(
          left,
          due === null || due === undefined ? Number.POSITIVE_INFINITY : Math.max(0, num(due)) + 1,
        );
        await wakeOrTimeout(wake, ms, signal);
      } finally {
        this.#wakeups.remove(sleeper);
      }
      if (performance.now() >= deadline) return this.#claimOnce(queue, leaseMs);
    }
  }

  async complete(
    queue: string,
    id: string,
    fence: number,
    effects: readonly DocWrite[],
    _options?: WriteOptions,
  ): Promise<WriteResult> {
    this.#ctx.checkOpen();
    const lost = () => refuse('fence', 0, 'the claim expired or the job was claimed again');
    if (!ID.test(id)) return lost();
    const del = `DELETE FROM ${this.#table} WHERE ${heldWhere(queue, id, fence)} RETURNING id`;
    if (effects.length === 0) {
      const res = await this.#run(del, 'completing a job');
      return (res[0]?.rowCount ?? 0) > 0 ? { applied: true, docs: [], results: [] } : lost();
    }
    const { result } = await this.#transaction(
      del,
      effects,
      (res) => ((res[0]?.rowCount ?? 0) > 0 ? true : undefined),
      lost,
    );
    return result;
  }

  async #fenced(sql: string, id: string, what: string): Promise<boolean> {
    this.#ctx.checkOpen();
    if (!ID.test(id)) return false;
    const res = await this.#run(sql, what);
    return (res[0]?.rowCount ?? 0) > 0;
  }

  retry(
    queue: string,
    id: string,
    fence: number,
    delayMs: number,
    error?: string,
  ): Promise<boolean> {
    return this.#fenced(
      `UPDATE ${this.#table} SET state = 'pending', run_at = ${NOW_MS} + ${Math.ceil(delayMs)}${error === undefined ? '' : `, error = ${lit(error)}`} WHERE ${heldWhere(queue, id, fence)} RETURNING id; ${notifySql(this.#ctx.schema, queue, 1)}`,
      id,
      'retrying a job',
    );
  }

  fail(queue: string, id: string, fence: number, error: string): Promise<boolean> {
    return this.#fenced(
      `UPDATE ${this.#table} SET state = 'failed', error = ${lit(error)} WHERE ${heldWhere(queue, id, fence)} RETURNING id`,
      id,
      'failing a job',
    );
  }

  extend(queue: string, id: string, fence: number, ms: number): Promise<boolean> {
    return this.#fenced(
      `UPDATE ${this.#table} SET expires_at = ${NOW_MS} + ${Math.ceil(ms)} WHERE ${heldWhere(queue, id, fence)} RETURNING id`,
      id,
      'extending a claim',
    );
  }

  async getJob(queue: string, id: string): Promise<StoredJob | undefined> {
    this.#ctx.checkOpen();
    if (!ID.test(id)) return undefined;
    const res = await this.#run(
      `SELECT ${JOB_COLUMNS} FROM ${this.#table} WHERE id = ${id} AND queue = ${lit(queue)}`,
      'reading a job',
    );
    const row = res[0]?.rows[0] as Raw | undefined;
    return row === undefined ? undefined : parseJob(row);
  }

  async queueStats(queue: string): Promise<QueueStats> {
    this.#ctx.checkOpen();
    const res = await this.#run(
      `WITH n AS (SELECT ${NOW_MS} AS t) SELECT
  count(*) FILTER (WHERE (state = 'pending' AND run_at <= n.t) OR (state = 'active' AND expires_at <= n.t AND attempt < max_attempts)) AS waiting,
  count(*) FILTER (WHERE state = 'pending' AND run_at > n.t) AS delayed,
  count(*) FILTER (WHERE state = 'active' AND expires_at > n.t) AS active,
  count(*) FILTER (WHERE state = 'failed' OR (state = 'active' AND expires_at <= n.t AND attempt >= max_attempts)) AS failed
FROM ${this.#table}, n WHERE queue = ${lit(queue)}`,
      'counting jobs',
    );
    const r = (res[0]?.rows[0] ?? {}) as Raw;
    return {
      waiting: num(r.waiting),
      delayed: num(r.delayed),
      active: num(r.active),
      failed: num(r.failed),
    };
  }

  async retryFailed(queue: string, id: string): Promise<boolean> {
    this.#ctx.checkOpen();
    if (!ID.test(id)) return false;
    const where = `id = ${id} AND queue = ${lit(queue)} AND (state = 'failed' OR (state = 'active' AND expires_at <= ${NOW_MS} AND attempt >= max_attempts))`;
    try {
      const res = await this.#run(
        `UPDATE ${this.#table} SET state = 'pending', attempt = 0, run_at = ${NOW_MS}, error = CASE WHEN state = 'active' THEN ${lit(EXPIRED_LAST)} ELSE error END WHERE ${where} RETURNING id; ${notifySql(this.#ctx.schema, queue, 1)}`,
        'retrying a failed job',
      );
      return (res[0]?.rowCount ?? 0) > 0;
    } catch (err) {
      // Its key has a live job meanwhile (the unique index): the contract says false.
      if (sqlState(err) === '23505') return false;
      throw err;
    }
  }

  /** Wakes every waiting claimer and gives the LISTEN connection back. */
  close(): Promise<void> {
    return this.#wakeups.close();
  }
}

/** `p`, or a rejection with `signal.reason` as soon as `signal` aborts (whichever comes first). */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
