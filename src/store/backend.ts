/**
 * The Backend contract: the only thing `src/store` knows about storage.
 *
 * Everything a model does (create, put, delete, apply, update, lock) is expressed with three
 * primitives, and named locks with a fourth; every backend (memory, Redis, PostgreSQL)
 * implements exactly these (and `permitsHeld`, for `available()`):
 *
 * 1. `read(refs)` — fresh snapshots with a version.
 * 2. `write(writes)` — ONE atomic, guarded batch of field operations over one or more documents,
 *    all-or-nothing, in one round trip where the backend allows it.
 * 3. `acquire(request)` — leases on keys (with fencing); the lease's `commit(writes)` is a
 *    `write` that is refused unless the lease still holds, and releases it.
 * 4. `acquirePermit(request)` — leases on units of a named pool (FIFO, weighted, fenced): the
 *    one primitive behind named mutexes, reader/writer locks and semaphores.
 * 5. `queues` — job queues: claims under a fenced lease on the server clock, completions that
 *    commit a `write` batch atomically with them, enqueues inside a `write` batch.
 *
 * A new backend implements this file and passes `test/conformance/`; nothing else changes.
 *
 * ## The boundary (what a backend does NOT do)
 * `createStore(backend)` wraps every backend in one boundary (`src/store/boundary.ts`) that runs
 * in front of every call, identically for every backend:
 * - input checks: refs, write batches (kinds, names, keys, ops and guards, JSON values — no
 *   `undefined`, holes, cycles, non-finite numbers, non-plain objects —, one document at most once
 *   per batch) and lease requests (keys distinct and in canonical order, action, mode, `leaseMs`,
 *   `timeoutMs`, `signal`) — bad input is a `ValidationError` and nothing reaches the backend;
 * - a lease's commit may touch only the documents of that lease: anything else is a
 *   `ValidationError` thrown by the boundary, the lease is released and nothing is written;
 * - in-process deadlock tracking (`src/sync/tracked-leases.ts`): the boundary registers every
 *   wait of this process (leases, and plain writes to a document an in-process task holds) in
 *   the wait-for graph, so a cycle gets `DeadlockError` at once, on every backend;
 * - lock names in messages.
 * A backend may therefore assume well-formed input and implements semantics only.
 *
 * ## Unwritten rules, written (the conformance suite checks each)
 * - Canonical key order: a lease's keys arrive sorted by UTF-16 code units (`[...keys].sort()`),
 *   and a backend takes them in that order.
 * - The default action is `'default'`; leases with different actions on one key never block
 *   each other.
 * - Plain writers wait for the default action's exclusive leases: while an exclusive lease of the
 *   default action is held on a document, `write` batches touching it wait until the lease ends
 *   (commit, release, expiry), then run — as an `UPDATE` waits for a row locked `FOR UPDATE`. So a
 *   default-action holder's commit never meets `conflict` from a plain writer. Shared leases and
 *   leases of other actions do not hold plain writers back (a named action is a lane of its own:
 *   its holder's commit is still field-checked and may be refused with `conflict`).
 * - Program order: a lease sees every write this process issued (and had resolved or still in
 *   flight) before asking for it.
 * - Time that matters for correctness (lease expiry) is the server's clock.
 * - Outcomes are exact: `applied: false` (any reason, `fence` included) means nothing was
 *   written, and `applied: true` means everything was. A backend that cannot tell (a reply lost
 *   after the request may have reached the server, and no record that settles it) throws
 *   `BackendError` with `outcomeUnknown: true` — never a refusal for a write that may have landed.
 * - A patch with no ops writes nothing and does not bump the version (its guards are still
 *   evaluated: applied when they hold).
 *
 * Wire format: everything that crosses this contract is plain JSON ({@link Json}), so that a
 * Lua script or an SQL statement can execute it.
 */

/** A JSON value: what documents are made of. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A document's data: top-level fields. Field names are arbitrary strings. */
export type Data = { [field: string]: Json };

/** A stored document as the backend returns it. `data` is the caller's own copy. */
export interface StoredDoc {
  readonly key: string;
  /** 1 after create; +1 on every write that changes the document. */
  readonly version: number;
  readonly data: Data;
  /**
   * Opaque identity of this life of the document: a new, never reused value each time the key is
   * created (after a delete, version 1 comes back, so the version alone cannot tell two lives
   * apart). Writes carrying `expectIncarnation` are refused (reason `version`) when it differs.
   * Every backend returns it.
   */
  readonly incarnation: string;
}

