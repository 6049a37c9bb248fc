/**
 * `Queue<T>`: a typed job queue of a store (`store.queue(name, schema, options)`), a thin layer
 * over the backend's queue primitives (`backend.queues`, see `backend.ts`): enqueue (alone, in
 * bulk, or inside `store.apply`), claim under a fenced lease, work loops, stats, inspection and
 * dead-letter retries. Payloads are validated by the schema on enqueue.
 */
import { ValidationError } from '../errors.js';
import type { EnqueueRequest, JobState, Json, QueueBackend, StoredJob } from './backend.js';
import { type Backoff, Job, type JobHost } from './job.js';
import type { OpBatch } from './model.js';
import type { StandardSchemaV1 } from './schema.js';
import { type JobHandler, Worker, type WorkOptions } from './worker.js';

/** Options of `store.queue`. */
export interface QueueOptions {
  /** A claim's lease: a dead or stalled worker's job is claimable again this long after its last renewal. Default 30 000. */
  leaseMs?: number;
  /** Runs allowed in all: a throw on the last one dead-letters the job (state `failed`). Default 3. */
  maxAttempts?: number;
  /** Full-jitter exponential backoff between retries. Default `{ baseMs: 1000, maxMs: 60_000 }`. */
  backoff?: Backoff;
}

/** Options of `q.enqueue` (and each item of `enqueueMany`). */
export interface EnqueueOptions {
  /** Not claimed before this many ms from now, server clock. */
  delayMs?: number;
  /** Not claimed before this time, server clock (wins over `delayMs`). */
  runAt?: Date;
  /** An integer; lower is claimed first (default 0). */
  priority?: number;
  /** At most one waiting, delayed or active job per key: enqueueing it again returns that job. */
  key?: string;
}

/** What an enqueue returns: the job's id, and `created: false` when `key` found a live job. */
export interface JobRef {
  readonly id: string;
  readonly created: boolean;
}

/** A job as `q.get(id)` shows it. */
export interface JobInfo<T> {
  readonly id: string;
  readonly data: T;
  readonly state: JobState;
  readonly attempt: number;
  readonly priority: number;
  readonly runAt: Date;
  readonly key?: string;
  /** The last retry's or the failure's error message. */
  readonly error?: string;
}

/** Options of `q.claim`. */
export interface ClaimOptions {
  /** Resolve undefined after waiting this long for a job (0: do not wait). Default: wait until one comes. */
  timeoutMs?: number;
  /** Abort waiting: rejects with `signal.reason`. */
  signal?: AbortSignal;
}

const DEFAULTS = { leaseMs: 30_000, maxAttempts: 3, backoff: { baseMs: 1000, maxMs: 60_000 } };

function bad(where: string, message: string): ValidationError {
  return new ValidationError(where, [{ message }]);
}

/**
 * A typed job queue. Made by `store.queue(name, schema, options)`.
 *
 * @example
 * ```ts
 * const Mail = store.queue('mail', z.object({ to: z.string() }), { maxAttempts: 5 });
 * await Mail.enqueue({ to: 'ann@example.com' }, { delayMs: 1000 });
 * const worker = Mail.work(async (job) => send(job.data.to), { concurrency: 8 });
 * ```
 */
export class Queue<T, In = T> implements JobHost {
  readonly name: string;
  readonly leaseMs: number;
  readonly maxAttempts: number;
  readonly backoff: Backoff;
  /** @internal */
  readonly queues: QueueBackend;
  readonly #schema: StandardSchemaV1<unknown, T>;

