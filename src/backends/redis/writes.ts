/**
 * The write path: batch validation and compilation for the scripts (`plan`), and the prediction
 * pipeline that lets a schema-checked `apply` commit in ONE round trip (`runBatch`): a bounded
 * per-process cache of the documents this process wrote, predicted post-images chained across
 * concurrent writes, admission per document, and a retry when another process moved the
 * document.
 */
import { BackendError, ValidationError } from '../../errors.js';
import { applyOps, evalGuards } from '../../store/apply-ops.js';
import type { CheckIssue, Data, DocRef, DocWrite, Json, WriteResult } from '../../store/backend.js';
import { clusterSlot, type DocKeys, type KeyLayout } from './keys.js';
import type { ScriptName } from './scripts.js';
import {
  encodeData,
  encodeGuard,
  encodeOp,
  isThenable,
  nextId,
  type Reply,
  type Speculation,
  toDoc,
  type WireDoc,
} from './wire.js';

/** Bound on client-side cached documents (used to predict post-images for checks). */
const CACHE_MAX = 10_000;
/** Checked writes predicted and in flight at once per document (see `#admit`). */
const PIPELINE_DEPTH = 16;

interface CacheEntry {
  version: number;
  token: string;
  data: Data;
  epoch: number;
}

/** What `#predict` found: bases used per document, check issues per write, whether it speculated. */
interface Prediction {
  readonly used: Map<number, { token: string; epoch: number }>;
  readonly issues: Map<number, readonly CheckIssue[]>;
  readonly speculated: boolean;
  /** For a batch of one checked patch predicted to apply: its exact predicted outcome. */
  readonly outcome?: Outcome;
}

/** The exact predicted outcome of a batch of one checked patch (post-image, version, results). */
export interface Outcome {
  readonly data: Data;
  readonly version: number;
  readonly results: Json[];
}

/**
 * Sends one attempt's envelope to a script and returns its reply. `spec`, when given, is the
 * exact predicted outcome of a one-write batch that group commit may fold with its neighbours;
 * `outcome`, the predicted outcome of any one-write batch predicted to apply (a lock commit may
 * then be answered without the document's fields).
 */
export type Send = (
  keys: string[],
  env: object,
  spec?: Speculation,
  outcome?: Outcome,
) => Promise<Reply>;

/** A write batch compiled for the scripts. */
export interface Plan {
  /** Per document (d = index + 1): its keys. */
  readonly docs: DocKeys[];
  readonly refs: DocRef[];
  /** Flat KEYS: the document hashes. */
  readonly keys: string[];
  /** Per write: the document index (0-based). */
  readonly docOf: number[];
  readonly writes: readonly DocWrite[];
  /** Envelope writes (mutated with `ck` before each attempt). */
  readonly wire: Array<{ [k: string]: unknown }>;
  readonly checked: boolean;
}

/**
 * How a plain write waits for an exclusive lease of the default action (see write-wait.ts):
 * `queue` is what its attempts carry once it queued (undefined before its first "locked"),
 * `locked` is called on every "locked" answer (with the index in `Plan.docs` of the locked
 * document) and resolves when to send the batch again (or
 * rejects: timeout, abort, close), `finish` once the batch is over (`ran`: the script ran it,
 * applied or refused, and so took the writer's queue entries out).
 */
export interface LockWait {
  readonly queue: { readonly q: string; readonly ch: string; readonly qt: number } | undefined;
  locked(index: number, retryMs: number): Promise<void>;
  finish(ran: boolean): Promise<void> | undefined;
}

/** A write found a live exclusive lease of the default action on write `index`'s document. */
interface Locked {
  readonly locked: number;
  readonly retry: number;
}

/** Runs a script (errors already mapped to BackendError). */
type Script = (
  name: ScriptName,
  keys: string[],
  args: (string | number)[],
  writes: boolean,
) => Promise<unknown>;

/**
 * The write path of one backend: plans batches and runs them with predicted checks.
 *
 * @example
 * ```ts
 * const path = new WritePath({ layout, cluster: false, instance, script });
 * const result = await path.runBatch(path.plan(writes, 'store.apply'), send);
 * ```
 */
