/**
 * A linearizability checker for histories of per-key objects (registers, counters): the
 * Wing-Gong-Lowe search, with Lowe's memoisation (a cache of "these operations linearized, the
 * object in this state" already explored) and per-key partitioning (linearizability is local, so
 * each key is checked on its own), after the design of Porcupine. `info` operations may take
 * effect at any time after their invocation, or never. A step / time limit answers `unknown`,
 * never a wrong verdict. A violation comes with a reduced sub-history that still shows it.
 */
import type { Json } from '../store/backend.js';
import type { Operation } from './history.js';

/**
 * A sequential specification of one object. `step` is called with `ok` operations (their
 * result must be explained) and `info` ones (no result: they took effect, if linearized).
 */
export interface Model<S> {
  readonly name: string;
  /** The object's state before the first operation. */
  init(): S;
  /** The state after `op` applied to `state`, or undefined when `op` (with its result) cannot happen there. */
  step(state: S, op: Operation): S | undefined;
  /** A canonical string of the state (equal states, equal strings): the memo key. */
  key(state: S): string;
  /** True when `op` never changes the state (a read, a refused cas): such ops may be dropped when unknown. */
  readOnly(op: Operation): boolean;
}

/**
 * JSON with object keys sorted: equal values give equal strings.
 *
 * @example
 * ```ts
 * canonicalJson({ b: 1, a: [2] }); // '{"a":[2],"b":1}'
 * ```
 */
export function canonicalJson(value: Json | undefined): string {
  if (value === undefined) return 'undefined';
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
}

/**
 * A read/write/compare-and-set register. Operations: `read` (result: the value), `write` (arg:
 * the value), `cas` (arg: `[from, to]`; result: true when it applied, false when the value was
 * not `from`).
 *
 * @example
 * ```ts
 * checkLinearizable(history.operations(), { model: registerModel(0) });
 * ```
 */
export function registerModel(initial: Json = null): Model<Json> {
  return {
    name: 'register',
    init: () => initial,
    key: canonicalJson,
    readOnly: (op) => op.kind === 'read' || (op.kind === 'cas' && op.result === false),
    step(state, op) {
      switch (op.kind) {
        case 'read':
          if (op.status !== 'ok') return state;
          return canonicalJson(op.result ?? null) === canonicalJson(state) ? state : undefined;
        case 'write':
          return op.arg ?? null;
        case 'cas': {
          const [from, to] = Array.isArray(op.arg) ? op.arg : [];
          const matches = canonicalJson(from ?? null) === canonicalJson(state);
          if (op.status === 'ok' && op.result === false) return matches ? undefined : state;
          return matches ? (to ?? null) : undefined;
        }
        default:
          throw new RangeError(`registerModel: unknown operation kind ${JSON.stringify(op.kind)}`);
      }
    },
  };
}

/**
 * A counter. Operations: `add` (arg: the amount; result: the new value, or null when the call
 * does not say) and `read` (result: the value).
 *
 * @example
 * ```ts
 * checkLinearizable(history.operations(), { model: counterModel() });
 * ```
 */
export function counterModel(initial = 0): Model<number> {
  return {
    name: 'counter',
    init: () => initial,
    key: String,
    readOnly: (op) => op.kind === 'read',
    step(state, op) {
      switch (op.kind) {
        case 'read':
          if (op.status !== 'ok') return state;
          return op.result === state ? state : undefined;
        case 'add': {
          const next = state + (typeof op.arg === 'number' ? op.arg : Number.NaN);
          if (op.status === 'ok' && typeof op.result === 'number' && op.result !== next) {
            return undefined;
          }
          return next;
        }
        default:
          throw new RangeError(`counterModel: unknown operation kind ${JSON.stringify(op.kind)}`);
      }
    },
  };
}

/** What the checker answers, per key and overall. */
export type Verdict = 'linearizable' | 'violation' | 'unknown';

/** The verdict on one key. */
export interface KeyVerdict {
  readonly key: string;
  readonly model: string;
  readonly verdict: Verdict;
  /** Operations checked (fail ones and unknown reads are dropped first). */
  readonly ops: number;
  /** Search steps spent. */
  readonly steps: number;
  /** For `unknown`: which limit ran out. For `violation`: a one-line summary. */
  readonly reason?: string;
  /** For `violation`: a reduced sub-history that cannot be linearized either, in invocation order. */
  readonly witness?: readonly Operation[];
}

