/**
 * The Store: one backend, many models, and atomic batches across them.
 */
import { BackendError, ValidationError } from '../errors.js';
import type {
  Admission,
  Backend,
  Consumption,
  DocWrite,
  EnqueueRequest,
  WriteResult,
} from './backend.js';
import { type Bounded, bounded } from './boundary.js';
import { checkModelName } from './keys.js';
import { Model, type OpBatch, refusalError, writeOptions } from './model.js';
import { DistributedMutex } from './mutex.js';
import type { NamedLockOptions } from './permit-pool.js';
import { Queue, type QueueOptions } from './queue.js';
import { RateLimiter, type RateLimiterOptions } from './rate-limiter.js';
import { DistributedRWLock } from './rwlock.js';
import type { InferInput, InferOutput, StandardSchemaV1 } from './schema.js';
import { DistributedSemaphore, type SemaphoreOptions } from './semaphore.js';

/** A store: models over one backend. Made by {@link createStore}. */
export interface Store {
  /** The backend every model of this store uses. */
  readonly backend: Backend;
  /**
   * Declares a model: documents validated by `schema` (any Standard Schema: zod, valibot, arktype).
   *
   * @example
   * ```ts
   * const Account = store.model('account', z.object({ balance: z.number().min(0) }));
   * ```
   */
  model<S extends StandardSchemaV1>(name: string, schema: S): Model<InferOutput<S>, InferInput<S>>;
  /**
   * Applies several documents' parts (from `Model.ops`, `createOp`, `putOp`, `deleteOp`)
   * atomically: every guard holds and every write applies, or nothing is written
   * (`{ applied: false, refusedBy }` when a guard was false). Waits for `lock()` holders of its
   * documents, bounded by `options`.
   *
   * @example
   * ```ts
   * const { applied } = await store.apply([
   *   Account.ops('ann', (a) => a.balance.incr(-10), (a) => a.balance.gte(10)),
   *   Account.ops('bob', (a) => a.balance.incr(10)),
   * ]);
   * ```
   */
  apply(batches: readonly OpBatch[], options?: StoreApplyOptions): Promise<StoreApplyResult>;
  /**
   * A named rate limiter on the backend's clock (shared by every process using the name):
   * `consume`, `peek`, `reset`, and `consumeOp` for `store.apply`.
   *
   * @example
   * ```ts
   * const api = store.rateLimiter('api', { limit: 100, windowMs: 60_000 });
   * const { allowed } = await api.consume('user:ann');
   * ```
   */
  rateLimiter(name: string, options: RateLimiterOptions): RateLimiter;
  /**
   * A named mutex shared by every client of this backend (across processes on Redis and
   * PostgreSQL): FIFO, leased, fenced; see {@link DistributedMutex}. Its namespace is its own
   * (a document lock on the same string is another lock). Cheap to make: no round trip.
   *
   * @example
   * ```ts
   * await store.mutex('nightly-report').run((ctx) => buildReport({ fence: ctx.fence }));
   * ```
   */
  mutex(name: string, options?: NamedLockOptions): DistributedMutex;
  /**
   * A named reader/writer lock (FIFO, write-preferring); see {@link DistributedRWLock}.
   *
   * @example
   * ```ts
   * const prices = await store.rwlock('prices').read(() => loadPrices());
   * ```
   */
  rwlock(name: string, options?: NamedLockOptions): DistributedRWLock;
  /**
   * A named, weighted, FIFO semaphore of `permits` units; see {@link DistributedSemaphore}.
   *
   * @example
   * ```ts
   * const api = store.semaphore('payment-api', { permits: 5 });
   * await api.run(() => charge(order));
   * ```
   */
  semaphore(name: string, options: SemaphoreOptions): DistributedSemaphore;
  /**
   * Declares a job queue: payloads validated by `schema`, each job claimed by one worker at a
   * time under a lease of `leaseMs`, retried with backoff up to `maxAttempts`, then kept as failed.
   * Its `enqueueOp` is a part of `store.apply`: the job exists iff the batch applied.
   *
   * @example
   * ```ts
   * const Charge = store.queue('charge', z.object({ order: z.string() }), { leaseMs: 10_000 });
   * await store.apply([Order.createOp('o1', { total: 30, charged: false }), Charge.enqueueOp({ order: 'o1' })]);
   * ```
   */
  queue<S extends StandardSchemaV1>(
    name: string,
    schema: S,
    options?: QueueOptions,
  ): Queue<InferOutput<S>, InferInput<S>>;
  /** Closes the backend (connections, timers). Clients you passed in stay open. */
  close(): Promise<void>;
}

