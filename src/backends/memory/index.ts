/**
 * The embedded default backend: documents in process memory, every batch applied in one
 * synchronous step (so atomic by construction on Node's single thread), leases built on the
 * in-process `LockTable` with fencing tokens.
 *
 * One concept per file: `documents.ts` (storage and copies), `batch.ts` (the batch evaluator and
 * installer, with refusals), `writer.ts` (the write engine: async post-checks and reservations),
 * `leases.ts` (leases on the lock table, fences, expiry), `permits.ts` (named-lock pools:
 * mutexes, rwlocks, semaphores), `gate.ts` (plain writes waiting for
 * exclusive leases), `queues.ts` and `heap.ts` (job queues), `guards.ts` (guards, field
 * references included), `closed.ts` (the error
 * of a closed backend), `stats.ts` (leak-check counts).
 *
 * Input is checked by the boundary `createStore` puts in front of every backend
 * (`src/store/boundary.ts`): this backend assumes well-formed refs, batches and lease requests,
 * and commits that touch only the lease's own documents.
 *
 * @example
 * ```ts
 * import { createStore, memory } from 'lockstep';
 * const store = createStore(memory());
 * ```
 */
import type {
  Backend,
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
import type { Plan } from './batch.js';
import { closedError } from './closed.js';
import { Documents, snapshot } from './documents.js';
import { now } from './expiry.js';
import { Leases } from './leases.js';
import { Permits } from './permits.js';
import { MemoryQueues } from './queues.js';
import { RateLimits } from './rate-limits.js';
import type { MemoryStats } from './stats.js';
import { type Admit, LIMITED, Writer } from './writer.js';

export type { MemoryStats } from './stats.js';

/** The outcome of an empty batch. */
const NO_WRITES: WriteResult = { applied: true, docs: [], results: [] };

/**
 * The memory backend. Made by {@link memory}; implements the `Backend` contract of
 * `src/store/backend.ts` and adds {@link MemoryBackend.stats} for leak checks.
 *
 * @example
 * ```ts
 * const backend = memory();
 * await backend.write([{ kind: 'create', model: 'counter', key: 'c1', data: { n: 0 } }]);
 * const [doc] = await backend.read([{ model: 'counter', key: 'c1' }]); // doc.version === 1
 * ```
 */
export class MemoryBackend implements Backend {
  readonly name = 'memory';
  /** Unique per instance: two memory backends never share documents. */
  readonly namespace = `memory:${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  readonly supports = {
    sharedAcrossProcesses: false,
    durable: false,
    inProcessDeadlocks: true,
    serverDeadlocks: false,
  } as const;
  readonly #docs = new Documents();
  readonly #writer: Writer;
  readonly #leases: Leases;
  readonly #limits = new RateLimits();
  readonly #permits: Permits;
  /** Job queues (see `queues.ts`). */
  readonly queues: MemoryQueues;
  #closed = false;

  constructor() {
    const closed = () => this.#closed;
    this.#writer = new Writer(this.#docs, closed);
    this.#leases = new Leases(this.#docs, this.#writer, closed);
    this.#permits = new Permits(closed);
    this.queues = new MemoryQueues(this.#writer, this.#leases.gate, closed);
  }

  /**
   * Counts of documents, live leases, lock-table keys, expiry timers and reservations.
   *
   * @example
   * ```ts
   * expect(backend.stats()).toMatchObject({ leases: 0, locks: 0, timers: 0 });
   * ```
   */
  stats(): MemoryStats {
    const { leases, locks, timers } = this.#leases.stats();
    const limits = this.#limits.stats();
    const expiry = this.#docs.expiryStats();
    const permits = this.#permits.stats();
    return {
      limitKeys: limits.keys,
      expiring: expiry.expiring,
      sweeps: limits.timers + expiry.timers,
      documents: this.#docs.count(),
      leases,
      locks,
      timers: timers + permits.timers,
      permitPools: permits.pools,
      permitLeases: permits.leases,
      reservations: this.#writer.reservations,
      gated: this.#leases.gate.size,
      ...queueStats(this.queues.stats()),
    };
  }

  /**
   * Rate-limit keys of limiter `name` that hold state (0 once its windows have passed).
   *
   * @example
   * ```ts
   * expect(backend.limitKeys('api')).toBe(0);
   * ```
   */
  limitKeys(name: string): number {
    return this.#limits.keysOf(name);
  }

  /**
   * Fresh snapshots, one per ref, in order (the caller's own copies).
   *
   * @example
   * ```ts
   * const [a, b] = await backend.read([{ model: 'account', key: 'a' }, { model: 'account', key: 'b' }]);
   * ```
   */
  async read(refs: readonly DocRef[]): Promise<Array<StoredDoc | undefined>> {
    if (this.#closed) throw closedError();
    return refs.map((r) => {
      const e = this.#docs.get(r.model, r.key);
      return e ? snapshot(r.key, e.version, e.data, e.incarnation) : undefined;
    });
  }

  /**
   * One atomic, guarded batch: every write applies, or none does. While an exclusive lease of the
   * default action holds one of its documents, the batch waits (FIFO with lock waiters) until the
   * lease ends, bounded by `options.timeoutMs` (LockTimeoutError) and `options.signal`
   * (`signal.reason`); nothing is written when it gives up. Otherwise it applies at once.
   *
   * @example
   * ```ts
   * const r = await backend.write([
   *   { kind: 'patch', model: 'account', key: 'a', ops: [{ op: 'incr', field: 'balance', by: -5 }],
   *     guards: [{ guard: 'cmp', field: 'balance', cmp: 'gte', value: 5 }] },
   *   { kind: 'patch', model: 'account', key: 'b', ops: [{ op: 'incr', field: 'balance', by: 5 }] },
   * ]);
   * await backend.write([{ kind: 'patch', model: 'account', key: 'a', ops: [] }], { timeoutMs: 100 });
   * ```
   */
  write(writes: readonly DocWrite[], options?: WriteOptions): Promise<WriteResult> {
    try {
      if (this.#leases.gate.mustWait(writes)) return this.#afterLeases(writes, options);
      return this.#writer.write(writes, (first) => this.#gated(writes, options, first));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * A write that awaits an async post-check (or a reservation) holds the write gate's shared
   * permit on its documents until it installed or gave up: an exclusive default-action lease
   * asked for meanwhile waits for it, so it is never granted between the write's evaluation and
   * its install (the holder would then meet the write's fields as a conflict at commit).
   */
  #gated(
    writes: readonly DocWrite[],
    options: WriteOptions | undefined,
    first: Plan | undefined,
    admit?: Admit,
  ): Promise<WriteResult> {
    // A write that gives up waiting never awaits its checks: they must not go unhandled.
    for (const p of first?.pending ?? []) p.promise.catch(() => {});
    return this.#leases.gate.pass(writes, options, () =>
      this.#writer.run(writes, undefined, first, admit),
    );
  }

  /** The slow path of {@link write}, in its own method: the fast one allocates no closure. */
  #afterLeases(
    writes: readonly DocWrite[],
    options: WriteOptions | undefined,
  ): Promise<WriteResult> {
    return this.#leases.gate.pass(writes, options, () => this.#writer.write(writes));
  }

  /**
   * Rate-limit consumptions and a batch in one synchronous step (see `Backend.consume`): the
   * consumptions are evaluated right before the batch would install, on this process's monotonic
   * clock, and recorded with it; a refused consumption installs nothing.
   *
   * @example
   * ```ts
   * const { admissions, write } = await backend.consume(
   *   [{ name: 'signup', algorithm: 'sliding-window', key: 'ip:1', limit: 5, windowMs: 60_000, cost: 1, record: true }],
   *   [{ kind: 'create', model: 'account', key: 'ann', data: {} }],
   * );
   * ```
   */
  consume(
    consumptions: readonly Consumption[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<ConsumeResult> {
    try {
      if (this.#closed) throw closedError();
      if (writes.length === 0 && consumptions.length === 1) {
        // The common call (RateLimiter.consume / peek): nothing to make atomic with it.
        const c = consumptions[0] as Consumption;
        const a = this.#limits.consumeOne(c, now());
        return Promise.resolve(
          a.allowed || !c.record ? { admissions: [a], write: NO_WRITES } : { admissions: [a] },
        );
      }
      let admissions: ConsumeResult['admissions'] = [];
      const admit = (): boolean => {
        const ev = this.#limits.evaluate(consumptions, now());
        admissions = ev.admissions;
        if (ev.ok) ev.record();
        return ev.ok;
      };
      if (writes.length === 0) {
        const ok = admit();
        return Promise.resolve(
          ok ? { admissions, write: { applied: true, docs: [], results: [] } } : { admissions },
        );
      }
      // As `write` does, with the consumptions evaluated and recorded right before the install.
      const p = this.#leases.gate.mustWait(writes)
        ? this.#leases.gate.pass(writes, options, () =>
            this.#writer.write(writes, undefined, admit),
          )
        : this.#writer.write(writes, (first) => this.#gated(writes, options, first, admit), admit);
      return p.then((write) => (write === LIMITED ? { admissions } : { admissions, write }));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Forgets one rate-limit key (its full limit is available again).
   *
   * @example
   * ```ts
   * await backend.resetLimit({ name: 'api', algorithm: 'sliding-window', key: 'ann' });
   * ```
   */
  async resetLimit(ref: LimitRef): Promise<void> {
    if (this.#closed) throw closedError();
    this.#limits.reset(ref);
  }

  /**
   * Takes a lease on `request.keys` (FIFO, no polling), then reads them.
   *
   * @example
   * ```ts
   * const lease = await backend.acquire({ model: 'account', keys: ['a'], action: 'default',
   *   mode: 'exclusive', leaseMs: 30_000, renew: true, nowait: false, skipLocked: false });
   * await lease?.commit([{ kind: 'patch', model: 'account', key: 'a',
   *   ops: [{ op: 'set', field: 'owner', value: 'ann' }], fieldsUnchangedSince: lease.docs[0]?.version }]);
   * ```
   */
  acquire(request: LeaseRequest): Promise<Lease | undefined> {
    return this.#leases.acquire(request);
  }

  /**
   * Takes `weight` units of a named pool (FIFO, direct hand-off, no polling).
   *
   * @example
   * ```ts
   * const lease = await backend.acquirePermit({ kind: 'semaphore', name: 'api', permits: 5,
   *   weight: 1, leaseMs: 30_000, renew: true, nowait: false });
   * await lease?.release();
   * ```
   */
  acquirePermit(request: PermitRequest): Promise<PermitLease | undefined> {
    return this.#permits.acquire(request);
  }

  /**
   * Units of a named pool held now.
   *
   * @example
   * ```ts
   * await backend.permitsHeld('semaphore', 'api'); // 0 when nobody holds it
   * ```
   */
  async permitsHeld(kind: PermitKind, name: string): Promise<number> {
    if (this.#closed) throw closedError();
    return this.#permits.held(kind, name);
  }

  /**
   * Ends every live lease (they are marked lost and their keys released) and refuses further
   * calls with BackendError. Stored documents are dropped with the backend object.
   *
   * @example
   * ```ts
   * await backend.close();
   * ```
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#leases.expireAll('the backend was closed');
    this.#limits.close();
    this.#docs.close();
    this.#permits.expireAll('the backend was closed');
    this.queues.closeAll();
  }
}

function queueStats(s: { queues: number; claimers: number; timers: number }) {
  return { queues: s.queues, claimers: s.claimers, queueTimers: s.timers };
}

/**
 * Creates the embedded memory backend (the default of `createStore()`): documents live in this
 * process; every batch is applied atomically in one synchronous step; leases come from an
 * in-process lock table with deadlock detection and fencing tokens.
 *
 * @example
 * ```ts
 * import { createStore, memory } from 'lockstep';
 * const store = createStore(memory());
 * const Counter = store.model('counter', z.object({ n: z.number() }));
 * ```
 */
export function memory(): MemoryBackend {
  return new MemoryBackend();
}
