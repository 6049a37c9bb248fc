/**
 * `payments`: at most N concurrent calls to a slow external API, across every worker — the
 * fleet-wide concurrency limit (N = 5, or workers - 1 when there are fewer workers; the "API" takes `ioMs` per call and counts how many calls
 * are in flight at once).
 *
 * - unsafe: read an in-flight counter, and if it is below N write it back + 1, call, then
 *   decrement: two workers that read the same value both go in.
 * - guarded-counter: `apply` increments the counter only while it is below N (a guard), retrying
 *   with a short sleep when refused; correct, but it polls, and a crashed caller leaks its slot
 *   for ever (nothing expires it).
 * - slot-locks: N slot documents, a caller locks the first free one with `skipLocked`
 *   (hand-made, as users build it today), sleeping briefly when all are taken.
 * - semaphore: `store.semaphore(name, { permits: N }).run(call)`: FIFO, woken without polling,
 *   leased (a crashed caller's slot comes back after leaseMs).
 */
import { checkPayments } from '../checks.js';
import { drive, driveOptions, type OpResult, outcome } from '../runner.js';
import { shape } from '../schema.js';
import type { LabContext, Scenario, Strategy, StrategyOutcome } from '../types.js';
import { sleep, yieldNow } from '../util.js';

/** Calls allowed in flight at once: 5, or fewer than the workers so that the race can show. */
const MAX_LIMIT = 5;
function limitOf(ctx: LabContext): number {
  return Math.max(1, Math.min(MAX_LIMIT, ctx.workers - 1));
}
/** How long a refused caller of the polling strategies sleeps before trying again, ms. */
const RETRY_MS = 2;

const counterShape = shape({ n: 'int' });
const slotShape = shape({ calls: 'int' });

/** The external API: counts calls in flight and those that started over the limit. */
class ExternalApi {
  inFlight = 0;
  peak = 0;
  overLimit = 0;
  constructor(
    private readonly ioMs: number,
    readonly limit: number,
  ) {}
  async call(): Promise<void> {
    if (this.inFlight >= this.limit) this.overLimit += 1;
    this.inFlight += 1;
    this.peak = Math.max(this.peak, this.inFlight);
    try {
      await sleep(this.ioMs);
    } finally {
      this.inFlight -= 1;
    }
  }
}

type Call = (ctx: LabContext, name: string, api: ExternalApi) => Promise<() => Promise<OpResult>>;

function strategy(name: string, safe: boolean, description: string, setup: Call): Strategy {
  return {
    name,
    safe,
    description,
    async run(ctx: LabContext): Promise<StrategyOutcome> {
      // At least 1 ms per call, so that calls overlap and the limit is what bounds them.
      const api = new ExternalApi(Math.max(1, ctx.ioMs), limitOf(ctx));
      const op = await setup(ctx, `payments_${name.replaceAll('-', '_')}`, api);
      const run = await drive(driveOptions(ctx), op);
      return outcome(
        run,
        checkPayments({ limit: api.limit, overLimit: api.overLimit, peak: api.peak }),
      );
    },
  };
}

/**
 * The payments scenario: unsafe, guarded-counter, slot-locks, semaphore. Run it with
 * `npm run lab -- payments`.
 *
 * @example
 * ```ts
 * payments.strategies.map((s) => s.name); // ['unsafe', 'guarded-counter', 'slot-locks', 'semaphore']
 * ```
 */
export const payments: Scenario = {
  name: 'payments',
  description: `at most N (${MAX_LIMIT}, or workers - 1 if fewer) calls in flight to a slow API across all workers`,
  invariant: 'never more than N calls in flight at once',
  defaultOps: 400,
  strategies: [
    strategy(
      'unsafe',
      false,
      'get the in-flight counter; if below the limit put n + 1, call, decrement',
      async (ctx, name, api) => {
        const Counter = ctx.store.model(name, counterShape);
        await Counter.put('inflight', { n: 0 });
        return async () => {
          for (;;) {
            const doc = await Counter.get('inflight');
            if (doc.data.n < api.limit) {
              await yieldNow();
              await Counter.put('inflight', { n: doc.data.n + 1 });
              break;
            }
            await sleep(RETRY_MS);
          }
          try {
            await api.call();
          } finally {
            await Counter.apply('inflight', (c) => c.n.incr(-1));
          }
          return undefined;
        };
      },
    ),
    strategy(
      'guarded-counter',
      true,
      'apply n.incr(1) guarded by n < limit, retry after a sleep when refused; decrement after',
      async (ctx, name, api) => {
        const Counter = ctx.store.model(name, counterShape);
        await Counter.put('inflight', { n: 0 });
        return async () => {
          while (
            !(
              await Counter.apply('inflight', (c) => c.n.incr(1), {
                when: (c) => c.n.lt(api.limit),
              })
            ).applied
          ) {
            await sleep(RETRY_MS);
          }
          try {
            await api.call();
          } finally {
            await Counter.apply('inflight', (c) => c.n.incr(-1));
          }
          return undefined;
        };
      },
    ),
    strategy(
      'slot-locks',
      true,
      'N slot documents; lock the first free one with skipLocked, sleep when all are taken',
      async (ctx, name, api) => {
        const Slot = ctx.store.model(name, slotShape);
        const slots = Array.from({ length: api.limit }, (_, i) => `slot-${i}`);
        for (const s of slots) await Slot.put(s, { calls: 0 });
        return async () => {
          for (;;) {
            for (const s of slots) {
              const done = await Slot.lock(
                s,
                async (slot) => {
                  await api.call();
                  slot.calls += 1;
                  return true;
                },
                { skipLocked: true },
              );
              if (done) return undefined;
            }
            await sleep(RETRY_MS);
          }
        };
      },
    ),
    strategy(
      'semaphore',
      true,
      'store.semaphore({ permits: N }).run(call): FIFO, no polling, leased',
      async (ctx, name, api) => {
        const sem = ctx.store.semaphore(name, { permits: api.limit });
        return async () => {
          await sem.run(() => api.call());
          return undefined;
        };
      },
    ),
  ],
};