/** Options of {@link Store.apply}. */
export interface StoreApplyOptions {
  /** Give up waiting for a `lock()` holder of one of the documents after this long (LockTimeoutError). */
  timeoutMs?: number;
  /** Abort waiting for a `lock()` holder: rejects with `signal.reason`, nothing written. */
  signal?: AbortSignal;
}

/** The outcome of {@link Store.apply}. */
export interface StoreApplyResult {
  readonly applied: boolean;
  /** When a guard refused: which part of the batch (`index`) and which of its guards (`guard`). */
  readonly refusedBy?: { readonly index: number; readonly guard: number };
  /** When a `consumeOp` part was not admitted: which part, and when it would be. */
  readonly limitedBy?: { readonly index: number; readonly retryAfterMs: number };
}

class StoreImpl implements Store {
  readonly backend: Bounded;
  constructor(backend: Backend) {
    this.backend = bounded(backend);
  }

  mutex(name: string, options?: NamedLockOptions): DistributedMutex {
    return new DistributedMutex(this.backend, name, options);
  }

  rwlock(name: string, options?: NamedLockOptions): DistributedRWLock {
    return new DistributedRWLock(this.backend, name, options);
  }

  semaphore(name: string, options: SemaphoreOptions): DistributedSemaphore {
    return new DistributedSemaphore(this.backend, name, options);
  }

  model<S extends StandardSchemaV1>(name: string, schema: S): Model<InferOutput<S>, InferInput<S>> {
    checkModelName(name);
    if (typeof schema?.['~standard']?.validate !== 'function') {
      throw new ValidationError(`schema of model ${name}`, [
        { message: 'expected a Standard Schema (zod, valibot, arktype, ...)' },
      ]);
    }
    return new Model<InferOutput<S>, InferInput<S>>(
      this.backend,
      name,
      schema as StandardSchemaV1<unknown, InferOutput<S>>,
    );
  }

  queue<S extends StandardSchemaV1>(
    name: string,
    schema: S,
    options?: QueueOptions,
  ): Queue<InferOutput<S>, InferInput<S>> {
    if (typeof name !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(name)) {
      throw new ValidationError(`queue name ${JSON.stringify(name) ?? String(name)}`, [
        {
          message: 'use 1-63 letters, digits or underscores, starting with a letter or underscore',
        },
      ]);
    }
    if (typeof schema?.['~standard']?.validate !== 'function') {
      throw new ValidationError(`schema of queue ${name}`, [
        { message: 'expected a Standard Schema (zod, valibot, arktype, ...)' },
      ]);
    }
    const queues = this.backend.queues;
    if (queues === undefined) {
      throw new BackendError(
        `the ${this.backend.name} backend has no job queues yet; use memory, Redis or PostgreSQL for store.queue`,
      );
    }
    return new Queue<InferOutput<S>, InferInput<S>>(
      queues,
      name,
      schema as StandardSchemaV1<unknown, InferOutput<S>>,
      options,
    );
  }