export class WritePath {
  readonly #layout: KeyLayout;
  readonly #cluster: boolean;
  readonly #instance: string;
  readonly #script: Script;
  readonly #cache = new Map<string, CacheEntry>();
  #epoch = 0;
  /** Checked writes in flight per document key, and the FIFO of writes waiting to enter. */
  readonly #inflight = new Map<string, number>();
  readonly #admission: Array<{ fits(): boolean; go(): void }> = [];

  constructor(o: { layout: KeyLayout; cluster: boolean; instance: string; script: Script }) {
    this.#layout = o.layout;
    this.#cluster = o.cluster;
    this.#instance = o.instance;
    this.#script = o.script;
  }

  /** Drops every cached document (close). */
  clear(): void {
    this.#cache.clear();
  }

  /**
   * Compiles a batch for the scripts. The batch is well-formed: the boundary
   * (src/store/boundary.ts) checked its kinds, names, keys, ops, guards and JSON values before it
   * reached this backend. Only what is Redis's own is refused here: documents in different
   * Cluster slots (ValidationError).
   */
  plan(writes: readonly DocWrite[], what: string): Plan {
    const index = new Map<string, number>();
    const docs: DocKeys[] = [];
    const refs: DocRef[] = [];
    const docOf: number[] = [];
    const wire: Array<{ [k: string]: unknown }> = [];
    let checked = false;
    for (const w of writes) {
      const id = `${w.model}\u0000${w.key}`;
      let d = index.get(id);
      if (d === undefined) {
        d = docs.length;
        index.set(id, d);
        docs.push(this.#layout.doc(w.model, w.key));
        refs.push({ model: w.model, key: w.key });
      }
      docOf.push(d);
      const e: { [k: string]: unknown } = { k: w.kind, d: d + 1 };
      switch (w.kind) {
        case 'create':
        case 'put':
          e.data = encodeData(w.data);
          if (w.ttlMs !== undefined) e.ttl = w.ttlMs;
          break;
        case 'delete':
          if (w.expectVersion !== undefined) e.ev = w.expectVersion;
          break;
        case 'patch': {
          e.ops = w.ops.map(encodeOp);
          if (w.guards !== undefined && w.guards.length > 0) e.g = w.guards.map(encodeGuard);
          if (w.expectVersion !== undefined) e.ev = w.expectVersion;
          if (w.expectIncarnation !== undefined) e.ei = w.expectIncarnation;
          if (w.fieldsUnchangedSince !== undefined) e.fs = w.fieldsUnchangedSince;
          if (w.check !== undefined) checked = true;
          if (w.ttlMs !== undefined) e.ttl = w.ttlMs;
          break;
        }
      }
      wire.push(e);
    }
    if (this.#cluster && docs.length > 1) {
      const slots = new Set(docs.map((k) => clusterSlot(k.tag)));
      if (slots.size > 1) {
        throw new ValidationError(what, [
          {
            message:
              `the documents ${refs.map((r) => `${r.model} ${JSON.stringify(r.key)}`).join(', ')} ` +
              'live in different Redis Cluster slots, so one atomic script cannot touch them all. ' +
              'Co-locate them: redis({ cluster: true, hashTag: (model, key) => key.split(":")[0] }) ' +
              'puts every document whose hashTag() text is equal into one slot.',
          },
        ]);
      }
    }
    return {
      docs,
      refs,
      keys: docs.map((k) => k.doc),
      docOf,
      writes,
      wire,
      checked,
    };
  }

  /**
   * Runs a compiled batch through `send` (the write or the commit script).
   *
   * Patches with a `check` (schema validation of the post-image, a JS callback): the post-image is
   * PREDICTED here from a client-side copy of the document (the last state this process read or
   * wrote, or predicted for a write still in flight), the check runs on it, and the script is
   * told "commit only if the document's last-writer token is still T, and the check said ok".
   * A moved document comes back in the same reply ("stale") and we go round again. Predictions
   * chain: concurrent applies in one process each predict on top of the previous one's predicted
   * post-image and expect its token, so a hot key needs ONE round trip per apply, pipelined,
   * instead of read + check + compare-and-set. The cost: a bounded cache of recently written
   * documents per process, and a wasted round trip when another process wrote in between.
   */
  async runBatch(plan: Plan, send: Send, waitFor?: () => LockWait): Promise<WriteResult> {
    let divergence = 0;
    // Made at the first "locked" answer only: the uncontended write pays nothing for it.
    let wait: LockWait | undefined;
    let ran = false;
    // The documents with a checked patch: their prediction pipelines admit this batch.
    const gated: string[] = [];
    if (plan.checked) {
      for (let i = 0; i < plan.writes.length; i++) {
        const w = plan.writes[i] as DocWrite;
        if (w.kind !== 'patch' || !w.check) continue;
        const doc = (plan.docs[plan.docOf[i] as number] as DocKeys).doc;
        if (!gated.includes(doc)) gated.push(doc);
      }
    }
    try {
      for (let attempt = 0; ; attempt++) {
        if (gated.length > 0) {
          const admitted = this.#admit(gated, attempt === 0 ? PIPELINE_DEPTH : 1);
          if (admitted) await admitted;
        }
        let r: WriteResult | 'stale' | Locked;
        try {
          r = await this.#attempt(plan, send, wait?.queue);
        } finally {
          if (gated.length > 0) this.#leave(gated);
        }
        // "stale": the script found the document moved since our prediction and wrote NOTHING
        // of this batch (it checks every predicted base before storing anything; see run_batch),
        // so sending it again, predicted on the state it returned, cannot apply it twice. The
        // same for "locked". A lost reply is not retried: it rejects (outcomeUnknown).
        if (r === 'stale') {
          if (++divergence > 1000) {
            throw new BackendError(
              'redis write: a checked patch kept meeting a moved document 1000 times in a row; please report this',
            );
          }
          continue;
        }
        if ('locked' in r) {
          // Nothing was written. Only plain writes are answered so (commits never wait): wait
          // outside the prediction pipeline, then predict again on whatever the holder left.
          if (!waitFor) throw new BackendError('redis write: unexpected "locked" answer');
          wait ??= waitFor();
          await wait.locked(plan.docOf[r.locked] ?? 0, r.retry);
          continue;
        }
        ran = true;
        return r;
      }
    } finally {
      if (wait) {
        const finishing = wait.finish(ran);
        if (finishing) await finishing;
      }
    }
  }

  /**
   * Admission to the prediction pipeline of some documents: at most `max` checked writes in
   * flight per document, strict FIFO. A retry after "stale" waits until nothing is in flight on
   * its documents (max 1), so a failed prediction chain is drained before predicting again:
   * without that, two processes hammering the same documents invalidate each other's whole
   * pipelines forever.
   */
  #admit(docs: string[], max: number): Promise<void> | undefined {
    const fits = () => docs.every((d) => (this.#inflight.get(d) ?? 0) < max);
    const take = () => {
      for (const d of docs) this.#inflight.set(d, (this.#inflight.get(d) ?? 0) + 1);
    };
    if (this.#admission.length === 0 && fits()) {
      take();
      return undefined;
    }
    return new Promise<void>((resolve) => {
      this.#admission.push({
        fits,
        go: () => {
          take();
          resolve();
        },
      });
    });
  }