  /** @internal use `store.queue(name, schema, options)`. */
  constructor(
    queues: QueueBackend,
    name: string,
    schema: StandardSchemaV1<unknown, T>,
    options: QueueOptions = {},
  ) {
    const where = `queue ${name}`;
    if (typeof options !== 'object' || options === null)
      throw bad(where, 'options must be an object');
    const leaseMs = options.leaseMs ?? DEFAULTS.leaseMs;
    if (!(typeof leaseMs === 'number' && Number.isFinite(leaseMs) && leaseMs > 0)) {
      throw bad(where, `leaseMs must be a positive number of milliseconds, got ${String(leaseMs)}`);
    }
    const maxAttempts = options.maxAttempts ?? DEFAULTS.maxAttempts;
    if (!(Number.isSafeInteger(maxAttempts) && maxAttempts >= 1)) {
      throw bad(where, `maxAttempts must be a positive integer, got ${String(maxAttempts)}`);
    }
    const backoff = options.backoff ?? DEFAULTS.backoff;
    const okMs = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
    if (
      typeof backoff !== 'object' ||
      backoff === null ||
      !okMs(backoff.baseMs) ||
      !okMs(backoff.maxMs)
    ) {
      throw bad(where, 'backoff must be { baseMs, maxMs } with numbers >= 0');
    }
    if (backoff.baseMs > backoff.maxMs)
      throw bad(where, 'backoff.baseMs must not exceed backoff.maxMs');
    this.queues = queues;
    this.name = name;
    this.#schema = schema;
    this.leaseMs = leaseMs;
    this.maxAttempts = maxAttempts;
    this.backoff = { baseMs: backoff.baseMs, maxMs: backoff.maxMs };
  }

