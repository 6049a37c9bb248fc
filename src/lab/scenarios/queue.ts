/**
 * `queue`: workers take tasks from a shared queue — the job processed twice.
 *
 * - unsafe: read the head of the queue, process it, then remove it: two workers that read the
 *   same head both process it.
 * - lock: take the head under a lease (`Model.lock`, `shift()` on the draft), process outside.
 * - atomic: `Model.apply(key, q => q.pending.pop(0))` removes and returns the head in one
 *   server-side step (the result comes back in `results`): exactly one worker gets each task.
 * - skip-locked: one document per task; a worker locks the next task with `skipLocked: true`
 *   (a task another worker holds is skipped, not waited for: SELECT ... FOR UPDATE SKIP LOCKED),
 *   processes it while holding the lease, and marks it done in the same commit.
 * - store.queue: one job per task; a worker claims the next job under a fenced lease
 *   (`q.claim()`), processes it, and completes it (`job.complete()`): a claim is held by one
 *   worker at a time, and a crashed worker's job comes back after its lease.
 */
import { checkQueue } from '../checks.js';
import { drive, driveOptions, type OpResult, outcome } from '../runner.js';
import { shape } from '../schema.js';
import type { LabContext, Scenario, Strategy, StrategyOutcome } from '../types.js';
import { mapConcurrent, sleep, yieldNow } from '../util.js';

const KEY = 'jobs';
const queueShape = shape({ pending: 'string[]' });
const taskShape = shape({ state: 'string' });
const taskName = shape({ task: 'string' });

/** At most this many tasks per run: they are all created before the measured phase. */
const MAX_TASKS = 10_000;

/** The run's task names: `--ops` of them, at most {@link MAX_TASKS}. */
function taskNames(ctx: LabContext): string[] {
  return Array.from({ length: Math.min(ctx.ops, MAX_TASKS) }, (_, i) => `task-${i}`);
}

function queueModel(ctx: LabContext, name: string) {
  return ctx.store.model(`queue_${name}`, queueShape);
}
type QueueModel = ReturnType<typeof queueModel>;

/** Takes a task (or undefined when the queue looks empty) and runs `process` on it. */
type Take = (
  Queue: QueueModel,
  process: (task: string) => Promise<void>,
) => Promise<string | undefined>;

function strategy(name: string, safe: boolean, description: string, take: Take): Strategy {
  return {
    name,
    safe,
    description,
    async run(ctx: LabContext): Promise<StrategyOutcome> {
      const Queue = queueModel(ctx, name);
      const tasks = taskNames(ctx);
      await Queue.put(KEY, { pending: tasks });
      const processed: string[] = [];
      let empty = false;
      const process = async (task: string): Promise<void> => {
        await sleep(ctx.ioMs);
        processed.push(task);
      };
      const run = await drive(
        driveOptions(ctx, { ops: tasks.length * 4, done: () => empty }),
        async (): Promise<OpResult> => {
          const task = await take(Queue, process);
          if (task === undefined) {
            empty = true;
            return 'skipped';
          }
          return undefined;
        },
      );
      const remaining = (await Queue.get(KEY)).data.pending;
      return outcome(run, checkQueue({ tasks, processed, remaining }));
    },
  };
}

const unsafe: Take = async (Queue, process) => {
  const q = await Queue.get(KEY);
  const task = q.data.pending[0];
  if (task === undefined) return undefined;
  await yieldNow();
  await process(task);
  await Queue.apply(KEY, (x) => x.pending.remove(task));
  return task;
};

const lock: Take = async (Queue, process) => {
  const task = await Queue.lock(KEY, (q) => q.pending.shift());
  if (task === undefined) return undefined;
  await process(task);
  return task;
};

const atomic: Take = async (Queue, process) => {
  const r = await Queue.apply(KEY, (q) => q.pending.pop(0));
  const task = r.results[0];
  if (typeof task !== 'string') return undefined;
  await process(task);
  return task;
};

