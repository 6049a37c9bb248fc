/**
 * The store's write paths on the embedded memory backend, against an anchor measured in the same
 * run: `npm run bench -- store` (STORE_BENCH_MS=<ms per measurement>, default 500).
 *
 * Every path increments a counter field of a small zod-validated document, with 16 concurrent
 * tasks, on ONE hot document and spread over 10,000 documents:
 * - anchor: a plain `Map` read-modify-write guarded by one Lockstep `Mutex` (what a careful user
 *   writes by hand for in-process state: no schema, no copies, no versions);
 * - `backend.write`: the memory backend alone, given the exact write `Model.apply` sends (ops +
 *   the schema post-check), so that the store layer's share is visible;
 * - `Model.apply` (atomic op), `store.apply` (the same op through the multi-document batch),
 *   `Model.update` (optimistic, compare-and-set + retry), `Model.lock` (lease + draft + commit).
 * Each figure is the median of ROUNDS measurements; a ratio is the median of per-round ratios,
 * each subject measured right after its own anchor measurement.
 * At the end, every counter is checked against the number of successful writes (no lost update).
 *
 * `Model.lock` is measured last, after a second anchor measurement: lock() runs as a task for
 * deadlock detection, which turns on AsyncLocalStorage for the whole process (Node 20: async
 * hooks), making every promise slower from then on. Both anchors are printed.
 */
import { z } from 'zod';
import { ConflictError, createStore, Mutex, memory } from '../src/index.js';

const MS = Number(process.env.STORE_BENCH_MS ?? 500);
const ROUNDS = 5;
const TASKS = 16;
const SPREAD = 10_000;

const Counter = z.object({
  n: z.number().int().min(0),
  name: z.string(),
  tags: z.array(z.string()),
});
type CounterT = z.infer<typeof Counter>;

interface Subject {
  /** One write of key `k`; resolves true when it applied (false: a conflict the path gave up on). */
  write(k: string): Promise<boolean>;
  /** The counter of key `k` (for the final no-lost-update check). */
  count(k: string): Promise<number>;
  close(): Promise<void>;
}

type Make = (keys: readonly string[]) => Promise<Subject>;

function keyOf(i: number): string {
  return `c:${i}`;
}

const initial = (): CounterT => ({ n: 0, name: 'counter', tags: ['a', 'b'] });

const anchor: Make = async (keys) => {
  const map = new Map<string, CounterT>();
  for (const k of keys) map.set(k, initial());
  const mutex = new Mutex();
  return {
    write: (k) =>
      mutex.run(() => {
        const d = map.get(k) as CounterT;
        map.set(k, { ...d, n: d.n + 1 });
        return true;
      }),
    count: async (k) => (map.get(k) as CounterT).n,
    close: async () => {},
  };
};

async function storeWith(keys: readonly string[]) {
  const store = createStore(memory());
  const M = store.model('counter', Counter);
  for (const k of keys) await M.create(k, initial());
  return { store, M };
}

const INCR = [{ op: 'incr', field: 'n', by: 1 }] as const;

const paths: Record<string, Make> = {
  // The backend alone, with the very write Model.apply sends (the schema's post-check included):
  // the store layer's own cost is the difference between this line and Model.apply.
  'backend.write (same write)': async (keys) => {
    const { store, M } = await storeWith(keys);
    const part = M.ops(keyOf(0), (c) => c.n.incr(1)).write;
    const check = part?.kind === 'patch' ? part.check : undefined;
    const b = store.backend;
    return {
      write: async (k) =>
        (await b.write([{ kind: 'patch', model: 'counter', key: k, ops: INCR, check }])).applied,
      count: async (k) => (await M.get(k)).data.n,
      close: () => store.close(),
    };
  },
  'Model.apply': async (keys) => {
    const { store, M } = await storeWith(keys);
    return {
      write: async (k) => (await M.apply(k, (c) => c.n.incr(1))).applied,
      count: async (k) => (await M.get(k)).data.n,
      close: () => store.close(),
    };
  },
  'store.apply': async (keys) => {
    const { store, M } = await storeWith(keys);
    return {
      write: async (k) => (await store.apply([M.ops(k, (c) => c.n.incr(1))])).applied,
      count: async (k) => (await M.get(k)).data.n,
      close: () => store.close(),
    };
  },
  'Model.update': async (keys) => {
    const { store, M } = await storeWith(keys);
    return {
      write: async (k) => {
        try {
          await M.update(
            k,
            (d) => {
              d.n += 1;
            },
            { retries: 20 },
          );
          return true;
        } catch (err) {
          if (err instanceof ConflictError) return false;
          throw err;
        }
      },
      count: async (k) => (await M.get(k)).data.n,
      close: () => store.close(),
    };
  },
  'Model.lock': async (keys) => {
    const { store, M } = await storeWith(keys);
    return {
      write: async (k) => {
        await M.lock(k, (d) => {
          d.n += 1;
        });
        return true;
      },
      count: async (k) => (await M.get(k)).data.n,
      close: () => store.close(),
    };
  },
};