/** Names one document. `model` matches `/^[A-Za-z_][A-Za-z0-9_]{0,62}$/`; `key` is any non-empty string. */
export interface DocRef {
  readonly model: string;
  readonly key: string;
}

/**
 * One field operation. Semantics (identical on every backend; the conformance suite checks):
 * - `set` / `unset`: replace / remove the field. Result: null.
 * - `incr`: add `by` (finite number) to a number field; a missing field counts as 0; a non-number
 *   field makes the whole batch fail with reason `invalid`. Result: the new value.
 * - `append` / `extend`: add one / several elements at the end of an array field (missing → []).
 *   Result: the new length.
 * - `insert`: insert at `index` with splice semantics: negative counts from the end, clamped to
 *   [0, length]. Result: the new length.
 * - `remove`: remove every element deep-equal to `value`. Result: how many were removed.
 * - `pop`: remove and return the element at `index` (default -1, the last; 0 is the first;
 *   negative counts from the end). Missing field, empty array or out of range → null, no change.
 * - `setItem` / `deleteItem`: set / delete one entry of a record (object) field (missing → {}).
 *   Result: null for setItem; true/false (existed) for deleteItem.
 * - `merge`: shallow-merge an object into a record field (missing → {}). Result: null.
 * An array op on a non-array, or a record op on a non-object, fails the batch with `invalid`.
 */
export type Op =
  | { readonly op: 'set'; readonly field: string; readonly value: Json }
  | { readonly op: 'unset'; readonly field: string }
  | { readonly op: 'incr'; readonly field: string; readonly by: number }
  | { readonly op: 'append'; readonly field: string; readonly value: Json }
  | { readonly op: 'extend'; readonly field: string; readonly values: readonly Json[] }
  | { readonly op: 'insert'; readonly field: string; readonly index: number; readonly value: Json }
  | { readonly op: 'remove'; readonly field: string; readonly value: Json }
  | { readonly op: 'pop'; readonly field: string; readonly index: number }
  | { readonly op: 'setItem'; readonly field: string; readonly item: string; readonly value: Json }
  | { readonly op: 'deleteItem'; readonly field: string; readonly item: string }
  | {
      readonly op: 'merge';
      readonly field: string;
      readonly value: { readonly [k: string]: Json };
    };

/** Comparison operators of guards. `lt/lte/gt/gte` compare numbers only. */
export type CmpOp = 'eq' | 'ne' | 'lt' | 'lte' | 'gt' | 'gte';

/**
 * A condition on the document's state BEFORE the batch's ops, evaluated atomically with the write.
 * Semantics on every backend:
 * - `cmp`: compares the field (or, with `length: true`, the length of a string — in UTF-16 code
 *   units as JavaScript counts — or of an array; a missing field has length 0) to `value`.
 *   `eq`/`ne` use deep JSON equality (object key order ignored). `lt/lte/gt/gte` are true only
 *   when both sides are numbers. A missing field: `ne` is true, every other comparison false.
 * - `contains` / `notContains`: an array field holds an element deep-equal to `value`, or a record
 *   field has the key `value` (a string), or a string field contains the substring `value`.
 *   Missing field: contains false, notContains true.
 * - `exists`: the field is present (`value: true`) or absent (`value: false`).
 */
export type Guard =
  | {
      readonly guard: 'cmp';
      readonly field: string;
      readonly cmp: CmpOp;
      /** The right-hand side: a literal. Exactly one of `value` and `ref` is present. */
      readonly value?: Json;
      /**
       * The right-hand side: another field of the same document (its pre-image value, or with
       * `ref.length` its length as for `length`). A missing `ref` field behaves like a missing
       * field on the left: `ne` true, every other comparison false.
       */
      readonly ref?: FieldRef;
      readonly length?: boolean;
    }
  | { readonly guard: 'contains' | 'notContains'; readonly field: string; readonly value: Json }
  | { readonly guard: 'exists'; readonly field: string; readonly value: boolean };

/** A guard's right-hand side naming another field of the same document. */
export interface FieldRef {
  readonly field: string;
  /** Compare with that field's length (string or array; missing → 0) instead of its value. */
  readonly length?: boolean;
}

/**
 * The post-image check the store attaches to every `patch`: the model's schema validation of the
 * document as it would be AFTER the ops. A backend must run it before making the write visible
 * and refuse the whole batch (reason `invalid`) when it returns issues. It may be async (async
 * schemas); backends that cannot call back into JavaScript inside their atomic step must compute
 * the post-image, check it, and commit only if the document's version did not move (retrying).
 */
