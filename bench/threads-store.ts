/**
 * The store through `remoteBackend` against the memory backend in-process, in one run:
 * `npm run bench -- threads-store` (THREADS_STORE_MS=<ms per measurement>, default 500;
 * BENCH_PAIRS pairs, default 5).
 *
 * Both sides run 16 concurrent tasks on the main thread, on one hot counter document (zod
 * schema): `Model.apply` (an atomic increment: one `write`, whose schema post-check is a round
 * trip back to this thread on the remote side) and `Model.lock` (acquire + commit). Anchor: the
 * same store calls on `memory()` in this thread. Subject: `createStore(remoteBackend(handle))`,
 * the memory backend owned by a worker thread (every call crosses a MessagePort). Each pair is
 * measured back to back (anchor, then subject); a ratio is the median of the per-pair ratios.
 * `Model.lock` is measured after every apply (it turns on the deadlock detector's
 * AsyncLocalStorage for the whole process). Counters are checked at the end (no lost update).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { build } from 'esbuild';
import { z } from 'zod';
import { createStore, memory } from '../src/index.js';
import { type BackendHandle, remoteBackend } from '../src/threads/index.js';
import { measure, PAIRS, warmUp } from './measure.js';

const MS = Number(process.env.THREADS_STORE_MS ?? 500);
const TASKS = 16;
const Counter = z.object({ n: z.number().int().min(0) });

async function owner(): Promise<{ worker: Worker; handle(): Promise<BackendHandle> }> {
  const out = join(mkdtempSync(join(tmpdir(), 'lockstep-bench-')), 'owner.mjs');
  await build({
    entryPoints: [fileURLToPath(new URL('./threads-store-owner.ts', import.meta.url))],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: out,
    logLevel: 'error',
  });
  const worker = new Worker(out);
  return {
    worker,
    handle: () =>
      new Promise((resolve) => {
        worker.once('message', resolve);
        worker.postMessage('handle');
      }),
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};
const k = (n: number) => `${(n / 1000).toFixed(1)}k`;

export default async function threadsStore(): Promise<void> {
  const o = await owner();
  const local = createStore(memory());
  const remote = createStore(remoteBackend(await o.handle()));
  const sides = [local, remote].map((s) => s.model('bench', Counter));
  for (const M of sides) await M.create('hot', { n: 0 });
  const counts = [0, 0];
  const apply = (i: number) => async () => {
    await (sides[i] as (typeof sides)[number]).apply('hot', (c) => c.n.incr(1));
    counts[i] = (counts[i] as number) + 1;
  };
  const lock = (i: number) => async () => {
    await (sides[i] as (typeof sides)[number]).lock('hot', (d) => {
      d.n += 1;
    });
    counts[i] = (counts[i] as number) + 1;
  };
  const rows: string[] = [];
  for (const [what, make] of [
    ['Model.apply (atomic incr)', apply],
    ['Model.lock (acquire + commit)', lock],
  ] as const) {
    await warmUp(TASKS, [make(0), make(1)]);
    const rates: [number[], number[]] = [[], []];
    const ratios: number[] = [];
    for (let p = 0; p < PAIRS; p++) {
      const a = await measure(TASKS, MS / 1000, make(0));
      const b = await measure(TASKS, MS / 1000, make(1));
      const ra = a.ops / (a.ms / 1000);
      const rb = b.ops / (b.ms / 1000);
      rates[0].push(ra);
      rates[1].push(rb);
      ratios.push(rb / ra);
    }
    rows.push(
      `| ${what} | ${k(median(rates[0]))}/s | ${k(median(rates[1]))}/s | ${median(ratios).toFixed(2)}x |`,
    );
  }
  const [l, r] = [await sides[0]?.get('hot'), await sides[1]?.get('hot')];
  if (l?.data.n !== counts[0] || r?.data.n !== counts[1]) {
    throw new Error(`lost updates: ${l?.data.n} vs ${counts[0]}, ${r?.data.n} vs ${counts[1]}`);
  }
  console.log(`threads-store: ${TASKS} tasks, one hot document, ${PAIRS} pairs of ${MS} ms`);
  console.log('| path | memory in-process | remoteBackend (owner in a worker) | ratio |');
  console.log('|---|---:|---:|---:|');
  for (const row of rows) console.log(row);
  await remote.close();
  await local.close();
  await o.worker.terminate();
}
