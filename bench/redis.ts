/**
 * Redis benchmarks: Lockstep through the public store API (`createStore(redis(...))`) against
 * what users write today, in the same run, on the same Redis, 16 concurrent workers on ONE hot
 * key, one connection per side (plus 16 for the WATCH anchor, which needs one per transaction).
 *
 * 1. lock, read, modify, commit, release: `Counter.lock(hot, d => d.n += 1)` vs
 *    @sesamecare-oss/redlock `using([key])` + ioredis GET/SET (redlock's default retry settings:
 *    200 ms delay + 200 ms jitter; retryCount -1 so that no attempt fails).   target >= 3x
 * 2. atomic increment: `Counter.apply(hot, d => d.n.incr(1))` (guards, version, schema check)
 *    vs raw ioredis INCR.                                                     target >= 0.5x
 * 3. optimistic update: `Counter.update(hot, d => d.n += 1)` vs a hand-written
 *    WATCH/GET/MULTI/SET/EXEC retry loop.                                     target >= 1x
 * 4. hand-off latency between two processes waiting on the same lock: from the moment the
 *    holder's fn returns to the moment the other process's fn starts (commit + release + pub/sub
 *    wake-up + acquire + read). p50/p99.
 * 5. (only with BENCH_ONLY=...,5) a floor for section 1: the cheapest lock hand-off with exact
 *    snapshots this machine allows, one minimal FCALL per hand-off (check the fence, HSET, INCR
 *    it; the next local holder starts on the reply), no schema, no queue in Redis, no renewal,
 *    no crash safety; against the same redlock anchor. Not a target: it shows how far from the
 *    machine's limit section 1 is.
 *
 * Each side first runs uncounted for BENCH_WARMUP seconds (default 1), then the two alternate for
 * BENCH_PAIRS pairs (default 5) of BENCH_SECONDS rounds; each ratio is the median of the per-pair
 * ratios, printed with their range (see `alternate` in measure.ts).
 * Run: `npm run bench -- redis` (REDIS_URL, default redis://127.0.0.1:6379; BENCH_SECONDS=2;
 * BENCH_ONLY=1,2 runs only those sections).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redlock } from '@sesamecare-oss/redlock';
import { Redis } from 'ioredis';
import { z } from 'zod';
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

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const WORKERS = 16;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
/** BENCH_ONLY=2 or BENCH_ONLY=1,2: run only these sections (4 = hand-off); default all. */
const ONLY = new Set((process.env.BENCH_ONLY ?? '1,2,3,4').split(',').map((x) => x.trim()));

const rate = (m: Measure) => (m.ops / m.ms) * 1000;

async function pair(
  title: string,
  target: number,
  anchorName: string,
  anchor: (w: number) => Promise<unknown>,
  oursName: string,
  ours: (w: number) => Promise<unknown>,
): Promise<string> {
  const r = await alternate(WORKERS, SECONDS, anchor, [ours]);
  const o = r.subjects[0] as Measure;
  const ratios = r.ratios[0] as number[];
  const ratio = median(ratios);
  const line = (name: string, m: Measure, tail: string) =>
    `  ${name.padEnd(52)} ${rate(m).toFixed(0).padStart(7)} ops/s  p50 ${percentile(m.lat, 0.5).toFixed(2)} ms  p99 ${percentile(m.lat, 0.99).toFixed(2)} ms  ${tail}`;
  const out = [
    title,
    line(anchorName, r.anchor, '(anchor)'),
    line(
      oursName,
      o,
      target > 0
        ? `${ratioText(ratios)} (target >= ${target}x${ratio >= target ? '' : ' MISSED'})`
        : `${ratioText(ratios)} (reference, no target)`,
    ),
  ].join('\n');
  console.log(out);
  return out;
}

async function handoff(prefix: string, rounds: number): Promise<string> {
  const script = fileURLToPath(
    new URL('../test/backends/redis/fixtures/handoff.ts', import.meta.url),
  );
  const root = fileURLToPath(new URL('..', import.meta.url));
  const setup = createStore(redis({ url: URL_, prefix }));
  await setup.model('handoff', z.object({ n: z.number().int() })).put('ho', { n: 0 });
  await setup.close();
  const kids = [0, 1].map(() =>
    spawn(process.execPath, ['--import', 'tsx', script, prefix, String(rounds)], {
      cwd: root,
      env: { ...process.env, REDIS_URL: URL_ },
      stdio: ['pipe', 'pipe', 'inherit'],
    }),
  );
  const outputs = kids.map(
    (k) =>
      new Promise<string>((resolve) => {
        let s = '';
        k.stdout.on('data', (c) => (s += String(c)));
        k.on('exit', () => resolve(s));
      }),
  );
  const ready = kids.map((k) => new Promise<void>((r) => k.stdout.once('data', () => r())));
  await Promise.all(ready);
  for (const k of kids) k.stdin.write('go\n');
  const logs = (await Promise.all(outputs)).map((s, p) => {
    const line = s.split('\n').find((l) => l.startsWith('['));
    return (JSON.parse(line ?? '[]') as Array<[number, number, number]>).map(([n, got, end]) => ({
      n,
      got,
      end,
      p,
    }));
  });
  const byN = new Map(logs.flat().map((e) => [e.n, e]));
  const lat: number[] = [];
  for (const [n, e] of byN) {
    const next = byN.get(n + 1);
    if (next && next.p !== e.p) lat.push(next.got - e.end);
  }
  const out = `4. hand-off latency between two processes (${lat.length} cross-process hand-offs)\n  fn returns in one process -> fn starts in the other: p50 ${percentile(lat, 0.5).toFixed(2)} ms  p99 ${percentile(lat, 0.99).toFixed(2)} ms`;
  console.log(out);
  return out;
}

