/**
 * Named locks on Redis: Lockstep's `store.mutex(name).run` and `store.semaphore(name, { permits:
 * 5 }).run` (createStore(redis(...)), the boundary included) against what users run today, in
 * the same run, on the same Redis, 16 concurrent contenders on ONE name, one connection per side,
 * and the same critical section on every side: GET and SET of a counter on a plain ioredis
 * connection (as bench/redis.ts section 1; the count is checked at the end: no lost update).
 *
 * 1. mutex: vs @sesamecare-oss/redlock `using([name], 5000, fn)` (its default retry settings:
 *    200 ms delay + 200 ms jitter; retryCount -1 so that no attempt fails) and vs redis-semaphore
 *    `Mutex` acquire/release (its default 10 ms retry interval).
 *    Target: >= 2x the faster of the two (median of the per-pair ratios), p99 <= 1/10 of its p99.
 * 2. semaphore(5): vs redis-semaphore `Semaphore(client, name, 5)` acquire/release.
 *    Target: >= 1x.
 *
 * Each side first runs uncounted for BENCH_WARMUP seconds (default 1), then the sides alternate
 * for BENCH_PAIRS pairs (default 5) of BENCH_SECONDS rounds (see `alternate` in measure.ts).
 * Run: `npm run bench -- named-locks-redis` (REDIS_URL, default redis://127.0.0.1:6379;
 * BENCH_SECONDS=2; BENCH_ONLY=1 or 2 runs one section; BENCH_CS=empty for an empty critical
 * section, where the anchors' barging shows most: a releasing worker takes the lock straight
 * back while the others sleep through their retry delay).
 */
import { Redlock } from '@sesamecare-oss/redlock';
import { Redis } from 'ioredis';
import { Mutex as RsMutex, Semaphore as RsSemaphore } from 'redis-semaphore';
import { redis } from '../src/backends/redis/index.js';
import { KeyLayout } from '../src/backends/redis/keys.js';
import { createStore } from '../src/index.js';
import {
  alternate,
  type Measure,
  median,
  PAIRS,
  percentile,
  ratioText,
  WARMUP_SECONDS,
} from './measure.js';
import { dropKeys } from './redis.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const WORKERS = 16;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
/** BENCH_CS=empty: an empty critical section (the locks' own cost only; no lost-update check). */
const EMPTY = process.env.BENCH_CS === 'empty';
const ONLY = new Set((process.env.BENCH_ONLY ?? '1,2').split(',').map((x) => x.trim()));

const rate = (m: Measure) => (m.ops / m.ms) * 1000;
const line = (name: string, m: Measure, tail: string) =>
  `  ${name.padEnd(50)} ${rate(m).toFixed(0).padStart(7)} ops/s  p50 ${percentile(m.lat, 0.5).toFixed(2)} ms  p99 ${percentile(m.lat, 0.99).toFixed(2)} ms  max ${m.lat.reduce((a, x) => (x > a ? x : a), 0).toFixed(0)} ms  ${tail}`;

/** Runs the named-lock benchmarks and prints rates, p99s and ratios. */
export default async function main(): Promise<void> {
  const prefix = `lsbench-nl:${process.pid}`;
  const raw = new Redis(URL_);
  const store = createStore(redis({ url: URL_, prefix }));
  const redlock = new Redlock([raw], { retryCount: -1 });
  const rawKey = `${prefix}:raw`;
  const counter = `${rawKey}:n`;
  /** The critical section: a read-modify-write that loses updates unless the lock excludes. */
  let done = 0;
  const work = EMPTY
    ? async (): Promise<void> => {
        await Promise.resolve();
        done++;
      }
    : async (): Promise<void> => {
        const v = Number(await raw.get(counter));
        await raw.set(counter, String(v + 1));
        done++;
      };
  const quiet = { acquireTimeout: 120_000, lockTimeout: 10_000, onLockLost: () => {} };
  const out: string[] = [];
  try {
    console.log(
      `named locks on redis: ${WORKERS} contenders on one name, ${WARMUP_SECONDS}s warm-up, then ${PAIRS} alternated pairs of ${SECONDS}s rounds; ratios: median of the pairs (range)`,
    );
    if (ONLY.has('1')) {
      const mutex = store.mutex('hot');
      const r = await alternate(
        WORKERS,
        SECONDS,
        () => redlock.using([`${rawKey}:redlock`], 5_000, work),
        [
          async () => {
            const m = new RsMutex(raw, `${rawKey}:rsmutex`, quiet);
            await m.acquire();
            try {
              await work();
            } finally {
              await m.release();
            }
          },
          () => mutex.run(work),
        ],
      );
      const [rs, ours] = r.subjects as [Measure, Measure];
      const [rsRatios, ourRatios] = r.ratios as [number[], number[]];
      // Per pair: ours over the faster anchor of that pair.
      const vsFaster = ourRatios.map((x, i) => x / Math.max(1, rsRatios[i] as number));
      const faster = rate(r.anchor) >= rate(rs) ? r.anchor : rs;
      const p99 = percentile(ours.lat, 0.99);
      const theirP99 = percentile(faster.lat, 0.99);
      const ratio = median(vsFaster);
      out.push(
        `1. mutex, 16 contenders on one name (${EMPTY ? 'empty critical section' : 'GET + SET inside'})`,
        line('redlock.using([name], 5000, fn)', r.anchor, '(anchor)'),
        line('redis-semaphore Mutex acquire/release', rs, `${ratioText(rsRatios)} vs redlock`),
        line(
          'lockstep store.mutex(name).run(fn)',
          ours,
          `${ratioText(vsFaster)} vs the faster anchor (target >= 2x${ratio >= 2 ? '' : ' MISSED'}); p99 ${(p99 / theirP99).toFixed(3)} of its p99 (target <= 0.1${p99 <= theirP99 / 10 ? '' : ' MISSED'})`,
        ),
      );
      console.log(out.slice(-4).join('\n'));
      // Every mutex excluded: not one update lost.
      const n = Number(await raw.get(counter));
      if (!EMPTY && n !== done)
        throw new Error(`lost updates: counter ${n}, critical sections ${done}`);
    }
    if (ONLY.has('2')) {
      const sem = store.semaphore('hot5', { permits: 5 });
      const r = await alternate(
        WORKERS,
        SECONDS,
        async () => {
          const s = new RsSemaphore(raw, `${rawKey}:rssem`, 5, quiet);
          await s.acquire();
          try {
            await work();
          } finally {
            await s.release();
          }
        },
        [() => sem.run(work)],
      );
      const ours = r.subjects[0] as Measure;
      const ratios = r.ratios[0] as number[];
      out.push(
        `2. semaphore(5), 16 contenders on one name (${EMPTY ? 'empty critical section' : 'GET + SET inside'})`,
        line('redis-semaphore Semaphore(5) acquire/release', r.anchor, '(anchor)'),
        line(
          'lockstep store.semaphore(name, {permits: 5}).run',
          ours,
          `${ratioText(ratios)} (target >= 1x${median(ratios) >= 1 ? '' : ' MISSED'})`,
        ),
      );
      console.log(out.slice(-3).join('\n'));
    }
  } finally {
    await store.close();
    for (const pattern of [
      new KeyLayout(prefix).pattern,
      `${rawKey}*`,
      `semaphore:${rawKey}*`,
      `mutex:${rawKey}*`,
    ]) {
      await dropKeys(raw, pattern);
    }
    await raw.quit();
  }
}
