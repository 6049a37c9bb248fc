/**
 * `ratelimit`: N clients hammer one key that may admit `LIMIT` calls per `WINDOW_MS` — the
 * limiter that lets too many through.
 *
 * - unsafe: read the window's counter, and if it is below the limit write it back + 1: two
 *   clients that read the same value are both admitted.
 * - fixed-window: an atomic guarded increment of a counter per window of the client's clock (what
 *   most limiters do): exact within a window, but up to 2x the limit around a boundary (the end
 *   of one window and the start of the next fall into one interval of `WINDOW_MS`).
 * - rate-limiter: `store.rateLimiter(name, { limit, windowMs })` (exact sliding window on the
 *   server's clock): never more than the limit in any interval.
 * Clients call in bursts around the boundaries of the client clock's windows (the classic way a
 * fixed window lets 2x through). The check replays every admission (its request-reply span) and counts the largest certain
 * excess over any interval of `WINDOW_MS`.
 */
import { type Admission, checkRateLimit } from '../checks.js';
import { drive, driveOptions, type OpResult, outcome } from '../runner.js';
import { shape } from '../schema.js';
import type { LabContext, Scenario, Strategy, StrategyOutcome } from '../types.js';
import { sleep, yieldNow } from '../util.js';

/** Calls admitted per window. */
const LIMIT = 20;
/** The window, ms. */
const WINDOW_MS = 100;
/** Clients call only within this many ms of a window boundary (either side). */
const BURST_MS = 15;
const KEY = 'user-1';

const counterShape = shape({ n: 'int' });

type Admit = (ctx: LabContext, name: string) => Promise<() => Promise<boolean>>;

function strategy(name: string, safe: boolean, description: string, setup: Admit): Strategy {
  return {
    name,
    safe,
    description,
    async run(ctx: LabContext): Promise<StrategyOutcome> {
      const admit = await setup(ctx, `ratelimit_${name.replaceAll('-', '_')}`);
      const admitted: Admission[] = [];
      const run = await drive(driveOptions(ctx), async (): Promise<OpResult> => {
        // Traffic comes in bursts around the client clock's window boundaries (the last and
        // first BURST_MS of each window), where a fixed window shows its 2x.
        const phase = Date.now() % WINDOW_MS;
        if (phase >= BURST_MS && phase < WINDOW_MS - BURST_MS) {
          await sleep(WINDOW_MS - BURST_MS - phase);
        }
        const start = performance.now();
        const ok = await admit();
        if (ok) admitted.push({ start, end: performance.now() });
        // A client's pace: the run spans several windows, so boundaries are crossed.
        await sleep(Math.max(1, ctx.ioMs));
        return ok ? undefined : 'skipped';
      });
      return outcome(run, checkRateLimit({ limit: LIMIT, windowMs: WINDOW_MS, admitted }));
    },
  };
}

/**
 * The ratelimit scenario: unsafe, fixed-window, rate-limiter. Run it with
 * `npm run lab -- ratelimit`.
 *
 * @example
 * ```ts
 * ratelimit.strategies.map((s) => s.name); // ['unsafe', 'fixed-window', 'rate-limiter']
 * ```
 */
export const ratelimit: Scenario = {
  name: 'ratelimit',
  description: `clients hammer one key allowed ${LIMIT} calls per ${WINDOW_MS} ms (the limiter that lets too many through)`,
  invariant: `never more than ${LIMIT} admitted in any ${WINDOW_MS} ms`,
  defaultOps: 2000,
  strategies: [
    strategy(
      'unsafe',
      false,
      "get the window's counter; if below the limit put n + 1",
      async (ctx, name) => {
        const Counter = ctx.store.model(name, counterShape);
        return async () => {
          const key = `${KEY}:${Math.floor(Date.now() / WINDOW_MS)}`;
          const doc = await Counter.find(key);
          const n = doc?.data.n ?? 0;
          if (n >= LIMIT) return false;
          await yieldNow();
          await Counter.put(key, { n: n + 1 });
          return true;
        };
      },
    ),
    strategy(
      'fixed-window',
      false,
      'one counter per window of the client clock, guarded incr (exact per window, 2x across a boundary)',
      async (ctx, name) => {
        const Counter = ctx.store.model(name, counterShape);
        const made = new Set<string>();
        return async () => {
          const key = `${KEY}:${Math.floor(Date.now() / WINDOW_MS)}`;
          if (!made.has(key)) {
            made.add(key);
            await Counter.create(key, { n: 0 }).catch(() => undefined);
          }
          const r = await Counter.apply(key, (c) => c.n.incr(1), { when: (c) => c.n.lt(LIMIT) });
          return r.applied;
        };
      },
    ),
    strategy(
      'rate-limiter',
      true,
      `store.rateLimiter({ limit: ${LIMIT}, windowMs: ${WINDOW_MS} }): exact sliding window, server clock`,
      async (ctx, name) => {
        const limiter = ctx.store.rateLimiter(name, { limit: LIMIT, windowMs: WINDOW_MS });
        return async () => (await limiter.consume(KEY)).allowed;
      },
    ),
  ],
};