  #leave(docs: string[]): void {
    for (const d of docs) {
      const n = (this.#inflight.get(d) ?? 1) - 1;
      if (n <= 0) this.#inflight.delete(d);
      else this.#inflight.set(d, n);
    }
    while (this.#admission.length > 0 && (this.#admission[0] as { fits(): boolean }).fits()) {
      (this.#admission.shift() as { go(): void }).go();
    }
  }

  /** One attempt of a batch: its result, or 'stale' (predicted on a moved document; retry). */
  async #attempt(
    plan: Plan,
    send: Send,
    queue: LockWait['queue'],
  ): Promise<WriteResult | 'stale' | Locked> {
    {
      const token = nextId(this.#instance);
      const prediction = plan.checked
        ? (this.#predictOne(plan, token) ?? (await this.#predict(plan, token)))
        : undefined;
      const env: {
        t: string;
        w: unknown[];
        sd?: number[];
        q?: string;
        ch?: string;
        qt?: number;
      } = { t: token, w: plan.wire };
      // On "stale", the script returns every checked document, so all bases get refreshed.
      if (prediction) env.sd = [...prediction.used.keys()].map((d) => d + 1);
      // A queued writer's attempts carry its waiter id; they are never folded into a chain
      // (the folded patch would not carry it, and its queue entries would stay behind).
      if (queue) Object.assign(env, queue);
      const reply = await send(
        plan.keys,
        env,
        queue ? undefined : this.#speculation(plan, env.t, prediction),
        prediction?.speculated && plan.writes.length === 1 ? prediction.outcome : undefined,
      );
      if (reply.ok === 1) {
        if (prediction) {
          for (const [d, used] of prediction.used) {
            // The last write of the document in the batch reports its final state.
            const w = reply.docs[plan.docOf.lastIndexOf(d)] ?? null;
            const cur = this.#cache.get((plan.docs[d] as DocKeys).doc);
            if (prediction.speculated ? cur?.token === token : cur?.epoch === used.epoch) {
              this.remember(plan.docs[d] as DocKeys, w, undefined);
            }
          }
        }
        return {
          applied: true,
          docs: reply.docs.map((w, i) => (w ? toDoc(plan.writes[i]?.key as string, w) : undefined)),
          results: reply.results,
        };
      }
      if ('stale' in reply) {
        for (const [ds, w] of Object.entries(reply.stale)) {
          const d = Number(ds);
          const used = prediction?.used.get(d);
          const cur = this.#cache.get((plan.docs[d] as DocKeys).doc);
          if (!cur || cur.epoch === used?.epoch) this.remember(plan.docs[d] as DocKeys, w, -1);
        }
        return 'stale';
      }
      // Refused, or "locked" (nothing written either way): undo this batch's speculation.
      if (prediction?.speculated) {
        for (const [d, used] of prediction.used) {
          const key = (plan.docs[d] as DocKeys).doc;
          if (this.#cache.get(key)?.epoch === used.epoch) this.#cache.delete(key);
        }
      }
      if ('locked' in reply) return reply;
      const issues = reply.reason === 'invalid' ? prediction?.issues.get(reply.index) : undefined;
      return {
        applied: false,
        reason: reply.reason,
        index: reply.index,
        ...(reply.guard !== undefined ? { guard: reply.guard } : {}),
        ...(reply.detail !== undefined ? { detail: reply.detail } : {}),
        ...(issues ? { issues } : {}),
      };
    }
  }

  /**
   * The speculation a group commit may fold with its neighbours: only a batch of ONE checked
   * patch without guards or expectations, predicted to apply on a base this process chained.
   * Everything such a write checks on the server is then its base token (`ck`).
   */
  #speculation(plan: Plan, token: string, p: Prediction | undefined): Speculation | undefined {
    if (!p?.speculated || !p.outcome || plan.writes.length !== 1) return undefined;
    const w = plan.writes[0] as DocWrite;
    const e = plan.wire[0] as { ck?: { t: string; ok: unknown }; g?: unknown; ev?: unknown };
    if (w.kind !== 'patch' || e.ck?.ok !== true || e.g !== undefined || e.ev !== undefined) {
      return undefined;
    }
    if (w.expectIncarnation !== undefined || w.fieldsUnchangedSince !== undefined) return undefined;
    // A folded chain is one patch: it would carry one TTL for all.
    if (w.ttlMs !== undefined) return undefined;
    return {
      doc: (plan.docs[0] as DocKeys).doc,
      base: e.ck.t,
      token,
      fields: w.ops.map((op) => op.field),
      ...p.outcome,
    };
  }

  /**
   * {@link #predict} for the common case, without its bookkeeping: a batch of one checked patch
   * on a cached document, with a synchronous check. Returns undefined for anything else.
   */
  #predictOne(plan: Plan, token: string): Prediction | undefined {
    if (plan.writes.length !== 1) return undefined;
    const w = plan.writes[0] as DocWrite;
    if (w.kind !== 'patch' || !w.check) return undefined;
    const key = (plan.docs[0] as DocKeys).doc;
    const c = this.#cache.get(key);
    if (!c) return undefined;
    const used = new Map([[0, { token: c.token, epoch: c.epoch }]]);
    const issues = new Map<number, readonly CheckIssue[]>();
    const ck: { t: string; ok: boolean | 'u' } = { t: c.token, ok: 'u' };
    (plan.wire[0] as { ck?: unknown }).ck = ck;
    if (c.token === '' || (w.expectVersion !== undefined && w.expectVersion !== c.version)) {
      return { used, issues, speculated: false };
    }
    const p = applyOps(c.data, w.ops);
    if (!p.ok) return { used, issues, speculated: false };
    const found = w.check(p.data);
    if (isThenable(found)) {
      // An asynchronous check: the general path awaits it (and calls it again).
      found.catch(() => {});
      return undefined;
    }
    ck.ok = !found || found.length === 0;
    if (!ck.ok) issues.set(0, found as readonly CheckIssue[]);
    // A patch without ops writes nothing (the document keeps its version and last writer): no
    // speculation on a token that will not be the document's.
    if (!ck.ok || w.ops.length === 0 || !evalGuards(c.data, w.guards ?? [])) {
      return { used, issues, speculated: false };
    }
    const version = c.version + 1;
    this.#cacheSet(key, { version, token, data: p.data, epoch: c.epoch });
    return {
      used,
      issues,
      speculated: true,
      outcome: { data: p.data, version, results: p.results },
    };
  }

  /** Predicts the checked patches of a batch and fills in their `ck` (see {@link runBatch}). */
  async #predict(plan: Plan, token: string): Promise<Prediction> {
    const checkedDocs = new Set<number>();
    plan.writes.forEach((w, i) => {
      if (w.kind === 'patch' && w.check) checkedDocs.add(plan.docOf[i] as number);
    });
    const missing = [...checkedDocs].filter((d) => !this.#cache.has((plan.docs[d] as DocKeys).doc));
    if (missing.length > 0) {
      const r = JSON.parse(
        (await this.#script(
          'read',
          missing.map((d) => (plan.docs[d] as DocKeys).doc),
          [],
          false,
        )) as string,
      ) as Array<WireDoc | null>;
      for (const [i, d] of missing.entries()) {
        this.remember(plan.docs[d] as DocKeys, r[i] ?? null, -1);
      }
    }
    const used = new Map<number, { token: string; epoch: number }>();
    const sim = new Map<number, { exists: boolean; version: number; data: Data }>();
    for (const d of checkedDocs) {
      const c = this.#cache.get((plan.docs[d] as DocKeys).doc);
      // Dropped while we read (a concurrent refusal): predict again from scratch.
      if (!c) return this.#predict(plan, token);
      used.set(d, { token: c.token, epoch: c.epoch });
      sim.set(d, {
        exists: c.token !== '',
        version: c.version,
        data: c.data, // never mutated: applyOps returns a new post-image
      });
    }
    const issues = new Map<number, readonly CheckIssue[]>();
    let results: Json[] | undefined; // of the last simulated patch
    let certain = true; // every earlier write could be simulated
    let speculate = true; // ... and is predicted to apply
    for (const [i, w] of plan.writes.entries()) {
      const d = plan.docOf[i] as number;
      const e = plan.wire[i] as { [k: string]: unknown };
      const s = sim.get(d);
      if (!s) continue;
      const ck: { t: string; ok: boolean | 'u' } = {
        t: (used.get(d) as { token: string }).token,
        ok: 'u',
      };
      if (w.kind === 'patch' && w.check) e.ck = ck;
      if (!certain) continue;
      if (w.kind === 'create') {
        if (s.exists) certain = false;
        else Object.assign(s, { exists: true, version: 1, data: structuredClone(w.data) });
      } else if (w.kind === 'put') {
        Object.assign(s, {
          exists: true,
          version: s.exists ? s.version + 1 : 1,
          data: structuredClone(w.data),
        });
      } else if (w.kind === 'delete') {
        if (!s.exists || (w.expectVersion !== undefined && w.expectVersion !== s.version)) {
          certain = false;
        } else Object.assign(s, { exists: false, version: 0, data: {} });
      } else {
        if (!s.exists || (w.expectVersion !== undefined && w.expectVersion !== s.version)) {
          certain = false;
          continue;
        }
        const guardsOk = evalGuards(s.data, w.guards ?? []);
        const p = applyOps(s.data, w.ops);
        if (!p.ok) {
          certain = false;
          continue;
        }
        s.data = p.data;
        results = p.results;
        if (w.check) {
          // Await only a real promise: with synchronous checks this whole prediction, and the
          // speculative cache update below, run without yielding, so concurrent applies in this
          // process chain their predictions instead of racing on one base.
          const out = w.check(s.data);
          const found = isThenable(out) ? await out : out;
          ck.ok = !found || found.length === 0;
          if (!ck.ok) issues.set(i, found as readonly CheckIssue[]);
        }
        // A predicted refusal: keep simulating (the server may disagree), but do not speculate.
        if (!guardsOk || ck.ok === false) speculate = false;
        // A patch without ops writes nothing: the version stays, and so does the last writer's
        // token, which a speculation would replace with this batch's (rare: do not speculate).
        if (w.ops.length === 0) speculate = false;
        else s.version += 1;
      }
    }
    // Speculate only if nobody moved the entries while we awaited (a read or an async check).
    let unmoved = true;
    for (const [d, u] of used) {
      const c = this.#cache.get((plan.docs[d] as DocKeys).doc);
      if (c === undefined || c.epoch !== u.epoch || c.token !== u.token) {
        unmoved = false;
        break;
      }
    }
    if (certain && speculate && unmoved) {
      for (const [d, s] of sim) {
        const prev = this.#cache.get((plan.docs[d] as DocKeys).doc) as CacheEntry;
        this.#cacheSet((plan.docs[d] as DocKeys).doc, {
          version: s.exists ? s.version : 0,
          token: s.exists ? token : '',
          data: s.data,
          epoch: prev.epoch,
        });
      }
    }
    const speculated = certain && speculate && unmoved;
    const only = plan.writes.length === 1 ? sim.get(0) : undefined;
    if (speculated && only?.exists && results) {
      return {
        used,
        issues,
        speculated,
        outcome: { data: only.data, version: only.version, results },
      };
    }
    return { used, issues, speculated };
  }

  /** Stores an authoritative state in the cache (epoch -1: a new epoch; undefined: keep it). */
  remember(keys: DocKeys, w: WireDoc | null, epoch: number | undefined): void {
    const prev = this.#cache.get(keys.doc);
    if (epoch === undefined && !prev) return;
    this.#cacheSet(keys.doc, {
      version: w ? w.v : 0,
      token: w ? w.w : '',
      data: w ? w.f : {},
      epoch: epoch === undefined ? (prev as CacheEntry).epoch : ++this.#epoch,
    });
  }

  /**
   * Bounded cache, evicting the oldest INSERTED document (not the least recently used): a
   * document already cached is updated in place, since deleting and re-inserting a key on every
   * write made V8 compact the map's table again and again (~2% of CPU per apply). An evicted hot
   * document costs one read on its next checked write.
   */
  #cacheSet(key: string, e: CacheEntry): void {
    const had = this.#cache.has(key);
    this.#cache.set(key, e);
    if (!had && this.#cache.size > CACHE_MAX) {
      const oldest = this.#cache.keys().next();
      if (!oldest.done) this.#cache.delete(oldest.value);
    }
  }
}
