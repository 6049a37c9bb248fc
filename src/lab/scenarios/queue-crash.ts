/**
 * `queue-crash`: workers that crash or stall mid-job — the job lost, or its effect applied twice.
 * Every job's effect is one increment of its own counter; every 10th job's worker crashes after
 * taking it (it never finishes), and every 10th+5 job's worker stalls past the lease, then
 * finishes anyway.
 *
 * - atomic-pop: `Model.apply(key, q => q.pending.pop(0))` takes the head atomically, and a
 *   crashed worker's job is gone with it (lost).
 * - complete-by-id: one document per job, claimed with a guarded `apply` (pending, or its lease
 *   expired), completed by id (state done + the effect) without checking who holds it: a stalled
 *   worker's late completion applies the effect a second time (double effect).
 * - store.queue: `q.claim()` under a fenced lease; `job.complete([effect])` commits the effect
 *   with the completion, and a stalled worker's completion is refused (LeaseLostError): a
 *   crashed worker's job comes back after its lease, every effect is applied exactly once.
 */
import { LeaseLostError } from '../../index.js';
import { drive, driveOptions, type OpResult, outcome } from '../runner.js';
import { shape } from '../schema.js';
import type { LabContext, Scenario, Strategy, StrategyOutcome } from '../types.js';
import { mapConcurrent, sleep } from '../util.js';

/** At most this many jobs per run. */
const MAX_JOBS = 2000;
/** The claims' lease in this scenario: short, so that stalls and crashes resolve within the run. */
const LEASE_MS = 150;

const counterShape = shape({ n: 'number' });
const listShape = shape({ pending: 'string[]' });
const jobShape = shape({ state: 'string', until: 'number' });
const payload = shape({ job: 'string' });

function jobNames(ctx: LabContext): string[] {
  return Array.from({ length: Math.min(ctx.ops, MAX_JOBS) }, (_, i) => `job-${i}`);
}

/** What happens to the worker that took job `i`. */
function fate(i: number): 'crash' | 'stall' | 'ok' {
  if (i % 10 === 0) return 'crash';
  if (i % 10 === 5) return 'stall';
  return 'ok';
}

const indexOf = (job: string) => Number(job.slice(4));

/**
 * Every job's effect exactly once: a count of 0 for a job no longer queued (lost) and counts
 * above 1 (doubled) are violations; a job still queued when the run's budget ended is not.
 */
async function verdict(
  ctx: LabContext,
  Effect: ReturnType<typeof effectModel>,
  jobs: readonly string[],
  queued: (job: string) => boolean | Promise<boolean>,
): Promise<{ violations: number; note: string }> {
  const counts = await mapConcurrent(jobs, ctx.workers, async (j) => (await Effect.get(j)).data.n);
  let lost = 0;
  for (let i = 0; i < jobs.length; i++) {
    if (counts[i] === 0 && !(await queued(jobs[i] as string))) lost += 1;
  }
  const doubled = counts.reduce((s, n) => s + (n > 1 ? n - 1 : 0), 0);
  const violations = lost + doubled;
  return {
    violations,
    note:
      violations === 0
        ? `${counts.filter((n) => n === 1).length} effects applied once each, none lost or doubled`
        : `${lost} jobs lost, ${doubled} effects applied twice`,
  };
}

function effectModel(ctx: LabContext, name: string) {
  return ctx.store.model(`qcrash_effect_${name}`, counterShape);
}

async function effects(ctx: LabContext, name: string, jobs: readonly string[]) {
  const Effect = effectModel(ctx, name);
  await mapConcurrent(jobs, ctx.workers, (j) => Effect.put(j, { n: 0 }));
  return Effect;
}

const atomicPop: Strategy = {
  name: 'atomic-pop',
  safe: false,
  description: 'Model.apply: pending.pop(0); a crashed worker loses its job',
  async run(ctx) {
    const jobs = jobNames(ctx);
    const Effect = await effects(ctx, 'pop', jobs);
    const List = ctx.store.model('qcrash_list', listShape);
    await List.put('jobs', { pending: jobs });
    let empty = false;
    const run = await drive(
      driveOptions(ctx, { ops: jobs.length * 2, done: () => empty }),
      async (): Promise<OpResult> => {
        const r = await List.apply('jobs', (q) => q.pending.pop(0));
        const job = r.results[0];
        if (typeof job !== 'string') {
          empty = true;
          return 'skipped';
        }
        const f = fate(indexOf(job));
        if (f === 'crash') return undefined; // the worker died: nobody has the job any more
        if (f === 'stall') await sleep(LEASE_MS * 2);
        await Effect.apply(job, (e) => e.n.incr(1));
        return undefined;
      },
    );
    const left = new Set((await List.get('jobs')).data.pending);
    return outcome(run, await verdict(ctx, Effect, jobs, (j) => left.has(j)));
  },
};