export type PostCheck = (
  data: Data,
) => readonly CheckIssue[] | undefined | Promise<readonly CheckIssue[] | undefined>;

/** One schema issue (the Standard Schema issue shape). */
export interface CheckIssue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
}

/** One document's part of an atomic batch. */
export type DocWrite =
  | PatchWrite
  | {
      readonly kind: 'create';
      readonly model: string;
      readonly key: string;
      readonly data: Data;
      /** The document expires this long after the write (see "Expiring documents" below). */
      readonly ttlMs?: number;
    }
  | {
      readonly kind: 'put';
      readonly model: string;
      readonly key: string;
      readonly data: Data;
      /** The document expires this long after the write (see "Expiring documents" below). */
      readonly ttlMs?: number;
    }
  | {
      readonly kind: 'delete';
      readonly model: string;
      readonly key: string;
      /** Refuse (reason `version`) unless the current version is this. */
      readonly expectVersion?: number;
    };

/** Field operations on an existing document. */
export interface PatchWrite {
  readonly kind: 'patch';
  readonly model: string;
  readonly key: string;
  readonly ops: readonly Op[];
  /** All must hold on the pre-image, else the batch is refused with reason `guard`. */
  readonly guards?: readonly Guard[];
  /** Compare-and-set: refuse (reason `version`) unless the current version is exactly this. */
  readonly expectVersion?: number;
  /** Refuse (reason `version`) unless the document is still this incarnation (see {@link StoredDoc.incarnation}). */
  readonly expectIncarnation?: string;
  /**
   * Lock commits: refuse (reason `conflict`) if any field this write touches was written by
   * anyone after version `since` (backends keep, per field, the version that last wrote it).
   */
  readonly fieldsUnchangedSince?: number;
  /** Schema validation of the post-image; see {@link PostCheck}. A missing document is refused with reason `missing`. */
  readonly check?: PostCheck;
  /** When applied: the document now expires this long after the write (see "Expiring documents" below). */
  readonly ttlMs?: number;
}

/** Why a batch was refused. Exactly one reason, for the first write (in batch order) that failed. */
export type RefusalReason =
  | 'guard' // a guard was false
  | 'version' // expectVersion did not match
  | 'missing' // patch/delete of a document that does not exist
  | 'exists' // create of a key that exists
  | 'conflict' // fieldsUnchangedSince failed
  | 'fence' // (lease commits) the lease no longer holds
  | 'invalid'; // an op did not fit the field's type, or the post-check returned issues

/** The outcome of an atomic batch. */
export type WriteResult =
  | {
      readonly applied: true;
      /** Per write, in batch order: the document after the write (undefined after a delete). */
      readonly docs: ReadonlyArray<StoredDoc | undefined>;
      /** Per write, in batch order: one result per op (see {@link Op}); [] for non-patch writes; for delete, [existed]. */
      readonly results: ReadonlyArray<ReadonlyArray<Json>>;
    }
  | {
      readonly applied: false;
      readonly reason: RefusalReason;
      /** Index in the batch of the write that was refused. */
      readonly index: number;
      /** For `guard`: the index (in that write's `guards`) of the first guard that was false. */
      readonly guard?: number;
      /** Human-readable detail (for `invalid`: which op or which issues). */
      readonly detail?: string;
      /** For `invalid` caused by the post-check: the schema issues. */
      readonly issues?: readonly CheckIssue[];
    };

/** What a lease is asked for. `keys` are distinct and already in canonical (sorted) order. */
export interface LeaseRequest {
  readonly model: string;
  readonly keys: readonly string[];
  /** Named action: leases with different actions on the same key do not block each other. */
  readonly action: string;
  readonly mode: 'exclusive' | 'shared';
  /** The lease expires this long after it was taken or last renewed, if its holder stops renewing. */
  readonly leaseMs: number;
  /** Renew automatically until commit/release (default true). */
  readonly renew: boolean;
  /** Give up after this long with LockTimeoutError. undefined = wait forever. */
  readonly timeoutMs?: number;
  /** Abort waiting: reject with signal.reason. */
  readonly signal?: AbortSignal;
  /** Do not wait: throw LockBusyError when any key is held in a conflicting mode. */
  readonly nowait: boolean;
  /** Do not wait: resolve undefined when any key is held in a conflicting mode. */
  readonly skipLocked: boolean;
}

