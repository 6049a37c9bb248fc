/**
 * In-process primitives vs the libraries users pick today, in one run:
 * `npm run bench -- sync` (SYNC_BENCH_MS=<ms per measurement>, default 600).
 *
 * - contended hand-off, 16 tasks, an `await` inside the critical section: Lockstep `Mutex`,
 *   `RWLock` (write), `async-mutex`, `async-rwlock`, and the floor: a ten-line FIFO mutex (one
 *   promise per hand-off).
 * - 16 tasks, a synchronous body through `run()` (async-rwlock has no run(): lock/unlock).
 * - uncontended `tryAcquire()+release()`.
 * - LockTable with and without deadlock detection (measured last: detection turns on
 *   AsyncLocalStorage, which makes every promise in the process slower from then on).
 *
 * Every figure is the median of ROUNDS interleaved measurements, in operations per CPU second of
 * this process (robust to other processes on a shared machine); ratios are what we track.
 */
import { Mutex as AsyncMutex } from 'async-mutex';
import { RWLock as AsyncRWLock } from 'async-rwlock';
import { LockTable, Mutex, RWLock } from '../src/sync/index.js';

const MS = Number(process.env.SYNC_BENCH_MS ?? 600);
const ROUNDS = 5;
const TASKS = 16;
const BATCH = 64;

/** The floor: a ten-line FIFO mutex, one promise per hand-off. */
class FloorMutex {
  private q: Array<() => void> = [];
  private locked = false;
  lock(): Promise<void> {
    if (!this.locked) {
      this.locked = true;
      return Promise.resolve();
    }
    return new Promise((r) => this.q.push(r));
  }
  unlock(): void {
    const next = this.q.shift();
    if (next) next();
    else this.locked = false;
  }
}

/** One task's loop: runs until `deadline`, returns how many critical sections it ran. */
type TaskLoop = (deadline: number, check: Check) => Promise<number>;

/** Counts tasks inside the critical section; a broken lock fails the bench. */
class Check {
  inside = 0;
  enter(): void {
    if (++this.inside !== 1) throw new Error('mutual exclusion violated');
  }
  leave(): void {
    this.inside--;
  }
}

async function contended(make: () => TaskLoop): Promise<number> {
  const loop = make();
  const check = new Check();
  const cpu0 = process.cpuUsage();
  const deadline = performance.now() + MS;
  const counts = await Promise.all(Array.from({ length: TASKS }, () => loop(deadline, check)));
  return counts.reduce((a, b) => a + b, 0) / cpuSeconds(cpu0);
}

// The loops below are written out one by one on purpose: each subject gets its own closure in
// the exact shape a user would write, so V8 specialises each call site on its own. Folding them
// into one generic loop (a lock/unlock callback) makes the call sites megamorphic and measures
// the harness instead of the locks.
function awaitedBody(): Record<string, () => TaskLoop> {
  return {
    'floor (10-line FIFO mutex)': () => {
      const m = new FloorMutex();
      return async (deadline, c) => {
        let n = 0;
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) {
            await m.lock();
            c.enter();
            await null;
            c.leave();
            m.unlock();
          }
          n += BATCH;
        }
        return n;
      };
    },
    'lockstep Mutex': () => {
      const m = new Mutex();
      return async (deadline, c) => {
        let n = 0;
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) {
            const p = await m.acquire();
            c.enter();
            await null;
            c.leave();
            p.release();
          }
          n += BATCH;
        }
        return n;
      };
    },
    'lockstep RWLock (write)': () => {
      const m = new RWLock();
      return async (deadline, c) => {
        let n = 0;
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) {
            const p = await m.acquireWrite();
            c.enter();
            await null;
            c.leave();
            p.release();
          }
          n += BATCH;
        }
        return n;
      };
    },
    'floor, async body fn (run-style)': () => {
      const m = new FloorMutex();
      return async (deadline, c) => {
        let n = 0;
        const body = async () => {
          c.enter();
          await null;
          c.leave();
        };
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) {
            await m.lock();
            try {
              await body();
            } finally {
              m.unlock();
            }
          }
          n += BATCH;
        }
        return n;
      };
    },
    'lockstep Mutex.run(async)': () => {
      const m = new Mutex();
      return async (deadline, c) => {
        let n = 0;
        const body = async () => {
          c.enter();
          await null;
          c.leave();
        };
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) await m.run(body);
          n += BATCH;
        }
        return n;
      };
    },
    'async-mutex': () => {
      const m = new AsyncMutex();
      return async (deadline, c) => {
        let n = 0;
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) {
            const release = await m.acquire();
            c.enter();
            await null;
            c.leave();
            release();
          }
          n += BATCH;
        }
        return n;
      };
    },
    'async-rwlock (write)': () => {
      const m = new AsyncRWLock();
      return async (deadline, c) => {
        let n = 0;
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) {
            await m.writeLock();
            c.enter();
            await null;
            c.leave();
            m.unlock();
          }
          n += BATCH;
        }
        return n;
      };
    },
  };
}

