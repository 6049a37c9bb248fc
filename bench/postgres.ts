/**
 * PostgreSQL benchmarks: Lockstep through the public store API (`createStore(postgres(...))`)
 * against the hand-written `pg` code users write today, in the same run, on the same server,
 * pool of 16 on both sides, 16 concurrent workers.
 *
 * 1. lock/read/modify/commit on ONE hot row: `Model.lock(key, d => { d.n += 1 })` vs
 *    `BEGIN; SELECT ... FOR UPDATE; UPDATE; COMMIT`.
 * 2. atomic increment on ONE hot row: `Model.apply(key, d => d.n.incr(1))` vs
 *    `UPDATE t SET v = v + 1 WHERE id = 1`.
 * 3. bank transfers across 1,000 accounts (random pairs): `Model.lock([from, to], ...)` vs
 *    `BEGIN; SELECT ... WHERE id IN (a, b) ORDER BY id FOR UPDATE; UPDATE; UPDATE; COMMIT`,
 *    and `store.apply` (guarded incr on both accounts) for reference.
 *
 * Each side first runs uncounted for BENCH_WARMUP seconds (default 1); then the anchor and the
 * subjects alternate for BENCH_PAIRS pairs (default 5) of BENCH_SECONDS rounds (default 2), and
 * each ratio is the median of the per-pair ratios, with their range (see `alternate` in
 * measure.ts). Run: `npm run bench -- postgres`.
 */
import pg from 'pg';
import { z } from 'zod';
import { postgres } from '../src/backends/postgres/index.js';
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
let WORKERS = 16;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);

const rate = (m: Measure) => (m.ops / m.ms) * 1000;
/** BENCH_SECTIONS=2,5 runs only those sections (default: all). */
const ONLY = process.env.BENCH_SECTIONS?.split(',').map(Number);
const want = (n: number) => ONLY === undefined || ONLY.includes(n);

async function pair(
  title: string,
  anchorName: string,
  anchor: (w: number) => Promise<unknown>,
  ours: Array<[string, (w: number) => Promise<unknown>]>,
): Promise<string[]> {
  const r = await alternate(
    WORKERS,
    SECONDS,
    anchor,
    ours.map(([, fn]) => fn),
  );
  const lines = [
    `${title}`,
    `  ${anchorName.padEnd(44)} ${rate(r.anchor).toFixed(0).padStart(7)} ops/s  p99 ${percentile(r.anchor.lat, 0.99).toFixed(1)} ms  (anchor)`,
  ];
  ours.forEach(([name], i) => {
    const m = r.subjects[i] as Measure;
    lines.push(
      `  ${name.padEnd(44)} ${rate(m).toFixed(0).padStart(7)} ops/s  p99 ${percentile(m.lat, 0.99).toFixed(1)} ms  ${ratioText(r.ratios[i] as number[])}`,
    );
  });
  for (const l of lines) console.log(l);
  return lines;
}