interface Measured {
  opsPerSec: number;
  gaveUp: number;
}

/** 16 tasks write until the deadline; checks afterwards that no increment was lost. */
async function measure(make: Make, spread: boolean): Promise<Measured> {
  const keys = spread ? Array.from({ length: SPREAD }, (_, i) => keyOf(i)) : [keyOf(0)];
  const s = await make(keys);
  const applied = new Map<string, number>();
  let gaveUp = 0;
  const start = performance.now();
  const deadline = start + MS;
  const counts = await Promise.all(
    Array.from({ length: TASKS }, async (_, t) => {
      let n = 0;
      let i = t * 7919;
      while (performance.now() < deadline) {
        for (let j = 0; j < 16; j++) {
          const k = spread ? keyOf((i = (i + 104_729) % SPREAD)) : (keys[0] as string);
          if (await s.write(k)) {
            n++;
            applied.set(k, (applied.get(k) ?? 0) + 1);
          } else gaveUp++;
        }
      }
      return n;
    }),
  );
  const elapsed = performance.now() - start;
  for (const [k, expected] of applied) {
    const got = await s.count(k);
    if (got !== expected) throw new Error(`lost update on ${k}: ${got} != ${expected}`);
  }
  await s.close();
  const total = counts.reduce((a, b) => a + b, 0);
  return { opsPerSec: (total / elapsed) * 1000, gaveUp };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

interface Result {
  /** Median ops/s. */
  ops: number;
  /** Median of the per-round ratios subject / anchor (each pair measured back to back). */
  ratio: number;
  /** Writes that gave up (update: ConflictError after its retries). */
  gaveUp: number;
}

/**
 * ROUNDS rounds; in each, every subject is measured right after its own anchor measurement, so
 * that load drifting on a shared machine hits both sides of a ratio alike.
 */
async function measureAll(
  subjects: Record<string, Make>,
  spread: boolean,
): Promise<Map<string, Result>> {
  const runs = new Map<string, { ops: number[]; ratios: number[]; gaveUp: number }>();
  const add = (name: string, m: Measured, ratio: number) => {
    const r = runs.get(name) ?? { ops: [], ratios: [], gaveUp: 0 };
    r.ops.push(m.opsPerSec);
    r.ratios.push(ratio);
    r.gaveUp += m.gaveUp;
    runs.set(name, r);
  };
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, make] of Object.entries(subjects)) {
      const a = await measure(anchor, spread);
      const m = await measure(make, spread);
      add('anchor', a, 1);
      add(name, m, m.opsPerSec / a.opsPerSec);
    }
  }
  const out = new Map<string, Result>();
  for (const [name, r] of runs) {
    out.set(name, { ops: median(r.ops), ratio: median(r.ratios), gaveUp: r.gaveUp });
  }
  return out;
}

function fmt(ops: number): string {
  return ops >= 1e6 ? `${(ops / 1e6).toFixed(2)} M/s` : `${(ops / 1e3).toFixed(1)} k/s`;
}

function print(title: string, results: Map<string, Result>): void {
  console.log(`\n${title}`);
  for (const [name, r] of results) {
    const label = name === 'anchor' ? 'anchor: Map RMW under one Mutex' : name;
    const extra = r.gaveUp > 0 ? `  (${r.gaveUp} gave up: ConflictError)` : '';
    console.log(
      `  ${label.padEnd(34)} ${fmt(r.ops).padStart(11)}   ${r.ratio.toFixed(3)}x anchor${extra}`,
    );
  }
}

export default async function main(): Promise<void> {
  console.log(
    `store bench (memory backend): ${TASKS} tasks, ${MS} ms per measurement, median of ${ROUNDS}, node ${process.version}`,
  );
  const { 'Model.lock': lockPath, ...early } = paths;
  const hot = await measureAll(early, false);
  print('one hot document', hot);
  const spread = await measureAll(early, true);
  print(`${SPREAD} documents`, spread);
  const hotLock = await measureAll({ 'Model.lock': lockPath as Make }, false);
  print('one hot document, Model.lock (measured after the others; see the header)', hotLock);
  const spreadLock = await measureAll({ 'Model.lock': lockPath as Make }, true);
  print(`${SPREAD} documents, Model.lock`, spreadLock);

  const ratio = (m: Map<string, Result>, name: string) => (m.get(name) as Result).ratio;
  console.log('\ntarget: Model.apply within 3x of the anchor (ratio >= 0.33)');
  console.log(`  hot document      ${ratio(hot, 'Model.apply').toFixed(3)}x`);
  console.log(`  ${SPREAD} documents  ${ratio(spread, 'Model.apply').toFixed(3)}x`);
}
