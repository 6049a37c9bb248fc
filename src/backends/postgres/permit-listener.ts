/**
 * The one LISTEN connection of a backend, waking semaphore waiters at the head of their pool's
 * queue when units come back (a holder's release NOTIFYs the pool's key on the schema's channel).
 *
 * Why one connection of its own: a pooled connection in LISTEN state would hand notifications
 * to whoever checks it out next, and waiters may hold every pooled connection. It is opened when
 * the first head starts waiting and closed when the last one stops, so an idle backend keeps no
 * listener. When it drops (the server ended the session, the network), it reconnects while
 * anyone waits, and wakes every waiter once LISTEN is in force again: notifications sent while
 * it was gone are lost, so each waiter looks again.
 *
 * Opening it costs a connection (milliseconds); under contention heads come and go at every
 * hand-off. So once open it stays open while anything of this backend uses the pools — a waiter,
 * or a semaphore permit held or being acquired ({@link PermitListener.hold}) — and closes the
 * moment the backend's semaphores are idle. Uncontended use never opens it.
 */
import pg from 'pg';
import type { PgContext } from './context.js';
import { ident, lockHash } from './sql.js';

/** The NOTIFY channel of a schema's semaphore releases (an identifier under 63 bytes). */
export function permitChannel(schema: string): string {
  return `lockstep_permit_${lockHash('channel', schema).replace('-', 'm')}`;
}

/**
 * @internal the LISTEN connection of one backend.
 *
 * @example
 * ```ts
 * const stop = listener.watch(poolKey, () => recheck());
 * await listener.ready();
 * ```
 */
export class PermitListener {
  readonly #ctx: PgContext;
  readonly #channel: string;
  /** Per pool key: the waiters to wake. */
  readonly #watchers = new Map<string, Set<() => void>>();
  #count = 0;
  /** Holds keeping an open connection open (held permits, acquires in flight); never open it. */
  #holds = 0;
  #client: pg.Client | undefined;
  /** Resolves once LISTEN is in force on the current client (rejects when connecting failed). */
  #ready: Promise<void> | undefined;
  #retry: NodeJS.Timeout | undefined;
  #attempt = 0;
  #listening = false;

  constructor(ctx: PgContext) {
    this.#ctx = ctx;
    this.#channel = permitChannel(ctx.schema);
  }

  /** The channel releases notify (for the release statement). */
  get channel(): string {
    return this.#channel;
  }

  /** LISTEN is in force now: a watcher added now hears every release committed from now on. */
  get listening(): boolean {
    return this.#listening;
  }

  /** Open connections (0 or 1): what an idle backend must bring back to 0. */
  get connections(): number {
    return this.#client === undefined ? 0 : 1;
  }

  /**
   * Calls `wake` on every notification for `poolKey` and after every reconnection, until the
   * returned function is called. The first watcher opens the connection.
   */
  watch(poolKey: string, wake: () => void): () => void {
    let set = this.#watchers.get(poolKey);
    if (!set) this.#watchers.set(poolKey, (set = new Set()));
    set.add(wake);
    this.#count++;
    if (this.#client === undefined && this.#retry === undefined) this.#open();
    let on = true;
    return () => {
      if (!on) return;
      on = false;
      const s = this.#watchers.get(poolKey);
      s?.delete(wake);
      if (s?.size === 0) this.#watchers.delete(poolKey);
      this.#count = Math.max(0, this.#count - 1);
      if (this.#count === 0 && this.#holds === 0) this.#shut();
    };
  }

  /**
   * Keeps the connection open, if it is, until the returned function is called (it never opens
   * it): a semaphore permit held or being acquired, whose pool may need a head woken soon.
   */
  hold(): () => void {
    this.#holds++;
    let on = true;
    return () => {
      if (!on) return;
      on = false;
      // close() may have zeroed the count meanwhile.
      this.#holds = Math.max(0, this.#holds - 1);
      if (this.#count === 0 && this.#holds === 0) this.#shut();
    };
  }

  /**
   * Resolves once LISTEN is in force (notifications from then on reach the watchers). Rejects
   * when the connection could not be opened; the listener keeps retrying while anyone watches.
   */
  ready(): Promise<void> {
    return this.#ready ?? Promise.reject(new Error('the permit listener is not open'));
  }

  #open(): void {
    const options = (this.#ctx.pool as unknown as { options?: pg.ClientConfig }).options;
    const client = new pg.Client(options);
    this.#client = client;
    client.on('error', () => this.#dropped(client));
    client.on('end', () => this.#dropped(client));
    client.on('notification', (msg) => {
      if (msg.channel !== this.#channel || msg.payload === undefined) return;
      const set = this.#watchers.get(msg.payload);
      if (set) for (const wake of [...set]) wake();
    });
    const ready = (async () => {
      await client.connect();
      await client.query(`LISTEN ${ident(this.#channel)}`);
    })();
    ready.catch(() => this.#dropped(client));
    this.#ready = ready.then(() => {
      if (this.#client !== client) return;
      this.#attempt = 0;
      this.#listening = true;
      // Anything released while we were not listening was not heard: everyone looks again.
      this.#wakeAll();
    });
    this.#ready.catch(() => {});
  }

  /** The connection failed: reconnect (with a short backoff) while anyone watches. */
  #dropped(client: pg.Client): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    this.#ready = undefined;
    this.#listening = false;
    client.removeAllListeners('notification');
    client.on('error', () => {});
    void client.end().catch(() => {});
    if (this.#count === 0 || this.#ctx.closed) return;
    const ms = Math.min(1000, 10 * 2 ** this.#attempt++);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (this.#count > 0 && !this.#ctx.closed) this.#open();
    }, ms);
    this.#retry.unref();
    // Waiters keep their own fallback timers meanwhile; wake them so they look once now.
    this.#wakeAll();
  }

  #wakeAll(): void {
    for (const set of this.#watchers.values()) for (const wake of [...set]) wake();
  }

  #shut(): void {
    clearTimeout(this.#retry);
    this.#retry = undefined;
    const client = this.#client;
    this.#client = undefined;
    this.#ready = undefined;
    this.#listening = false;
    if (client) {
      client.removeAllListeners('notification');
      client.on('error', () => {});
      void client.end().catch(() => {});
    }
  }

  /** Closes the connection whatever is watching (backend close). */
  close(): void {
    this.#watchers.clear();
    this.#count = 0;
    this.#holds = 0;
    this.#shut();
  }
}
