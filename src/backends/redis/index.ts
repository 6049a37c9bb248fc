/**
 * The Redis backend (`lockstep/redis`): the Backend contract on plain Redis >= 7 (or Valkey), no
 * modules. ioredis is a peer dependency.
 *
 * - Every write is ONE Lua script (one round trip): guards evaluated on the server, all documents
 *   validated first, then all written — never a partial write.
 * - Locks are leases per (model, key, action) with an owner token and a strictly increasing
 *   fencing token (a counter with a TTL, seeded from the server's clock in microseconds, so a
 *   locked name leaves no key behind for good; see next_fence in lib.lua); waiters queue in FIFO
 *   order in Redis and are woken by pub/sub (a timer only backs up leases that expire silently);
 *   leases renew themselves while held, and know when they are lost (`lost`, `signal`).
 * - Plain writes wait for an exclusive lease of the default action on any of their documents:
 *   the write script answers "locked" having written nothing, the writer queues in the same FIFO
 *   (never granted, only woken: lock holders arriving after it cannot overtake it), and its batch
 *   runs once the lease ends. An uncontended write is still one script call.
 * - Scripts run as one function library (FUNCTION LOAD once, then FCALL) on Redis 7+ and Valkey,
 *   or by EVALSHA with `scripts: 'eval'` (and automatically where FUNCTION LOAD is refused).
 * - Schema checks of `apply` run in JavaScript on a predicted post-image; the script commits only
 *   if the document is still exactly the predicted base (see `WritePath.runBatch` in writes.ts).
 *   Concurrent applies on one document chain their predictions, and a group-commit call folds
 *   such a chain into one patch (group.ts): the server checks the first base and stores the
 *   last post-image once.
 * - Hand-offs: a release or commit grants the lease to the head of the queue inside the same
 *   script (single-key waiters), with the fence and the snapshot, so a waiter gets the lock in
 *   one round trip: by pub/sub for another process, in the script's reply for a waiter of the
 *   same process (which then starts before the previous holder resumes). A queued waiter refreshes its queue entry every few
 *   seconds (a dead waiter's entry lapses after 10 s; a dead waiter that was already granted the
 *   lease holds the key at most its leaseMs, like any crashed holder).
 * - Named locks (`store.mutex`, `store.rwlock`, `store.semaphore`): one FIFO weighted permit pool
 *   per (kind, name) in four keys of its own hash tag, `<prefix>:{!<kind>:<name>}` (never a
 *   document's key): holders with their expiry on the server's clock, a wait queue whose entries
 *   lapse unless their waiter refreshes them, and a fence counter with a TTL. A release grants
 *   the units to the waiters they admit inside its own script (pub/sub, or the reply for waiters
 *   of the same process); a timer only backs up a holder that expires silently. An idle pool
 *   leaves only its expiring fence counter. See permits.ts and scripts/permit-lib.lua.
 * - Redis Cluster: every key of a document shares its hash tag. Batches and multi-key locks
 *   across slots are refused only with `cluster: true` (or an ioredis Cluster client): on a single
 *   node every batch runs in one script. `hashTag` co-locates documents.
 * - Deadlocks: Redis cannot see a cycle that goes through the client (a nested `lock()` waits
 *   in JavaScript while the outer lease sits idle); the store's boundary tracks this process's
 *   leases and waiting writes in the in-process wait-for graph (`detectDeadlocks` sets
 *   `supports.inProcessDeadlocks`), so such a wait fails at once with DeadlockError.
 *   Cross-process cycles end at `timeoutMs`.
 * - Failures: connection loss, timeouts and server errors become BackendError with the driver's
 *   error as `cause`; a write whose reply was lost, or whose script failed part-way (Redis keeps
 *   what a failing script already wrote), has `outcomeUnknown: true`. The client we open never
 *   re-sends unanswered commands (autoResendUnfulfilledCommands: false).
 *
 * @example
 * ```ts
 * import { createStore } from 'lockstep';
 * import { redis } from 'lockstep/redis';
 * const store = createStore(redis({ url: 'redis://127.0.0.1:6379', prefix: 'shop' }));
 * ```
 */
import type { Cluster, Redis } from 'ioredis';
import type { Backend } from '../../store/backend.js';
import { RedisBackend } from './backend.js';

export { RedisBackend } from './backend.js';
export { clusterSlot, escapeSegment } from './keys.js';

/** Options of {@link redis}. */
export interface RedisBackendOptions {
  /** Connection URL (default `process.env.REDIS_URL` or `redis://127.0.0.1:6379`). Ignored with `client`. */
  url?: string;
  /**
   * Your own ioredis client. Lockstep never closes it, and duplicates it once for its pub/sub
   * wake-ups. Prefer `autoResendUnfulfilledCommands: false` on it: ioredis otherwise re-sends
   * writes that were in flight when a connection dropped.
   */
  client?: Redis | Cluster;
  /** Key prefix (default `lockstep`); every key this backend writes starts with `<prefix>:`. */
  prefix?: string;
  /**
   * Refuse batches (`store.apply`, multi-key locks) whose documents live in different Redis
   * Cluster slots. Default: true for an ioredis `Cluster` client, false otherwise (a single node
   * runs any batch).
   */
  cluster?: boolean;
  /**
   * Co-locate documents in one Cluster slot: the text returned becomes the hash tag instead of
   * `<model>:<key>`. Documents with the same hash tag can be written together in Cluster mode.
   */
  hashTag?: (model: string, key: string) => string;
  /**
   * How long a script call (and the wake-up subscription) may wait for its reply before it fails
   * with BackendError, `outcomeUnknown` for a write (default 10 000 ms with the client we open;
   * none with your own client unless given).
   */
  commandTimeoutMs?: number;
  /**
   * Detect nested locks taken in opposite orders within this process (default true; declared as
   * `supports.inProcessDeadlocks`): the store then runs each lock as a task (AsyncLocalStorage),
   * and a wait that would close a cycle (or re-enter a key and action held by the enclosing
   * lock, or write a document the enclosing lock holds) fails at once with DeadlockError,
   * without queueing in Redis, instead of waiting until `timeoutMs` (forever without one).
   * Cycles through other processes are never seen here: they end at `timeoutMs`.
   */
  detectDeadlocks?: boolean;
  /**
   * How the Lua scripts run (default `'auto'`). `'functions'`: loaded once as a function library
   * (`FUNCTION LOAD`, named `lockstep_<hash of the scripts>`, loaded again if the server lost it)
   * and called with FCALL, which saves ~10 us of server CPU per call; needs Redis 7+ or Valkey
   * and the FUNCTION permission. `'eval'`: EVALSHA, reloaded on NOSCRIPT; nothing is left on
   * the server beyond its script cache. `'auto'`: functions when the server accepts FUNCTION
   * LOAD, otherwise eval.
   */
  scripts?: 'auto' | 'functions' | 'eval';
}

/**
 * Creates the Redis backend. Pass it to `createStore`.
 *
 * @example
 * ```ts
 * const store = createStore(redis({ prefix: 'app' }));          // opens its own connection
 * const store2 = createStore(redis({ client: myIoredis }));     // uses yours; never closes it
 * ```
 */
export function redis(options: RedisBackendOptions = {}): Backend {
  return new RedisBackend(options);
}
