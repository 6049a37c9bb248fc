/**
 * `counter`: N tasks increment one counter — the lost update.
 *
 * unsafe reads, awaits, then writes back value + 1: two tasks that read the same value both write
 * value + 1 and one increment vanishes. lock, optimistic update and atomic incr never lose one.
 */
import { ConflictError } from '../../index.js';
import { checkCounter } from '../checks.js';
import { drive, driveOptions, outcome } from '../runner.js';
import { shape } from '../schema.js';
import type { LabContext, Scenario, Strategy, StrategyOutcome } from '../types.js';
import { yieldNow } from '../util.js';

const KEY = 'hits';
const counterShape = shape({ n: 'int' });

function strategy(
  name: string,
  safe: boolean,
  description: string,
  increment: (model: CounterModel) => Promise<'skipped' | undefined>,
): Strategy {
  return {
    name,
    safe,
    description,
    async run(ctx: LabContext): Promise<StrategyOutcome> {
      const Counter = counterModel(ctx, name);
      await Counter.put(KEY, { n: 0 });
      const run = await drive(driveOptions(ctx), () => increment(Counter));
      const final = (await Counter.get(KEY)).data.n;
      return outcome(run, checkCounter({ acknowledged: run.completed, final }));
    },
  };
}

function counterModel(ctx: LabContext, name: string) {
  return ctx.store.model(`counter_${name}`, counterShape);
}
type CounterModel = ReturnType<typeof counterModel>;

/**
 * The counter scenario: unsafe, lock, optimistic, atomic. Run it with `npm run lab -- counter`.
 *
 * @example
 * ```ts
 * for (const s of counter.strategies) console.log(s.name, s.safe, s.description);
 * ```
 */
export const counter: Scenario = {
  name: 'counter',
  description: 'N tasks increment one counter (the lost update)',
  invariant: 'final value = increments acknowledged',
  defaultOps: 2000,
  strategies: [
    strategy('unsafe', false, 'get, await, put(n + 1): read-then-write', async (Counter) => {
      const doc = await Counter.get(KEY);
      await yieldNow();
      await Counter.put(KEY, { n: doc.data.n + 1 });
      return undefined;
    }),
    strategy('lock', true, 'Model.lock: lease, draft, commit', async (Counter) => {
      await Counter.lock(KEY, (c) => {
        c.n += 1;
      });
      return undefined;
    }),
    strategy(
      'optimistic',
      true,
      'Model.update: compare-and-set on version, retry',
      async (Counter) => {
        try {
          await Counter.update(
            KEY,
            (c) => {
              c.n += 1;
            },
            { retries: 500 },
          );
          return undefined;
        } catch (err) {
          if (err instanceof ConflictError) return 'skipped';
          throw err;
        }
      },
    ),
    strategy('atomic', true, 'Model.apply: n.incr(1) on the server', async (Counter) => {
      await Counter.apply(KEY, (c) => c.n.incr(1));
      return undefined;
    }),
  ],
};