const skipLocked: Strategy = {
  name: 'skip-locked',
  safe: true,
  description: 'one document per task, lock({ skipLocked }), mark done in the commit',
  async run(ctx: LabContext): Promise<StrategyOutcome> {
    const Task = ctx.store.model('queue_task', taskShape);
    const tasks = taskNames(ctx);
    await mapConcurrent(tasks, ctx.workers, (t) => Task.put(t, { state: 'pending' }));
    const processed: string[] = [];
    // Tasks are only ever finished, never re-queued, so "the first task that may be pending"
    // only moves up: a shared hint saves re-trying finished ones. Correctness comes from the lock.
    let firstOpen = 0;
    let empty = false;
    const run = await drive(
      driveOptions(ctx, { ops: tasks.length * 4, done: () => empty }),
      async (): Promise<OpResult> => {
        for (let i = firstOpen; i < tasks.length; i++) {
          const key = tasks[i] as string;
          const took = await Task.lock(
            key,
            async (t) => {
              if (t.state !== 'pending') return false;
              await sleep(ctx.ioMs);
              processed.push(key);
              t.state = 'done';
              return true;
            },
            { skipLocked: true },
          );
          if (took === false && i === firstOpen) firstOpen = i + 1;
          if (took === true) return undefined;
        }
        empty = true;
        return 'skipped';
      },
    );
    const docs = await mapConcurrent(tasks, ctx.workers, (t) => Task.get(t));
    const remaining = docs.filter((d) => d.data.state === 'pending').map((d) => d.key);
    return outcome(run, checkQueue({ tasks, processed, remaining }));
  },
};

const storeQueue: Strategy = {
  name: 'store.queue',
  safe: true,
  description: 'one job per task, q.claim() under a fenced lease, job.complete()',
  async run(ctx: LabContext): Promise<StrategyOutcome> {
    const q = ctx.store.queue(`queue_jobs_${Math.random().toString(36).slice(2, 8)}`, taskName, {
      leaseMs: Math.max(5_000, ctx.ioMs * 20),
    });
    const tasks = taskNames(ctx);
    for (let i = 0; i < tasks.length; i += 1000) {
      await q.enqueueMany(tasks.slice(i, i + 1000).map((task) => ({ data: { task } })));
    }
    const processed: string[] = [];
    let empty = false;
    const run = await drive(
      driveOptions(ctx, { ops: tasks.length * 4, done: () => empty }),
      async (): Promise<OpResult> => {
        const job = await q.claim({ timeoutMs: 0 });
        if (job === undefined) {
          empty = true;
          return 'skipped';
        }
        await sleep(ctx.ioMs);
        processed.push(job.data.task);
        await job.complete();
        return undefined;
      },
    );
    // What is still queued: the tasks nobody processed, when the queue holds as many jobs.
    const s = await q.stats();
    const left = s.waiting + s.delayed + s.active;
    const done = new Set(processed);
    const unprocessed = tasks.filter((t) => !done.has(t));
    const remaining = left === unprocessed.length ? unprocessed : [];
    return outcome(run, checkQueue({ tasks, processed, remaining }));
  },
};

/**
 * The queue scenario. Run it with `npm run lab -- queue`.
 *
 * @example
 * ```ts
 * for (const s of queue.strategies) console.log(s.name, s.safe, s.description);
 * ```
 */
export const queue: Scenario = {
  name: 'queue',
  description: 'workers take tasks from a shared queue',
  invariant: 'every task processed exactly once (or still queued)',
  defaultOps: 1000,
  strategies: [
    strategy('unsafe', false, 'read the head, process, then remove it', unsafe),
    strategy('lock', true, 'Model.lock: shift() the head under a lease', lock),
    strategy('atomic', true, 'Model.apply: pending.pop(0), result returned', atomic),
    skipLocked,
    storeQueue,
  ],
};
