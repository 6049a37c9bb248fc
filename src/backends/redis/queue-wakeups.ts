/**
 * Wake-ups of the Redis job queues: one subscriber connection per backend (a duplicate of the
 * client), subscribed to a queue's channel only while claimers of it wait, and closed a moment
 * after the last one left. An enqueue (or retry) script PUBLISHes the number of jobs it made
 * claimable; that many waiting claimers of the queue are woken, in FIFO order. After a reconnect
 * every waiter is woken (messages published meanwhile are lost) and claims again.
 */
import type { Redis } from 'ioredis';

/** How long the subscriber connection outlives its last waiter. */
const LINGER_MS = 2000;

/** One waiting claimer. */
export interface Sleeper {
  readonly channel: string;
  wake(): void;
}

/**
 * The subscriber connection and the claimers waiting on it.
 *
 * @example
 * ```ts
 * await wakeups.add(sleeper); // subscribed before the claimer's last look
 * wakeups.remove(sleeper);
 * ```
 */
export class QueueWakeups {
  readonly #client: Redis;
  readonly #sleepers = new Map<string, Set<Sleeper>>();
  #sub: Redis | undefined;
  #subscribed = new Map<string, Promise<unknown>>();
  #linger: NodeJS.Timeout | undefined;

  constructor(client: Redis) {
    this.#client = client;
  }

  /** Claimers waiting, and whether the subscriber connection is open (leak checks). */
  stats(): { sleepers: number; listening: boolean } {
    let n = 0;
    for (const s of this.#sleepers.values()) n += s.size;
    return { sleepers: n, listening: this.#sub !== undefined };
  }

  #connection(): Redis {
    if (this.#sub === undefined) {
      const sub = this.#client.duplicate({ lazyConnect: false, enableOfflineQueue: true });
      sub.on('error', () => {});
      sub.on('message', (ch: string, msg: string) => {
        const set = this.#sleepers.get(ch);
        if (set === undefined) return;
        let n = Number(msg) || 1;
        for (const s of set) {
          if (n-- <= 0) break;
          set.delete(s);
          s.wake();
        }
      });
      // Messages published while the connection was down are lost: everyone looks again.
      sub.on('ready', () => {
        for (const set of this.#sleepers.values()) for (const s of [...set]) s.wake();
      });
      this.#sub = sub;
    }
    return this.#sub;
  }

  /** Registers `s`; resolves once its channel is subscribed. */
  async add(s: Sleeper): Promise<void> {
    if (this.#linger !== undefined) {
      clearTimeout(this.#linger);
      this.#linger = undefined;
    }
    let set = this.#sleepers.get(s.channel);
    if (set === undefined) {
      set = new Set();
      this.#sleepers.set(s.channel, set);
    }
    set.add(s);
    const sub = this.#connection();
    let p = this.#subscribed.get(s.channel);
    if (p === undefined) {
      p = sub.subscribe(s.channel);
      this.#subscribed.set(s.channel, p);
      p.catch(() => this.#subscribed.delete(s.channel));
    }
    await p;
  }

  /** Unregisters `s` (idempotent). */
  remove(s: Sleeper): void {
    const set = this.#sleepers.get(s.channel);
    if (set === undefined) return;
    set.delete(s);
    if (set.size > 0) return;
    this.#sleepers.delete(s.channel);
    if (this.#sleepers.size > 0 || this.#sub === undefined || this.#linger !== undefined) return;
    this.#linger = setTimeout(() => {
      this.#linger = undefined;
      if (this.#sleepers.size === 0) void this.close();
    }, LINGER_MS);
  }

  /** Closes the subscriber connection and wakes whoever still waits. */
  async close(): Promise<void> {
    if (this.#linger !== undefined) clearTimeout(this.#linger);
    this.#linger = undefined;
    const sub = this.#sub;
    this.#sub = undefined;
    this.#subscribed = new Map();
    for (const set of this.#sleepers.values()) for (const s of [...set]) s.wake();
    if (sub === undefined) return;
    // Ours alone, with nothing to flush: a quit could wait for a connection being re-made.
    sub.disconnect();
  }
}
