/**
 * Waiter wake-ups: one pub/sub connection per backend, on the backend's own channel. A release
 * or commit script publishes "<waiter id>" (wake up and try again) or "<waiter id> <grant>" (the
 * lease was handed to you: fence and snapshot). Wake-ups for waiters of the process that ran the
 * release or commit come back in that script's reply instead ({@link Wakeups.dispatch}). After a
 * reconnect every waiter re-checks, since messages published meanwhile are lost.
 */
import { Cluster, type Redis } from 'ioredis';
import { toBackendError } from './client.js';
import type { WireDoc } from './wire.js';

/** A lease handed to a waiter by a release: its fences and the documents as of the hand-off. */
export interface Grant {
  ok: 1;
  fences: number[];
  docs: Array<WireDoc | null>;
  /** Set in a commit's reply: the document is as that commit left it, sent without its fields. */
  p?: 1;
}

/** Wake-ups returned in a script's reply: [waiter id, grant or null (wake up, try again)]. */
export type LocalWakeups = Array<[string, Grant | null]>;

/**
 * The wake-up channel of one backend.
 *
 * @example
 * ```ts
 * const wakeups = new Wakeups(client, 'lockstep:w:k3Jd9a');
 * await wakeups.subscribe();
 * wakeups.waiters.set(wid, (grant) => ...);
 * ```
 */
export class Wakeups {
  /** Waiter id -> wake-up callback (with the grant, when the lease was handed over). */
  readonly waiters = new Map<string, (grant?: Grant) => void>();
  #sub: Redis | Cluster | undefined;
  #subReady: Promise<void> | undefined;
  readonly #client: Redis | Cluster;
  readonly #channel: string;

  readonly #timeoutMs: number | undefined;

  /** `timeoutMs`: how long SUBSCRIBE may wait for its reply (undefined: as `client` is set up). */
  constructor(client: Redis | Cluster, channel: string, timeoutMs?: number) {
    this.#client = client;
    this.#channel = channel;
    this.#timeoutMs = timeoutMs;
  }

  /** Subscribed (no need to wait for {@link subscribe}). */
  #subscribed = false;

  /**
   * Opens the pub/sub connection that delivers wake-ups (once); undefined once it is open, so
   * that the common case costs no promise.
   */
  subscribe(): Promise<void> | undefined {
    if (this.#subscribed) return undefined;
    this.#subReady ??= (async () => {
      const sub =
        this.#timeoutMs === undefined || this.#client instanceof Cluster
          ? this.#client.duplicate()
          : (this.#client as Redis).duplicate({ commandTimeout: this.#timeoutMs });
      this.#sub = sub;
      sub.on('error', () => {
        /* reconnects on its own; waiters fall back to their timers meanwhile */
      });
      sub.on('message', (_channel: string, msg: string) => {
        const space = msg.indexOf(' ');
        const wid = space < 0 ? msg : msg.slice(0, space);
        const waiter = this.waiters.get(wid);
        if (waiter) waiter(space < 0 ? undefined : (JSON.parse(msg.slice(space + 1)) as Grant));
      });
      // Wake-ups published while we were disconnected are lost: re-check every waiter.
      sub.on('ready', () => {
        this.recheckAll();
      });
      try {
        await sub.subscribe(this.#channel);
        if (this.#sub === sub) this.#subscribed = true;
      } catch (err) {
        this.#subReady = undefined;
        this.#sub = undefined;
        sub.disconnect();
        throw toBackendError('subscribe', err, false);
      }
    })();
    return this.#subReady;
  }

  /**
   * Delivers wake-ups that came back in a script's reply; returns whether any waiter of ours was
   * woken. A waiter that is gone meanwhile left its queue (or will, with `leave`), which also
   * gives back a lease handed to it.
   */
  dispatch(wakeups: LocalWakeups | undefined): boolean {
    if (!wakeups) return false;
    let woke = false;
    for (const [wid, grant] of wakeups) {
      const waiter = this.waiters.get(wid);
      if (!waiter) continue;
      waiter(grant ?? undefined);
      woke = true;
    }
    return woke;
  }

  /**
   * Wakes every waiter of this backend to look again: a commit or release whose reply was lost
   * may have handed one of them the lease (the grant was in that reply). Each re-runs `acquire`,
   * which answers "already yours" to the one that was granted.
   */
  recheckAll(): void {
    for (const w of this.waiters.values()) w();
  }

  /** Closes the pub/sub connection (if it was opened). */
  async close(): Promise<void> {
    const sub = this.#sub;
    this.#sub = undefined;
    this.#subReady = undefined;
    this.#subscribed = false;
    if (sub) await sub.quit().catch(() => sub.disconnect());
  }
}
