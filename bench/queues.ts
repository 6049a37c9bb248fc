/**
 * Job queue benchmarks: `store.queue` against the queues users pick today, in the same run, on
 * the same servers, 16 concurrent no-op handlers on every side.
 *
 * 1. Redis: Lockstep (`redis()`) vs BullMQ 5 (`removeOnComplete`, concurrency 16).
 * 2. PostgreSQL: Lockstep (`postgres()`) vs graphile-worker 0.17 (concurrency 16, default
 *    polling with LISTEN/NOTIFY) vs pg-boss 10 (tuned: `batchSize` 16, polling 0.5 s, its minimum).
 * 3. Memory: Lockstep's embedded backend alone (target: 200k jobs/s).
 *
 * Per side: "process" = BENCH_JOBS jobs (default 20 000) enqueued in bulk beforehand, then the
 * time from starting the workers to the last completion; "pickup" = 200 jobs enqueued one at a
 * time (2 ms apart) into idle workers, the time from the enqueue call to the handler's start
 * (p50/p99); "enqueue" = 2 000 single enqueues from 16 concurrent callers, and "bulk" = 5
 * enqueueMany/addBulk/insert of 1 000. The processing rounds alternate anchor and subject for
 * BENCH_PAIRS pairs (default 3) and the ratio is the median of the per-pair ratios (range in
 * brackets). Run: `REDIS_URL=… DATABASE_URL=… npm run bench -- queues` (BENCH_SECTIONS=1,2,3).
 */
import { Queue as BullQueue, Worker as BullWorker } from 'bullmq';
import { Logger, makeWorkerUtils, run as runGraphile } from 'graphile-worker';
import { Redis } from 'ioredis';
import PgBoss from 'pg-boss';
import { z } from 'zod';
import { memory } from '../src/backends/memory/index.js';
import { postgres } from '../src/backends/postgres/index.js';
import { redis } from '../src/backends/redis/index.js';
import { createStore } from '../src/store/index.js';
import { percentile } from './measure.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const JOBS = Number(process.env.BENCH_JOBS ?? 20_000);
const PAIRS_ = Number(process.env.BENCH_PAIRS ?? 3);
const CONCURRENCY = 16;
const ONLY = process.env.BENCH_SECTIONS?.split(',').map(Number);
const want = (n: number) => ONLY === undefined || ONLY.includes(n);
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One queue implementation, as the benchmark drives it; `round` names a fresh queue. */
interface Side {
  readonly name: string;
  enqueueOne(round: string, data: { t: number }): Promise<unknown>;
  enqueueBulk(round: string, n: number): Promise<unknown>;
  /** Starts CONCURRENCY workers calling `seen(data)` per job; resolves their stop function. */
  work(round: string, seen: (data: { t: number }) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

let roundSeq = 0;
const nextRound = () => `r${process.pid}_${++roundSeq}`;

async function processRate(side: Side, n: number): Promise<number> {
  const round = nextRound();
  for (let left = n; left > 0; left -= 1000) await side.enqueueBulk(round, Math.min(1000, left));
  let count = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => {
    done = r;
  });
  const t0 = performance.now();
  const stop = await side.work(round, () => {
    if (++count === n) done();
  });
  await all;
  const ms = performance.now() - t0;
  await stop();
  return (n / ms) * 1000;
}

async function pickup(side: Side): Promise<number[]> {
  const round = nextRound();
  const lat: number[] = [];
  const stop = await side.work(round, (d) => lat.push(now() - d.t));
  await sleep(300); // the workers are idle and waiting
  for (let i = 0; i < 200; i++) {
    await side.enqueueOne(round, { t: now() });
    await sleep(2);
  }
  while (lat.length < 200) await sleep(5);
  await stop();
  return lat;
}

async function enqueueRates(side: Side): Promise<{ one: number; bulk: number }> {
  const round = nextRound();
  let i = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (i++ < 2000) await side.enqueueOne(round, { t: 0 });
    }),
  );
  const one = (2000 / (performance.now() - t0)) * 1000;
  const t1 = performance.now();
  for (let k = 0; k < 5; k++) await side.enqueueBulk(round, 1000);
  const bulk = (5000 / (performance.now() - t1)) * 1000;
  return { one, bulk };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