function syncBody(): Record<string, () => TaskLoop> {
  return {
    'async-mutex runExclusive': () => {
      const m = new AsyncMutex();
      return async (deadline, c) => {
        let n = 0;
        const body = () => {
          c.enter();
          c.leave();
        };
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) await m.runExclusive(body);
          n += BATCH;
        }
        return n;
      };
    },
    'floor (lock/unlock)': () => {
      const m = new FloorMutex();
      return async (deadline, c) => {
        let n = 0;
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) {
            await m.lock();
            c.enter();
            c.leave();
            m.unlock();
          }
          n += BATCH;
        }
        return n;
      };
    },
    'lockstep Mutex.run': () => {
      const m = new Mutex();
      return async (deadline, c) => {
        let n = 0;
        const body = () => {
          c.enter();
          c.leave();
        };
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) await m.run(body);
          n += BATCH;
        }
        return n;
      };
    },
    'lockstep RWLock.write': () => {
      const m = new RWLock();
      return async (deadline, c) => {
        let n = 0;
        const body = () => {
          c.enter();
          c.leave();
        };
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) await m.write(body);
          n += BATCH;
        }
        return n;
      };
    },
    'async-rwlock (lock/unlock)': () => {
      const m = new AsyncRWLock();
      return async (deadline, c) => {
        let n = 0;
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) {
            await m.writeLock();
            c.enter();
            c.leave();
            m.unlock();
          }
          n += BATCH;
        }
        return n;
      };
    },
  };
}

function tableLoops(detectDeadlocks: boolean): Record<string, () => TaskLoop> {
  const suffix = detectDeadlocks ? 'detection on' : 'detection off';
  return {
    [`LockTable hot key, awaited body, ${suffix}`]: () => {
      const t = new LockTable({ detectDeadlocks });
      return async (deadline, c) => {
        let n = 0;
        const body = async () => {
          c.enter();
          await null;
          c.leave();
        };
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) await t.run('hot', body);
          n += BATCH;
        }
        return n;
      };
    },
    [`LockTable 2 of 32 accounts, sync body, ${suffix}`]: () => {
      const t = new LockTable({ detectDeadlocks });
      const balances = new Array<number>(32).fill(100);
      let seed = 1;
      const rnd = () => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        return seed % 32;
      };
      return async (deadline) => {
        let n = 0;
        while (performance.now() < deadline) {
          for (let i = 0; i < BATCH; i++) {
            const a = rnd();
            let b = rnd();
            if (b === a) b = (a + 1) % 32;
            await t.run([`acct:${a}`, `acct:${b}`], async () => {
              const x = balances[a]!;
              await null;
              balances[a] = x - 1;
              balances[b]! += 1;
            });
          }
          n += BATCH;
        }
        return n;
      };
    },
  };
}

async function measureAll(
  suite: Record<string, () => TaskLoop>,
  rounds = ROUNDS,
): Promise<Map<string, number>> {
  const samples = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++) {
    for (const [name, make] of Object.entries(suite)) {
      const v = await contended(make);
      samples.set(name, [...(samples.get(name) ?? []), v]);
    }
  }
  const out = new Map<string, number>();
  for (const [name, vs] of samples) out.set(name, median(vs));
  return out;
}

/**
 * CPU seconds this process used since `cpu0`. Throughput is per CPU second, not per wall-clock
 * second: the machine is shared, and CPU time is what other processes do not steal.
 */
function cpuSeconds(cpu0: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(cpu0);
  return (d.user + d.system) / 1e6;
}