/** Runs the PostgreSQL benchmarks and prints ratios against hand-written pg code. */
export default async function main(): Promise<void> {
  const schema = `lsbench_${process.pid}`;
  const pool = new pg.Pool({ connectionString: URL_, max: POOL });
  const backend = postgres({ url: URL_, schema, poolSize: POOL });
  const store = createStore(backend);
  // A second instance on the same schema: "another process" writing the same row.
  const store2 = createStore(postgres({ url: URL_, schema, poolSize: POOL / 2 }));
  const T = `"${schema}".raw`;
  const A = `"${schema}".raw_accounts`;
  try {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    await pool.query(`CREATE TABLE ${T} (id int PRIMARY KEY, v bigint NOT NULL)`);
    await pool.query(`INSERT INTO ${T} VALUES (1, 0)`);
    await pool.query(`CREATE TABLE ${A} (id int PRIMARY KEY, balance bigint NOT NULL)`);
    await pool.query(`INSERT INTO ${A} SELECT g, 1000000 FROM generate_series(0, 999) g`);

    const Counter = store.model('counter', z.object({ n: z.number().int() }));
    const Counter2 = store2.model('counter', z.object({ n: z.number().int() }));
    await Counter.put('hot', { n: 0 });
    const Account = store.model('account', z.object({ balance: z.number().int().min(0) }));
    for (let i = 0; i < 1000; i += 100) {
      await Promise.all(
        Array.from({ length: 100 }, (_, j) => Account.put(`a${i + j}`, { balance: 1_000_000 })),
      );
    }
    const pick = () => {
      const from = Math.floor(Math.random() * 1000);
      let to = Math.floor(Math.random() * 999);
      if (to >= from) to += 1;
      return [from, to] as const;
    };

    console.log(
      `postgres bench: pool ${POOL}, ${WORKERS} workers, ${WARMUP_SECONDS}s warm-up, then ${PAIRS} alternated pairs of ${SECONDS}s rounds; ratios: median of the pairs (range)`,
    );
    if (want(1))
      await pair(
        '1. lock, read, modify, commit (one hot row)',
        'pg BEGIN; SELECT FOR UPDATE; UPDATE; COMMIT',
        async () => {
          const c = await pool.connect();
          try {
            await c.query('BEGIN');
            const r = await c.query<{ v: string }>(`SELECT v FROM ${T} WHERE id = 1 FOR UPDATE`);
            await c.query(`UPDATE ${T} SET v = $1 WHERE id = 1`, [Number(r.rows[0]?.v) + 1]);
            await c.query('COMMIT');
          } catch (err) {
            await c.query('ROLLBACK').catch(() => {});
            throw err;
          } finally {
            c.release();
          }
        },
        [
          [
            'lockstep Counter.lock(hot, d => d.n += 1)',
            () => Counter.lock('hot', (d) => void (d.n += 1)),
          ],
        ],
      );
    if (want(2))
      await pair(
        '2. atomic increment (one hot row)',
        'pg UPDATE t SET v = v + 1 WHERE id = 1',
        () => pool.query(`UPDATE ${T} SET v = v + 1 WHERE id = 1`),
        [
          [
            'lockstep Counter.apply(hot, d => d.n.incr(1))',
            () => Counter.apply('hot', (d) => d.n.incr(1)),
          ],
          [
            'lockstep apply, 2 instances on the row (half each)',
            (w) => (w % 2 ? Counter2 : Counter).apply('hot', (d) => d.n.incr(1)),
          ],
          [
            'lockstep Counter.update(hot, d => d.n += 1)',
            () => Counter.update('hot', (d) => void (d.n += 1), { retries: 10_000 }),
          ],
        ],
      );
    if (want(3))
      await pair(
        '3. bank transfers, 1,000 accounts (random pairs)',
        'pg BEGIN; SELECT 2 rows FOR UPDATE; 2x UPDATE; COMMIT',
        async () => {
          const [from, to] = pick();
          const c = await pool.connect();
          try {
            await c.query('BEGIN');
            const r = await c.query<{ id: number; balance: string }>(
              `SELECT id, balance FROM ${A} WHERE id = ANY($1) ORDER BY id FOR UPDATE`,
              [[from, to]],
            );
            const bal = new Map(r.rows.map((x) => [x.id, Number(x.balance)]));
            if ((bal.get(from) ?? 0) >= 1) {
              await c.query(`UPDATE ${A} SET balance = $2 WHERE id = $1`, [
                from,
                (bal.get(from) ?? 0) - 1,
              ]);
              await c.query(`UPDATE ${A} SET balance = $2 WHERE id = $1`, [
                to,
                (bal.get(to) ?? 0) + 1,
              ]);
            }
            await c.query('COMMIT');
          } catch (err) {
            await c.query('ROLLBACK').catch(() => {});
            throw err;
          } finally {
            c.release();
          }
        },
        [
          [
            'lockstep Account.lock([from, to], ...)',
            () => {
              const [from, to] = pick();
              return Account.lock([`a${from}`, `a${to}`], ([f, t]) => {
                if (f!.balance >= 1) {
                  f!.balance -= 1;
                  t!.balance += 1;
                }
              });
            },
          ],
          [
            'lockstep store.apply([from -1 if >= 1, to +1])',
            () => {
              const [from, to] = pick();
              return store.apply([
                Account.ops(
                  `a${from}`,
                  (a) => a.balance.incr(-1),
                  (a) => a.balance.gte(1),
                ),
                Account.ops(`a${to}`, (a) => a.balance.incr(1)),
              ]);
            },
          ],
        ],
      );
    // 4. One worker, no contention: latency is round trips (ratios of ops/s = inverse latency).
    WORKERS = 1;
    if (want(4))
      await pair(
        '4. no contention, 1 worker: lock/read/modify/commit',
        'pg BEGIN; SELECT FOR UPDATE; UPDATE; COMMIT (4 RT)',
        async () => {
          const c = await pool.connect();
          try {
            await c.query('BEGIN');
            const r = await c.query<{ v: string }>(`SELECT v FROM ${T} WHERE id = 1 FOR UPDATE`);
            await c.query(`UPDATE ${T} SET v = $1 WHERE id = 1`, [Number(r.rows[0]?.v) + 1]);
            await c.query('COMMIT');
          } finally {
            c.release();
          }
        },
        [['lockstep Counter.lock (2 RT)', () => Counter.lock('hot', (d) => void (d.n += 1))]],
      );
    if (want(5))
      await pair(
        '5. no contention, 1 worker: increment',
        'pg UPDATE t SET v = v + 1 (1 RT)',
        () => pool.query(`UPDATE ${T} SET v = v + 1 WHERE id = 1`),
        [
          [
            'lockstep Counter.apply (1 RT when this process wrote last)',
            () => Counter.apply('hot', (d) => d.n.incr(1)),
          ],
        ],
      );
    WORKERS = 16;
    // Invariants after all that: money is conserved on both sides.
    const raw = await pool.query<{ s: string }>(`SELECT sum(balance) AS s FROM ${A}`);
    const docs = await backend.read(
      Array.from({ length: 1000 }, (_, i) => ({ model: 'account', key: `a${i}` })),
    );
    const sum = docs.reduce((s, d) => s + Number(d?.data.balance ?? 0), 0);
    console.log(
      `invariants: pg total ${raw.rows[0]?.s}, lockstep total ${sum} (both must be 1000000000)`,
    );
  } finally {
    await store.close();
    await store2.close();
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  }
}
