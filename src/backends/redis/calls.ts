/**
 * The script calls of one backend that wait for their reply. Each fails with BackendError
 * (`outcomeUnknown` when it writes) when its command timeout passes, or as soon as the
 * connection it was written on closes: ioredis neither resends such a command
 * (`autoResendUnfulfilledCommands: false`) nor fails it, so it would otherwise wait for its
 * timeout, or forever without one.
 *
 * The timeout is kept here rather than by ioredis (`commandTimeout`, one timer per command): one
 * sweep timer, running only while calls are in flight, checks every deadline.
 */
import { toBackendError } from './client.js';

interface Call {
  readonly deadline: number;
  /** Written on a ready connection (a call made while disconnected waits in ioredis's queue). */
  readonly onWire: boolean;
  readonly fail: (err: unknown) => void;
}

/**
 * In-flight calls with their deadlines.
 *
 * @example
 * ```ts
 * const calls = new InflightCalls(10_000);
 * const reply = await calls.run('commit script', true, client.status === 'ready', () => client.fcall(...));
 * client.on('close', () => calls.connectionClosed());
 * ```
 */
export class InflightCalls {
  readonly #calls = new Set<Call>();
  readonly #timeoutMs: number | undefined;
  #sweeper: NodeJS.Timeout | undefined;

  /** `timeoutMs`: how long a call may wait for its reply (undefined: no limit). */
  constructor(timeoutMs: number | undefined) {
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Runs `send`; its failure, a timeout or the loss of the connection (when `onWire`) rejects
   * with BackendError naming `what`. `retry`, given the error `send` failed with, may return a
   * second attempt (the same deadline applies), or undefined to fail.
   */
  run<T>(
    what: string,
    writes: boolean,
    onWire: boolean,
    send: () => Promise<T>,
    retry?: (err: unknown) => Promise<T> | undefined,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const call: Call = {
        deadline: this.#timeoutMs === undefined ? Infinity : performance.now() + this.#timeoutMs,
        onWire,
        fail: (err: unknown) => {
          if (settled) return;
          settled = true;
          this.#calls.delete(call);
          reject(toBackendError(what, err, writes));
        },
      };
      this.#calls.add(call);
      if (this.#timeoutMs !== undefined && !this.#sweeper) this.#startSweeping(this.#timeoutMs);
      const done = (v: T) => {
        if (settled) return;
        settled = true;
        this.#calls.delete(call);
        resolve(v);
      };
      send().then(done, (err: unknown) => {
        const again = settled ? undefined : retry?.(err);
        if (again) again.then(done, call.fail);
        else call.fail(err);
      });
    });
  }

  /** The connection closed: every call written on it fails now (its outcome is unknown). */
  connectionClosed(): void {
    const lost = new Error('the connection to Redis closed before the reply arrived');
    for (const c of [...this.#calls]) if (c.onWire) c.fail(lost);
  }

  /** Stops the sweep timer (closing the backend). */
  stop(): void {
    if (this.#sweeper) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  #startSweeping(timeoutMs: number): void {
    // A call fails between its deadline and a quarter of the timeout later.
    this.#sweeper = setInterval(
      () => {
        if (this.#calls.size === 0) {
          this.stop();
          return;
        }
        const now = performance.now();
        const timedOut = new Error('Command timed out');
        for (const c of [...this.#calls]) if (c.deadline <= now) c.fail(timedOut);
      },
      Math.max(5, Math.min(1_000, timeoutMs / 4)),
    );
    this.#sweeper.unref();
  }
}