  /** The backend request for one job, once its payload passed the schema (sync when the schema is). */
  #request(
    data: In,
    options: EnqueueOptions | undefined,
  ): EnqueueRequest | Promise<EnqueueRequest> {
    const o = options ?? {};
    if (typeof o !== 'object' || o === null)
      throw bad(`enqueue on ${this.name}`, 'options must be an object');
    const where = `enqueue on ${this.name}`;
    if (o.runAt !== undefined && !(o.runAt instanceof Date && Number.isFinite(o.runAt.getTime()))) {
      throw bad(where, `runAt must be a valid Date, got ${String(o.runAt)}`);
    }
    if (
      o.delayMs !== undefined &&
      !(typeof o.delayMs === 'number' && Number.isFinite(o.delayMs) && o.delayMs >= 0)
    ) {
      throw bad(where, `delayMs must be a finite number >= 0, got ${String(o.delayMs)}`);
    }
    if (o.priority !== undefined && !Number.isSafeInteger(o.priority)) {
      throw bad(where, `priority must be an integer, got ${String(o.priority)}`);
    }
    const make = (value: T): EnqueueRequest => {
      const req: {
        -readonly [K in keyof EnqueueRequest]: EnqueueRequest[K];
      } = {
        queue: this.name,
        data: value as unknown as Json,
        delayMs: o.delayMs ?? 0,
        priority: o.priority ?? 0,
        maxAttempts: this.maxAttempts,
      };
      if (o.runAt !== undefined) req.runAt = o.runAt.getTime();
      if (o.key !== undefined) req.key = o.key;
      return req;
    };
    const out = this.#schema['~standard'].validate(data);
    const done = (r: Awaited<typeof out>): EnqueueRequest => {
      if (r.issues !== undefined)
        throw new ValidationError(`payload of queue ${this.name}`, r.issues);
      return make(r.value);
    };
    return out instanceof Promise ? out.then(done) : done(out);
  }

  /**
   * Adds one job (its payload validated by the schema); resolves its ref. With `key`, a key that
   * has a waiting, delayed or active job returns that job (`created: false`).
   *
   * @example
   * ```ts
   * const { id } = await Mail.enqueue({ to: 'ann@example.com' }, { priority: -1, key: 'welcome:ann' });
   * ```
   */
  async enqueue(data: In, options?: EnqueueOptions): Promise<JobRef> {
    const [ref] = await this.#enqueue([await this.#request(data, options)]);
    return ref as JobRef;
  }

  /**
   * Adds several jobs in one atomic step (all or none; a payload the schema refuses enqueues none).
   *
   * @example
   * ```ts
   * await Mail.enqueueMany([{ data: { to: 'ann@x' } }, { data: { to: 'bob@x' }, delayMs: 500 }]);
   * ```
   */
  async enqueueMany(items: readonly ({ readonly data: In } & EnqueueOptions)[]): Promise<JobRef[]> {
    if (!Array.isArray(items))
      throw bad(`enqueueMany on ${this.name}`, 'give an array of { data, ...options }');
    const reqs = await Promise.all(items.map((it) => this.#request(it?.data as In, it)));
    return this.#enqueue(reqs);
  }

  async #enqueue(reqs: readonly EnqueueRequest[]): Promise<JobRef[]> {
    const r = await this.queues.enqueue(reqs, []);
    if (!r.applied) throw new Error(`enqueue refused: ${r.reason}`); // no writes: cannot happen
    return r.jobs.map((j) => ({ id: j.id, created: j.created }));
  }

  /**
   * One job as a part of an atomic `store.apply([...])`: the job exists iff the batch applied
   * (the transactional outbox). The payload is validated now.
   *
   * @example
   * ```ts
   * await store.apply([Order.createOp('o1', { total: 30 }), Charge.enqueueOp({ order: 'o1' })]);
   * ```
   */
  enqueueOp(data: In, options?: EnqueueOptions): OpBatch {
    const req = this.#request(data, options);
    if (req instanceof Promise) req.catch(() => {}); // reported by store.apply
    return { job: req };
  }

  /**
   * Claims the next job (priority, then run time, then enqueue order) under a lease of `leaseMs`,
   * waiting without polling; undefined after `timeoutMs`. The claim is not renewed by itself:
   * call `job.extend()` for long work (or use {@link work}, which renews).
   *
   * @example
   * ```ts
   * const job = await Mail.claim({ timeoutMs: 5000 });
   * if (job) await job.complete();
   * ```
   */
  async claim(options: ClaimOptions = {}): Promise<Job<T> | undefined> {
    const sentAt = Date.now();
    const c = await this.queues.claim({
      queue: this.name,
      leaseMs: this.leaseMs,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    return c === undefined ? undefined : new Job<T>(this, c, sentAt);
  }

  /**
   * Runs `handler` on every job, `concurrency` at a time, the claim renewed while it runs. Its
   * return completes the job (unless it called `job.complete(effects)` itself); a throw retries it
   * with full-jitter backoff, and dead-letters it after `maxAttempts`. `ctx.signal` aborts the
   * moment the claim is lost.
   *
   * @example
   * ```ts
   * const worker = Charge.work(async (job, ctx) => {
   *   await job.complete([Order.ops(job.data.order, (o) => o.charged.set(true))]);
   * }, { concurrency: 16 });
   * ```
   */
  work(handler: JobHandler<T>, options: WorkOptions = {}): Worker {
    if (typeof handler !== 'function')
      throw bad(`work on ${this.name}`, 'handler must be a function');
    return new Worker(
      { claim: (o) => this.claim(o), maxAttempts: this.maxAttempts, leaseMs: this.leaseMs },
      handler as JobHandler<unknown>,
      options,
    );
  }

  /**
   * Counts of jobs by state, now (server clock).
   *
   * @example
   * ```ts
   * const { waiting, delayed, active, failed } = await Mail.stats();
   * ```
   */
  stats(): Promise<{ waiting: number; delayed: number; active: number; failed: number }> {
    return this.queues.queueStats(this.name).then((s) => ({ ...s }));
  }

  /**
   * A job's state, or undefined when it does not exist (never enqueued, or completed).
   *
   * @example
   * ```ts
   * const info = await Mail.get(id); // { state: 'failed', error: 'Error: 550', ... }
   * ```
   */
  async get(id: string): Promise<JobInfo<T> | undefined> {
    const j = await this.queues.getJob(this.name, id);
    return j === undefined ? undefined : info<T>(j);
  }

  /**
   * Gives a failed (dead-lettered) job a fresh set of attempts; false when it is not failed.
   *
   * @example
   * ```ts
   * if (await Mail.retryFailed(id)) console.log('queued again');
   * ```
   */
  retryFailed(id: string): Promise<boolean> {
    return this.queues.retryFailed(this.name, id);
  }
}

function info<T>(j: StoredJob): JobInfo<T> {
  const out: { -readonly [K in keyof JobInfo<T>]: JobInfo<T>[K] } = {
    id: j.id,
    data: j.data as T,
    state: j.state,
    attempt: j.attempt,
    priority: j.priority,
    runAt: new Date(j.runAt),
  };
  if (j.key !== undefined) out.key = j.key;
  if (j.error !== undefined) out.error = j.error;
  return out;
}
