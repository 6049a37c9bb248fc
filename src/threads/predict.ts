/**
 * Predicted schema checks for remote backends: a patch's `check` (the schema validation of its
 * post-image) lives in the client's thread, and asking for it from the owner is a round trip in
 * the middle of the write — which, on a hot document, serializes every writer behind it. So the
 * client predicts: from the last state of the document it knows (what it read or wrote, or the
 * predicted post-image of its own write still in flight: predictions chain, as the owner applies
 * one connection's writes in order), it computes the post-image with the reference op semantics
 * (`applyOps`), runs the check on it here, and sends the predicted post-image with the verdict.
 * The owner's check then compares the real post-image with the predicted one (deep equality):
 * equal, the verdict is exact (a check is a function of the post-image) and the write installs in
 * one synchronous step; different (another client wrote, a prediction went stale), it asks the
 * client as before. Async checks, and checks that throw, are never predicted.
 *
 * @example
 * ```ts
 * const predictor = new Predictor();
 * const predictions = predictor.predict(writes, seq); // sent with the call
 * predictor.settled(writes, seq, result);             // the owner's answer updates the cache
 * ```
 */
import { applyOps, evalGuards } from '../store/apply-ops.js';
import type { CheckIssue, Data, DocWrite, StoredDoc, WriteResult } from '../store/backend.js';

/** Documents remembered at most (the oldest are forgotten first). */
const MAX_DOCS = 10_000;

/** A predicted check: the post-image it was run on, and what it answered. */
export type Prediction = readonly [data: Data, verdict: readonly CheckIssue[] | undefined];

interface Known {
  data: Data;
  /** The write that made this state (a prediction while `settled` is false). */
  seq: number;
  settled: boolean;
}

function id(model: string, key: string): string {
  return `${model}\u0000${key}`;
}

/** The per-document cache of one remote backend, and the predictions made from it. */
export class Predictor {
  readonly #known = new Map<string, Known>();

  #set(k: string, v: Known): void {
    this.#known.delete(k);
    this.#known.set(k, v);
    if (this.#known.size > MAX_DOCS) {
      const oldest = this.#known.keys().next().value as string;
      this.#known.delete(oldest);
    }
  }

  /**
   * One prediction per write that carries a check, in batch order (undefined: not predicted).
   * Undefined when the batch has no check at all.
   */
  predict(writes: readonly DocWrite[], seq: number): Array<Prediction | undefined> | undefined {
    let out: Array<Prediction | undefined> | undefined;
    for (const w of writes) {
      if (w.kind !== 'patch' || typeof w.check !== 'function') continue;
      out ??= [];
      const k = id(w.model, w.key);
      const known = this.#known.get(k);
      if (known === undefined || (w.guards !== undefined && !evalGuards(known.data, w.guards))) {
        out.push(undefined);
        continue;
      }
      const post = applyOps(known.data, w.ops);
      if (!post.ok) {
        out.push(undefined);
        continue;
      }
      let verdict: unknown;
      try {
        verdict = w.check(post.data);
      } catch {
        out.push(undefined); // the owner's call of the check throws it for real
        continue;
      }
      if (verdict !== null && typeof verdict === 'object' && 'then' in verdict) {
        (verdict as Promise<unknown>).then(undefined, () => {});
        out.push(undefined);
        continue;
      }
      const issues = verdict as readonly CheckIssue[] | undefined;
      out.push([post.data, issues]);
      // The next write of this thread predicts on top of this one (if it applies).
      if (issues === undefined || issues.length === 0) {
        this.#set(k, { data: post.data, seq, settled: false });
      }
    }
    return out;
  }

  /** The owner answered write `seq` (`result` undefined: it failed): what is known now. */
  settled(writes: readonly DocWrite[], seq: number, result: WriteResult | undefined): void {
    for (let i = 0; i < writes.length; i++) {
      const w = writes[i] as DocWrite;
      const k = id(w.model, w.key);
      const known = this.#known.get(k);
      // A later write of this thread predicted on top of this one: its answer will tell.
      if (known !== undefined && !known.settled && known.seq !== seq) continue;
      const doc = result?.applied ? result.docs[i] : undefined;
      if (result?.applied && doc !== undefined)
        this.#set(k, { data: doc.data, seq, settled: true });
      else this.#known.delete(k);
    }
  }

  /** Snapshots read (a read, a lease): remembered unless a prediction of this thread is pending. */
  saw(model: string, keys: readonly string[], docs: ReadonlyArray<StoredDoc | undefined>): void {
    for (let i = 0; i < keys.length; i++) {
      const k = id(model, keys[i] as string);
      const known = this.#known.get(k);
      if (known !== undefined && !known.settled) continue;
      const doc = docs[i];
      if (doc === undefined) this.#known.delete(k);
      else this.#set(k, { data: doc.data, seq: 0, settled: true });
    }
  }
}