/** Deletes every key matching `pattern` (a bench's cleanup; the bench does not import tests). */
export async function dropKeys(raw: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await raw.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await raw.del(...keys);
  } while (cursor !== '0');
}

/** The anchor of sections 1 and 5: redlock's `using` around an ioredis GET and SET. */
function redlockCounter(redlock: Redlock, raw: Redis, rawKey: string): () => Promise<unknown> {
  return () =>
    redlock.using([`${rawKey}:lock`], 5_000, async () => {
      const v = Number(await raw.get(rawKey));
      await raw.set(rawKey, String(v + 1));
    });
}

/** Section 5: one minimal FCALL per hand-off between the holders of one process. */
async function floor(raw: Redis, redlock: Redlock, rawKey: string): Promise<string> {
  const lib = `lsfloor_${process.pid}`;
  await raw.call(
    'FUNCTION',
    'LOAD',
    'REPLACE',
    `#!lua name=${lib}\nredis.register_function('${lib}_commit', function(keys, args)\n` +
      "  if redis.call('GET', keys[2]) ~= args[1] then return -1 end\n" +
      "  redis.call('HSET', keys[1], 'n', args[2])\n" +
      "  return redis.call('INCR', keys[2])\nend)",
  );
  const doc = `${rawKey}:floor:{d}`;
  const fence = `${rawKey}:floor:{d}:f`;
  await raw.set(fence, '0');
  let held = false;
  const queue: Array<() => void> = [];
  let n = 0;
  let f = 0;
  const lock = async () => {
    if (held) await new Promise<void>((r) => queue.push(r));
    else held = true;
    const v = n + 1;
    const next = (await raw.fcall(`${lib}_commit`, 2, doc, fence, String(f), String(v))) as number;
    if (next < 0) throw new Error('floor: fence moved');
    f = next;
    n = v;
    const waiter = queue.shift();
    if (waiter) waiter();
    else held = false;
  };
  try {
    return await pair(
      '5. floor for section 1: one minimal FCALL per hand-off (not a target)',
      0,
      'redlock.using([key]) + GET + SET',
      redlockCounter(redlock, raw, rawKey),
      'fence check + HSET + INCR, next holder on the reply',
      lock,
    );
  } finally {
    await raw.call('FUNCTION', 'DELETE', lib);
    await raw.del(doc, fence);
  }
}

/** Runs the Redis benchmarks and prints ratios against redlock, INCR and WATCH/MULTI. */
export default async function main(): Promise<void> {
  const prefix = `lsbench:${process.pid}`;
  const raw = new Redis(URL_);
  const watchers = Array.from({ length: WORKERS }, () => new Redis(URL_));
  const store = createStore(redis({ url: URL_, prefix }));
  const Counter = store.model('counter', z.object({ n: z.number().int() }));
  await Counter.put('hot', { n: 0 });
  const rawKey = `${prefix}:raw`;
  await raw.set(rawKey, '0');
  const redlock = new Redlock([raw], { retryCount: -1 });
  try {
    console.log(
      `redis bench: ${WORKERS} workers on one hot key, ${WARMUP_SECONDS}s warm-up, then ${PAIRS} alternated pairs of ${SECONDS}s rounds; ratios: median of the pairs (range)`,
    );
    if (ONLY.has('1'))
      await pair(
        '1. lock, read, modify, commit, release (one hot key)',
        3,
        'redlock.using([key]) + GET + SET',
        redlockCounter(redlock, raw, rawKey),
        'lockstep Counter.lock(hot, d => d.n += 1)',
        () => Counter.lock('hot', (d) => void (d.n += 1)),
      );
    if (ONLY.has('2'))
      await pair(
        '2. atomic increment (one hot key)',
        0.5,
        'ioredis INCR',
        () => raw.incr(rawKey),
        'lockstep Counter.apply(hot, d => d.n.incr(1))',
        () => Counter.apply('hot', (d) => d.n.incr(1)),
      );
    if (ONLY.has('3'))
      await pair(
        '3. optimistic read-modify-write (one hot key)',
        1,
        'WATCH; GET; MULTI; SET; EXEC (retry on conflict)',
        async (w) => {
          const c = watchers[w] as Redis;
          for (;;) {
            await c.watch(rawKey);
            const v = Number(await c.get(rawKey));
            const r = await c
              .multi()
              .set(rawKey, String(v + 1))
              .exec();
            if (r !== null) return;
          }
        },
        'lockstep Counter.update(hot, d => d.n += 1)',
        () => Counter.update('hot', (d) => void (d.n += 1), { retries: 100_000 }),
      );
    if (ONLY.has('4')) await handoff(`${prefix}:ho`, 300);
    if (ONLY.has('5')) await floor(raw, redlock, rawKey);
  } finally {
    await store.close();
    // Lockstep's keys (its layout escapes the prefix; the hand-off run has its own prefix), and
    // the anchors' raw keys.
    for (const pattern of [
      new KeyLayout(prefix).pattern,
      new KeyLayout(`${prefix}:ho`).pattern,
      `${rawKey}*`,
    ]) {
      await dropKeys(raw, pattern);
    }
    await raw.quit();
    await Promise.all(watchers.map((c) => c.quit()));
  }
}