/** The checker's answer. */
export interface LinearizabilityResult {
  /** `violation` if any key has one; else `unknown` if any key ran out of budget; else `linearizable`. */
  readonly verdict: Verdict;
  readonly keys: readonly KeyVerdict[];
  /** The keys with a violation. */
  readonly anomalies: readonly KeyVerdict[];
  readonly elapsedMs: number;
}

/** Options of {@link checkLinearizable}. */
export interface CheckOptions {
  /** The object's specification, or one per key. */
  readonly model: Model<never> | Model<unknown> | ((key: string) => Model<unknown>);
  /** Give up (verdict `unknown` for keys not yet decided) after this long in all. Default 10 000. */
  readonly timeLimitMs?: number;
  /** Give up on one key after this many search steps (default 1e9: the time limit decides). */
  readonly maxSteps?: number;
  /** Reduce a violation's history to a smaller one that shows it (default true). */
  readonly minimize?: boolean;
}

/**
 * Checks that the history is linearizable, key by key.
 *
 * @example
 * ```ts
 * const r = checkLinearizable(h.operations(), { model: registerModel(0), timeLimitMs: 5000 });
 * if (r.verdict === 'violation') console.log(r.anomalies[0]?.witness?.map(formatOp));
 * ```
 */
export function checkLinearizable(
  history: readonly Operation[],
  options: CheckOptions,
): LinearizabilityResult {
  const started = performance.now();
  const deadline = started + (options.timeLimitMs ?? 10_000);
  const maxSteps = options.maxSteps ?? 1_000_000_000;
  const modelFor =
    typeof options.model === 'function'
      ? options.model
      : ((() => options.model) as (key: string) => Model<unknown>);
  const byKey = new Map<string, Operation[]>();
  for (const op of history) {
    let list = byKey.get(op.key);
    if (list === undefined) byKey.set(op.key, (list = []));
    list.push(op);
  }
  const keys: KeyVerdict[] = [];
  for (const [key, ops] of byKey) {
    const model = modelFor(key);
    const prepared = prepare(ops, model);
    let r = search(prepared, model, { deadline, maxSteps });
    if (r.verdict === 'violation') {
      const exact = search(prepared, model, { deadline, maxSteps, exact: true });
      r = { ...exact, steps: r.steps + exact.steps };
    }
    if (r.verdict !== 'violation') {
      keys.push({
        key,
        model: model.name,
        verdict: r.verdict,
        ops: prepared.length,
        steps: r.steps,
        ...(r.reason === undefined ? {} : { reason: r.reason }),
      });
      continue;
    }
    const reduced =
      options.minimize === false
        ? prepared
        : minimize(prepared, model, Math.max(deadline, performance.now() + 2000), maxSteps);
    // The reduction searched with hashes: keep its result only if an exact search agrees.
    const witness =
      reduced === prepared ||
      search(reduced, model, {
        deadline: Math.max(deadline, performance.now() + 2000),
        maxSteps,
        exact: true,
      }).verdict === 'violation'
        ? reduced
        : prepared;
    keys.push({
      key,
      model: model.name,
      verdict: 'violation',
      ops: prepared.length,
      steps: r.steps,
      reason: `no order of these ${witness.length} operations on ${JSON.stringify(key)} (of ${prepared.length}) respects both their real-time order and the ${model.name}'s sequential behaviour`,
      witness,
    });
  }
  const anomalies = keys.filter((k) => k.verdict === 'violation');
  const verdict: Verdict =
    anomalies.length > 0
      ? 'violation'
      : keys.some((k) => k.verdict === 'unknown')
        ? 'unknown'
        : 'linearizable';
  return { verdict, keys, anomalies, elapsedMs: performance.now() - started };
}

/**
 * The operations the search needs: `fail` ones dropped (they did not happen), pending ones
 * checked as `info`, and `info` ones that change nothing (an unknown read) dropped.
 */
function prepare(ops: readonly Operation[], model: Model<unknown>): Operation[] {
  const out: Operation[] = [];
  for (const op of ops) {
    if (op.status === 'fail') continue;
    const o: Operation = op.status === 'pending' ? { ...op, status: 'info' } : op;
    if (o.status === 'info') {
      const { result: _r, complete: _c, ...rest } = o;
      const unknown: Operation = rest;
      if (model.readOnly(unknown)) continue;
      out.push(unknown);
    } else {
      out.push(o);
    }
  }
  return out;
}

interface SearchResult {
  readonly verdict: Verdict;
  readonly steps: number;
  readonly reason?: string;
}