  apply(batches: readonly OpBatch[], options: StoreApplyOptions = {}): Promise<StoreApplyResult> {
    if (!Array.isArray(batches)) {
      return Promise.reject(
        new ValidationError('store.apply', [{ message: 'give an array of Model.ops(...) parts' }]),
      );
    }
    if (batches.length === 0) return Promise.resolve({ applied: true });
    const jobs = batches.some((b) => b?.job !== undefined);
    const limits = batches.some((b) => b?.consume !== undefined);
    if (jobs && limits) {
      return Promise.reject(
        new ValidationError('store.apply', [
          {
            message:
              'one batch cannot hold both consumeOp and enqueue parts yet; apply them in two batches',
          },
        ]),
      );
    }
    if (jobs) return this.#applyWithJobs(batches, options);
    if (limits) return this.#consume(batches, options);
    if (batches.some((b) => b?.pending !== undefined)) {
      return Promise.all(batches.map((b) => b.pending ?? b.write)).then((ws) =>
        this.#apply(ws as DocWrite[], options),
      );
    }
    return this.#apply(batches.map((b) => b?.write) as DocWrite[], options);
  }
  /** A batch with jobs (`enqueueOp`): the jobs are created in the same atomic step as the writes. */
  async #applyWithJobs(
    batches: readonly OpBatch[],
    options: StoreApplyOptions,
  ): Promise<StoreApplyResult> {
    const writes: DocWrite[] = [];
    const at: number[] = [];
    const jobs: EnqueueRequest[] = [];
    for (let i = 0; i < batches.length; i++) {
      const b = batches[i];
      if (b?.job !== undefined) jobs.push(await b.job);
      else {
        writes.push((b?.pending !== undefined ? await b.pending : b?.write) as DocWrite);
        at.push(i);
      }
    }
    const queues = this.backend.queues;
    if (queues === undefined) {
      throw new BackendError(`the ${this.backend.name} backend has no job queues yet`);
    }
    const o = writeOptions(options);
    const r = await (o === undefined
      ? queues.enqueue(jobs, writes)
      : queues.enqueue(jobs, writes, o));
    if (r.applied) return { applied: true };
    if (r.reason === 'guard') {
      return r.guard === undefined
        ? { applied: false }
        : { applied: false, refusedBy: { index: at[r.index] as number, guard: r.guard } };
    }
    throw refusalError(r, writes);
  }

  #apply(writes: readonly DocWrite[], options: StoreApplyOptions): Promise<StoreApplyResult> {
    const o = writeOptions(options);
    // Not `async`: one `then` on the backend's (often already settled) promise.
    return (o === undefined ? this.backend.write(writes) : this.backend.write(writes, o)).then(
      (r): StoreApplyResult => {
        if (r.applied) return { applied: true };
        if (r.reason === 'guard') {
          return r.guard === undefined
            ? { applied: false }
            : { applied: false, refusedBy: { index: r.index, guard: r.guard } };
        }
        throw refusalError(r, writes);
      },
    );
  }

  async #consume(
    batches: readonly OpBatch[],
    options: StoreApplyOptions,
  ): Promise<StoreApplyResult> {
    const consumptions: Consumption[] = [];
    const consumedAt: number[] = [];
    const writes: DocWrite[] = [];
    const writtenAt: number[] = [];
    for (let i = 0; i < batches.length; i++) {
      const b = batches[i] as OpBatch;
      if (b?.consume !== undefined) {
        consumptions.push(b.consume);
        consumedAt.push(i);
      } else {
        writes.push(b?.pending !== undefined ? await b.pending : (b?.write as DocWrite));
        writtenAt.push(i);
      }
    }
    const o = writeOptions(options);
    const r = await bounded(this.backend).consume(consumptions, writes, o);
    const w: WriteResult | undefined = r.write;
    if (w === undefined) {
      const i = r.admissions.findIndex((a, j) => !a.allowed && consumptions[j]?.record);
      const a = r.admissions[i] as Admission;
      return {
        applied: false,
        limitedBy: { index: consumedAt[i] as number, retryAfterMs: a.retryAfterMs },
      };
    }
    if (w.applied) return { applied: true };
    if (w.reason === 'guard') {
      return w.guard === undefined
        ? { applied: false }
        : { applied: false, refusedBy: { index: writtenAt[w.index] as number, guard: w.guard } };
    }
    throw refusalError(w, writes);
  }

  rateLimiter(name: string, options: RateLimiterOptions): RateLimiter {
    return new RateLimiter(bounded(this.backend), name, options);
  }

  close(): Promise<void> {
    return this.backend.close();
  }
}

/**
 * Creates a store over `backend` (default: the embedded memory backend).
 *
 * @example
 * ```ts
 * import { createStore, memory } from 'lockstep';
 * const store = createStore(memory());
 * ```
 */
export function createStore(backend: Backend): Store {
  return new StoreImpl(backend);
}
