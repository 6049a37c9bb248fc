/**
 * SQLite benchmarks: Lockstep's SQLite backend through the public store API against hand-written
 * better-sqlite3 code doing the same work in a `BEGIN IMMEDIATE` transaction on the same kind of
 * file (WAL, the same `synchronous` level), in the same run; memory for reference.
 *
 * 1. `apply` increment on ONE hot document: `Counter.apply(hot, d => d.n.incr(1))` vs `BEGIN
 *    IMMEDIATE; SELECT data; UPDATE data, version; COMMIT` (JSON parsed and written back).
 * 2. lock commit on ONE hot document: `Counter.lock(hot, d => { d.n += 1 })` (a lease taken, the
 *    document read, the commit fenced: two transactions) vs the same hand-written transaction
 *    (in SQLite the write transaction is the lock).
 * 3. 4 processes contend for one lock (bench/sqlite-worker.ts): wake-up latency (previous
 *    holder's commit to the next holder in another process) and each process's event-loop delay,
 *    next to a 5th process that only measures its own (the machine's floor at that moment).
 * 4. A waiter's idle cost: CPU time used by a process waiting 2 s for a lease held by another,
 *    next to the same 2 s with nobody waiting.
 *
 * Sections 1-2 alternate anchor and subjects for BENCH_PAIRS pairs (default 5) of BENCH_SECONDS
 * rounds (default 1) after BENCH_WARMUP s (default 1) per side; ratios are medians of the pairs.
 * BENCH_SYNC=normal|full (default: both). Run: `npm run bench -- sqlite`.
 */
import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { z } from 'zod';
import { sqlite } from '../src/backends/sqlite/index.js';
import { createStore, memory } from '../src/index.js';
import { tempDatabase } from '../test/support/sqlite.js';
import {
  alternate,
  type Measure,
  PAIRS,
  percentile,
  ratioText,
  WARMUP_SECONDS,
} from './measure.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 1);
const SYNCS = (process.env.BENCH_SYNC ?? 'normal,full').split(',') as Array<'normal' | 'full'>;
const ONLY = process.env.BENCH_SECTIONS?.split(',').map(Number);
const want = (n: number) => ONLY === undefined || ONLY.includes(n);
const rate = (m: Measure) => (m.ops / m.ms) * 1000;

async function pair(
  title: string,
  anchorName: string,
  anchor: () => Promise<unknown>,
  ours: Array<[string, () => Promise<unknown>]>,
): Promise<void> {
  const r = await alternate(
    1,
    SECONDS,
    anchor,
    ours.map(([, fn]) => fn),
  );
  console.log(title);
  console.log(
    `  ${anchorName.padEnd(52)} ${rate(r.anchor).toFixed(0).padStart(7)} ops/s  p99 ${percentile(r.anchor.lat, 0.99).toFixed(2)} ms  (anchor)`,
  );
  ours.forEach(([name], i) => {
    const m = r.subjects[i] as Measure;
    console.log(
      `  ${name.padEnd(52)} ${rate(m).toFixed(0).padStart(7)} ops/s  p99 ${percentile(m.lat, 0.99).toFixed(2)} ms  ${ratioText(r.ratios[i] as number[])}`,
    );
  });
}