/** Options of a plain {@link Backend.write}: how long it may wait for an exclusive lease. */
export interface WriteOptions {
  /**
   * Give up waiting for a default-action exclusive lease on one of the batch's documents after
   * this long: LockTimeoutError, nothing written. undefined = wait until the lease ends.
   */
  readonly timeoutMs?: number;
  /** Abort waiting: reject with `signal.reason`, nothing written. */
  readonly signal?: AbortSignal;
}

/** A held lease on one or more keys, with the snapshots read when it was taken. */
export interface Lease {
  /** Per key of the request, in its order: the snapshot read once the lease was held. */
  readonly docs: ReadonlyArray<StoredDoc | undefined>;
  /** Per key: the fencing token, strictly increasing across exclusive holders of that key. */
  readonly fences: readonly number[];
  /**
   * True once the backend knows the lease expired, was taken over, or failed to renew. With
   * `renew: false` it turns true at the latest `leaseMs` after the lease was granted.
   */
  readonly lost: boolean;
  /**
   * Aborted (reason: a `LeaseLostError`) the moment the backend knows the lease is lost: a failed
   * renewal, an expiry, the connection or session gone. Never aborted by commit or release.
   */
  readonly signal: AbortSignal;
  /**
   * Atomically: verify the lease still holds on every key (fencing: refused with reason `fence`
   * otherwise), apply `writes`, then release the lease. The lease is released whatever the
   * outcome. Writes may touch only keys of this lease.
   */
  commit(writes: readonly DocWrite[]): Promise<WriteResult>;
  /**
   * Release without writing. Idempotent; never throws for a lost lease. Resolves `true` when the
   * lease still held at the moment it was released (checked on the server where the backend
   * can: the release script's token check, the lease's transaction still open), `false` when it
   * had been lost before. A second call resolves what the first did.
   */
  release(): Promise<boolean>;
}

/**
 * The kinds of named permit pools. Each kind is a namespace of its own: `mutex "x"`,
 * `rwlock "x"`, `semaphore "x"` and every document lock on a key `"x"` are four unrelated locks.
 */
export type PermitKind = 'mutex' | 'rwlock' | 'semaphore';

/**
 * What a permit lease is asked for: `weight` units of the named pool `(kind, name)` of capacity
 * `permits`, the one primitive behind `store.mutex` (permits 1, weight 1), `store.rwlock`
 * (permits {@link RWLOCK_PERMITS}: a reader takes 1, a writer all of them) and `store.semaphore`.
 *
 * Semantics (identical on every backend; the conformance section `named-locks` checks them):
 * - Never more than `permits` units held at once, by weight, across every client of the data
 *   space; holders whose lease expired (server clock) do not count.
 * - FIFO: a request is granted only when every request queued before it on the same pool has
 *   been granted or has left, so a large weight is never starved by a stream of small ones (and
 *   an rwlock is write-preferring: readers arriving behind a queued writer wait for it).
 * - Waiters are woken without polling (a timer only for a holder's silent expiry); a waiter that
 *   times out, is aborted or fails leaves the queue at once and wakes whoever it was blocking.
 * - Every grant gets a fence strictly greater than every earlier grant's on that pool (kind and
 *   name), across clients and restarts of the client, for as long as the backend keeps its data.
 * - `permits` is part of the pool's identity while anyone holds or waits: a request naming
 *   another `permits` for a pool in use is refused with `ValidationError` (nothing queued).
 * - Nothing stays stored for an idle pool (no holder, no waiter) except what keeps fences
 *   increasing, and that expires (a TTL) or is one row per pool.
 */
export interface PermitRequest {
  readonly kind: PermitKind;
  /** The pool's name: any non-empty string (the boundary checks it like a document key). */
  readonly name: string;
  /** The pool's capacity: a positive integer. */
  readonly permits: number;
  /** Units asked for: an integer in [1, permits] (the boundary refuses more at once). */
  readonly weight: number;
  /** The lease expires this long after it was granted or last renewed, if nobody renews it. */
  readonly leaseMs: number;
  /** Renew automatically until release (default true). */
  readonly renew: boolean;
  /** Give up after this long with LockTimeoutError, leaving the queue. undefined = forever. */
  readonly timeoutMs?: number;
  /** Abort waiting: reject with `signal.reason`, leaving the queue. */
  readonly signal?: AbortSignal;
  /** Do not wait: resolve undefined unless the units can be granted at once (nobody queued before). */
  readonly nowait: boolean;
}

