/**
 * Wake-ups of the PostgreSQL job queues: one `LISTEN` connection per backend, held only while
 * claimers wait (released a moment after the last one left), delivering `NOTIFY <queue> <n>` to
 * up to `n` waiting claimers of that queue in FIFO order. If the connection dies, every waiter
 * is woken (it claims again, then waits on a new connection), so no notification is lost for good.
 */
import type { PoolClient } from 'pg';
import type { PgContext } from './context.js';
import { ident } from './sql.js';

/** How long the LISTEN connection outlives its last waiter (a busy worker re-waits at once). */
const LINGER_MS = 2000;

/** One waiting claimer: woken by a notification of its queue (or a lost connection). */
export interface Sleeper {
  readonly queue: string;
  wake(): void;
}

/**
 * The LISTEN connection and the claimers waiting on it.
 *
 * @example
 * ```ts
 * await wakeups.add(sleeper); // listening before the claimer's last look at the table
 * wakeups.remove(sleeper);
 * ```
 */
export class Wakeups {
  readonly #ctx: PgContext;
  readonly #channel: string;
  readonly #sleepers = new Set<Sleeper>();
  #client: Promise<PoolClient> | undefined;
  #linger: NodeJS.Timeout | undefined;
  /** Takes our listeners off the LISTEN connection. */
  #detach: (() => void) | undefined;

  constructor(ctx: PgContext, channel: string) {
    this.#ctx = ctx;
    this.#channel = channel;
  }

  /** Claimers waiting, and whether the LISTEN connection is held (for leak checks). */
  stats(): { sleepers: number; listening: boolean } {
    return { sleepers: this.#sleepers.size, listening: this.#client !== undefined };
  }

  /** Registers `s`; resolves once the LISTEN is in place (notifications from then on reach it). */
  async add(s: Sleeper): Promise<void> {
    if (this.#linger !== undefined) {
      clearTimeout(this.#linger);
      this.#linger = undefined;
    }
    this.#sleepers.add(s);
    try {
      await this.#listen();
    } catch (err) {
      this.#sleepers.delete(s);
      this.#maybeRelease();
      throw err;
    }
  }

  /** Unregisters `s` (idempotent); the connection goes back to the pool once nobody waits. */
  remove(s: Sleeper): void {
    this.#sleepers.delete(s);
    this.#maybeRelease();
  }

  #listen(): Promise<PoolClient> {
    if (this.#client === undefined) {
      const p = (async () => {
        this.#ctx.checkOpen();
        const client = await this.#ctx.pool.connect();
        const detach = () => {
          client.removeListener('notification', onNote);
          client.removeListener('error', lost);
          client.removeListener('end', lost);
        };
        const lost = () => {
          if (this.#client !== p) return;
          this.#client = undefined;
          this.#detach = undefined;
          detach();
          client.on('error', () => {});
          client.release(new Error('LISTEN connection lost'));
          for (const s of [...this.#sleepers]) s.wake();
        };
        const onNote = (msg: { channel: string; payload?: string }) => {
          if (msg.channel !== this.#channel) return;
          const [queue, count] = (msg.payload ?? '').split(' ');
          let n = Number(count) || 1;
          for (const s of this.#sleepers) {
            if (n <= 0) break;
            if (s.queue !== queue) continue;
            n -= 1;
            this.#sleepers.delete(s);
            s.wake();
          }
        };
        client.on('notification', onNote);
        client.on('error', lost);
        client.on('end', lost);
        this.#detach = detach;
        try {
          await client.query(`LISTEN ${ident(this.#channel)}`);
        } catch (err) {
          lost();
          throw err;
        }
        return client;
      })();
      this.#client = p;
      p.catch(() => {
        if (this.#client === p) this.#client = undefined;
      });
    }
    return this.#client;
  }

  #maybeRelease(): void {
    if (this.#sleepers.size > 0 || this.#client === undefined || this.#linger !== undefined) return;
    this.#linger = setTimeout(() => {
      this.#linger = undefined;
      if (this.#sleepers.size === 0) void this.close();
    }, LINGER_MS);
    this.#linger.unref?.();
  }

  /** Gives the LISTEN connection back (UNLISTEN first) and wakes whoever still waits. */
  async close(): Promise<void> {
    if (this.#linger !== undefined) clearTimeout(this.#linger);
    this.#linger = undefined;
    const p = this.#client;
    this.#client = undefined;
    for (const s of [...this.#sleepers]) s.wake();
    if (p === undefined) return;
    let client: PoolClient;
    try {
      client = await p;
    } catch {
      return;
    }
    this.#detach?.();
    this.#detach = undefined;
    try {
      await client.query('UNLISTEN *');
      client.release();
    } catch (err) {
      client.release(err instanceof Error ? err : new Error(String(err)));
    }
  }
}
