/**
 * `Model<T>`: typed documents in one backend, with every write path race-free. Each method is a
 * thin layer over the three backend primitives (read, write, acquire); see `backend.ts`.
 */
import {
  AlreadyExistsError,
  ConflictError,
  LeaseLostError,
  type LockstepError,
  NotFoundError,
  ValidationError,
} from '../errors.js';
import { runAsTask } from '../sync/deadlock.js';
import { isThenable } from '../sync/permit.js';
import type {
  Backend,
  Consumption,
  Data,
  DocWrite,
  EnqueueRequest,
  Op,
  PatchWrite,
  StoredDoc,
  WriteOptions,
  WriteResult,
} from './backend.js';
import { diffFields } from './draft.js';
import { cloneJson } from './json.js';
import { checkKey } from './keys.js';
import { type LockContext, lockContext } from './lock-context.js';
import { DEFAULT_ACTION, docName, lockName } from './names.js';
import {
  type GuardBuilder,
  type GuardsInput,
  type OpsBuilder,
  recordGuards,
  recordOps,
} from './ops.js';
import { parseDoc, parseDocNow, postCheck, type StandardSchemaV1 } from './schema.js';

/** A document as read: its key, its version (1 after create, +1 per write) and its data. */
export interface Doc<T> {
  readonly key: string;
  readonly version: number;
  readonly data: T;
}

/** Options of {@link Model.lock}. */
export interface ModelLockOptions {
  /** Give up waiting after this many milliseconds (LockTimeoutError). Default: wait as long as it takes. */
  timeoutMs?: number;
  /** Abort waiting: the call rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Named action: locks on one key with different actions do not block each other. Default 'default'. */
  action?: string;
  /** 'exclusive' (default) or 'shared' (readers; a shared holder cannot write). */
  mode?: 'exclusive' | 'shared';
  /** Do not wait: throw LockBusyError if the key is held. */
  nowait?: boolean;
  /** Do not wait: return undefined without calling `fn` if the key is held. */
  skipLocked?: boolean;
  /** The lease expires this long after its holder stops renewing it (crash, stall). Default 30 000. */
  leaseMs?: number;
  /** Renew the lease while `fn` runs (default true). With false, the lease ends after `leaseMs` whatever happens. */
  renew?: boolean;
}

/** Options of the plain writes (`create`, `put`, `delete`): how long to wait for a lock holder. */
export interface WriteCallOptions {
  /**
   * A document locked (exclusively, default action) by a `lock()` holder is written only once the
   * holder is done; give up waiting after this many milliseconds with LockTimeoutError (nothing
   * written). Default: wait until the holder's lease ends.
   */
  timeoutMs?: number;
  /** Abort waiting: rejects with `signal.reason`, nothing written. */
  signal?: AbortSignal;
}

/** Options of {@link Model.create} and {@link Model.put}: a lock holder's wait, and a TTL. */
export interface PutOptions extends WriteCallOptions {
  /**
   * The document expires this many milliseconds after the write, on the server's clock: from
   * then on every read, write and lock sees it missing. Default: it never expires.
   */
  ttlMs?: number;
}

/** Options of {@link Model.createOp} and {@link Model.putOp}. */
export interface WholeOpOptions {
  /** The document expires this many milliseconds after the batch applies (server clock). */
  ttlMs?: number;
}

