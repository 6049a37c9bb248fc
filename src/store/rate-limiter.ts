/**
 * `RateLimiter`: admission control on the backend's clock, made by `store.rateLimiter(name, ...)`.
 * `consume` takes units for a key (exact sliding window or token bucket, see "Rate limits" in
 * `backend.ts`), `peek` looks without taking, `reset` forgets a key, and `consumeOp` is a part of
 * `store.apply([...])`: the admission and the batch's writes happen together or not at all.
 */
import { channel } from 'node:diagnostics_channel';
import type { Admission, Backend, Consumption, DocWrite, RateLimitAlgorithm } from './backend.js';
import { checkCost, checkLimitRef, checkLimits } from './checks.js';
import type { OpBatch } from './model.js';

/** Options of `store.rateLimiter`. */
export interface RateLimiterOptions {
  /** Units admitted per window (sliding window), or the bucket's capacity (token bucket). */
  limit: number;
  /** The window in ms (sliding window), or the time to refill `limit` tokens (token bucket). */
  windowMs: number;
  /**
   * `'sliding-window'` (default): exact, never more than `limit` units in any interval of
   * `windowMs`; keeps up to `limit` entries per key. `'token-bucket'`: smooth, constant memory.
   */
  algorithm?: RateLimitAlgorithm;
}

/** Options of {@link RateLimiter.consume} and {@link RateLimiter.consumeOp}. */
export interface ConsumeOptions {
  /** Units this call takes (default 1): a whole number, at most the limit. */
  cost?: number;
}

/** What a consumption saw, on the backend's clock. */
export interface RateLimitResult {
  /** The units were admitted (for `peek`: one unit would be now). */
  readonly allowed: boolean;
  /** Units still available now (after this call when it was admitted). */
  readonly remaining: number;
  /** 0 when allowed; else the ms after which the same call would be admitted (with nobody else consuming). */
  readonly retryAfterMs: number;
  /** The ms until the key is back to its full limit. */
  readonly resetMs: number;
}

/** Published on `lockstep:ratelimit:refused` when a consumption is refused (only while subscribed). */
export interface RateLimitRefusedEvent {
  readonly backend: string;
  readonly name: string;
  readonly key: string;
  readonly cost: number;
  readonly retryAfterMs: number;
}

const refused = channel('lockstep:ratelimit:refused');

/** What a limiter needs of its backend (the store's boundary, which always has both). */
export type LimitBackend = Pick<Required<Backend>, 'name' | 'consume' | 'resetLimit'>;

/** No writes with a lone consumption. */
const NONE: readonly DocWrite[] = [];

/**
 * A named rate limiter; its state lives in the backend, shared by every process that uses the
 * same name (give every process the same options).
 *
 * @example
 * ```ts
 * const api = store.rateLimiter('api', { limit: 100, windowMs: 60_000 });
 * const r = await api.consume(`user:${userId}`);
 * if (!r.allowed) reply.status(429).header('retry-after', Math.ceil(r.retryAfterMs / 1000));
 * ```
 */
export class RateLimiter {
  readonly name: string;
  readonly limit: number;
  readonly windowMs: number;
  readonly algorithm: RateLimitAlgorithm;
  readonly #backend: LimitBackend;

  /** @internal use `store.rateLimiter(name, options)`. */
  constructor(backend: LimitBackend, name: string, options: RateLimiterOptions) {
    const where = `rateLimiter ${JSON.stringify(name)}`;
    const algorithm = options?.algorithm ?? 'sliding-window';
    checkLimitRef({ name, algorithm, key: 'k' }, where);
    checkLimits(where, options.limit, options.windowMs);
    this.#backend = backend;
    this.name = name;
    this.limit = options.limit;
    this.windowMs = options.windowMs;
    this.algorithm = algorithm;
  }

  #unchecked(key: string, cost: number, record: boolean): Consumption {
    return {
      name: this.name,
      algorithm: this.algorithm,
      key,
      limit: this.limit,
      windowMs: this.windowMs,
      cost,
      record,
    };
  }

  #consumption(key: string, cost: number | undefined, record: boolean, what: string): Consumption {
    const c = cost ?? 1;
    const where = `${this.name}.${what}`;
    checkLimitRef({ name: this.name, algorithm: this.algorithm, key }, where);
    checkCost(where, c, this.limit);
    return {
      name: this.name,
      algorithm: this.algorithm,
      key,
      limit: this.limit,
      windowMs: this.windowMs,
      cost: c,
      record,
    };
  }

  /**
   * Takes `cost` units (default 1) for `key` if they are available now; `allowed: false` takes
   * nothing. A cost above the limit is a ValidationError (it could never pass).
   *
   * @example
   * ```ts
   * const { allowed, retryAfterMs } = await api.consume('ip:203.0.113.9', { cost: 5 });
   * ```
   */
  consume(key: string, options?: ConsumeOptions): Promise<RateLimitResult> {
    try {
      // Checked by the boundary (bad input rejects, nothing taken).
      const c = this.#unchecked(key, options?.cost ?? 1, true);
      return this.#backend.consume([c], NONE).then((r) => {
        const a = r.admissions[0] as Admission;
        if (!a.allowed) this.refused(key, c.cost, a.retryAfterMs);
        return a;
      });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Looks without taking: `remaining` units available now, `allowed` when one unit would pass.
   *
   * @example
   * ```ts
   * const { remaining, resetMs } = await api.peek('user:ann');
   * ```
   */
  peek(key: string): Promise<RateLimitResult> {
    try {
      const c = this.#unchecked(key, 1, false);
      return this.#backend.consume([c], NONE).then((r) => r.admissions[0] as Admission);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Forgets `key`: its full limit is available again.
   *
   * @example
   * ```ts
   * await api.reset('user:ann');
   * ```
   */
  reset(key: string): Promise<void> {
    try {
      checkLimitRef({ name: this.name, algorithm: this.algorithm, key }, `${this.name}.reset`);
      return this.#backend.resetLimit({ name: this.name, algorithm: this.algorithm, key });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * A part of `store.apply([...])`: the batch applies only if these units are admitted, and the
   * units are taken only if the batch applies. Refused: `{ applied: false, limitedBy }`.
   *
   * @example
   * ```ts
   * const r = await store.apply([signups.consumeOp(ip), Account.createOp(email, { email })]);
   * if (!r.applied && r.limitedBy) console.log(`retry in ${r.limitedBy.retryAfterMs} ms`);
   * ```
   */
  consumeOp(key: string, options?: ConsumeOptions): OpBatch {
    return { consume: this.#consumption(key, options?.cost, true, 'consumeOp') };
  }

  /** @internal publishes a refusal on `lockstep:ratelimit:refused` (free when nobody listens). */
  refused(key: string, cost: number, retryAfterMs: number): void {
    if (!refused.hasSubscribers) return;
    const event: RateLimitRefusedEvent = {
      backend: this.#backend.name,
      name: this.name,
      key,
      cost,
      retryAfterMs,
    };
    refused.publish(event);
  }
}