/** A small deterministic PRNG (mulberry32) for the bitset hashes. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/**
 * Wing-Gong-Lowe on one key. The history is a doubly linked list of call and return events in
 * time order (a call before a return at the same instant: such operations count as
 * concurrent); `info` operations have no return event (it is at infinity). The search
 * linearizes a call whose operation is allowed in the current state, lifts it out of the list
 * and starts again from the head; meeting a return means the operation that returns there was
 * not linearized in time, so it backtracks. Done when every `ok` operation is linearized.
 */
function search(
  ops: readonly Operation[],
  model: Model<unknown>,
  limits: { readonly deadline: number; readonly maxSteps: number; readonly exact?: boolean },
): SearchResult {
  const n = ops.length;
  const mustLinearize = ops.reduce((c, o) => c + (o.status === 'ok' ? 1 : 0), 0);
  if (mustLinearize === 0) return { verdict: 'linearizable', steps: 0 };
  // Events: index < n is the call of op i; n + i is the return of op i; 2n is the head.
  type Ev = { readonly at: number; readonly id: number };
  const events: Ev[] = [];
  for (let i = 0; i < n; i++) {
    const op = ops[i] as Operation;
    events.push({ at: op.invoke, id: i });
    if (op.status === 'ok') events.push({ at: op.complete ?? Number.POSITIVE_INFINITY, id: n + i });
  }
  events.sort((a, b) => a.at - b.at || (a.id < n ? 0 : 1) - (b.id < n ? 0 : 1) || a.id - b.id);
  const HEAD = 2 * n;
  const NIL = -1;
  const next = new Int32Array(2 * n + 1).fill(NIL);
  const prev = new Int32Array(2 * n + 1).fill(NIL);
  let last = HEAD;
  for (const e of events) {
    next[last] = e.id;
    prev[e.id] = last;
    last = e.id;
  }
  const hasReturn = (i: number) => (ops[i] as Operation).status === 'ok';
  const lift = (i: number) => {
    const p = prev[i] as number;
    const q = next[i] as number;
    next[p] = q;
    if (q !== NIL) prev[q] = p;
    if (hasReturn(i)) {
      const r = n + i;
      const rp = prev[r] as number;
      const rq = next[r] as number;
      next[rp] = rq;
      if (rq !== NIL) prev[rq] = rp;
    }
  };
  const unlift = (i: number) => {
    if (hasReturn(i)) {
      const r = n + i;
      next[prev[r] as number] = r;
      const rq = next[r] as number;
      if (rq !== NIL) prev[rq] = r;
    }
    next[prev[i] as number] = i;
    const q = next[i] as number;
    if (q !== NIL) prev[q] = i;
  };

  const words = (n + 31) >>> 5;
  const bits = new Uint32Array(words);
  const rnd = prng(0x9e3779b9);
  const h1s = new Uint32Array(n);
  const h2s = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    h1s[i] = rnd();
    h2s[i] = rnd();
  }
  let h1 = 0;
  let h2 = 0;
  const cache = new Map<string, Uint32Array[]>();
  const fastCache = new Set<string>();
  const seen = (stateKey: string): boolean => {
    const k = `${h1}.${h2}.${stateKey}`;
    if (!limits.exact) {
      // 64 bits of hash stand for the set: no copy of the bitset per configuration. A collision
      // could only prune a configuration not yet explored, so a `violation` found this way is
      // searched again exactly; `linearizable` is always right (an order was found).
      if (fastCache.has(k)) return true;
      fastCache.add(k);
      return false;
    }
    const list = cache.get(k);
    if (list !== undefined) {
      for (const b of list) {
        let same = true;
        for (let w = 0; w < words; w++) {
          if (b[w] !== bits[w]) {
            same = false;
            break;
          }
        }
        if (same) return true;
      }
      list.push(bits.slice());
    } else {
      cache.set(k, [bits.slice()]);
    }
    return false;
  };
  const setBit = (i: number) => {
    bits[i >>> 5] = (bits[i >>> 5] as number) | (1 << (i & 31));
    h1 ^= h1s[i] as number;
    h2 ^= h2s[i] as number;
  };
  const clearBit = (i: number) => {
    bits[i >>> 5] = (bits[i >>> 5] as number) & ~(1 << (i & 31));
    h1 ^= h1s[i] as number;
    h2 ^= h2s[i] as number;
  };

  // Unknown operations with the same kind and argument are interchangeable (no return bounds
  // them): linearize the earliest-invoked one first. Any order that uses a later one could use
  // the earlier one instead, so this prunes only duplicates — and n unknown increments of 1
  // cost n choices instead of 2^n subsets.
  const prevSame = new Int32Array(n).fill(NIL);
  const lastOf = new Map<string, number>();
  const byInvoke = [...ops.keys()].sort(
    (a, b) => (ops[a] as Operation).invoke - (ops[b] as Operation).invoke || a - b,
  );
  for (const i of byInvoke) {
    const o = ops[i] as Operation;
    if (o.status === 'ok') continue;
    const k = `${o.kind}|${canonicalJson(o.arg)}`;
    prevSame[i] = lastOf.get(k) ?? NIL;
    lastOf.set(k, i);
  }
  const isSet = (i: number) => ((bits[i >>> 5] as number) & (1 << (i & 31))) !== 0;

  // Two passes over the candidates of each configuration (the calls before the first return
  // event): the `ok` operations first, then the unknown ones. The same candidates, in an order
  // that finds a linearization of a correct history with little backtracking: an unknown
  // operation is tried only where no acknowledged one can go on.
  const isOk = (i: number) => (ops[i] as Operation).status === 'ok';
  const stack: Array<{ readonly op: number; readonly state: unknown }> = [];
  let state = model.init();
  let linearizedOk = 0;
  let entry = next[HEAD] as number;
  let unknownPass = false;
  let steps = 0;
  for (;;) {
    if (linearizedOk === mustLinearize) return { verdict: 'linearizable', steps };
    if (++steps > limits.maxSteps) {
      return { verdict: 'unknown', steps, reason: `step limit (${limits.maxSteps}) reached` };
    }
    if ((steps & 1023) === 0 && performance.now() > limits.deadline) {
      return { verdict: 'unknown', steps, reason: 'time limit reached' };
    }
    if (entry !== NIL && entry < n) {
      if (isOk(entry) === unknownPass) {
        entry = next[entry] as number;
        continue;
      }
      const op = ops[entry] as Operation;
      const twin = prevSame[entry] as number;
      const after = twin !== NIL && !isSet(twin) ? undefined : model.step(state, op);
      if (after !== undefined) {
        setBit(entry);
        if (!seen(model.key(after))) {
          stack.push({ op: entry, state });
          state = after;
          if (op.status === 'ok') linearizedOk++;
          lift(entry);
          entry = next[HEAD] as number;
          unknownPass = false;
          continue;
        }
        clearBit(entry);
      }
      entry = next[entry] as number;
      continue;
    }
    // A return event (or the end of the list, past the info calls): the acknowledged pass
    // turns into the unknown pass; after that, backtrack.
    if (!unknownPass) {
      unknownPass = true;
      entry = next[HEAD] as number;
      continue;
    }
    const top = stack.pop();
    if (top === undefined) return { verdict: 'violation', steps };
    state = top.state;
    clearBit(top.op);
    if (isOk(top.op)) linearizedOk--;
    unlift(top.op);
    entry = next[top.op] as number;
    unknownPass = !isOk(top.op);
  }
}