/** The capacity of an rwlock's pool: a reader holds 1 unit, a writer all of them. */
export const RWLOCK_PERMITS = 1_073_741_824;

/** A held permit lease: `weight` units of one pool. */
export interface PermitLease {
  /** Strictly increasing per pool across every grant (see {@link PermitRequest}). */
  readonly fence: number;
  /**
   * True once the backend knows the lease is lost: it expired (a failed renewal, or `renew:
   * false` past its deadline), or the connection/session that held it is gone.
   */
  readonly lost: boolean;
  /** Aborted (reason: a `LeaseLostError`) the moment the lease is known lost; never by release. */
  readonly signal: AbortSignal;
  /**
   * Push the expiry to `ms` (default the request's `leaseMs`) from now, server clock. Rejects
   * with `LeaseLostError` when the lease was already lost (and marks it lost).
   */
  extend(ms?: number): Promise<void>;
  /**
   * Give the units back and wake the waiters they admit. Idempotent; never throws for a lost
   * lease. Resolves `true` when the lease still held at release, `false` when it had been lost.
   */
  release(): Promise<boolean>;
}

/*
 * ── Queues ──────────────────────────────────────────────────────────────────────────────────
 * The primitives behind `store.queue(name, schema, options)` (SPEC "Queues"), in `backend.queues`.
 *
 * Semantics (identical on every backend; the conformance section `queues` checks them):
 * - A job is in one state: `waiting` (claimable now), `delayed` (claimable from `runAt`),
 *   `active` (claimed, its lease live), `failed` (dead letter: kept, inspectable, retryable).
 *   A completed job is deleted: `getJob` answers undefined for it.
 * - Claim order: lowest `priority` first, then earliest `runAt`, then enqueue order. A job is
 *   never claimed before its `runAt` by the server's clock (memory: the process clock).
 * - A claim is a lease of `leaseMs` on the server clock. It bumps the job's `fence` by 1 (so a
 *   claim's fence is strictly greater than every earlier claim's of that job, `retryFailed`
 *   included) and its `attempt` by 1 (1 on the first run; `retryFailed` resets it to 0).
 *   An active job whose lease expired is claimable again at once (it counts as waiting), exactly
 *   like a waiting job of its priority and `runAt`; if its expired claim was its last attempt
 *   (`attempt >= maxAttempts`) the claim that finds it fails it instead (error "the lease
 *   expired on the last attempt") and goes on to the next job.
 * - Fenced steps: `complete`, `retry`, `fail` and `extend` name the job by `(queue, id, fence)`
 *   and apply only while that claim holds (the job is active, its fence is this one and its lease
 *   has not expired by the server clock); otherwise nothing changes and they report the loss
 *   (`complete`: a refusal with reason `fence`; the others: `false`).
 * - `complete(effects)`: the effects (a `write` batch) and the completion commit in ONE atomic
 *   step (one script, one transaction): the claim is checked first (`fence` refusal), then the
 *   batch's guards and refusals apply as for `write` (a refusal leaves the job active and its
 *   claim held: nothing of either was written). Effects wait for default-action exclusive leases
 *   like a plain `write`.
 * - `enqueue(jobs, writes)`: the jobs are created in the same atomic step as `writes` (the
 *   transactional outbox): they exist iff the batch applied. `key`: at most one waiting, delayed
 *   or active job per (queue, key); enqueueing a key that has one returns that job
 *   (`created: false`) and changes nothing about it. A failed or completed job frees its key.
 * - Wake-ups: a claim that finds nothing waits for an enqueue, a retry, a `retryFailed`, or the
 *   next `runAt`/lease expiry of the queue, without polling (memory: direct hand-off; Redis:
 *   BZPOPMIN or pub/sub; PostgreSQL: LISTEN/NOTIFY), with a timer only for delays and expiries.
 *   It gives up at `timeoutMs` (resolving undefined) or on `signal` (rejecting with its reason),
 *   and leaves nothing behind.
 * - Nothing stays for an idle queue except its jobs (waiting, delayed, active, failed).
 * Input (queue names, ids, payloads as JSON, priorities, times, fences) is checked by the
 * boundary; a backend assumes well-formed requests.
 */

/** A job's state (see the queue semantics above). */
export type JobState = 'waiting' | 'delayed' | 'active' | 'failed';

