/**
 * Rate limits of the memory backend: per (name, algorithm, key), an exact sliding window (a log
 * of (time, cost) entries, at most `limit` of them) or a token bucket (tokens and the time they
 * were counted), evaluated on this process's monotonic clock. Idle keys are dropped by one sweep
 * timer once their window has passed (sliding window) or their bucket is full again; the timer
 * stops when no key is left.
 *
 * @example
 * ```ts
 * const limits = new RateLimits();
 * const ev = limits.evaluate(consumptions, now());
 * if (ev.ok) ev.record();
 * ```
 */
import type { Admission, Consumption, LimitRef } from '../../store/backend.js';
import { now } from './expiry.js';

/** Float noise allowed when comparing token counts and rounding times. */
const EPS = 1e-9;
/** A sweep runs at most this often. */
const SWEEP_EVERY_MS = 1000;

interface Window {
  readonly kind: 'sliding-window';
  /** Entry times and costs; live entries start at `head`. */
  ts: number[];
  cs: number[];
  head: number;
  /** Sum of the live entries' costs. */
  used: number;
  /** Time of the latest entry. */
  last: number;
  /** When the key holds nothing any more (latest entry + windowMs). */
  exp: number;
}

interface Bucket {
  readonly kind: 'token-bucket';
  tokens: number;
  at: number;
  /** When the bucket is full again. */
  exp: number;
}

type State = Window | Bucket;

/** A call's consumptions evaluated at one instant. */
export interface Evaluation {
  readonly admissions: Admission[];
  /** Every recording consumption is allowed. */
  readonly ok: boolean;
  /** Records the recording consumptions (call in the same synchronous step, only when ok). */
  record(): void;
}

function up(ms: number): number {
  return ms <= EPS ? 0 : Math.ceil(ms - EPS);
}

/**
 * Every rate-limit key of one memory backend.
 *
 * @example
 * ```ts
 * const a = limits.consumeOne({ name: 'api', algorithm: 'token-bucket', key: 'ann', limit: 10,
 *   windowMs: 1000, cost: 1, record: true }, now());
 * ```
 */
export class RateLimits {
  /** Per limiter (`name NUL algorithm`): its keys. */
  readonly #limiters = new Map<string, Map<string, State>>();
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Number.POSITIVE_INFINITY;
  #lastSweep = Number.NEGATIVE_INFINITY;
  #closed = false;