/** Options of {@link Model.update}. */
export interface UpdateOptions {
  /** How many times to retry after a conflict (default 10); then ConflictError. */
  retries?: number;
  /** Abort between attempts (and while a write waits for a lock holder): rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/** Options of {@link Model.apply}. */
export interface ApplyOptions<T> {
  /** Guards on the document before the ops; all must hold, else nothing is written. */
  when?: (guards: GuardBuilder<T>) => GuardsInput;
  /** A missing document gives `{ applied: false }` instead of NotFoundError. */
  ignoreIfDeleted?: boolean;
  /** Give up waiting for a `lock()` holder of the document after this long (LockTimeoutError). */
  timeoutMs?: number;
  /** Abort waiting for a `lock()` holder: rejects with `signal.reason`, nothing written. */
  signal?: AbortSignal;
  /** When applied, the document now expires this many milliseconds later (server clock). */
  ttlMs?: number;
}

/** The outcome of {@link Model.apply}. */
export interface ApplyResult<T> {
  readonly applied: boolean;
  /** The document after the ops (when applied). */
  readonly doc?: Doc<T>;
  /** One result per op, in order (incr: new value; pop: the element or null; remove: count; ...). */
  readonly results: unknown[];
  /** When a guard refused: its index in the list `when` returned (where the backend reports it). */
  readonly refusedBy?: number;
}

/**
 * One part of an atomic `store.apply([...])`: a document's (made by {@link Model.ops},
 * {@link Model.createOp}, {@link Model.putOp} and {@link Model.deleteOp}) or a job's (made by a
 * queue's `enqueueOp`).
 */
export interface OpBatch {
  /** @internal the backend write this batch stands for (absent for a consumption). */
  readonly write?: DocWrite;
  /** @internal a rate-limit consumption (`RateLimiter.consumeOp`) instead of a write. */
  readonly consume?: Consumption;
  /** @internal the write once an asynchronous schema validated its data (createOp/putOp). */
  readonly pending?: Promise<DocWrite>;
  /** @internal the job this part enqueues (`enqueueOp`), or its validation in flight. */
  readonly job?: EnqueueRequest | Promise<EnqueueRequest>;
}

/** The drafts of a multi-key `lock`: one per key, as a tuple of the keys' length. */
export type Drafts<T, K extends readonly string[]> = { -readonly [I in keyof K]: T };

const DEFAULT_LEASE_MS = 30_000;
const DEFAULT_RETRIES = 10;

/**
 * Turns a refused backend write into the error the caller should see. `guard` refusals are not
 * errors and are handled by the callers that expect them.
 */
export function refusalError(
  result: Extract<WriteResult, { applied: false }>,
  writes: ReadonlyArray<{ model: string; key: string }>,
): LockstepError {
  const w = writes[result.index] ?? writes[0] ?? { model: '?', key: '?' };
  switch (result.reason) {
    case 'exists':
      return new AlreadyExistsError(w.model, w.key);
    case 'missing':
      return new NotFoundError(w.model, w.key);
    case 'conflict':
      return new ConflictError(
        `${w.model} ${JSON.stringify(w.key)}`,
        'a field this lock changed was changed by someone else since it was read; nothing was written. Retry, or lock with the same action as the other writer',
      );
    case 'version':
      return new ConflictError(
        `${w.model} ${JSON.stringify(w.key)}`,
        'the document changed since it was read; nothing was written',
      );
    case 'fence':
      return new LeaseLostError(lockName(w.model, [w.key], DEFAULT_ACTION), result.detail);
    case 'invalid':
      return new ValidationError(
        `${w.model} ${JSON.stringify(w.key)}`,
        result.issues ?? [{ message: result.detail ?? 'an operation does not fit the field' }],
      );
    case 'guard':
      return new ConflictError(`${w.model} ${JSON.stringify(w.key)}`, 'a guard did not hold');
  }
}

/** True when an op stores an object or array value (whose inside a stripping schema may drop). */
function carriesObject(ops: readonly Op[]): boolean {
  for (const o of ops) {
    switch (o.op) {
      case 'set':
      case 'append':
      case 'insert':
      case 'setItem':
        if (typeof o.value === 'object' && o.value !== null) return true;
        break;
      case 'extend':
        for (const v of o.values) if (typeof v === 'object' && v !== null) return true;
        break;
      case 'merge':
        return true;
      default:
        break;
    }
  }
  return false;
}

/** The backend's write options from a caller's (only what is set; usually nothing). */
export function writeOptions(o: {
  readonly timeoutMs?: number | undefined;
  readonly signal?: AbortSignal | undefined;
}): WriteOptions | undefined {
  if (o.timeoutMs === undefined && o.signal === undefined) return undefined;
  if (o.signal === undefined) return { timeoutMs: o.timeoutMs };
  if (o.timeoutMs === undefined) return { signal: o.signal };
  return { timeoutMs: o.timeoutMs, signal: o.signal };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A typed collection of documents. Made by `store.model(name, schema)`; `T` is inferred from the
 * schema (zod, valibot, arktype, or any Standard Schema).
 *
 * @example
 * ```ts
 * const Account = store.model('account', z.object({ balance: z.number().min(0) }));
 * await Account.create('ann', { balance: 100 });
 * await Account.apply('ann', (a) => a.balance.incr(-30), { when: (a) => a.balance.gte(30) });
 * ```
 */
export class Model<T, In = T> {
  readonly name: string;
  readonly #backend: Backend;
  readonly #schema: StandardSchemaV1<unknown, T>;
  readonly #check: PatchWrite['check'];
  /** The post-check for writes whose new values are all primitives (see `droppedTopField`). */
  readonly #topCheck: PatchWrite['check'];

  /** @internal use `store.model(name, schema)`. */
  constructor(backend: Backend, name: string, schema: StandardSchemaV1<unknown, T>) {
    this.#backend = backend;
    this.name = name;
    this.#schema = schema;
    this.#check = postCheck(schema);
    this.#topCheck = postCheck(schema, false);
  }

  #what(key: string): string {
    return docName(this.name, key);
  }

  #doc(d: StoredDoc): Doc<T> {
    return { key: d.key, version: d.version, data: d.data as unknown as T };
  }