const completeById: Strategy = {
  name: 'complete-by-id',
  safe: false,
  description: 'claim with a lease, complete by id unfenced; a stalled worker doubles the effect',
  async run(ctx) {
    const jobs = jobNames(ctx);
    const Effect = await effects(ctx, 'byid', jobs);
    const Job = ctx.store.model('qcrash_job', jobShape);
    await mapConcurrent(jobs, ctx.workers, (j) => Job.put(j, { state: 'pending', until: 0 }));
    const crashed = new Set<string>();
    const stalled = new Set<string>();
    let empty = false;
    const run = await drive(
      driveOptions(ctx, { ops: jobs.length * 4, done: () => empty }),
      async (): Promise<OpResult> => {
        for (;;) {
          let claimable = 0;
          for (const job of jobs) {
            const now = Date.now();
            const r = await Job.apply(
              job,
              (d) => {
                d.state.set('active');
                d.until.set(now + LEASE_MS);
              },
              {
                when: (d) => [d.state.ne('done'), d.until.lt(now)],
              },
            );
            if (!r.applied) continue;
            claimable += 1;
            const f = fate(indexOf(job));
            if (f === 'crash' && !crashed.has(job)) {
              crashed.add(job);
              return undefined; // died holding it: the lease brings it back
            }
            if (f === 'stall' && !stalled.has(job)) {
              stalled.add(job);
              await sleep(LEASE_MS * 3); // meanwhile another worker takes it over
            }
            // Complete by id: whoever holds it now, the effect and "done" go in.
            await ctx.store.apply([
              Job.ops(job, (d) => d.state.set('done')),
              Effect.ops(job, (e) => e.n.incr(1)),
            ]);
            return undefined;
          }
          if (claimable === 0) {
            const left = await mapConcurrent(
              jobs,
              ctx.workers,
              async (j) => (await Job.get(j)).data,
            );
            if (left.every((d) => d.state === 'done')) {
              empty = true;
              return 'skipped';
            }
            await sleep(LEASE_MS / 3);
          }
        }
      },
    );
    return outcome(
      run,
      await verdict(ctx, Effect, jobs, async (j) => (await Job.get(j)).data.state !== 'done'),
    );
  },
};

const storeQueue: Strategy = {
  name: 'store.queue',
  safe: true,
  description: 'q.claim() fenced; job.complete([effect]) refuses a stalled worker',
  async run(ctx): Promise<StrategyOutcome> {
    const jobs = jobNames(ctx);
    const Effect = await effects(ctx, 'queue', jobs);
    const q = ctx.store.queue(`qcrash_${Math.random().toString(36).slice(2, 8)}`, payload, {
      leaseMs: LEASE_MS,
      maxAttempts: 10,
    });
    const ids = new Map<string, string>();
    for (let i = 0; i < jobs.length; i += 1000) {
      const part = jobs.slice(i, i + 1000);
      const refs = await q.enqueueMany(part.map((job) => ({ data: { job } })));
      for (let k = 0; k < refs.length; k++)
        ids.set(part[k] as string, (refs[k] as { id: string }).id);
    }
    const crashed = new Set<string>();
    const stalled = new Set<string>();
    let refused = 0;
    let empty = false;
    const run = await drive(
      driveOptions(ctx, { ops: jobs.length * 4, done: () => empty }),
      async (): Promise<OpResult> => {
        const job = await q.claim({ timeoutMs: LEASE_MS * 2 });
        if (job === undefined) {
          const s = await q.stats();
          if (s.waiting + s.delayed + s.active === 0) empty = true;
          return 'skipped';
        }
        const name = job.data.job;
        const f = fate(indexOf(name));
        if (f === 'crash' && !crashed.has(name)) {
          crashed.add(name);
          return undefined; // died holding the claim: it comes back after LEASE_MS
        }
        if (f === 'stall' && !stalled.has(name)) {
          stalled.add(name);
          await sleep(LEASE_MS * 3);
        }
        try {
          await job.complete([Effect.ops(name, (e) => e.n.incr(1))]);
        } catch (err) {
          if (!(err instanceof LeaseLostError)) throw err;
          refused += 1;
        }
        return undefined;
      },
    );
    const v = await verdict(
      ctx,
      Effect,
      jobs,
      async (j) => (await q.get(ids.get(j) as string)) !== undefined,
    );
    return outcome(run, { ...v, note: `${v.note}; ${refused} stale completions refused` });
  },
};

/**
 * The queue-crash scenario. Run it with `npm run lab -- queue-crash`.
 *
 * @example
 * ```ts
 * queueCrash.strategies.map((s) => s.name); // ['atomic-pop', 'complete-by-id', 'store.queue']
 * ```
 */
export const queueCrash: Scenario = {
  name: 'queue-crash',
  description: 'workers crash or stall mid-job',
  invariant: "every job's effect applied exactly once (none lost, none doubled)",
  defaultOps: 200,
  strategies: [atomicPop, completeById, storeQueue],
};