async function compare(title: string, anchors: Side[], ours: Side): Promise<void> {
  console.log(`\n${title} (${JOBS} no-op jobs, concurrency ${CONCURRENCY}, ${PAIRS_} pairs)`);
  await processRate(ours, Math.min(JOBS, 2000)); // warm-up
  for (const a of anchors) await processRate(a, Math.min(JOBS, 2000));
  for (const anchor of anchors) {
    const ratios: number[] = [];
    const rates: number[] = [];
    const anchorRates: number[] = [];
    for (let p = 0; p < PAIRS_; p++) {
      const ar = await processRate(anchor, JOBS);
      const or = await processRate(ours, JOBS);
      anchorRates.push(ar);
      rates.push(or);
      ratios.push(or / ar);
    }
    const lo = Math.min(...ratios).toFixed(2);
    const hi = Math.max(...ratios).toFixed(2);
    console.log(
      `  process: ${anchor.name.padEnd(18)} ${median(anchorRates).toFixed(0).padStart(7)} jobs/s | ${ours.name.padEnd(10)} ${median(rates).toFixed(0).padStart(7)} jobs/s | ratio ${median(ratios).toFixed(2)}x [${lo}-${hi}]`,
    );
  }
  for (const s of [...anchors, ours]) {
    const lat = await pickup(s);
    const e = await enqueueRates(s);
    console.log(
      `  ${s.name.padEnd(18)} pickup p50 ${percentile(lat, 0.5).toFixed(2)} ms p99 ${percentile(lat, 0.99).toFixed(2)} ms | enqueue ${e.one.toFixed(0)} jobs/s one by one, ${e.bulk.toFixed(0)} jobs/s in bulk`,
    );
  }
}

const payload = z.object({ t: z.number() });

function lockstepSide(name: string, store: ReturnType<typeof createStore>): Side {
  const q = (round: string) => store.queue(round, payload, { leaseMs: 30_000 });
  return {
    name,
    enqueueOne: (round, data) => q(round).enqueue(data),
    enqueueBulk: (round, n) =>
      q(round).enqueueMany(Array.from({ length: n }, () => ({ data: { t: 0 } }))),
    work: async (round, seen) => {
      const w = q(round).work(
        (job) => {
          seen(job.data);
        },
        { concurrency: CONCURRENCY },
      );
      return () => w.close();
    },
    close: () => store.close(),
  };
}

function bullSide(): Side {
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const queues = new Map<string, BullQueue>();
  const queue = (round: string) => {
    let q = queues.get(round);
    if (!q) {
      q = new BullQueue(`lsbench_${round}`, { connection });
      queues.set(round, q);
    }
    return q;
  };
  const opts = { removeOnComplete: true, removeOnFail: true };
  return {
    name: 'BullMQ 5',
    enqueueOne: (round, data) => queue(round).add('j', data, opts),
    enqueueBulk: (round, n) =>
      queue(round).addBulk(Array.from({ length: n }, () => ({ name: 'j', data: { t: 0 }, opts }))),
    work: async (round, seen) => {
      const w = new BullWorker(
        `lsbench_${round}`,
        async (job) => {
          seen(job.data as { t: number });
        },
        {
          connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }),
          concurrency: CONCURRENCY,
        },
      );
      await w.waitUntilReady();
      return async () => {
        await w.close();
        await (await w.client).quit();
        await queue(round).obliterate({ force: true });
      };
    },
    close: async () => {
      for (const q of queues.values()) await q.close();
      await connection.quit();
    },
  };
}

/** graphile-worker logs every job by default: measured without its logging. */
const quiet = new Logger(() => () => {});