  #write(
    writes: readonly DocWrite[],
    options?: { timeoutMs?: number; signal?: AbortSignal },
  ): Promise<WriteResult> {
    const o = options === undefined ? undefined : writeOptions(options);
    return o === undefined ? this.#backend.write(writes) : this.#backend.write(writes, o);
  }

  /**
   * Creates a document; exactly one of several concurrent creates of one key succeeds, the others
   * get AlreadyExistsError (a uniqueness constraint).
   *
   * @example
   * ```ts
   * const doc = await Account.create('ann', { balance: 100 }); // doc.version === 1
   * ```
   */
  async create(key: string, data: In, options?: PutOptions): Promise<Doc<T>> {
    checkKey(key);
    const parsed = await parseDoc(this.#schema, this.#what(key), data);
    const ttlMs = options?.ttlMs;
    const writes: readonly DocWrite[] = [
      ttlMs === undefined
        ? { kind: 'create', model: this.name, key, data: parsed }
        : { kind: 'create', model: this.name, key, data: parsed, ttlMs },
    ];
    const r = await this.#write(writes, options);
    if (!r.applied) throw refusalError(r, writes);
    return this.#doc(r.docs[0] as StoredDoc);
  }

  /**
   * Reads a document, or throws NotFoundError.
   *
   * @example
   * ```ts
   * const { data, version } = await Account.get('ann');
   * ```
   */
  async get(key: string): Promise<Doc<T>> {
    const d = await this.find(key);
    if (!d) throw new NotFoundError(this.name, key);
    return d;
  }

  /**
   * Reads a document, or returns undefined when it does not exist.
   *
   * @example
   * ```ts
   * const doc = await Account.find('ann');
   * ```
   */
  async find(key: string): Promise<Doc<T> | undefined> {
    checkKey(key);
    const [d] = await this.#backend.read([{ model: this.name, key }]);
    return d ? this.#doc(d) : undefined;
  }

  /**
   * Validated upsert: writes the whole document, creating it if needed.
   *
   * @example
   * ```ts
   * await Account.put('ann', { balance: 0 });
   * ```
   */
  async put(key: string, data: In, options?: PutOptions): Promise<Doc<T>> {
    checkKey(key);
    const parsed = await parseDoc(this.#schema, this.#what(key), data);
    const ttlMs = options?.ttlMs;
    const writes: readonly DocWrite[] = [
      ttlMs === undefined
        ? { kind: 'put', model: this.name, key, data: parsed }
        : { kind: 'put', model: this.name, key, data: parsed, ttlMs },
    ];
    const r = await this.#write(writes, options);
    if (!r.applied) throw refusalError(r, writes);
    return this.#doc(r.docs[0] as StoredDoc);
  }

  /**
   * Deletes a document; resolves whether it existed.
   *
   * @example
   * ```ts
   * const existed = await Account.delete('ann');
   * ```
   */
  async delete(key: string, options?: WriteCallOptions): Promise<boolean> {
    checkKey(key);
    const writes = [{ kind: 'delete', model: this.name, key }] as const;
    const r = await this.#write(writes, options);
    if (!r.applied) {
      if (r.reason === 'missing') return false;
      throw refusalError(r, writes);
    }
    return r.results[0]?.[0] !== false;
  }

  /**
   * Pessimistic update: takes the lease(s) (several keys in one canonical order), reads fresh
   * snapshots, runs `fn` on mutable drafts, validates them, and commits only the fields that
   * changed in one atomic write. While the lease is held, plain writers of the document (`apply`,
   * `update`, `put`, `delete`, `store.apply`) wait for it, so the commit never meets their
   * changes. `fn` gets a {@link LockContext} too: `ctx.signal` aborts the moment the lease is known
   * lost, and `ctx.fences` are the fencing tokens (per key, in the order given) to pass to systems
   * outside the store. The call resolves only if the lease held until `fn` ended: otherwise it
   * rejects with LeaseLostError, and nothing was written. A throw in `fn` writes nothing and is
   * rethrown as is. Several keys give `fn` a tuple of drafts, one per key.
   *
   * @example
   * ```ts
   * await Account.lock(['ann', 'bob'], ([ann, bob], ctx) => {
   *   if (ann.balance < 10) throw new Error('insufficient funds');
   *   ann.balance -= 10;
   *   bob.balance += 10;
   *   console.log(ctx.fences); // e.g. [41, 41]
   * });
   * ```
   */
  lock<R>(
    key: string,
    fn: (draft: T, ctx: LockContext) => R | Promise<R>,
    options?: ModelLockOptions & { skipLocked?: false },
  ): Promise<R>;
  lock<const K extends readonly string[], R>(
    keys: K,
    fn: (drafts: Drafts<T, K>, ctx: LockContext) => R | Promise<R>,
    options?: ModelLockOptions & { skipLocked?: false },
  ): Promise<R>;
  lock<R>(
    key: string,
    fn: (draft: T, ctx: LockContext) => R | Promise<R>,
    options: ModelLockOptions,
  ): Promise<R | undefined>;
  lock<const K extends readonly string[], R>(
    keys: K,
    fn: (drafts: Drafts<T, K>, ctx: LockContext) => R | Promise<R>,
    options: ModelLockOptions,
  ): Promise<R | undefined>;
  lock<R>(
    keyOrKeys: string | readonly string[],
    fn: (drafts: never, ctx: LockContext) => R | Promise<R>,
    options: ModelLockOptions = {},
  ): Promise<R | undefined> {
    // One task for in-process deadlock detection: a lock taken inside `fn` belongs to this flow,
    // so nested locks in opposite orders are reported (DeadlockError) instead of hanging.
    const run = fn as unknown as (drafts: unknown, ctx: LockContext) => R | Promise<R>;
    return this.#backend.supports.inProcessDeadlocks
      ? runAsTask(() => this.#lock(keyOrKeys, run, options))
      : this.#lock(keyOrKeys, run, options);
  }

  async #lock<R>(
    keyOrKeys: string | readonly string[],
    fn: (drafts: unknown, ctx: LockContext) => R | Promise<R>,
    options: ModelLockOptions,
  ): Promise<R | undefined> {
    const many = Array.isArray(keyOrKeys);
    const keys: readonly string[] = many ? keyOrKeys : [keyOrKeys as string];
    if (keys.length === 0) {
      throw new ValidationError(`${this.name} lock`, [{ message: 'give at least one key' }]);
    }
    for (const k of keys) checkKey(k);
    const sorted = keys.length === 1 ? keys : [...keys].sort();
    const mode = options.mode ?? 'exclusive';
    const action = options.action ?? DEFAULT_ACTION;
    const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    const lease = await this.#backend.acquire({
      model: this.name,
      keys: sorted,
      action,
      mode,
      leaseMs,
      renew: options.renew ?? true,
      timeoutMs: options.timeoutMs,
      signal: options.signal,
      nowait: options.nowait ?? false,
      skipLocked: options.skipLocked ?? false,
    });
    if (!lease) return undefined;
    let settled = false;
    try {
      const at = keys.map((k) => (sorted === keys ? 0 : sorted.indexOf(k)));
      const snaps = keys.map((k, i) => {
        const d = lease.docs[at[i] as number];
        if (!d) throw new NotFoundError(this.name, k);
        return d;
      });
      const drafts = snaps.map((s) => cloneJson(s.data) as unknown as T);
      const ctx = lockContext(
        lease,
        at.map((j) => lease.fences[j] as number),
      );
      const out = fn(many ? drafts : drafts[0], ctx);
      // A synchronous fn is not awaited (one promise less per lock).
      const result: R = isThenable(out) ? ((await out) as R) : (out as R);
      const writes: PatchWrite[] = [];
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i] as string;
        const snap = snaps[i] as StoredDoc;
        const p = parseDocNow(this.#schema, this.#what(key), drafts[i]);
        const parsed = p instanceof Promise ? await p : p;
        const ops = diffFields(snap.data, parsed);
        if (ops.length === 0) continue;
        if (mode === 'shared') {
          throw new ValidationError(this.#what(key), [
            {
              message:
                'a shared lock cannot write; lock with mode "exclusive" to change the document',
            },
          ]);
        }
        writes.push({
          kind: 'patch',
          model: this.name,
          key,
          ops,
          fieldsUnchangedSince: snap.version,
          // The document the commit leaves is checked whole: a writer of another action may have
          // changed other fields meanwhile, and a rule across fields must hold on the merge. Its
          // new values come from the draft, already checked for dropped fields all the way down.
          check: this.#topCheck,
        });
      }
      settled = true;
      if (writes.length === 0) {
        // Nothing to write, but the caller acted on what it read under the lease: it resolves
        // only if the lease held until now.
        // `lost` too: once the backend said so (ctx.signal aborted), the call cannot succeed, even
        // if the server had not yet dropped the lease when the release reached it.
        if (!(await lease.release()) || lease.lost) {
          throw new LeaseLostError(
            lockName(this.name, keys, action),
            'the lease was lost before the callback ended (it expired or was taken over); nothing was written',
          );
        }
        return result;
      }
      const r = await lease.commit(writes);
      if (!r.applied) {
        if (r.reason === 'fence') {
          throw new LeaseLostError(lockName(this.name, keys, action), r.detail);
        }
        throw refusalError(r, writes);
      }
      return result;
    } finally {
      if (!settled) await lease.release();
    }
  }

  /**
   * Optimistic update: reads, runs `fn` on a draft, and writes the changed fields only if the
   * document's version did not move; otherwise retries (with jittered backoff) up to `retries`
   * times, then throws ConflictError. `fn` may run several times: keep it free of side effects.
   *
   * @example
   * ```ts
   * await Account.update('ann', (a) => { a.balance += 5; });
   * ```
   */
  async update<R>(
    key: string,
    fn: (draft: T) => R | Promise<R>,
    options: UpdateOptions = {},
  ): Promise<R> {
    checkKey(key);
    const retries = options.retries ?? DEFAULT_RETRIES;
    if (!(Number.isInteger(retries) && retries >= 0)) {
      throw new ValidationError(`${this.name} update`, [
        { message: `retries must be a non-negative integer, got ${retries}` },
      ]);
    }
    for (let attempt = 0; ; attempt++) {
      options.signal?.throwIfAborted();
      const [snap] = await this.#backend.read([{ model: this.name, key }]);
      if (!snap) throw new NotFoundError(this.name, key);
      const draft = cloneJson(snap.data) as unknown as T;
      const result = await fn(draft);
      const parsed = await parseDoc(this.#schema, this.#what(key), draft);
      const ops = diffFields(snap.data, parsed);
      if (ops.length === 0) return result;
      const writes: PatchWrite[] = [
        {
          kind: 'patch',
          model: this.name,
          key,
          ops,
          expectVersion: snap.version,
          // Version 1 comes back after a delete and a create: the incarnation tells them apart.
          ...(snap.incarnation === undefined ? {} : { expectIncarnation: snap.incarnation }),
        },
      ];
      const r = await this.#write(writes, options);
      if (r.applied) return result;
      if (r.reason !== 'version') throw refusalError(r, writes);
      if (attempt >= retries) {
        throw new ConflictError(
          this.#what(key),
          `still changing under us after ${retries + 1} attempts; raise retries, or use apply() or lock() for a hot document`,
        );
      }
      // Full jitter, growing to a 50 ms cap.
      await sleep(Math.random() * Math.min(50, 2 ** attempt), options.signal);
    }
  }

  /**
   * Atomic field operations executed by the backend in one step (one round trip), with optional
   * guards. Guards false → `{ applied: false }` and nothing written. A post-state that fails the
   * schema is refused with ValidationError.
   *
   * @example
   * ```ts
   * const r = await Campaign.apply('spring', (c) => c.applicants.append('ann'), {
   *   when: (c) => [c.applicants.length.lt(100), c.applicants.notContains('ann')],
   * });
   * if (!r.applied) console.log('full, or already in');
   * ```
   */
  apply(
    key: string,
    build: (ops: OpsBuilder<T>) => unknown,
    options: ApplyOptions<T> = {},
  ): Promise<ApplyResult<T>> {
    // Not `async`: one `then` on the backend's (usually already settled) promise is cheaper than
    // suspending and resuming an async function; a synchronous throw still becomes a rejection.
    try {
      const patch = this.#patch(key, build, options.when);
      const write = options.ttlMs === undefined ? patch : { ...patch, ttlMs: options.ttlMs };
      const ignoreIfDeleted = options.ignoreIfDeleted;
      return this.#write([write], options).then((r) => this.#applied(r, write, ignoreIfDeleted));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #applied(
    r: WriteResult,
    write: PatchWrite,
    ignoreIfDeleted: boolean | undefined,
  ): ApplyResult<T> {
    if (r.applied) {
      const d = r.docs[0];
      // The backend's arrays are already the caller's own copies.
      return { applied: true, doc: d && this.#doc(d), results: (r.results[0] ?? []) as unknown[] };
    }
    if (r.reason === 'guard') {
      return r.guard === undefined
        ? { applied: false, results: [] }
        : { applied: false, results: [], refusedBy: r.guard };
    }
    if (r.reason === 'missing' && ignoreIfDeleted) return { applied: false, results: [] };
    throw refusalError(r, [write]);
  }

  /**
   * One document's part of an atomic multi-document `store.apply([...])`.
   *
   * @example
   * ```ts
   * await store.apply([
   *   Account.ops('ann', (a) => a.balance.incr(-10), (a) => a.balance.gte(10)),
   *   Account.ops('bob', (a) => a.balance.incr(10)),
   * ]);
   * ```
   */
  ops(
    key: string,
    build: (ops: OpsBuilder<T>) => unknown,
    when?: (guards: GuardBuilder<T>) => GuardsInput,
  ): OpBatch {
    return { write: this.#patch(key, build, when) };
  }

  /**
   * One document's creation inside an atomic `store.apply([...])`: the batch is refused with
   * AlreadyExistsError (nothing written) if the key exists. `data` is validated now.
   *
   * @example
   * ```ts
   * // the campaign's check-then-insert as one atomic step
   * await store.apply([
   *   Campaign.ops('spring', (c) => c.count.incr(), (c) => c.count.lt(c.max)),
   *   Application.createOp('spring:ann', { user: 'ann' }),
   * ]);
   * ```
   */
  createOp(key: string, data: In, options?: WholeOpOptions): OpBatch {
    return this.#wholeOp('create', key, data, options?.ttlMs);
  }

  /**
   * One document's validated upsert inside an atomic `store.apply([...])`.
   *
   * @example
   * ```ts
   * await store.apply([Profile.putOp('ann', { name: 'Ann' }), Audit.ops('log', (l) => l.n.incr())]);
   * ```
   */
  putOp(key: string, data: In, options?: WholeOpOptions): OpBatch {
    return this.#wholeOp('put', key, data, options?.ttlMs);
  }

  /**
   * One document's deletion inside an atomic `store.apply([...])` (a missing document is fine:
   * nothing to delete).
   *
   * @example
   * ```ts
   * await store.apply([Seat.deleteOp('row1-seat7'), Campaign.ops('spring', (c) => c.count.incr(-1))]);
   * ```
   */
  deleteOp(key: string): OpBatch {
    checkKey(key);
    return { write: { kind: 'delete', model: this.name, key } };
  }

  #wholeOp(kind: 'create' | 'put', key: string, data: In, ttlMs: number | undefined): OpBatch {
    checkKey(key);
    const p = parseDocNow(this.#schema, this.#what(key), data);
    const whole = (d: Data): DocWrite =>
      ttlMs === undefined
        ? { kind, model: this.name, key, data: d }
        : { kind, model: this.name, key, data: d, ttlMs };
    if (!(p instanceof Promise)) return { write: whole(p) };
    const pending = p.then(whole);
    // The batch may never reach store.apply: its rejection is reported there, not as unhandled.
    pending.catch(() => {});
    return { write: { kind, model: this.name, key, data: {} }, pending };
  }

  #patch(
    key: string,
    build: (ops: OpsBuilder<T>) => unknown,
    when: ((guards: GuardBuilder<T>) => GuardsInput) | undefined,
  ): PatchWrite {
    checkKey(key);
    const ops = recordOps(build);
    // Only a new object or array value can bring fields the schema would drop below the top.
    const check = carriesObject(ops) ? this.#check : this.#topCheck;
    if (!when) return { kind: 'patch', model: this.name, key, ops, check };
    const guards = recordGuards(when);
    return { kind: 'patch', model: this.name, key, ops, guards, check };
  }
}