function median(vs: number[]): number {
  const s = [...vs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function print(title: string, results: Map<string, number>, anchor: string): void {
  const base = results.get(anchor)!;
  console.log(`\n${title}  (ratio vs ${anchor})`);
  for (const [name, v] of results) {
    console.log(
      `  ${name.padEnd(48)} ${(v / 1e6).toFixed(3).padStart(8)} M ops/s   ${(v / base).toFixed(2)}x`,
    );
  }
}

function uncontended(): Map<string, number> {
  const out = new Map<string, number>();
  const N = 20_000_000;
  for (let r = 0; r < 3; r++) {
    const m = new Mutex();
    let t0 = process.cpuUsage();
    for (let i = 0; i < N; i++) m.tryAcquire()!.release();
    let v = N / cpuSeconds(t0);
    if (v > (out.get('lockstep Mutex tryAcquire+release') ?? 0)) {
      out.set('lockstep Mutex tryAcquire+release', v);
    }
    const w = new RWLock();
    t0 = process.cpuUsage();
    for (let i = 0; i < N; i++) w.tryAcquireRead()!.release();
    v = N / cpuSeconds(t0);
    if (v > (out.get('lockstep RWLock tryAcquireRead+release') ?? 0)) {
      out.set('lockstep RWLock tryAcquireRead+release', v);
    }
  }
  return out;
}

export default async function main(): Promise<void> {
  console.log(
    `sync bench: ${TASKS} tasks, ${MS} ms per measurement, median of ${ROUNDS}, ops per CPU second, node ${process.version}`,
  );
  const a = await measureAll(awaitedBody());
  print('contended hand-off, awaited body', a, 'floor (10-line FIFO mutex)');
  const s = await measureAll(syncBody());
  print('contended, synchronous body through run()', s, 'async-mutex runExclusive');
  const u = uncontended();
  console.log('\nuncontended (best of 3, 20M iterations)');
  for (const [name, v] of u) console.log(`  ${name.padEnd(48)} ${(v / 1e6).toFixed(1)} M ops/s`);

  // Detection off first, before anything enables AsyncLocalStorage in this process.
  const off = await measureAll(tableLoops(false), 3);
  const on = await measureAll(tableLoops(true), 3);
  const offAfter = await measureAll(tableLoops(false), 3);
  console.log('\nLockTable deadlock detection (16 tasks; cost = 1 - on/off)');
  const onValues = [...on.values()];
  let i = 0;
  for (const [name, o] of off) {
    const oa = offAfter.get(name) ?? Number.NaN;
    const d = onValues[i++] ?? Number.NaN;
    console.log(`  ${name.replace(', detection off', '')}`);
    console.log(
      `    off ${(o / 1e6).toFixed(3)} M/s, on ${(d / 1e6).toFixed(3)} M/s: cost ${pct(1 - d / o)} ` +
        `(AsyncLocalStorage cold); vs off with AsyncLocalStorage already on ${(oa / 1e6).toFixed(3)} M/s: cost ${pct(1 - d / oa)}`,
    );
  }
  const ratioAwait = a.get('lockstep Mutex')! / a.get('floor (10-line FIFO mutex)')!;
  const ratioRw = a.get('lockstep RWLock (write)')! / a.get('floor (10-line FIFO mutex)')!;
  const ratioRun = s.get('lockstep Mutex.run')! / s.get('async-mutex runExclusive')!;
  const ratioRunRw = s.get('lockstep RWLock.write')! / s.get('async-mutex runExclusive')!;
  console.log('\ntargets');
  console.log(`  Mutex awaited body vs floor          ${ratioAwait.toFixed(2)}x (target >= 0.9x)`);
  console.log(`  RWLock awaited body vs floor         ${ratioRw.toFixed(2)}x (target >= 0.9x)`);
  const ratioRunAsync =
    a.get('lockstep Mutex.run(async)')! / a.get('floor, async body fn (run-style)')!;
  console.log(`  Mutex.run(async body) vs floor run-style ${ratioRunAsync.toFixed(2)}x`);
  console.log(`  Mutex.run sync body vs async-mutex   ${ratioRun.toFixed(2)}x (target >= 4x)`);
  console.log(`  RWLock.write sync body vs async-mutex ${ratioRunRw.toFixed(2)}x (target >= 4x)`);
  console.log(
    `  tryAcquire+release                   ${(u.get('lockstep Mutex tryAcquire+release')! / 1e6).toFixed(1)} M/s (target > 20M/s)`,
  );
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}