/** The hand-written anchor: one document as JSON in a row, incremented in BEGIN IMMEDIATE. */
function rawCounter(path: string, synchronous: 'normal' | 'full') {
  const db = new Database(path, { timeout: 0 });
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${synchronous.toUpperCase()}`);
  db.exec(
    'CREATE TABLE IF NOT EXISTS raw (key TEXT PRIMARY KEY, version INTEGER NOT NULL, data TEXT NOT NULL) WITHOUT ROWID',
  );
  db.prepare("INSERT OR REPLACE INTO raw VALUES ('hot', 1, ?)").run(JSON.stringify({ n: 0 }));
  const begin = db.prepare('BEGIN IMMEDIATE');
  const commit = db.prepare('COMMIT');
  const select = db.prepare<[string], { version: number; data: string }>(
    'SELECT version, data FROM raw WHERE key = ?',
  );
  const update = db.prepare('UPDATE raw SET version = ?, data = ? WHERE key = ?');
  return {
    incr: async () => {
      begin.run();
      const row = select.get('hot') as { version: number; data: string };
      const data = JSON.parse(row.data) as { n: number };
      data.n += 1;
      update.run(row.version + 1, JSON.stringify(data), 'hot');
      commit.run();
    },
    close: () => db.close(),
  };
}

function runWorker(path: string, ms: number, sync: string, role = 'lock') {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(import.meta.dirname, 'sqlite-worker.ts'),
      path,
      String(ms),
      sync,
      role,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return new Promise<{ locks: number; wakeups: number[]; loopP99Ms: number; loopMaxMs: number }>(
    (resolve, reject) =>
      child.once('exit', (code) =>
        code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`worker exited ${code}`)),
      ),
  );
}

/** Runs the SQLite benchmarks. */
export default async function main(): Promise<void> {
  console.log(
    `sqlite bench: ${WARMUP_SECONDS}s warm-up, then ${PAIRS} alternated pairs of ${SECONDS}s rounds, 1 worker; ratios: median of the pairs (range)`,
  );
  const schema = z.object({ n: z.number() });
  for (const sync of SYNCS) {
    const db = tempDatabase('bench');
    const raw = rawCounter(`${db.path}.raw`, sync);
    const store = createStore(sqlite({ path: db.path, synchronous: sync }));
    const mem = createStore(memory());
    try {
      const Counter = store.model('counter', schema);
      const MemCounter = mem.model('counter', schema);
      await Counter.put('hot', { n: 0 });
      await MemCounter.put('hot', { n: 0 });
      if (want(1))
        await pair(
          `1. apply increment, one hot document (synchronous=${sync})`,
          'better-sqlite3 BEGIN IMMEDIATE; SELECT; UPDATE; COMMIT',
          raw.incr,
          [
            [
              'lockstep sqlite Counter.apply(hot, d => d.n.incr(1))',
              () => Counter.apply('hot', (d) => d.n.incr(1)),
            ],
            [
              'lockstep memory Counter.apply (reference)',
              () => MemCounter.apply('hot', (d) => d.n.incr(1)),
            ],
          ],
        );
      if (want(2))
        await pair(
          `2. lock, read, modify, commit, one hot document (synchronous=${sync})`,
          'better-sqlite3 BEGIN IMMEDIATE; SELECT; UPDATE; COMMIT',
          raw.incr,
          [
            [
              'lockstep sqlite Counter.lock(hot, d => d.n += 1)',
              () => Counter.lock('hot', (d) => void (d.n += 1)),
            ],
            [
              'lockstep memory Counter.lock (reference)',
              () => MemCounter.lock('hot', (d) => void (d.n += 1)),
            ],
          ],
        );
    } finally {
      raw.close();
      await store.close();
      await mem.close();
    }
    if (want(3)) {
      const setup = createStore(sqlite({ path: db.path, synchronous: sync }));
      await setup
        .model('counter', z.object({ n: z.number(), at: z.number(), by: z.number() }))
        .put('hot', { n: 0, at: 0, by: 0 });
      await setup.close();
      const ms = Number(process.env.BENCH_CONTEND_MS ?? 3000);
      const [control, ...results] = await Promise.all([
        runWorker(db.path, ms, sync, 'idle'),
        ...[0, 1, 2, 3].map(() => runWorker(db.path, ms, sync)),
      ]);
      const wakeups = results.flatMap((r) => r.wakeups);
      const locks = results.reduce((a, r) => a + r.locks, 0);
      console.log(`3. 4 processes contend for one lock, ${ms} ms (synchronous=${sync})`);
      console.log(
        `  ${locks} locks (${((locks / ms) * 1000).toFixed(0)}/s), ${wakeups.length} waited hand-offs: wake-up latency p50 ${percentile(wakeups, 0.5).toFixed(2)} ms, p99 ${percentile(wakeups, 0.99).toFixed(2)} ms, max ${Math.max(...wakeups).toFixed(2)} ms`,
      );
      console.log(
        `  event-loop delay per process: p99 ${results.map((r) => r.loopP99Ms.toFixed(2)).join(', ')} ms; max ${results.map((r) => r.loopMaxMs.toFixed(1)).join(', ')} ms`,
      );
      console.log(
        `  control (a 5th process that only measures, same window): p99 ${control?.loopP99Ms.toFixed(2)} ms, max ${control?.loopMaxMs.toFixed(1)} ms; load average ${loadavg()
          .map((x) => x.toFixed(1))
          .join(' ')}`,
      );
    }
    if (want(4)) {
      const a = sqlite({ path: db.path, synchronous: sync });
      const b = sqlite({ path: db.path, synchronous: sync });
      const req = {
        model: 'idle',
        keys: ['k'],
        action: 'default',
        mode: 'exclusive' as const,
        leaseMs: 30_000,
        renew: true,
        nowait: false,
        skipLocked: false,
      };
      const held = await a.acquire(req);
      const idle = async (ms: number) => {
        const c0 = process.cpuUsage();
        await new Promise((r) => setTimeout(r, ms));
        const c = process.cpuUsage(c0);
        return (c.user + c.system) / 1000;
      };
      const control = await idle(2000); // nothing waiting: what this process uses anyway
      const waiting = b.acquire(req);
      const cpu = await idle(2000);
      await held?.release();
      await (await waiting)?.release();
      await a.close();
      await b.close();
      console.log(
        `4. one waiter for 2 s (the holder renewing every 10 s): this process used ${cpu.toFixed(1)} ms of CPU; the same 2 s with nobody waiting: ${control.toFixed(1)} ms`,
      );
    }
    db.drop();
  }
}
