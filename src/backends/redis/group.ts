/**
 * Group commit of write batches (`writes.lua`): batches issued while a write call is in flight
 * leave together as ONE script call, each still atomic on its own, in order; chains of predicted
 * applies on one document are folded into one patch ({@link foldChains}).
 */
import { BackendError, LockstepError } from '../../errors.js';
import type { ScriptName } from './scripts.js';
import { type Reply, readReply, type Speculation } from './wire.js';

/** Most batches combined into one write call. */
const GROUP_MAX = 64;
/** Group-commit calls in flight at once (2 measured best: bigger groups, less Redis CPU). */
const GROUP_INFLIGHT = 2;
/**
 * Writers resumed per event-loop turn when a call's replies arrive (see `#send`). 16 writers on
 * one hot key, medians of 6-8 alternated runs: all at once 58.4-60.4k applies/s, waves of 8
 * 64.8-69.0k, waves of 4 50.2k, two halves of any size 59.6-62.8k (it keeps halving).
 */
const RESUME_WAVE = 8;

/** A write batch waiting for a group-commit call. */
export interface GroupEntry {
  keys: string[];
  env: object;
  spec: Speculation | undefined;
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
  write(keys: string[], env: object, spec?: Speculation): Promise<Reply> {
    if (this.#cluster) {
      return this.#run('write', keys, [JSON.stringify(env)]).then((raw) =>
        readReply<Reply>(raw, 'write'),
      );
    }
    return new Promise<Reply>((resolve, reject) => {
      this.#queue.push({ keys, env, spec, resolve, reject });
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
      const units = foldChains(batch);
      let unitReplies: Reply[];
      if (units.length === 1) {
        const only = units[0] as Unit;
        const raw = await this.#run('write', only.keys, [JSON.stringify(only.env)]);
        unitReplies = [readReply<Reply>(raw, 'write')];
      } else {
        const union: string[] = [];
        const index = new Map<string, number>();
        const subs = units.map((u) => ({
          k: u.keys.map((key) => {
            let i = index.get(key);
            if (i === undefined) {
              union.push(key);
              i = union.length;
              index.set(key, i);
            }
            return i;
          }),
          e: u.env,
        }));
        const raw = await this.#run('writes', union, [JSON.stringify(subs)]);
        unitReplies = readReply<Reply[]>(raw, 'write');
      }
      const replies: Reply[] = [];
      for (const [i, u] of units.entries()) {
        const r = unitReplies[i] as Reply;
        if (u.chain === undefined) replies.push(r);
        else for (const spec of u.chain) replies.push(chainReply(r, spec));
      }
      // Resume the writers in waves of RESUME_WAVE, one event-loop turn apart: each wave's next
      // writes then leave as their own call, and this process works on one wave while the other
      // wave's call is on the wire (16 writers: two calls of 8 overlapping, instead of 15 + 1).
      for (let i = 0; i < batch.length; i++) {
        if (i > 0 && i % RESUME_WAVE === 0) await new Promise<void>((r) => setImmediate(r));
        (batch[i] as GroupEntry).resolve(replies[i] as Reply);
      }
    } catch (err) {
      // The call failed (already a BackendError, outcomeUnknown when the reply was lost), or its
      // reply could not be read: the script ran, so every batch of the call may have landed.
      const e =
        err instanceof LockstepError
          ? err
          : new BackendError(
              'redis write: the reply could not be read; the write may or may not have been applied — read the document before retrying',
              { cause: err, outcomeUnknown: true },
            );
      for (const b of batch) b.reject(e);
    }
  }
}

/** One sub-batch of a `writes` call: an entry as sent, or a folded chain of speculations. */
export interface Unit {
  keys: string[];
  env: object;
  /** The speculations folded into this unit, in order (undefined: a plain entry). */
  chain?: Speculation[];
}

/**
 * Folds chains of predicted applies into one patch each. A chain is a run of consecutive entries
 * on one document, each a speculation whose base is the previous one's token (a lone speculation
 * is a chain of one): every outcome in it is already known exactly from the first base, so the
 * server only has to check that base (the first entry's `ck`) and store the last post-image as
 * plain `set`s, once, with the version advanced by the chain's length, and answer without the
 * document's fields (`nd`: the client has them). Applied one by one they would leave the same
 * document, versions, tokens and results; no state between them is ever visible (the call is
 * atomic), so each apply is still linearizable within its own call. A chain is answered per
 * entry with its own predicted document and results; a refusal or a "stale" answer is every
 * entry's answer (each retries).
 *
 * @example
 * ```ts
 * const units = foldChains(queued); // [{ keys, env, chain: [spec1, spec2, spec3] }, ...]
 * ```
 */
export function foldChains(batch: readonly GroupEntry[]): Unit[] {
  const units: Unit[] = [];
  let i = 0;
  while (i < batch.length) {
    const first = batch[i] as GroupEntry;
    let j = i + 1;
    if (first.spec) {
      let prev = first.spec;
      for (; j < batch.length; j++) {
        const next = (batch[j] as GroupEntry).spec;
        if (!next || next.doc !== prev.doc || next.base !== prev.token) break;
        prev = next;
      }
    }
    if (!first.spec) {
      units.push({ keys: first.keys, env: first.env });
      i += 1;
      continue;
    }
    const chain = batch.slice(i, j).map((e) => e.spec as Speculation);
    const head = chain[0] as Speculation;
    const last = chain[chain.length - 1] as Speculation;
    const touched = new Set<string>();
    for (const s of chain) for (const f of s.fields) touched.add(f);
    const ops = [...touched].map((f) =>
      Object.hasOwn(last.data, f)
        ? { o: 'set', f: JSON.stringify(f), v: JSON.stringify(last.data[f]) }
        : { o: 'unset', f: JSON.stringify(f) },
    );
    units.push({
      keys: [head.doc],
      env: {
        t: last.token,
        w: [{ k: 'patch', d: 1, ops, ck: { t: head.base, ok: true }, vb: chain.length }],
        sd: [1],
        nd: 1,
      },
      chain,
    });
    i = j;
  }
  return units;
}

/** The reply of one entry of a folded chain, from the chain's reply. */
function chainReply(r: Reply, spec: Speculation): Reply {
  if (r.ok !== 1) return r;
  const doc = r.docs[0];
  if (!doc) return r;
  return {
    ok: 1,
    docs: [{ v: spec.version, w: spec.token, c: doc.c, f: spec.data }],
    results: [spec.results],
  };
}