  /** Keys with state, and sweep timers running. */
  stats(): { keys: number; timers: number } {
    let keys = 0;
    for (const m of this.#limiters.values()) keys += m.size;
    return { keys, timers: this.#timer === undefined ? 0 : 1 };
  }

  /** Keys with state of limiter `name` (tests count them). */
  keysOf(name: string): number {
    let n = 0;
    for (const a of ['sliding-window', 'token-bucket']) {
      n += this.#limiters.get(`${name}\u0000${a}`)?.size ?? 0;
    }
    return n;
  }

  /** One consumption alone (no batch): evaluated and, when allowed, recorded at once. */
  consumeOne(c: Consumption, at: number): Admission {
    return this.#one(c, at, c.record);
  }

  /** Evaluates `cs` at `at` (nothing recorded until `record()`). */
  evaluate(cs: readonly Consumption[], at: number): Evaluation {
    const admissions: Admission[] = new Array(cs.length);
    let ok = true;
    for (let i = 0; i < cs.length; i++) {
      const c = cs[i] as Consumption;
      const a = this.#one(c, at, false);
      admissions[i] = a;
      if (c.record && !a.allowed) ok = false;
    }
    return {
      admissions,
      ok,
      record: () => {
        // Same instant, same state: the same decisions, now recorded.
        for (let i = 0; i < cs.length; i++) {
          const c = cs[i] as Consumption;
          if (c.record) admissions[i] = this.#one(c, at, true);
        }
      },
    };
  }

  /** Forgets one key. */
  reset(ref: LimitRef): void {
    const m = this.#limiters.get(`${ref.name}\u0000${ref.algorithm}`);
    m?.delete(ref.key);
  }

  close(): void {
    this.#closed = true;
    this.#limiters.clear();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #keys(c: Consumption, create: boolean): Map<string, State> | undefined {
    const id = `${c.name}\u0000${c.algorithm}`;
    let m = this.#limiters.get(id);
    if (m === undefined && create) this.#limiters.set(id, (m = new Map()));
    return m;
  }

  /** Evaluates one consumption at `clock`; with `record`, an allowed one is recorded. */
  #one(c: Consumption, clock: number, record: boolean): Admission {
    const keys = this.#keys(c, record);
    const s = keys?.get(c.key);
    const { limit, windowMs: w, cost } = c;
    if (c.algorithm === 'token-bucket') {
      const b = s as Bucket | undefined;
      const t = b ? Math.max(clock, b.at) : clock;
      const tokens = b ? Math.min(limit, b.tokens + ((t - b.at) * limit) / w) : limit;
      const allowed = cost <= tokens + EPS;
      if (!allowed || !record) {
        return {
          allowed,
          remaining: Math.floor(tokens + EPS),
          retryAfterMs: allowed ? 0 : Math.max(1, up(((cost - tokens) * w) / limit)),
          resetMs: up(((limit - tokens) * w) / limit),
        };
      }
      const after = Math.max(0, tokens - cost);
      const full = ((limit - after) * w) / limit;
      if (b) {
        b.tokens = after;
        b.at = t;
        b.exp = t + full;
      } else {
        (keys as Map<string, State>).set(c.key, {
          kind: 'token-bucket',
          tokens: after,
          at: t,
          exp: t + full,
        });
      }
      this.#due(t + full);
      return { allowed, remaining: Math.floor(after + EPS), retryAfterMs: 0, resetMs: up(full) };
    }
    const win = s as Window | undefined;
    const t = win ? Math.max(clock, win.last) : clock;
    if (win) trim(win, t - w);
    const used = win ? win.used : 0;
    const avail = limit - used;
    const allowed = cost <= avail;
    if (!allowed || !record) {
      let retryAfterMs = 0;
      if (!allowed && win) {
        // Drop the oldest entries until `cost` fits: the call passes when the last of them leaves.
        let need = used + cost - limit;
        let j = win.head;
        while (j < win.ts.length) {
          need -= win.cs[j] as number;
          if (need <= 0) break;
          j++;
        }
        retryAfterMs = Math.max(1, up((win.ts[j] as number) + w - t));
      }
      const resetMs = win && win.used > 0 ? up(win.last + w - t) : 0;
      return { allowed, remaining: avail, retryAfterMs, resetMs };
    }
    let v = win;
    if (!v) {
      v = { kind: 'sliding-window', ts: [], cs: [], head: 0, used: 0, last: t, exp: t + w };
      (keys as Map<string, State>).set(c.key, v);
    }
    v.ts.push(t);
    v.cs.push(cost);
    v.used += cost;
    v.last = t;
    v.exp = t + w;
    this.#due(t + w);
    return { allowed, remaining: avail - cost, retryAfterMs: 0, resetMs: up(w) };
  }

  /** A key now expires at `at`: the sweep timer fires no later than that (or the next sweep slot). */
  #due(at: number): void {
    if (at >= this.#timerAt || this.#closed) return;
    const when = Math.max(at, this.#lastSweep + SWEEP_EVERY_MS);
    if (when >= this.#timerAt) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = when;
    this.#timer = setTimeout(() => this.#sweep(), Math.max(0, Math.ceil(when - now())));
    this.#timer.unref();
  }

  #sweep(): void {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const t = now();
    this.#lastSweep = t;
    let next = Number.POSITIVE_INFINITY;
    for (const [id, keys] of this.#limiters) {
      for (const [k, s] of keys) {
        if (s.exp <= t) keys.delete(k);
        else if (s.exp < next) next = s.exp;
      }
      if (keys.size === 0) this.#limiters.delete(id);
    }
    if (next !== Number.POSITIVE_INFINITY) this.#due(next);
  }
}

/** Drops the entries at or before `from` (they left the window). */
function trim(v: Window, from: number): void {
  const { ts, cs } = v;
  let h = v.head;
  while (h < ts.length && (ts[h] as number) <= from) {
    v.used -= cs[h] as number;
    h++;
  }
  if (h > 32 && h * 2 > ts.length) {
    v.ts = ts.slice(h);
    v.cs = cs.slice(h);
    h = 0;
  }
  v.head = h;
}
