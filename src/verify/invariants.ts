/**
 * Invariant checkers for the verification workloads, each over a recorded history: a counter
 * (the final value within [acked, acked + unknown]; acknowledged increment results unique), a
 * bank (money conserved, no negative balance, every snapshot sums right) and mutual exclusion
 * with fences (no two acknowledged critical sections overlap; fences strictly increase; a
 * stale holder never committed). Each returns the anomalies it found, with the operations
 * that show them; none means the invariant held.
 */
import type { Json } from '../store/backend.js';
import type { Operation } from './history.js';

/** One broken invariant, with the operations that show it. */
export interface Anomaly {
  /** Which invariant: `counter-range`, `counter-duplicate`, `bank-total`, `bank-negative`, `mutex-overlap`, `fence-order`, `stale-commit`, `lost-commit`. */
  readonly kind: string;
  readonly key: string;
  /** What was seen and what was expected. */
  readonly message: string;
  readonly ops: readonly Operation[];
}

const unknown = (o: Operation) => o.status === 'info' || o.status === 'pending';

/**
 * Counter: `add` operations (arg: a finite amount; ok result: the new value, when known) and the
 * final value read after every operation ended. The final value must lie within
 * `initial + acked` and `initial + acked + unknown` (unknown = `info` adds, which may or may not
 * have landed; `fail` adds must not have); with only positive amounts, two acknowledged adds
 * never report the same new value.
 *
 * @example
 * ```ts
 * checkCounter(h.operations(), { key: 'hits', initial: 0, final: (await Counter.get('hits')).data.n });
 * ```
 */
export function checkCounter(
  history: readonly Operation[],
  options: { readonly key: string; readonly initial?: number; readonly final: number },
): Anomaly[] {
  const adds = history.filter((o) => o.key === options.key && o.kind === 'add');
  const amount = (o: Operation) => (typeof o.arg === 'number' ? o.arg : 0);
  let low = options.initial ?? 0;
  let high = low;
  for (const o of adds) {
    const a = amount(o);
    if (o.status === 'ok') {
      low += a;
      high += a;
    } else if (unknown(o)) {
      if (a > 0) high += a;
      else low += a;
    }
  }
  const out: Anomaly[] = [];
  if (!(options.final >= low && options.final <= high)) {
    const acked = adds.filter((o) => o.status === 'ok').length;
    const maybe = adds.filter(unknown).length;
    out.push({
      kind: 'counter-range',
      key: options.key,
      message: `final value ${options.final} is outside [${low}, ${high}] (${acked} acknowledged adds, ${maybe} with an unknown outcome, ${adds.length - acked - maybe} failed): ${options.final < low ? 'acknowledged adds were lost' : 'adds reported as failed landed, or adds landed twice'}`,
      ops: adds.filter((o) => o.status !== 'ok'),
    });
  }
  if (adds.every((o) => amount(o) > 0)) {
    const seen = new Map<number, Operation>();
    for (const o of adds) {
      if (o.status !== 'ok' || typeof o.result !== 'number') continue;
      const first = seen.get(o.result);
      if (first !== undefined) {
        out.push({
          kind: 'counter-duplicate',
          key: options.key,
          message: `two acknowledged adds both returned ${o.result}: one of them did not see the other (a lost update)`,
          ops: [first, o],
        });
      } else {
        seen.set(o.result, o);
      }
    }
  }
  return out;
}

function balances(value: Json | undefined): Record<string, number> | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'number') return undefined;
    out[k] = v;
  }
  return out;
}

function bankState(
  key: string,
  what: string,
  b: Record<string, number> | undefined,
  total: number,
  ops: readonly Operation[],
): Anomaly[] {
  if (b === undefined) {
    return [{ kind: 'bank-total', key, message: `${what} is not a record of balances`, ops }];
  }
  const out: Anomaly[] = [];
  const sum = Object.values(b).reduce((s, v) => s + v, 0);
  if (sum !== total) {
    out.push({
      kind: 'bank-total',
      key,
      message: `${what} sums to ${sum}, not ${total}: money was ${sum > total ? 'created' : 'lost'}`,
      ops,
    });
  }
  const negative = Object.entries(b).filter(([, v]) => v < 0);
  if (negative.length > 0) {
    out.push({
      kind: 'bank-negative',
      key,
      message: `${what} has negative balances: ${negative.map(([k, v]) => `${k}=${v}`).join(', ')}`,
      ops,
    });
  }
  return out;
}

/**
 * Bank: `snapshot` operations (ok result: every account's balance, read atomically, e.g. under
 * one multi-key lock) must each sum to `total` with no negative balance, and so must the final
 * balances read after the run.
 *
 * @example
 * ```ts
 * checkBank(h.operations(), { key: 'bank', total: 1000, final: { a: 400, b: 600 } });
 * ```
 */
