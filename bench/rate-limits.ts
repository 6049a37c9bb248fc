/**
 * Rate-limit benchmarks: `store.rateLimiter(...).consume(key)` against rate-limiter-flexible (a
 * dev dependency) on the same server in the same run, 16 concurrent callers, nothing refused
 * (a limit no run reaches), on ONE hot key and spread over 10 000 keys:
 *
 * - Redis: `RateLimiterRedis` (ioredis, one connection) vs Lockstep on `redis()`. Target >= 1x
 *   (it does less: a fixed window from the key's first request, on a counter with a TTL).
 * - PostgreSQL: `RateLimiterPostgres` (pg pool) vs Lockstep on `postgres()`. Target >= 1x.
 * - memory: `RateLimiterMemory` vs Lockstep on `memory()`. Target >= 0.5x.
 *
 * Lockstep is measured twice: the exact sliding window (windowMs 1000: a hot key keeps one entry
 * per admission of the last second) and the token bucket (constant state per key). Each side
 * first runs uncounted for BENCH_WARMUP s, then they alternate BENCH_PAIRS pairs of
 * BENCH_SECONDS rounds; a ratio is the median of the per-pair ratios (see `alternate`).
 *
 * Run: `npm run bench -- rate-limits` (REDIS_URL, DATABASE_URL; BENCH_ONLY=redis,postgres,memory).
 */
import { Redis } from 'ioredis';
import pg from 'pg';
import { RateLimiterMemory, RateLimiterPostgres, RateLimiterRedis } from 'rate-limiter-flexible';
import { postgres } from '../src/backends/postgres/index.js';
import { redis } from '../src/backends/redis/index.js';
import { type Backend, createStore, memory } from '../src/index.js';
import {
  alternate,
  type Measure,
  median,
  PAIRS,
  percentile,
  ratioText,
  WARMUP_SECONDS,
} from './measure.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PG_URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const WORKERS = 16;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const ONLY = new Set(
  (process.env.BENCH_ONLY ?? 'redis,postgres,memory').split(',').map((s) => s.trim()),
);
/** A limit no run reaches: nothing is refused on either side. */
const LIMIT = 1_000_000_000;
const KEYS = 10_000;

const rate = (m: Measure) => (m.ops / m.ms) * 1000;
const spread = () => `k${Math.floor(Math.random() * KEYS)}`;

type Consume = (key: string) => Promise<unknown>;

async function section(
  title: string,
  target: number,
  anchorName: string,
  anchor: Consume,
  ours: Array<[string, Consume]>,
  key: () => string,
): Promise<string[]> {
  const r = await alternate(
    WORKERS,
    SECONDS,
    () => anchor(key()),
    ours.map(
      ([, c]) =>
        () =>
          c(key()),
    ),
  );
  const line = (name: string, m: Measure, tail: string) =>
    `  ${name.padEnd(40)} ${rate(m).toFixed(0).padStart(8)} consume/s  p99 ${percentile(m.lat, 0.99).toFixed(2)} ms  ${tail}`;
  const lines = [title, line(anchorName, r.anchor, '(anchor)')];
  ours.forEach(([name], i) => {
    const ratios = r.ratios[i] as number[];
    const ok = median(ratios) >= target;
    lines.push(
      line(
        name,
        r.subjects[i] as Measure,
        `${ratioText(ratios)} (target >= ${target}x${ok ? '' : ' MISSED'})`,
      ),
    );
  });
  for (const l of lines) console.log(l);
  return lines;
}

/** Lockstep's two limiters on one backend (nothing refused). */
function ours(backend: Backend, tag: string): { sw: Consume; tb: Consume; close(): Promise<void> } {
  const store = createStore(backend);
  const sw = store.rateLimiter(`bench_sw_${tag}`, { limit: LIMIT, windowMs: 1000 });
  const tb = store.rateLimiter(`bench_tb_${tag}`, {
    limit: LIMIT,
    windowMs: 1000,
    algorithm: 'token-bucket',
  });
  return {
    sw: (k) => sw.consume(k),
    tb: (k) => tb.consume(k),
    close: () => store.close(),
  };
}

/** Runs the rate-limit benchmarks. */
export default async function main(): Promise<void> {
  console.log(
    `rate-limit bench: ${WORKERS} callers, nothing refused, ${WARMUP_SECONDS}s warm-up, then ${PAIRS} alternated pairs of ${SECONDS}s rounds; ratios: median of the pairs (range)`,
  );
  const tag = `${process.pid}_${Date.now().toString(36)}`;
  if (ONLY.has('redis')) {
    const client = new Redis(REDIS_URL);
    const rlf = new RateLimiterRedis({
      storeClient: client,
      points: LIMIT,
      duration: 1,
      keyPrefix: `rlfbench${tag}`,
    });
    const l = ours(redis({ url: REDIS_URL, prefix: `lsbench:${tag}` }), tag);
    try {
      for (const [name, key] of [
        ['hot key', () => 'hot'],
        ['10k keys', spread],
      ] as const) {
        await section(
          `redis, ${name}`,
          1,
          'rate-limiter-flexible RateLimiterRedis',
          (k) => rlf.consume(k),
          [
            ['lockstep sliding-window (exact)', l.sw],
            ['lockstep token-bucket', l.tb],
          ],
          key,
        );
      }
    } finally {
      await l.close();
      await client.quit();
    }
  }
  if (ONLY.has('postgres')) {
    const schema = `lsbench_rl_${process.pid}`;
    const pool = new pg.Pool({ connectionString: PG_URL, max: 16 });
    await pool.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    const rlf = await new Promise<RateLimiterPostgres>((resolve, reject) => {
      const r: RateLimiterPostgres = new RateLimiterPostgres(
        { storeClient: pool, schemaName: schema, tableName: 'rlf', points: LIMIT, duration: 1 },
        (err?: unknown) => (err ? reject(err) : resolve(r)),
      );
    });
    const l = ours(postgres({ url: PG_URL, schema, poolSize: 16 }), tag);
    try {
      for (const [name, key] of [
        ['hot key', () => 'hot'],
        ['10k keys', spread],
      ] as const) {
        await section(
          `postgres, ${name}`,
          1,
          'rate-limiter-flexible RateLimiterPostgres',
          (k) => rlf.consume(k),
          [
            ['lockstep sliding-window (exact)', l.sw],
            ['lockstep token-bucket', l.tb],
          ],
          key,
        );
      }
    } finally {
      await l.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    }
  }
  if (ONLY.has('memory')) {
    const rlf = new RateLimiterMemory({ points: LIMIT, duration: 1 });
    const l = ours(memory(), tag);
    try {
      for (const [name, key] of [
        ['hot key', () => 'hot'],
        ['10k keys', spread],
      ] as const) {
        await section(
          `memory, ${name}`,
          0.5,
          'rate-limiter-flexible RateLimiterMemory',
          (k) => rlf.consume(k),
          [
            ['lockstep sliding-window (exact)', l.sw],
            ['lockstep token-bucket', l.tb],
          ],
          key,
        );
      }
    } finally {
      await l.close();
    }
  }
}