/** One job to create. Made by the store from `enqueue`/`enqueueMany`/`enqueueOp`. */
export interface EnqueueRequest {
  /** The queue: a model name (`/^[A-Za-z_][A-Za-z0-9_]{0,62}$/`). */
  readonly queue: string;
  /** The payload, already validated by the queue's schema. */
  readonly data: Json;
  /** Not claimable before this many ms after the enqueue, server clock (>= 0; 0 = at once). */
  readonly delayMs: number;
  /** Not claimable before this absolute time (epoch ms, server clock); wins over `delayMs`. */
  readonly runAt?: number;
  /** An integer; lower is claimed first. */
  readonly priority: number;
  /** Deduplication: at most one waiting, delayed or active job per (queue, key). */
  readonly key?: string;
  /** Claims allowed in all (a positive integer): a job whose last claim expired is failed. */
  readonly maxAttempts: number;
}

/** What an enqueue made: the job's id, and whether it is new (false: the key's live job). */
export interface EnqueuedJob {
  readonly id: string;
  readonly created: boolean;
}

/** The outcome of {@link QueueBackend.enqueue}: the write's outcome, and the jobs when applied. */
export type EnqueueResult =
  | (Extract<WriteResult, { applied: true }> & { readonly jobs: readonly EnqueuedJob[] })
  | Extract<WriteResult, { applied: false }>;

/** A job as stored (the caller's own copy). */
export interface StoredJob {
  readonly id: string;
  readonly queue: string;
  readonly data: Json;
  /** `active` only while the claim's lease is live; an expired claim reads `waiting`. */
  readonly state: JobState;
  readonly priority: number;
  /** Claimable from (epoch ms, server clock). */
  readonly runAt: number;
  /** Claims since the enqueue or the last `retryFailed` (0 before the first). */
  readonly attempt: number;
  /** The current or last claim's fence (0 before the first claim); never decreases. */
  readonly fence: number;
  readonly maxAttempts: number;
  readonly key?: string;
  /** The last `retry`/`fail` error message, if any. */
  readonly error?: string;
}

/** What a claim asks for. */
export interface ClaimRequest {
  readonly queue: string;
  /** The claim's lease: it expires this long after the claim or the last `extend`. */
  readonly leaseMs: number;
  /** Resolve undefined when nothing was claimable for this long (0: do not wait). undefined = forever. */
  readonly timeoutMs?: number;
  /** Abort waiting: reject with `signal.reason`, nothing claimed. */
  readonly signal?: AbortSignal;
}

/** A claimed job: its stored state (`state: 'active'`), `fence` being this claim's. */
export type ClaimedJob = StoredJob;

/** Counts of a queue's jobs by state, now (server clock). */
export interface QueueStats {
  readonly waiting: number;
  readonly delayed: number;
  readonly active: number;
  readonly failed: number;
}

