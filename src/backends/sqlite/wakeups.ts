/**
 * Waking waiters without polling, across processes: one small "wake file" next to the database
 * (`<path>-lockstep-wake`). Whoever ends a lease (commit, release) writes one byte into it; every
 * process with a waiter on that database watches it with `fs.watch` (inotify on Linux, FSEvents
 * on macOS), so its waiters try again within about a millisecond. Waiters of the process that
 * ended the lease are woken directly, before the file is even written. A process with no waiter
 * watches nothing: idle, this costs one `pwrite` per lease end and no timer.
 *
 * A waiter also sets one timer, for the moment the lease that blocks it expires (its holder may
 * have died): so a dead holder's key is free within its `leaseMs`, and a missed notification
 * (a file system without change events) costs at most that wait. Where the wake file cannot be
 * created or watched, waiters re-check every {@link FALLBACK_POLL_MS} ms instead.
 *
 * One channel per database file and process, shared by every backend on that file.
 *
 * @example
 * ```ts
 * const ch = channelFor('/data/app.db');
 * const gen = ch.generation;          // before the attempt that found the key busy
 * const stop = ch.watch();            // while waiting
 * await ch.changed(gen, expiresAt, deadline, signal, cancels);
 * stop();
 * ch.notify();                        // after a lease ended
 * ```
 */
import { closeSync, type FSWatcher, openSync, watch, writeSync } from 'node:fs';
import { LockTimeoutError } from '../../errors.js';

/** How often a waiter re-checks when no change events can be had. */
export const FALLBACK_POLL_MS = 25;

/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2_147_483_647;

/** Why a wait ended: something changed, the blocker's expiry is due, or the deadline passed. */
export type WaitOutcome = 'changed' | 'due';

/** A waiting operation's cancellation hook, called by `close()` with the error to reject with. */
export type Cancel = (error: unknown) => void;

const BYTE = Buffer.from([1]);

/**
 * The wake-up channel of one database file in this process.
 *
 * @example
 * ```ts
 * channelFor(path).notify();
 * ```
 */
export class WakeChannel {
  /** +1 on every wake-up (ours or another process's). */
  generation = 0;
  readonly #file: string | undefined;
  readonly #listeners = new Set<() => void>();
  #watcher: FSWatcher | undefined;
  #watching = 0;
  #fd: number | undefined;
  /** The wake file could not be written or watched: waiters poll. */
  broken = false;

  constructor(file: string | undefined) {
    this.#file = file;
  }

  /** Wakes every waiter of this process now, and those of other processes through the file. */
  notify(): void {
    this.#bump();
    if (this.#file === undefined || this.broken) return;
    try {
      this.#fd ??= openSync(this.#file, 'a+');
      writeSync(this.#fd, BYTE, 0, 1, 0);
    } catch {
      this.broken = true;
    }
  }

  #bump(): void {
    this.generation += 1;
    for (const l of [...this.#listeners]) l();
  }

  /** Watches the file while at least one waiter needs it; returns the matching unwatch. */
  watch(): () => void {
    this.#watching += 1;
    if (this.#watcher === undefined && this.#file !== undefined && !this.broken) {
      try {
        closeSync(openSync(this.#file, 'a'));
        const w = watch(this.#file, { persistent: true }, () => this.#bump());
        w.on('error', () => {
          this.broken = true;
          this.#unwatch();
          this.#bump();
        });
        this.#watcher = w;
      } catch {
        this.broken = true;
      }
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#watching -= 1;
      if (this.#watching === 0) this.#unwatch();
    };
  }

  #unwatch(): void {
    this.#watcher?.close();
    this.#watcher = undefined;
  }

  /** True when waiters must poll (no file to watch, or it failed). */
  get polls(): boolean {
    return this.#file === undefined ? false : this.broken;
  }

  /**
   * Resolves once the generation moved past `since` ('changed'), or at `dueAt` (the blocking
   * lease's expiry, machine clock ms: 'due'); rejects with LockTimeoutError(`lock`) at `deadline`,
   * with `signal.reason` on abort, or with what `cancels` is called with (close()).
   */
  changed(
    since: number,
    dueAt: number | undefined,
    wait: {
      readonly deadline: number | undefined;
      readonly started: number;
      readonly lock: string;
      readonly signal: AbortSignal | undefined;
      readonly cancels: Set<Cancel>;
    },
  ): Promise<WaitOutcome> {
    if (this.generation !== since) return Promise.resolve('changed');
    return new Promise<WaitOutcome>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const { signal, cancels, deadline } = wait;
      const end = () => {
        clearTimeout(timer);
        this.#listeners.delete(onChange);
        signal?.removeEventListener('abort', onAbort);
        cancels.delete(onCancel);
      };
      const onChange = () => {
        end();
        resolve('changed');
      };
      const onAbort = () => {
        end();
        reject(signal?.reason);
      };
      const onCancel: Cancel = (error) => {
        end();
        reject(error);
      };
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      this.#listeners.add(onChange);
      signal?.addEventListener('abort', onAbort, { once: true });
      cancels.add(onCancel);
      const now = Date.now();
      let at = dueAt === undefined ? Number.POSITIVE_INFINITY : dueAt + 1;
      if (this.polls) at = Math.min(at, now + FALLBACK_POLL_MS);
      const timedOut = deadline !== undefined && deadline <= at;
      if (timedOut) at = deadline;
      if (Number.isFinite(at)) {
        timer = setTimeout(
          () => {
            end();
            if (timedOut) reject(new LockTimeoutError(wait.lock, Date.now() - wait.started));
            else resolve('due');
          },
          Math.min(MAX_TIMER_MS, Math.max(0, at - now)),
        );
      }
    });
  }

  /** Closes the file and the watcher (the last backend on this file closed). */
  close(): void {
    this.#unwatch();
    if (this.#fd !== undefined) {
      try {
        closeSync(this.#fd);
      } catch {
        // already closed
      }
      this.#fd = undefined;
    }
  }
}

const channels = new Map<string, { channel: WakeChannel; users: number }>();

/**
 * The channel of `file` (undefined: an in-memory database, in-process wake-ups only), shared by
 * every backend of this process on that file; `release` it when the backend closes.
 */
export function channelFor(file: string | undefined): {
  channel: WakeChannel;
  release: () => void;
} {
  const id = file ?? `memory:${Math.random()}`;
  let entry = channels.get(id);
  if (!entry) {
    entry = { channel: new WakeChannel(file), users: 0 };
    channels.set(id, entry);
  }
  entry.users += 1;
  const e = entry;
  let released = false;
  return {
    channel: e.channel,
    release: () => {
      if (released) return;
      released = true;
      e.users -= 1;
      if (e.users === 0) {
        e.channel.close();
        channels.delete(id);
      }
    },
  };
}