/**
 * A smaller history that still cannot be linearized, and shows a real violation:
 * 1. the shortest prefix in time (cut after the k-th `ok` completion; operations still running
 *    at the cut become `info`) that is not linearizable — linearizable histories are closed
 *    under prefixes, so this is a binary search;
 * 2. then the operations that never change the state (reads, refused cas) dropped one by one
 *    while the rest stays non-linearizable — dropping them cannot hide an explanation, so what
 *    remains is still a genuine violation of the full history.
 * Checks that run out of budget count as "not shown", so the result is always a violation.
 */
function minimize(
  ops: readonly Operation[],
  model: Model<unknown>,
  deadline: number,
  maxSteps: number,
): Operation[] {
  const violates = (h: readonly Operation[]) =>
    performance.now() < deadline &&
    search(h, model, { deadline, maxSteps }).verdict === 'violation';
  const cuts = ops
    .filter((o) => o.status === 'ok')
    .map((o) => o.complete as number)
    .sort((a, b) => a - b);
  const prefix = (t: number): Operation[] =>
    prepare(
      ops
        .filter((o) => o.invoke <= t)
        .map((o) => ((o.complete ?? Number.POSITIVE_INFINITY) > t ? { ...o, status: 'info' } : o)),
      model,
    );
  let best: Operation[] = [...ops];
  let lo = 0;
  let hi = cuts.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const p = prefix(cuts[mid] as number);
    if (violates(p)) {
      best = p;
      hi = mid - 1;
    } else {
      lo = mid + 1;
    }
  }
  for (let i = best.length - 1; i >= 0; i--) {
    const op = best[i] as Operation;
    if (!model.readOnly(op)) continue;
    const without = best.filter((_, j) => j !== i);
    if (violates(without)) best = without;
  }
  return best.sort((a, b) => a.invoke - b.invoke);
}