/** The queue primitives every backend implements (`backend.queues`); semantics above. */
export interface QueueBackend {
  /** Creates `jobs` atomically with the `writes` batch (which may be empty); see {@link EnqueueResult}. */
  enqueue(
    jobs: readonly EnqueueRequest[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<EnqueueResult>;
  /** Claims the next claimable job of the queue, waiting (without polling) as the request allows. */
  claim(request: ClaimRequest): Promise<ClaimedJob | undefined>;
  /**
   * Fenced: commits `effects` and deletes the job in one atomic step. Refused with reason
   * `fence` (index 0) when the claim no longer holds; other refusals are the effects' (index in
   * `effects`), and leave the job as it was.
   */
  complete(
    queue: string,
    id: string,
    fence: number,
    effects: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<WriteResult>;
  /**
   * Fenced: ends the claim and makes the job claimable again `delayMs` from now (server clock),
   * keeping `error` as its last error. False (nothing changed) when the claim no longer holds.
   */
  retry(
    queue: string,
    id: string,
    fence: number,
    delayMs: number,
    error?: string,
  ): Promise<boolean>;
  /** Fenced: ends the claim and dead-letters the job (state `failed`, `error` kept). */
  fail(queue: string, id: string, fence: number, error: string): Promise<boolean>;
  /** Fenced: pushes the claim's expiry to `ms` from now (server clock). */
  extend(queue: string, id: string, fence: number, ms: number): Promise<boolean>;
  /** The job's stored state, or undefined (never enqueued, or completed). */
  getJob(queue: string, id: string): Promise<StoredJob | undefined>;
  /** Counts by state (see {@link QueueStats}). */
  queueStats(queue: string): Promise<QueueStats>;
  /**
   * A failed job becomes waiting again (claimable at once) with `attempt` reset to 0 and its
   * error kept (the fence keeps growing). False when the job is not failed (or does not exist),
   * or its key has a live job meanwhile.
   */
  retryFailed(queue: string, id: string): Promise<boolean>;
}

/**
 * What a backend declares about itself; the store, the conformance suite and the lab read this
 * instead of guessing from the backend's name.
 */
export interface BackendCapabilities {
  /** Several processes (or machines) can share this backend's documents and locks. */
  readonly sharedAcrossProcesses: boolean;
  /**
   * Worker threads of one process can share this backend's documents and locks: true for a
   * `remoteBackend` (lockstep/threads: a backend served by another thread). Absent: the same as
   * `sharedAcrossProcesses` (a backend shared by processes is shared by threads too; a memory
   * backend lives in one thread unless it is served with `serveBackend`).
   */
  readonly sharedAcrossThreads?: boolean;
  /** Documents survive the process that wrote them. */
  readonly durable: boolean;
  /**
   * Track in-process tasks for deadlock detection: the boundary runs each `Model.lock` as one
   * task (AsyncLocalStorage, a few percent per operation) and records every wait of this process
   * in the wait-for graph, so nested locks in opposite orders get DeadlockError at once. False
   * skips that cost; such cycles then end at `timeoutMs`.
   */
  readonly inProcessDeadlocks: boolean;
  /** The server finds deadlocks between its own sessions (PostgreSQL). */
  readonly serverDeadlocks: boolean;
}

/** What every backend implements. */
export interface Backend {
  /** A short name for messages and the lab ("memory", "redis", "postgres"). */
  readonly name: string;
  /**
   * The identity of the data space: two backend instances with the same namespace share
   * documents and locks (same server and prefix or schema). The boundary builds its in-process
   * lock ids from it. Memory: unique per instance.
   */
  readonly namespace: string;
  /** What this backend can do; see {@link BackendCapabilities}. */
  readonly supports: BackendCapabilities;
  /** Fresh snapshots, one per ref, in order; undefined where the document does not exist. */
  read(refs: readonly DocRef[]): Promise<Array<StoredDoc | undefined>>;
  /**
   * One atomic, guarded batch: every write applies, or none does. Never a partial write. Waits
   * while a default-action exclusive lease is held on one of its documents (see the rules above),
   * bounded by `options`.
   */
  write(writes: readonly DocWrite[], options?: WriteOptions): Promise<WriteResult>;
  /**
   * Take a lease (waiting in FIFO order, woken without polling where the backend allows), then
   * read the keys. Resolves undefined only with `skipLocked`. Rejects with LockTimeoutError,
   * LockBusyError (nowait), DeadlockError (where the backend detects it), signal.reason, or
   * BackendError.
   */
  acquire(request: LeaseRequest): Promise<Lease | undefined>;
  /**
   * Take `weight` units of a named pool (FIFO, woken without polling; see {@link PermitRequest}).
   * (Optional only while the backends of this repository gain it; required once they all have.)
   * Resolves undefined only with `nowait`. Rejects with LockTimeoutError, signal.reason,
   * ValidationError (a `permits` that differs from the pool's in use) or BackendError.
   */
  acquirePermit?(request: PermitRequest): Promise<PermitLease | undefined>;
  /**
   * Units of the pool `(kind, name)` held right now by live (unexpired, server clock) leases;
   * 0 for a pool nobody holds.
   */
  permitsHeld?(kind: PermitKind, name: string): Promise<number>;
  /**
   * Job queues: see {@link QueueBackend} and the queue semantics above it. Memory, Redis and
   * PostgreSQL have them; optional only while other backends (SQLite) gain them: `store.queue`
   * on a backend without them throws BackendError.
   */
  readonly queues?: QueueBackend;
  /** Release every resource the backend opened (never a client or pool the user passed in). */
  close(): Promise<void>;
}

// ================================================================ Rate limits and expiring documents
/*
 * ## Expiring documents
 * A `create` or `put` with `ttlMs` makes the document expire `ttlMs` after the write, on the
 * SERVER's clock (memory: this process's monotonic clock). A `create`/`put` without `ttlMs` makes
 * it permanent; a patch without `ttlMs` keeps the expiry it had, a patch with `ttlMs` (when the
 * batch applies, and even with no ops) moves it to `ttlMs` after the write. Once expired, the
 * document is gone for every path at once: `read` answers undefined, a patch is refused with
 * `missing`, a `create` succeeds (a new incarnation, version 1), `delete` reports it did not exist,
 * a lease reads it as missing. A lazy check is fine where the server has no TTL, as long as no
 * path can see an expired document; its storage is reclaimed (Redis PEXPIRE; PostgreSQL an
 * expiry column and a bounded sweep; memory a sweep timer that stops when nothing expires).
 *
 * ## Rate limits
 * A consumption asks, for one key of one named limiter, whether `cost` units may pass now. State
 * lives per (name, algorithm, key) on the backend and is evaluated on the SERVER's clock (Redis
 * TIME, PostgreSQL clock_timestamp(), memory: this process's monotonic clock), never the
 * client's. Taken after the key's state is locked, and never earlier than the key's latest
 * entry. At that instant `now`:
 * - `sliding-window` (exact): entries (t, cost); `used` = the sum of the costs of the entries
 *   with t > now - windowMs; `avail` = limit - used. At most `limit` entries per key are kept
 *   (every cost is >= 1), and the key's state is gone once now >= latest t + windowMs.
 *   No interval of `windowMs` ever holds more than `limit` admitted units.
 * - `token-bucket`: `tokens` (a real number, capacity `limit`, refilled at limit/windowMs per ms,
 *   a missing key is full); `avail` = tokens after the refill. The state is gone once full again.
 * A consumption is allowed when cost <= avail. `remaining` = avail - cost when it is recorded
 * (allowed, `record`, and the call's writes applied), else avail, rounded down. `retryAfterMs`: 0
 * when allowed, else the ms (rounded up) until `cost` would be allowed with no other consumer.
 * `resetMs`: the ms (rounded up) until the key is back to `limit` available (0: it is).
 * Bad input (limit or windowMs not a positive integer, cost not an integer in [1, limit], a
 * (name, algorithm, key) twice in one call) is refused by the boundary.
 */

/** How a limiter counts: exact sliding window, or token bucket. */
export type RateLimitAlgorithm = 'sliding-window' | 'token-bucket';

/** Names one rate-limit key: a limiter's name (model-name rules), algorithm, and key. */
export interface LimitRef {
  readonly name: string;
  readonly algorithm: RateLimitAlgorithm;
  /** Any non-empty string. */
  readonly key: string;
}

/** One rate-limit consumption (see "Rate limits" above). */
export interface Consumption extends LimitRef {
  /** Units per window (sliding window) or bucket capacity (token bucket); an integer >= 1. */
  readonly limit: number;
  /** The window (sliding window), or the time to refill `limit` tokens (token bucket); integer ms >= 1. */
  readonly windowMs: number;
  /** Units this call takes; an integer in [1, limit]. */
  readonly cost: number;
  /** False: evaluate only (peek), never record. */
  readonly record: boolean;
}

/** What a consumption saw (see "Rate limits" above). */
export interface Admission {
  readonly allowed: boolean;
  readonly remaining: number;
  readonly retryAfterMs: number;
  readonly resetMs: number;
}

/** The outcome of {@link Backend.consume}. */
export interface ConsumeResult {
  /** Per consumption, in order. */
  readonly admissions: readonly Admission[];
  /**
   * The batch's outcome; undefined when a recording consumption was not allowed (then nothing
   * was written and nothing recorded). `applied: false` means nothing was recorded either.
   */
  readonly write?: WriteResult;
}

/**
 * What a backend implements for rate limits and expiring documents (declaration merging keeps
 * this section in one place; these are members of {@link Backend}). Memory, Redis and PostgreSQL
 * implement both; a backend without `consume` (SQLite, for now) has neither: the boundary
 * answers `consume`/`resetLimit` with BackendError, and the backend refuses writes with `ttlMs`.
 */
export interface Backend {
  /**
   * ONE atomic step: evaluate every consumption at one server instant; if every recording one is
   * allowed, run `writes` exactly as {@link Backend.write} would (waiting for default-action
   * exclusive leases on their documents, bounded by `options`), and record the consumptions only
   * if the writes applied (an empty batch applies). Admission and writes happen both or neither.
   * A lost reply that may hide a recorded consumption or an applied write is BackendError with
   * `outcomeUnknown` (never retried by the backend: a retry could take units twice).
   */
  consume?(
    consumptions: readonly Consumption[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<ConsumeResult>;
  /** Forgets one key's state (it is full again). Resolves when done. */
  resetLimit?(ref: LimitRef): Promise<void>;
}
