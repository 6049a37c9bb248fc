/**
 * `learner`: an online model whose weights live in process memory, served by `predict` readers
 * while a `train` writer updates it — the half-updated model.
 *
 * A training step computes its gradient (awaiting: a batch from disk, a worker thread), then
 * applies it layer by layer from the output back to the input (as backpropagation does), with an
 * await between layers. A prediction reads the layers from the input forward, also awaiting
 * between them and one real wait halfway (the accelerator, a feature store). Without a lock a prediction can read layer 0 from step n and
 * layer 3 from step n+1: a torn read. A `Mutex` prevents it but serialises the predictions; an
 * `RWLock` lets predictions share the weights and excludes only the writer, so predict
 * throughput is far higher. This scenario is in-process (src/sync) and runs the same on every
 * backend.
 */
import { Mutex, RWLock } from '../../index.js';
import { checkLearner, isTorn } from '../checks.js';
import { drive, driveOptions, outcome } from '../runner.js';
import type { LabContext, Scenario, Strategy, StrategyOutcome } from '../types.js';
import { sleep, yieldNow } from '../util.js';

const LAYERS = 4;
const WIDTH = 32;

/** The model: LAYERS layers of WIDTH weights; after training step g every weight equals g. */
class OnlineModel {
  readonly layers: number[][] = Array.from({ length: LAYERS }, () =>
    new Array<number>(WIDTH).fill(0),
  );
  steps = 0;
  /** Outputs of the last predictions (so the arithmetic is not optimised away). */
  last = 0;

  /** Applies one training step: every layer, output first, awaiting between layers. */
  async applyStep(): Promise<void> {
    const step = this.steps + 1;
    for (let l = LAYERS - 1; l >= 0; l--) {
      (this.layers[l] as number[]).fill(step);
      await yieldNow();
    }
    this.steps = step;
  }

  /**
   * One prediction: reads the layers input first, awaiting between them, with one real wait
   * (`ioMs`: the accelerator, a feature store) halfway; true when it saw a torn model.
   */
  async predict(input: number, ioMs: number): Promise<boolean> {
    const seen: number[][] = [];
    let activation = input;
    for (let l = 0; l < LAYERS; l++) {
      const w = (this.layers[l] as number[]).slice();
      seen.push(w);
      activation = w.reduce((acc, x) => acc + x * activation, 0) / WIDTH;
      await (l === LAYERS / 2 - 1 ? sleep(ioMs) : yieldNow());
    }
    this.last = activation;
    return isTorn(seen);
  }
}

type Guarded = {
  read: <T>(fn: () => Promise<T>) => Promise<T>;
  write: <T>(fn: () => Promise<T>) => Promise<T>;
};

function strategy(name: string, safe: boolean, description: string, make: () => Guarded): Strategy {
  return {
    name,
    safe,
    description,
    async run(ctx: LabContext): Promise<StrategyOutcome> {
      const model = new OnlineModel();
      const guard = make();
      let torn = 0;
      let stop = false;
      const trainer = (async () => {
        while (!stop) {
          await sleep(5 * ctx.ioMs); // the gradient: a batch from disk, a worker thread
          await guard.write(() => model.applyStep());
        }
      })();
      const readers = Math.max(1, ctx.workers - 1);
      const run = await drive(driveOptions(ctx, { workers: readers }), async (i) => {
        if (await guard.read(() => model.predict(i % 7, ctx.ioMs))) torn++;
        return undefined;
      });
      stop = true;
      await trainer;
      const result = outcome(run, checkLearner({ predictions: run.completed, torn }));
      return { ...result, note: `${result.note}; ${model.steps} training steps` };
    },
  };
}

/**
 * The learner scenario: no lock, Mutex, RWLock. Run it with `npm run lab -- learner`.
 *
 * @example
 * ```ts
 * for (const s of learner.strategies) console.log(s.name, s.safe, s.description);
 * ```
 */
export const learner: Scenario = {
  name: 'learner',
  description: 'an online model: predict readers while train rewrites the weights',
  invariant: 'no prediction sees half-updated weights',
  defaultOps: 3000,
  strategies: [
    strategy('no-lock', false, 'predict and train freely: torn reads', () => ({
      read: (fn) => fn(),
      write: (fn) => fn(),
    })),
    strategy('mutex', true, 'one Mutex for predict and train', () => {
      const m = new Mutex();
      return { read: (fn) => m.run(fn), write: (fn) => m.run(fn) };
    }),
    strategy('rwlock', true, 'RWLock: predictions share, train excludes', () => {
      const rw = new RWLock();
      return { read: (fn) => rw.read(fn), write: (fn) => rw.write(fn) };
    }),
  ],
};
