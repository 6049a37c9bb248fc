/**
 * Two builds of the store side by side in one process, on the memory backend: this checkout
 * against an older one, for `Model.apply` and `Model.lock` (16 tasks, one hot document and 10,000
 * documents), in ops per CPU-second, as the median of alternated pairs (the older build first in
 * even pairs, last in odd ones). A checkout of the older tree is needed beside this one:
 *
 * ```sh
 * git worktree add /tmp/lockstep-base <commit> && ln -s "$PWD/node_modules" /tmp/lockstep-base/
 * STORE_AB_BASE=/tmp/lockstep-base npm run bench -- store-ab
 * ```
 *
 * `STORE_AB_PAIRS` (default 9) pairs of `STORE_AB_MS` (default 300) ms per side.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import * as here from '../src/index.js';

const MS = Number(process.env.STORE_AB_MS ?? 300);
const PAIRS = Math.max(1, Math.floor(Number(process.env.STORE_AB_PAIRS ?? 9)));
const TASKS = 16;
const Counter = z.object({
  n: z.number().int().min(0),
  name: z.string(),
  tags: z.array(z.string()),
});

type Lib = typeof here;
type Path = 'apply' | 'lock';

async function measure(lib: Lib, path: Path, spread: number): Promise<number> {
  const store = lib.createStore(lib.memory());
  const M = store.model('counter', Counter);
  const keys = Array.from({ length: spread }, (_, i) => `c:${i}`);
  for (const k of keys) await M.create(k, { n: 0, name: 'counter', tags: ['a', 'b'] });
  const one =
    path === 'apply'
      ? (k: string) => M.apply(k, (c) => c.n.incr(1))
      : (k: string) =>
          M.lock(k, (d) => {
            d.n += 1;
          });
  const c0 = process.cpuUsage();
  const end = performance.now() + MS;
  let n = 0;
  await Promise.all(
    Array.from({ length: TASKS }, async (_, t) => {
      let i = t;
      while (performance.now() < end) {
        await one(keys[i % spread] as string);
        i += TASKS;
        n++;
      }
    }),
  );
  const c = process.cpuUsage(c0);
  await store.close();
  return n / ((c.user + c.system) / 1e6);
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** Runs the comparison; prints one line per path and spread. */
export default async function main(): Promise<void> {
  const dir = process.env.STORE_AB_BASE;
  if (!dir) {
    console.error(
      'store-ab: set STORE_AB_BASE to a checkout of the older tree (see bench/store-ab.ts)',
    );
    process.exitCode = 2;
    return;
  }
  const base = (await import(pathToFileURL(resolve(dir, 'src/index.ts')).href)) as Lib;
  console.log(`store-ab: ${PAIRS} alternated pairs of ${MS} ms, ops per CPU-second, base ${dir}`);
  for (const path of ['apply', 'lock'] as const) {
    for (const spread of [1, 10_000]) {
      await measure(base, path, spread);
      await measure(here, path, spread); // warm-up
      const ratios: number[] = [];
      const a: number[] = [];
      const b: number[] = [];
      for (let p = 0; p < PAIRS; p++) {
        const baseFirst = p % 2 === 0;
        const x1 = baseFirst ? await measure(base, path, spread) : 0;
        const y = await measure(here, path, spread);
        const x = baseFirst ? x1 : await measure(base, path, spread);
        a.push(x);
        b.push(y);
        ratios.push(y / x);
      }
      const s = [...ratios].sort((p, q) => p - q);
      console.log(
        `${path.padEnd(5)} ${String(spread).padStart(5)} docs: base ${(median(a) / 1e3).toFixed(0)}k, this ${(median(b) / 1e3).toFixed(0)}k per CPU-s; this/base ${median(ratios).toFixed(3)} (pairs ${(s[0] as number).toFixed(3)}-${(s[s.length - 1] as number).toFixed(3)})`,
      );
    }
  }
}
