/**
 * Group commit of write batches (`writes.lua`): batches issued while a write call is in flight
 * leave together as ONE script call, each still atomic on its own, in order.
 */
import type { ScriptName } from './scripts.js';
import type { Reply } from './wire.js';

/** Most batches combined into one write call. */
const GROUP_MAX = 64;
/** Group-commit calls in flight at once (2 measured best: bigger groups, less Redis CPU). */
const GROUP_INFLIGHT = 2;

/** A write batch waiting for a group-commit call. */
interface GroupEntry {
  keys: string[];
  env: object;
  resolve(r: Reply): void;
  reject(e: unknown): void;
}

/** Runs a script (errors already mapped to BackendError). */
type Run = (name: ScriptName, keys: string[], args: (string | number)[]) => Promise<unknown>;

/**
 * The group-commit queue of one backend (one connection).
 *
 * @example
 * ```ts
 * const group = new GroupCommit(run, false);
 * const reply = await group.write(['lockstep:{counter:hot}'], envelope);
 * ```
 */
export class GroupCommit {
  /** Write batches waiting for a call. */
  readonly #queue: GroupEntry[] = [];
  #inFlight = 0;
  #tick = false;
  readonly #run: Run;
  readonly #cluster: boolean;

  constructor(run: Run, cluster: boolean) {
    this.#run = run;
    this.#cluster = cluster;
  }

  /**
   * Group commit: a write batch sent while another write call is in flight waits, and all the
   * batches that gathered meanwhile go out together as ONE script call (`writes.lua`), run in
   * order, each atomic on its own with its own reply; the script loads each document once and
   * stores it once per call. A lone writer pays nothing extra. While a call is in flight, the
   * batches issued in one turn of the event loop (e.g. every writer that a reply just resumed)
   * are gathered until `setImmediate` and leave as one call, at most GROUP_INFLIGHT calls at
   * once: 16 writers on one hot key share a round trip, the socket write and the script's fixed
   * costs. Not in Cluster mode (one call must stay in one slot).
   */
  write(keys: string[], env: object): Promise<Reply> {
    if (this.#cluster) {
      return this.#run('write', keys, [JSON.stringify(env)]).then(
        (raw) => JSON.parse(raw as string) as Reply,
      );
    }
    return new Promise<Reply>((resolve, reject) => {
      this.#queue.push({ keys, env, resolve, reject });
      if (this.#inFlight === 0) this.#flush();
      else if (!this.#tick) {
        // Other calls are in flight: gather every batch issued in this turn of the event loop
        // (e.g. all the writers a reply just resumed) into one call.
        this.#tick = true;
        setImmediate(() => {
          this.#tick = false;
          this.#flush();
        });
      }
    });
  }

  /** Sends queued batches, at most GROUP_INFLIGHT calls at once (one connection: in order). */
  #flush(): void {
    while (this.#queue.length > 0 && this.#inFlight < GROUP_INFLIGHT) {
      const batch = this.#queue.splice(0, GROUP_MAX);
      this.#inFlight += 1;
      void this.#send(batch).finally(() => {
        this.#inFlight -= 1;
        this.#flush();
      });
    }
  }

  async #send(batch: GroupEntry[]): Promise<void> {
    try {
      let replies: Reply[];
      if (batch.length === 1) {
        const only = batch[0] as GroupEntry;
        const raw = await this.#run('write', only.keys, [JSON.stringify(only.env)]);
        replies = [JSON.parse(raw as string) as Reply];
      } else {
        const union: string[] = [];
        const index = new Map<string, number>();
        const subs = batch.map((b) => ({
          k: b.keys.map((key) => {
            let i = index.get(key);
            if (i === undefined) {
              union.push(key);
              i = union.length;
              index.set(key, i);
            }
            return i;
          }),
          e: b.env,
        }));
        const raw = await this.#run('writes', union, [JSON.stringify(subs)]);
        replies = JSON.parse(raw as string) as Reply[];
      }
      for (const [i, b] of batch.entries()) b.resolve(replies[i] as Reply);
    } catch (err) {
      for (const b of batch) b.reject(err);
    }
  }
}
