/**
 * Connection setup (the ioredis client we open, or the user's) and how driver failures become
 * BackendError.
 */
import { type Cluster, Redis } from 'ioredis';
import { BackendError, LockstepError, ValidationError } from '../../errors.js';

const DEFAULT_URL = 'redis://127.0.0.1:6379';

/**
 * The user's client (never closed by us), or a new one with our settings.
 *
 * @example
 * ```ts
 * const { client, owned } = openClient({ url: 'redis://127.0.0.1:6379' });
 * ```
 */
export function openClient(o: { url?: string | undefined; client?: Redis | Cluster | undefined }): {
  client: Redis | Cluster;
  owned: boolean;
} {
  if (o.client) return { client: o.client, owned: false };
  const url = o.url ?? process.env.REDIS_URL ?? DEFAULT_URL;
  let client: Redis;
  try {
    client = new Redis(url, {
      // No commandTimeout: the backend times its script calls itself (calls.ts), with one timer
      // for all of them instead of one per command.
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 2,
      // Lock hand-offs are sequential round trips: auto-pipelining only adds latency to them,
      // and concurrent writes are already combined by our own group commit.
      enableAutoPipelining: false,
    });
  } catch (err) {
    // ioredis parses the URL at once and throws a bare TypeError for a malformed one: bad input,
    // said at construction like every other bad option (a URL that parses but cannot be
    // reached fails at first use, as BackendError).
    throw new ValidationError('redis url', [
      {
        message: `${JSON.stringify(url)} is not a Redis URL (${err instanceof Error ? err.message : String(err)}); give one like redis://127.0.0.1:6379 (rediss:// for TLS)`,
      },
    ]);
  }
  client.on('error', () => {
    /* surfaced per command as BackendError */
  });
  return { client, owned: true };
}

/**
 * Which server (and ioredis key prefix) `client` talks to, as text: part of the lock ids of the
 * in-process wait-for graph, so two backends on the same server and prefix (two clients) see the
 * same locks, and backends on different servers never share one. A Cluster client is named by its
 * startup nodes when ioredis exposes them, and otherwise by a name of its own (no false sharing).
 *
 * @example
 * ```ts
 * serverIdentity(new Redis('redis://127.0.0.1:6379/2')); // '["redis","127.0.0.1",6379,null,2,null]'
 * ```
 */
export function serverIdentity(client: Redis | Cluster): string {
  if (client instanceof Redis) {
    const o = client.options;
    return JSON.stringify([
      'redis',
      o.host,
      o.port,
      o.path ?? null,
      o.db ?? 0,
      o.keyPrefix ?? null,
    ]);
  }
  const nodes = (client as unknown as { startupNodes?: unknown }).startupNodes;
  return JSON.stringify([
    'cluster',
    Array.isArray(nodes) ? nodes : `client ${++anonymousClients}`,
    client.options.keyPrefix ?? null,
  ]);
}

let anonymousClients = 0;

/**
 * A driver failure as BackendError (`outcomeUnknown` for a write whose reply was lost).
 *
 * @example
 * ```ts
 * throw toBackendError('write script', err, true);
 * ```
 */
export function toBackendError(what: string, err: unknown, writes: boolean): LockstepError {
  if (err instanceof LockstepError) return err;
  const e = err instanceof Error ? err : new Error(String(err));
  const reply = e.name === 'ReplyError';
  // Whether a failed write may have landed. No reply at all (connection lost, timeout, a
  // command dropped from ioredis's offline queue): the script may have run. A server error
  // reply: Redis refuses most of them before running the script (NOSCRIPT, "Function not found",
  // BUSY, LOADING, READONLY, MOVED, OOM, NOPERM ...), and then nothing was written. But an error
  // raised WHILE the script runs (a redis.call() that fails, error(); Redis tags it "on
  // @user_script:<line>" or "@user_function") does not undo the writes the script made before
  // it: Redis has no rollback. Our scripts write documents last, after every check, yet a
  // commit's hand-off (INCR of a fence counter) runs after its document was stored, so such an
  // error is an unknown outcome, never "not written".
  const ranPartly = reply && /@user_(?:script|function)/.test(e.message);
  const unknown = writes && (!reply || ranPartly);
  return new BackendError(
    `redis ${what} failed: ${e.message}` +
      (unknown
        ? '; the write may or may not have been applied — read the document before retrying'
        : reply
          ? ''
          : '; check that Redis is reachable'),
    { cause: err, outcomeUnknown: unknown },
  );
}