async function graphileSide(): Promise<Side> {
  const schema = `lsbench_gw_${process.pid}`;
  const utils = await makeWorkerUtils({ connectionString: DATABASE_URL, schema, logger: quiet });
  await utils.migrate();
  return {
    name: 'graphile-worker 0.17',
    enqueueOne: (round, data) => utils.addJob(round, data),
    enqueueBulk: (round, n) =>
      utils.addJobs(Array.from({ length: n }, () => ({ identifier: round, payload: { t: 0 } }))),
    work: async (round, seen) => {
      const runner = await runGraphile({
        connectionString: DATABASE_URL,
        schema,
        concurrency: CONCURRENCY,
        noHandleSignals: true,
        pollInterval: 2000,
        taskList: {
          [round]: async (p) => {
            seen(p as { t: number });
          },
        },
        maxPoolSize: CONCURRENCY + 4,
        logger: quiet,
      });
      return () => runner.stop();
    },
    close: async () => {
      await utils.release();
    },
  };
}

async function pgBossSide(): Promise<Side> {
  const boss = new PgBoss({ connectionString: DATABASE_URL, schema: `lsbench_pb_${process.pid}` });
  boss.on('error', () => {});
  await boss.start();
  const made = new Set<string>();
  const ensure = async (round: string) => {
    if (!made.has(round)) {
      await boss.createQueue(round);
      made.add(round);
    }
  };
  return {
    name: 'pg-boss 10 (tuned)',
    enqueueOne: async (round, data) => {
      await ensure(round);
      return boss.send(round, data);
    },
    enqueueBulk: async (round, n) => {
      await ensure(round);
      return boss.insert(Array.from({ length: n }, () => ({ name: round, data: { t: 0 } })));
    },
    work: async (round, seen) => {
      await ensure(round);
      const id = await boss.work<{ t: number }>(
        round,
        { batchSize: CONCURRENCY, pollingIntervalSeconds: 0.5 },
        async (jobs) => {
          for (const j of jobs) seen(j.data);
        },
      );
      return () => boss.offWork(id);
    },
    close: () => boss.stop({ graceful: false, wait: true }),
  };
}

/** Runs the queue benchmarks. */
export default async function main(): Promise<void> {
  if (want(1)) {
    const prefix = `lsbench-q-${process.pid}`;
    const ours = lockstepSide('Lockstep', createStore(redis({ url: REDIS_URL, prefix })));
    const bull = bullSide();
    await compare('Redis: process', [bull], ours);
    await bull.close();
    await ours.close();
    const r = new Redis(REDIS_URL);
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await r.unlink(...keys);
    } while (cursor !== '0');
    await r.quit();
  }
  if (want(2)) {
    const schema = `lsbench_q_${process.pid}`;
    const store = createStore(postgres({ url: DATABASE_URL, schema, poolSize: 24 }));
    const ours = lockstepSide('Lockstep', store);
    const gw = await graphileSide();
    const pb = await pgBossSide();
    await compare('PostgreSQL: process', [gw, pb], ours);
    await gw.close();
    await pb.close();
    await ours.close();
    const pgmod = await import('pg');
    const c = new pgmod.default.Client({ connectionString: DATABASE_URL });
    await c.connect();
    for (const s of [schema, `lsbench_gw_${process.pid}`, `lsbench_pb_${process.pid}`]) {
      await c.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
    }
    await c.end();
  }
  if (want(3)) {
    const ours = lockstepSide('Lockstep memory', createStore(memory()));
    const n = Math.max(JOBS, 200_000);
    await processRate(ours, 20_000);
    const rates: number[] = [];
    for (let p = 0; p < PAIRS_; p++) rates.push(await processRate(ours, n));
    const e = await enqueueRates(ours);
    console.log(
      `\nMemory: process ${n} jobs: ${median(rates).toFixed(0)} jobs/s (median of ${PAIRS_}) | enqueue ${e.one.toFixed(0)} jobs/s one by one, ${e.bulk.toFixed(0)} jobs/s in bulk`,
    );
    await ours.close();
  }
}
