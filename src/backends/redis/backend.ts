/**
 * The Backend contract on Redis: reads, writes (through the write path and the group commit),
 * lease acquisition with FIFO waiting and wake-ups, lease commits, named permit pools
 * (permits.ts), close.
 */
import { randomBytes } from 'node:crypto';
import { Cluster, type Redis } from 'ioredis';
import { BackendError, LockBusyError, LockTimeoutError, ValidationError } from '../../errors.js';
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
import { DEFAULT_ACTION, lockName } from '../../store/names.js';
import { InflightCalls } from './calls.js';
import { openClient, serverIdentity } from './client.js';
import { GroupCommit } from './group.js';
import type { RedisBackendOptions } from './index.js';
import { clusterSlot, type DocKeys, KeyLayout, type LeaseKeys } from './keys.js';
import { RedisLease } from './lease.js';
import { RedisPermits } from './permits.js';
import { RedisQueues } from './queues.js';
import { consume, type LimitHost, resetLimit } from './rate-limits.js';
import { Renewals } from './renewals.js';
import { rerunScript, runScript, type ScriptMode, type ScriptName } from './scripts.js';
import { type Grant, type LocalWakeups, Wakeups } from './wakeups.js';
import {
  compactCommitReply,
  nextId,
  type Reply,
  readReply,
  shortCommit,
  toDoc,
  type WireDoc,
} from './wire.js';
import { WriteWait, type WriteWaitHost } from './write-wait.js';
import { type Outcome, WritePath } from './writes.js';

/** A waiting acquire, as close() waits for it to leave its queue (`done` is set by close()). */
interface Leaving {
  done?: () => void;
}

/** Key -> incarnation of each document a lease was granted with (absent documents have none). */
function incarnationsOf(
  keys: readonly string[],
  docs: ReadonlyArray<WireDoc | null>,
): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < docs.length; i++) {
    const w = docs[i];
    if (w) m.set(keys[i] as string, w.c);
  }
  return m;
}

/** A queued waiter's entry lives this long unless refreshed (a dead waiter never blocks longer). */
const WAITER_TTL_MS = 10_000;

/**
 * The Backend implementation behind {@link redis} (exported for `instanceof` checks and tests;
 * create it with `redis()`).
 *
 * @example
 * ```ts
 * const backend = redis({ prefix: 'app' });
 * const [doc] = await backend.read([{ model: 'account', key: 'ann' }]);
 * await backend.close();
 * ```
 */
export class RedisBackend implements Backend {
  readonly name = 'redis';
  /** The server and the key prefix: backends with both equal share documents and locks. */
  readonly namespace: string;
  readonly supports: BackendCapabilities;
  readonly #client: Redis | Cluster;
  readonly #owned: boolean;
  readonly #scripts: ScriptMode | 'auto';
  readonly #layout: KeyLayout;
  readonly #cluster: boolean;
  readonly #instance = randomBytes(6).toString('base64url');
  readonly #writes: WritePath;
  /** What a waiting plain write uses of this backend. */
  readonly #writeWaitHost: WriteWaitHost;
  readonly #group: GroupCommit;
  readonly #wakeups: Wakeups;
  /** This backend's wake-up channel (pub/sub). */
  readonly #channel: string;
  readonly #onReady = (): void => this.#wakeups.recheckAll();
  /** Script calls waiting for their reply: timeouts, and failure when the connection closes. */
  readonly #calls: InflightCalls;
  readonly #onClose = (): void => this.#calls.connectionClosed();
  readonly #leases = new Set<RedisLease>();
  /** Renews the held leases that renew themselves (one timer). */
  readonly #renewals = new Renewals();
  /** Cancels of the acquires now waiting (close() rejects them). */
  readonly #waiting = new Map<(error: unknown) => void, Leaving>();
  /** Named permit pools (mutex, rwlock, semaphore). */
  readonly #permits: RedisPermits;
  /** Job queues (see `queues.ts`). */
  readonly queues: RedisQueues;
  #closed = false;

