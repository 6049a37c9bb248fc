/**
 * Cancelling a statement that waits on the server (a lease's lock wait, a plain write waiting for
 * a row lock) from outside its connection, and the rule that makes it safe: a connection a cancel
 * was sent for is destroyed afterwards, never reused, so a late cancel can hit no one else's query.
 */
import pg from 'pg';
import type { PgContext } from './context.js';

/**
 * Cancels the statement running on backend `pid`, over a short-lived connection of its own
 * (the pool may be exhausted by the very waiters being cancelled). Best effort.
 *
 * @example
 * ```ts
 * signal.addEventListener('abort', () => void cancelBackend(ctx, conn.pid));
 * ```
 */
export async function cancelBackend(ctx: PgContext, pid: number | undefined): Promise<void> {
  if (pid === undefined) return;
  const options = (ctx.pool as unknown as { options?: pg.ClientConfig }).options;
  const client = new pg.Client(options);
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT pg_cancel_backend($1)', [pid]);
  } catch {
    // Best effort: lock_timeout and the destroyed connection bound the wait anyway.
  } finally {
    await client.end().catch(() => {});
  }
}
