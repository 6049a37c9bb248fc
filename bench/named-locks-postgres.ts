/**
 * Named locks on PostgreSQL: 16 contenders on ONE name, Lockstep's mutex permit against the
 * hand-written `pg_advisory_xact_lock` loop users write today (`BEGIN; SELECT
 * pg_advisory_xact_lock(h); COMMIT` on a pool of 16), in the same run, on the same server.
 *
 * The subject is `store.mutex(name).run(fn)` through the public store API (`createStore(
 * postgres(...))`, default options: the boundary's checks and in-process deadlock tracking on): a
 * mutex permit is an advisory lock held by a transaction (permit-locks.ts). For reference: the
 * backend's `acquirePermit` + `release` alone (no store), and `store.semaphore` of 1 and of 5
 * permits (holder rows under a FIFO gate, permit-rows.ts). Each critical section is empty: the
 * figure is the hand-off.
 *
 * Warm-up, alternated pairs and median ratios as in bench/postgres.ts (see `alternate` in
 * measure.ts). Run: `npm run bench -- named-locks-postgres` (DATABASE_URL: a server you own).
 */
import pg from 'pg';
import { postgres } from '../src/backends/postgres/index.js';
import type { PermitRequest } from '../src/store/backend.js';
import { createStore } from '../src/store/index.js';
import {
  alternate,
  type Measure,
  PAIRS,
  percentile,
  ratioText,
  WARMUP_SECONDS,
} from './measure.js';

const URL_ = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const POOL = 16;
const WORKERS = 16;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);

const rate = (m: Measure) => (m.ops / m.ms) * 1000;

/** Runs the named-lock PostgreSQL bench and prints ratios against the advisory-lock loop. */
export default async function main(): Promise<void> {
  const schema = `lsbench_locks_${process.pid}`;
  const pool = new pg.Pool({ connectionString: URL_, max: POOL });
  const backend = postgres({ url: URL_, schema, poolSize: POOL });
  const store = createStore(postgres({ url: URL_, schema, poolSize: POOL }));
  const storeMutex = store.mutex('hot-store');
  const storeSem1 = store.semaphore('hot-store1', { permits: 1 });
  const storeSem5 = store.semaphore('hot-store5', { permits: 5 });
  const empty = () => undefined;
  const key = 424242;
  const permit = (r: Partial<PermitRequest>): PermitRequest => ({
    kind: 'mutex',
    name: 'hot',
    permits: 1,
    weight: 1,
    leaseMs: 30_000,
    renew: true,
    nowait: false,
    ...r,
  });
  const mutex = permit({});
  const cycle = async (r: PermitRequest) => {
    const p = await backend.acquirePermit(r);
    await p?.release();
  };
  try {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    await backend.migrate();
    console.log(
      `named locks on postgres: pool ${POOL}, ${WORKERS} contenders on one name, ${WARMUP_SECONDS}s warm-up, then ${PAIRS} alternated pairs of ${SECONDS}s rounds; ratios: median of the pairs (range)`,
    );
    const r = await alternate(
      WORKERS,
      SECONDS,
      async () => {
        const c = await pool.connect();
        try {
          await c.query('BEGIN');
          await c.query('SELECT pg_advisory_xact_lock($1)', [key]);
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK').catch(() => {});
          throw err;
        } finally {
          c.release();
        }
      },
      [
        () => storeMutex.run(empty),
        () => cycle(mutex),
        () => storeSem1.run(empty),
        () => storeSem5.run(empty),
      ],
    );
    const names = [
      'lockstep store.mutex(name).run(fn)',
      'lockstep backend acquirePermit + release',
      'lockstep store.semaphore({ permits: 1 }).run',
      'lockstep store.semaphore({ permits: 5 }).run',
    ];
    console.log(
      `  ${'pg BEGIN; pg_advisory_xact_lock; COMMIT'.padEnd(44)} ${rate(r.anchor).toFixed(0).padStart(7)} ops/s  p99 ${percentile(r.anchor.lat, 0.99).toFixed(1)} ms  (anchor)`,
    );
    names.forEach((n, i) => {
      const m = r.subjects[i] as Measure;
      console.log(
        `  ${n.padEnd(44)} ${rate(m).toFixed(0).padStart(7)} ops/s  p99 ${percentile(m.lat, 0.99).toFixed(1)} ms  ${ratioText(r.ratios[i] as number[])}`,
      );
    });
  } finally {
    await backend.close();
    await store.close();
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  }
}