  constructor(options: RedisBackendOptions) {
    const prefix = options.prefix ?? 'lockstep';
    if (typeof prefix !== 'string' || prefix.length === 0) {
      throw new ValidationError('redis prefix', [{ message: 'give a non-empty string' }]);
    }
    const detectDeadlocks = options.detectDeadlocks ?? true;
    if (typeof detectDeadlocks !== 'boolean') {
      throw new ValidationError('redis detectDeadlocks', [{ message: 'give true or false' }]);
    }
    const scripts = options.scripts ?? 'auto';
    if (scripts !== 'auto' && scripts !== 'functions' && scripts !== 'eval') {
      throw new ValidationError('redis scripts', [
        { message: "give 'auto', 'functions' or 'eval'" },
      ]);
    }
    this.#scripts = scripts;
    this.#layout = new KeyLayout(prefix, options.hashTag);
    const timeout = options.commandTimeoutMs;
    if (timeout !== undefined && !(Number.isFinite(timeout) && timeout > 0)) {
      throw new ValidationError('redis commandTimeoutMs', [
        { message: 'give a number of milliseconds > 0' },
      ]);
    }
    const { client, owned } = openClient(options);
    // Script calls (and SUBSCRIBE) time out: 10 s on a client we open, on yours only if asked.
    const callTimeout = timeout ?? (owned ? 10_000 : undefined);
    this.#calls = new InflightCalls(callTimeout);
    this.#client = client;
    this.#owned = owned;
    this.namespace = `redis:${serverIdentity(client)}#${prefix}`;
    this.supports = {
      sharedAcrossProcesses: true,
      durable: true,
      inProcessDeadlocks: detectDeadlocks,
      serverDeadlocks: false,
    };
    this.#cluster = options.cluster ?? this.#client instanceof Cluster;
    this.#writes = new WritePath({
      layout: this.#layout,
      cluster: this.#cluster,
      instance: this.#instance,
      script: (name, keys, args, writes) => this.#script(name, keys, args, writes),
    });
    this.#group = new GroupCommit(
      (name, keys, args) => this.#script(name, keys, args, true),
      this.#cluster,
    );
    this.#channel = this.#layout.channel(this.#instance);
    this.#wakeups = new Wakeups(this.#client, this.#channel, callTimeout);
    this.#writeWaitHost = this.#waitHost();
    this.#permits = new RedisPermits({
      layout: this.#layout,
      wakeups: this.#wakeups,
      channel: this.#channel,
      instance: this.#instance,
      renewals: this.#renewals,
      waiterTtlMs: WAITER_TTL_MS,
      script: (name, keys, args) => this.#script(name, [...keys], args, name !== 'permit-held'),
      serving: (name, keys, args) => this.#serving(name, [...keys], args),
      handOver: (wakeups) => this.#handOver(wakeups),
      cancellable: (cancel) => this.#cancellable(cancel),
    });
    // Back after a dropped connection: a reply lost with it may have carried a grant to one of
    // our waiters (see _commit); every waiter looks again instead of waiting for its timer.
    this.#client.on('ready', this.#onReady);
    this.#client.on('close', this.#onClose);
    this.queues = new RedisQueues({
      layout: this.#layout,
      writes: this.#writes,
      client: this.#client,
      cluster: this.#cluster,
      script: (name, keys, args, writes) => this.#script(name, keys, args, writes),
      waitFor: (plan, options, started) =>
        new WriteWait(this.#writeWaitHost, plan.docs, plan.refs, options, started),
      assertOpen: () => this.#assertOpen(),
    });
  }

  /** @internal the key layout (tests use it to clean up by prefix). */
  get keyPattern(): string {
    return this.#layout.pattern;
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new BackendError('this redis backend was closed; create a new one with redis()');
    }
  }

  /**
   * Runs a script; driver failures become BackendError. A call fails after `commandTimeoutMs`,
   * and, when it was written on a ready connection, as soon as that connection closes, with
   * `outcomeUnknown` when it writes (the script may have run). See calls.ts.
   */
  #script(
    name: ScriptName,
    keys: string[],
    args: (string | number)[],
    writes: boolean,
  ): Promise<unknown> {
    const onWire = !(this.#client instanceof Cluster) && (this.#client as Redis).status === 'ready';
    return this.#calls.run(
      `${name} script`,
      writes,
      onWire,
      () => runScript(this.#client, name, keys, args, this.#scripts),
      (err) => rerunScript(err, this.#client, name, keys, args, this.#scripts),
    );
  }

  // ------------------------------------------------------------------------------------ read
  async read(refs: readonly DocRef[]): Promise<Array<StoredDoc | undefined>> {
    this.#assertOpen();
    if (refs.length === 0) return [];
    const keys = refs.map((r) => this.#layout.doc(r.model, r.key));
    let wire: Array<WireDoc | null>;
    if (this.#cluster && new Set(keys.map((k) => clusterSlot(k.tag))).size > 1) {
      const parts = await Promise.all(
        keys.map((k) => this.#script('read', [k.doc], [], false) as Promise<string>),
      );
      wire = parts.flatMap((p) => JSON.parse(p) as Array<WireDoc | null>);
    } else {
      const r = (await this.#script(
        'read',
        keys.map((k) => k.doc),
        [],
        false,
      )) as string;
      wire = JSON.parse(r) as Array<WireDoc | null>;
    }
    return wire.map((w, i) => (w ? toDoc((refs[i] as DocRef).key, w) : undefined));
  }

  // ----------------------------------------------------------------------------------- write
  /**
   * A plain write batch: one script call, which runs it unless one of its documents has a live
   * exclusive lease of the default action; then the batch waits for that lease to end (see
   * write-wait.ts and write_gate in lib.lua), bounded by `options`.
   */
  async write(writes: readonly DocWrite[], options?: WriteOptions): Promise<WriteResult> {
    this.#assertOpen();
    const plan = this.#writes.plan(writes, 'store.apply');
    if (writes.length === 0) return { applied: true, docs: [], results: [] };
    // When the write began, for its timeoutMs (read only when one was given).
    const started = options?.timeoutMs === undefined ? 0 : performance.now();
    return this.#writes.runBatch(
      plan,
      (keys, env, spec) => this.#group.write(keys, env, spec),
      () => new WriteWait(this.#writeWaitHost, plan.docs, plan.refs, options, started),
    );
  }

  // ----------------------------------------------------------------------------- rate limits
  /** What the rate-limit calls use of this backend (see rate-limits.ts). */
  get #limitHost(): LimitHost {
    return {
      layout: this.#layout,
      cluster: this.#cluster,
      writes: this.#writes,
      script: (name, keys, args, writes) => this.#script(name, keys, args, writes),
    };
  }

  /**
   * Consumptions and a batch in one script call on the server's clock (see rate-limits.ts).
   *
   * @example
   * ```ts
   * const { admissions } = await backend.consume([{ name: 'api', algorithm: 'sliding-window',
   *   key: 'ann', limit: 100, windowMs: 60_000, cost: 1, record: true }], []);
   * ```
   */
  async consume(
    consumptions: readonly Consumption[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<ConsumeResult> {
    this.#assertOpen();
    const plan = this.#writes.plan(writes, 'consume');
    const started = options?.timeoutMs === undefined ? 0 : performance.now();
    return consume(
      this.#limitHost,
      consumptions,
      plan,
      () => new WriteWait(this.#writeWaitHost, plan.docs, plan.refs, options, started),
    );
  }

  /**
   * Forgets one rate-limit key.
   *
   * @example
   * ```ts
   * await backend.resetLimit({ name: 'api', algorithm: 'sliding-window', key: 'ann' });
   * ```
   */
  async resetLimit(ref: LimitRef): Promise<void> {
    this.#assertOpen();
    await resetLimit(this.#limitHost, ref);
  }

  /** What a waiting write uses of this backend (see write-wait.ts). */
  #waitHost(): WriteWaitHost {
    return {
      wakeups: this.#wakeups,
      channel: this.#channel,
      instance: this.#instance,
      waiterTtlMs: WAITER_TTL_MS,
      leave: (wid, docs) => {
        const keys5 = docs.flatMap((k) => {
          const l = this.#layout.lease(k, DEFAULT_ACTION);
          return [l.lease, l.queue, l.queueInfo, k.doc, k.fence];
        });
        return this.#script('leave', keys5, [wid, wid], true).then(() => undefined);
      },
      cancellable: (cancel) => this.#cancellable(cancel),
    };
  }

  /** Registers a waiter's `cancel` with close(), which waits for its `left()`. */
  #cancellable(cancel: (error: unknown) => void): { left(): void } {
    const leaving: Leaving = {};
    this.#waiting.set(cancel, leaving);
    return {
      left: () => {
        this.#waiting.delete(cancel);
        leaving.done?.();
      },
    };
  }

  // ------------------------------------------------------------------------- named permits
  /**
   * Takes `weight` units of a named pool; see permits.ts and PermitRequest. The request is
   * well-formed (the boundary checks it).
   *
   * @example
   * ```ts
   * const permit = await backend.acquirePermit({ kind: 'mutex', name: 'nightly', permits: 1,
   *   weight: 1, leaseMs: 30_000, renew: true, nowait: false });
   * await permit?.release();
   * ```
   */
  async acquirePermit(request: PermitRequest): Promise<PermitLease | undefined> {
    this.#assertOpen();
    return this.#permits.acquire(request);
  }

  /**
   * Units of the pool `(kind, name)` held now by live leases (server clock).
   *
   * @example
   * ```ts
   * await backend.permitsHeld('semaphore', 'payment-api'); // 3
   * ```
   */
  async permitsHeld(kind: PermitKind, name: string): Promise<number> {
    this.#assertOpen();
    return this.#permits.held(kind, name);
  }

  // --------------------------------------------------------------------------------- leases
  async acquire(request: LeaseRequest): Promise<Lease | undefined> {
    this.#assertOpen();
    // The request's shape (keys, mode, leaseMs, timeoutMs, an aborted signal) is checked by the
    // boundary (src/store/boundary.ts), which also tracks in-process deadlocks, for every
    // backend. Only what is Redis's own is checked here: Cluster slots.
    const r = request;
    const docs = r.keys.map((k) => this.#layout.doc(r.model, k));
    if (this.#cluster && new Set(docs.map((k) => clusterSlot(k.tag))).size > 1) {
      throw new ValidationError('lock request', [
        {
          message:
            'these keys live in different Redis Cluster slots; co-locate them with redis({ hashTag })',
        },
      ]);
    }
    const leases = docs.map((k) => this.#layout.lease(k, r.action));
    return this.#take(r, docs, leases);
  }

  /** Takes the lease (nowait, or queued with wake-ups until granted, timed out or cancelled). */
  async #take(
    r: LeaseRequest,
    docs: DocKeys[],
    leases: LeaseKeys[],
  ): Promise<RedisLease | undefined> {
    const keys5 = docs.flatMap((k, i) => {
      const l = leases[i] as LeaseKeys;
      return [l.lease, l.queue, l.queueInfo, k.doc, k.fence];
    });
    const owner = nextId(this.#instance);
    const leaseMs = Math.ceil(r.leaseMs);
    // For error messages only: built when one is thrown.
    const name = () => lockName(r.model, r.keys, r.action);
    // When the last attempt was sent: a lease it was granted by started on the server after this
    // moment, so its expiry is no earlier than this + leaseMs (see RedisLease's `grantedAt`).
    let sentAt = 0;
    const attempt = (wid: string, channel: string) => {
      sentAt = performance.now();
      return this.#script(
        'acquire',
        keys5,
        [owner, wid, r.mode, leaseMs, wid ? '1' : '0', WAITER_TTL_MS, channel],
        true,
      ).then((raw) => JSON.parse(raw as string) as Grant | { ok: 0; retry: number });
    };
    const make = (g: { fences: number[]; docs: Array<WireDoc | null> }, grantedAt: number) => {
      const lease = new RedisLease(this, {
        owner,
        keys5,
        docKeys: docs,
        request: r,
        lockName: name,
        incarnations: incarnationsOf(r.keys, g.docs),
        docs: g.docs.map((w, i) => {
          if (w) this.#writes.remember(docs[i] as DocKeys, w, -1);
          return w ? toDoc(r.keys[i] as string, w) : undefined;
        }),
        fences: g.fences,
        renewals: this.#renewals,
        grantedAt,
      });
      this.#leases.add(lease);
      return lease;
    };

    if (r.nowait || r.skipLocked) {
      const g = await attempt('', '').catch(async (err: unknown) => {
        // The reply was lost: the script may have granted us the lease. Give it back rather than
        // leave the keys held until leaseMs (nothing is queued under the empty waiter id).
        await this.#script('leave', keys5, ['', owner], true).catch(() => {});
        throw err;
      });
      if (g.ok === 1) return make(g, sentAt);
      if (r.skipLocked) return undefined;
      throw new LockBusyError(name());
    }

    const subscribing = this.#wakeups.subscribe();
    if (subscribing) await subscribing;
    const wid = nextId(this.#instance, 'w');
    const channel = this.#channel;
    const started = performance.now();
    let woken = false;
    let granted: Grant | undefined;
    /** When a hand-off's grant arrived (the release that granted it ran a little earlier). */
    let grantArrived = 0;
    let notify: (() => void) | undefined;
    const state: { cancelled?: { error: unknown } } = {};
    const stop = (): void => {
      // A function call, so TypeScript does not narrow `state.cancelled` across awaits.
      if (state.cancelled) throw state.cancelled.error;
    };
    const wake = (grant?: Grant) => {
      // A release handed the lease to us directly: the wake-up carries the fence and snapshot.
      if (grant && !granted) {
        granted = grant;
        grantArrived = performance.now();
      }
      woken = true;
      notify?.();
    };
    const cancel = (error: unknown) => {
      state.cancelled ??= { error };
      notify?.();
    };
    this.#wakeups.waiters.set(wid, wake);
    const leaving: Leaving = {};
    this.#waiting.set(cancel, leaving);
    const onAbort = () => cancel(r.signal?.reason);
    r.signal?.addEventListener('abort', onAbort, { once: true });
    const deadline =
      r.timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => cancel(new LockTimeoutError(name(), performance.now() - started)),
            r.timeoutMs,
          );
    let queued = false;
    try {
      for (;;) {
        stop();
        woken = false;
        const handed = granted;
        // From the first attempt on, a failure must leave: an attempt whose reply was lost may
        // have queued us, or granted us the lease (leave gives both back).
        if (!handed) queued = true;
        const g = handed ?? (await attempt(wid, channel));
        if (g.ok === 1) {
          // The grant's moment as well as we know it: the send of the attempt that took it, or
          // the arrival of a hand-off (late by one message's way from Redis).
          const lease = make(
            g,
            handed ? grantArrived : granted ? Math.min(grantArrived, sentAt) : sentAt,
          );
          try {
            stop();
          } catch (err) {
            await lease.release();
            throw err;
          }
          return lease;
        }
        queued = true;
        stop();
        if (woken || granted) continue;
        const fallbackMs = Math.min(g.retry >= 0 ? g.retry + 2 : WAITER_TTL_MS, WAITER_TTL_MS / 2);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, fallbackMs);
          notify = () => {
            clearTimeout(t);
            resolve();
          };
        });
        notify = undefined;
      }
    } catch (err) {
      if (queued) {
        await this.#script('leave', keys5, [wid, owner], true).catch(() => {
          /* the entry expires on its own after WAITER_TTL_MS */
        });
      }
      throw err;
    } finally {
      this.#wakeups.waiters.delete(wid);
      this.#waiting.delete(cancel);
      leaving.done?.();
      if (deadline) clearTimeout(deadline);
      r.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** @internal used by leases. */
  _script(name: ScriptName, keys: string[], args: (string | number)[]) {
    return this.#script(name, keys, args, true);
  }

  /** @internal used by lease commits. */
  _commit(
    lease: RedisLease,
    owner: string,
    keys5: string[],
    writes: readonly DocWrite[],
    incarnations: ReadonlyMap<string, string>,
  ) {
    const plan = this.#writes.plan(writes, 'lock commit');
    for (const [i, w] of writes.entries()) {
      const inc = incarnations.get(w.key);
      if (w.kind === 'patch' && w.fieldsUnchangedSince !== undefined && inc !== undefined) {
        (plan.wire[i] as { inc?: string }).inc = inc;
      }
    }
    return this.#writes
      .runBatch(plan, async (keys, env, _spec, outcome) => {
        // Predicted exactly on the lease's snapshot: when the document has not moved since, the
        // script stores the changed fields without loading the document or the envelope, and
        // answers without the fields ("x"); we have them. See fast_commit in commit.lua. The
        // envelope is then not sent at all: a document that moved meanwhile makes the script
        // answer "e" having done nothing, and the commit goes again, with the envelope only.
        const short =
          outcome && keys5.length === 5
            ? shortCommit(env as { t: string; w: readonly unknown[] })
            : undefined;
        const args: Array<string | number> = [
          owner,
          keys5.length / 5,
          short ? '' : JSON.stringify(env),
          this.#channel,
        ];
        if (short) for (const a of short) args.push(a);
        const allKeys = [...keys5, ...keys];
        let raw = await this.#serving('commit', allKeys, args);
        if (raw === 'e') {
          // The general path, with the envelope and without the short form (already refused).
          // Safe to send: "e" means the script wrote nothing and left the lease held (it answers
          // so only before storing or releasing anything), so this commit cannot land twice; the
          // lease may have expired meanwhile, and then this one is refused (fence), exactly.
          raw = await this.#serving('commit', allKeys, [
            ...args.slice(0, 2),
            JSON.stringify(env),
            this.#channel,
          ]);
        }
        const reply: Reply & { grants?: LocalWakeups; x?: 1 } =
          (short && outcome ? compactCommitReply(raw, outcome.results) : undefined) ??
          readReply<Reply & { grants?: LocalWakeups; x?: 1 }>(raw, 'commit');
        // The reply goes no further than runBatch, which builds the caller's result from its
        // ok, docs and results: "x" and "grants" stay on it.
        if (reply.x) {
          const reading = this.#fillPredicted(reply, reply.grants, outcome, keys[0] as string);
          if (reading) await reading;
        }
        const handing = this.#handOver(reply.grants);
        if (handing) await handing;
        return reply;
      })
      .finally(() => this.#leases.delete(lease));
  }

  /**
   * Puts the predicted post-image into a commit reply sent without the document's fields, and
   * into the grants it carries for our waiters ("p": the document as this commit left it). The
   * script answered so only when the document's last writer was still the token our prediction
   * started from, so the version must match; if it ever does not, the document is read instead.
   */
  #fillPredicted(
    reply: Reply,
    grants: LocalWakeups | undefined,
    outcome: Outcome | undefined,
    docKey: string,
  ): Promise<void> | undefined {
    if (reply.ok !== 1) return undefined;
    const doc = reply.docs[0];
    if (!doc) return undefined;
    if (outcome && outcome.version === doc.v) {
      doc.f = outcome.data;
      for (const [, g] of grants ?? []) {
        const d = g?.p ? g.docs[0] : undefined;
        if (d) d.f = outcome.data;
      }
      return undefined;
    }
    return this.#script('read', [docKey], [], false).then(
      (raw) => {
        const [fresh] = JSON.parse(raw as string) as Array<WireDoc | null>;
        reply.docs[0] = fresh ?? null;
        for (const [, g] of grants ?? []) if (g?.p) g.docs[0] = fresh ?? null;
      },
      (err: unknown) => {
        // The commit is applied (the script said so); only reading its document back failed.
        // A plain BackendError would read as "not written": say that it may be written. Our
        // waiters it granted the lease to look again (acquire answers "already yours").
        this.#wakeups.recheckAll();
        throw new BackendError(
          'redis commit: the commit was applied, but reading the document back failed; read it again',
          { cause: err, outcomeUnknown: true },
        );
      },
    );
  }

  /**
   * @internal used by leases: releases without a commit; hands the keys to the next waiters.
   * Resolves whether the release script found the lease still held by `owner` on every key.
   */
  async _release(keys5: string[], owner: string): Promise<boolean> {
    const raw = await this.#serving('release', keys5, [owner, this.#channel]);
    const handing = this.#handOver(JSON.parse(raw.slice(1)) as LocalWakeups);
    if (handing) await handing;
    return raw.charCodeAt(0) === 49; // "1"
  }

  /**
   * Runs a script that may serve this process's waiters in its reply (commit, release). When it
   * fails, the reply may have been lost after the script ran, and with it a grant to one of ours:
   * every waiter looks again instead of waiting for its fallback timer.
   */
  #serving(name: ScriptName, keys: string[], args: (string | number)[]): Promise<string> {
    const reply = this.#script(name, keys, args, true) as Promise<string>;
    // Beside the caller's chain, not in it: the reply reaches the caller without another hop.
    reply.catch(() => this.#wakeups.recheckAll());
    return reply;
  }

  /**
   * Starts the waiters of this process that a commit or release just served, BEFORE the caller
   * of that commit or release resumes: the next holder's `fn` and commit go out first, and the
   * previous holder continues one event-loop turn later. The next hand-off is on the critical
   * path of every queued waiter; the previous holder's continuation is not.
   */
  #handOver(wakeups: LocalWakeups | undefined): Promise<void> | undefined {
    if (!this.#wakeups.dispatch(wakeups)) return undefined;
    return new Promise<void>((r) => setImmediate(r));
  }

  /** @internal */
  _forget(lease: RedisLease): void {
    this.#leases.delete(lease);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Nobody renews them from here on: they are lost (lost, signal), and expire in Redis.
    for (const lease of [...this.#leases]) lease._closed();
    this.#permits.close();
    const closedError = new BackendError(
      'the redis backend was closed while waiting for a lock; create a new one with redis()',
    );
    // Cancelled waiters leave their queues (a script) before the connection goes away; otherwise
    // a stale entry could be handed the lease and hold the key until that lease expires.
    const leaving = [...this.#waiting.values()].map(
      (l) => new Promise<void>((resolve) => (l.done = resolve)),
    );
    for (const cancel of this.#waiting.keys()) cancel(closedError);
    await Promise.all(leaving);
    this.#client.off('ready', this.#onReady);
    this.#client.off('close', this.#onClose);
    this.#calls.stop();
    this.#renewals.stop();
    await this.#wakeups.close();
    await this.queues.close();
    if (this.#owned) await this.#client.quit().catch(() => this.#client.disconnect());
    this.#writes.clear();
  }
}