export function checkBank(
  history: readonly Operation[],
  options: { readonly key: string; readonly total: number; readonly final: Record<string, number> },
): Anomaly[] {
  const out: Anomaly[] = [];
  for (const o of history) {
    if (o.key !== options.key || o.kind !== 'snapshot' || o.status !== 'ok') continue;
    out.push(
      ...bankState(options.key, `snapshot #${o.id}`, balances(o.result), options.total, [o]),
    );
  }
  out.push(...bankState(options.key, 'the final balances', options.final, options.total, []));
  return out;
}

/** What a `lock` operation's `detail` holds: its fence and when its critical section ran. */
export interface CriticalSection {
  readonly fence: number;
  /** Monotonic ms when the holder got the lock (its callback started). */
  readonly enter: number;
  /** Monotonic ms when the callback ended (before the commit was sent). */
  readonly exit: number;
}

function section(o: Operation): CriticalSection | undefined {
  const r = o.detail;
  if (r === undefined || r === null || typeof r !== 'object' || Array.isArray(r)) return undefined;
  const { fence, enter, exit } = r;
  if (typeof fence !== 'number' || typeof enter !== 'number' || typeof exit !== 'number') {
    return undefined;
  }
  return { fence, enter, exit };
}

/**
 * Mutual exclusion with fences, per lock key: `lock` operations whose `detail` is a
 * {@link CriticalSection} (ok = its commit was acknowledged; `fail` = refused, e.g. the lease was
 * lost; `info` = unknown) and, per key, the log the commits left in the document (the fence each commit wrote,
 * in the order they landed). Checks: no two acknowledged sections overlap in time (one clock:
 * the recording process's); their fences strictly increase in time order; the log's fences
 * strictly increase (a stale holder's commit landing after a newer holder's shows as a smaller
 * fence after a larger one); every acknowledged commit is in the log and no failed one is.
 *
 * @example
 * ```ts
 * checkMutex(h.operations(), { logs: { job: (await Job.get('job')).data.log } });
 * ```
 */
export function checkMutex(
  history: readonly Operation[],
  options: { readonly logs?: Readonly<Record<string, readonly number[]>> } = {},
): Anomaly[] {
  const out: Anomaly[] = [];
  const locks = history.filter((o) => o.kind === 'lock');
  const keys = new Set([...locks.map((o) => o.key), ...Object.keys(options.logs ?? {})]);
  for (const key of keys) {
    const mine = locks.filter((o) => o.key === key);
    const acked = mine
      .filter((o) => o.status === 'ok')
      .map((o) => ({ o, s: section(o) }))
      .filter((x): x is { o: Operation; s: CriticalSection } => x.s !== undefined)
      .sort((a, b) => a.s.enter - b.s.enter);
    let widest: { o: Operation; s: CriticalSection } | undefined;
    for (let i = 0; i < acked.length; i++) {
      const cur = acked[i] as { o: Operation; s: CriticalSection };
      if (widest !== undefined && cur.s.enter < widest.s.exit) {
        out.push({
          kind: 'mutex-overlap',
          key,
          message: `critical sections of #${widest.o.id} (fence ${widest.s.fence}) and #${cur.o.id} (fence ${cur.s.fence}) overlap, and both committed`,
          ops: [widest.o, cur.o],
        });
      }
      const before = acked[i - 1];
      if (before !== undefined && !(cur.s.fence > before.s.fence)) {
        out.push({
          kind: 'fence-order',
          key,
          message: `#${cur.o.id} held the lock after #${before.o.id} with fence ${cur.s.fence}, not above ${before.s.fence}`,
          ops: [before.o, cur.o],
        });
      }
      if (widest === undefined || cur.s.exit > widest.s.exit) widest = cur;
    }
    const log = options.logs?.[key];
    if (log === undefined) continue;
    const byFence = new Map<number, Operation>();
    for (const o of mine) {
      const f = section(o)?.fence;
      if (f !== undefined) byFence.set(f, o);
    }
    for (let i = 1; i < log.length; i++) {
      const a = log[i - 1] as number;
      const b = log[i] as number;
      if (!(b > a)) {
        out.push({
          kind: 'stale-commit',
          key,
          message: `a commit with fence ${b} landed after one with fence ${a}: a stale holder committed`,
          ops: [byFence.get(a), byFence.get(b)].filter((o): o is Operation => o !== undefined),
        });
      }
    }
    const logged = new Set(log);
    for (const { o, s } of acked) {
      if (!logged.has(s.fence)) {
        out.push({
          kind: 'lost-commit',
          key,
          message: `#${o.id}'s commit (fence ${s.fence}) was acknowledged but is not in the document`,
          ops: [o],
        });
      }
    }
    for (const o of mine) {
      const f = section(o)?.fence;
      if (o.status !== 'fail' || f === undefined) continue;
      if (logged.has(f)) {
        out.push({
          kind: 'stale-commit',
          key,
          message: `#${o.id}'s commit (fence ${f}) was reported as not written, but it is in the document`,
          ops: [o],
        });
      }
    }
  }
  return out;
}
