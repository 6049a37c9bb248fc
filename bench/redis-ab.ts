/**
 * Two builds of Lockstep side by side on Redis, in ONE process: how a change to the hot path is
 * judged on a machine whose speed moves 2x from minute to minute. Each build gets its own store
 * (own connection, own key prefix, own hot key) and 16 workers; the two alternate in rounds of
 * `AB_SECONDS`, each starting first in every other pair, and the result is the median of the
 * per-pair ratios B/A, with CPU per operation (process CPU time / operations) beside it.
 *
 * Measure the noise first: two copies of the same build (`cp -r dist /tmp/a; cp -r dist /tmp/b`)
 * gave 0.985x and 1.081x here, so a single run does not establish a difference under ~8%.
 *
 * Run: `AB_A=/tmp/before AB_B=/tmp/after npm run bench -- redis-ab` where each directory is a
 * copy of `dist/` (`npm run build`, then `cp -r dist /tmp/after`; check out the older commit,
 * build and copy again). `AB_OP=lock` (default) or `apply`; `AB_ROUNDS=12`; `AB_SECONDS=1.5`.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { KeyLayout } from '../src/backends/redis/keys.js';
import { median } from './measure.js';
import { dropKeys } from './redis.js';

const URL_ = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const WORKERS = 16;

interface Side {
  name: string;
  op: () => Promise<unknown>;
  close: () => Promise<void>;
  prefix: string;
}

interface StoreLike {
  model(
    name: string,
    schema: z.ZodType<{ n: number }>,
  ): {
    put(key: string, data: { n: number }): Promise<unknown>;
    lock(key: string, fn: (d: { n: number }) => void): Promise<unknown>;
    apply(key: string, build: (d: { n: { incr(by: number): void } }) => void): Promise<unknown>;
  };
  close(): Promise<void>;
}

async function side(dir: string, tag: string, op: string): Promise<Side> {
  const base = pathToFileURL(`${resolve(dir)}/`).href;
  const { createStore } = (await import(`${base}index.js`)) as {
    createStore: (backend: unknown) => StoreLike;
  };
  const { redis } = (await import(`${base}backends/redis/index.js`)) as {
    redis: (o: { url: string; prefix: string }) => unknown;
  };
  const prefix = `lsab:${process.pid}:${tag}`;
  const store = createStore(redis({ url: URL_, prefix }));
  const C = store.model('counter', z.object({ n: z.number().int() }));
  await C.put('hot', { n: 0 });
  return {
    name: dir,
    prefix,
    op:
      op === 'apply'
        ? () => C.apply('hot', (d) => d.n.incr(1))
        : () => C.lock('hot', (d) => void (d.n += 1)),
    close: () => store.close(),
  };
}

/** Ops per second and CPU microseconds per op of `op` run by 16 workers for `seconds`. */
async function round(op: () => Promise<unknown>, seconds: number): Promise<[number, number]> {
  const end = performance.now() + seconds * 1000;
  let ops = 0;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (performance.now() < end) {
        await op();
        ops++;
      }
    }),
  );
  const cpu = process.cpuUsage(c0);
  return [(ops / (performance.now() - t0)) * 1000, (cpu.user + cpu.system) / ops];
}

/** Runs the A/B and prints both medians and the median of the per-pair ratios. */
export default async function main(): Promise<void> {
  const dirA = process.env.AB_A;
  const dirB = process.env.AB_B;
  if (!dirA || !dirB) {
    console.error('set AB_A and AB_B to two copies of dist/ (see bench/redis-ab.ts)');
    process.exitCode = 2;
    return;
  }
  const op = process.env.AB_OP ?? 'lock';
  const rounds = Number(process.env.AB_ROUNDS ?? 12);
  const seconds = Number(process.env.AB_SECONDS ?? 1.5);
  const a = await side(dirA, 'a', op);
  const b = await side(dirB, 'b', op);
  try {
    for (const s of [a, b, a, b]) await round(s.op, 1); // warm-up
    const ra: Array<[number, number]> = [];
    const rb: Array<[number, number]> = [];
    const ratios: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const [x, y] = i % 2 === 0 ? [a, b] : [b, a];
      const first = await round(x.op, seconds);
      const second = await round(y.op, seconds);
      const [va, vb] = i % 2 === 0 ? [first, second] : [second, first];
      ra.push(va);
      rb.push(vb);
      ratios.push(vb[0] / va[0]);
    }
    const line = (s: Side, r: Array<[number, number]>) =>
      `${s.name}: ${median(r.map((v) => v[0])).toFixed(0)} ${op}s/s, ${median(r.map((v) => v[1])).toFixed(0)} us CPU per ${op}`;
    console.log(
      `redis A/B, ${op}, ${WORKERS} workers on one hot key, ${rounds} pairs of ${seconds}s rounds`,
    );
    console.log(`  A ${line(a, ra)}`);
    console.log(`  B ${line(b, rb)}`);
    console.log(
      `  B/A: median of pairs ${median(ratios).toFixed(3)}x [${ratios.map((r) => r.toFixed(2)).join(' ')}]`,
    );
  } finally {
    await a.close();
    await b.close();
    const raw = new Redis(URL_);
    for (const s of [a, b]) await dropKeys(raw, new KeyLayout(s.prefix).pattern);
    await raw.quit();
  }
}
