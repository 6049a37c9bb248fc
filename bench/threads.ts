/**
 * lockstep/threads in one run: `npm run bench -- threads` (THREADS_BENCH_MS=<ms per measurement>,
 * default 1000; THREADS_BENCH_WORKERS, default 4).
 *
 * - hand-offs between threads: WORKERS threads loop on one mutex with a one-line critical
 *   section (a non-atomic increment of a shared counter, checked at the end). Subjects: the
 *   lockstep/threads `Mutex` (FIFO), the floor (a minimal unfair SharedArrayBuffer +
 *   `Atomics.waitAsync` mutex: CAS, sleep, store + notify one) and a lock server on the main
 *   thread over `MessagePort`s (FIFO). A hand-off is an acquisition whose previous owner was
 *   another thread; an unfair lock makes many acquisitions and few hand-offs.
 * - uncontended `tryAcquire()+release()` and `run(syncFn)` on the main thread.
 *
 * Wall-clock rates (the threads run in parallel); the median of ROUNDS interleaved rounds.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import { build } from 'esbuild';
import { Mutex } from '../src/threads/index.js';

const MS = Number(process.env.THREADS_BENCH_MS ?? 1000);
const WORKERS = Number(process.env.THREADS_BENCH_WORKERS ?? 4);
const ROUNDS = 3;

type Subject = 'lockstep' | 'floor' | 'port';

interface Result {
  acquisitions: number;
  handoffs: number;
  seconds: number;
  /** Mean event-loop utilization of the workers (0: always idle, waiting; 1: always running). */
  elu: number;
}

async function bundle(): Promise<string> {
  const out = join(mkdtempSync(join(tmpdir(), 'lockstep-bench-')), 'threads-worker.mjs');
  await build({
    entryPoints: [fileURLToPath(new URL('./threads-worker.ts', import.meta.url))],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: out,
    logLevel: 'error',
  });
  return out;
}

/** The MessagePort lock server: FIFO grants, one message each way per acquisition. */
function serve(ports: MessagePort[]): void {
  const queue: MessagePort[] = [];
  let held = false;
  for (const port of ports) {
    port.on('message', (m: number) => {
      if (m === 1) {
        if (held) queue.push(port);
        else {
          held = true;
          port.postMessage(1);
        }
      } else {
        const next = queue.shift();
        if (next) next.postMessage(1);
        else held = false;
      }
    });
  }
}

async function contended(file: string, subject: Subject): Promise<Result> {
  const shared = new Int32Array(new SharedArrayBuffer(16));
  const floor = new Int32Array(new SharedArrayBuffer(8));
  const mutex = new Mutex();
  const channels = Array.from({ length: WORKERS }, () => new MessageChannel());
  if (subject === 'port') serve(channels.map((c) => c.port1));
  const workers = channels.map(
    (c) =>
      new Worker(file, {
        workerData: { subject, handle: mutex.handle, floor, shared, port: c.port2 },
        transferList: [c.port2],
      }),
  );
  await Promise.all(workers.map((w) => new Promise((r) => w.once('message', r)))); // ready
  const done = workers.map(
    (w) =>
      new Promise<{ n: number; handoffs: number; elu: number }>((resolve) =>
        w.once('message', resolve),
      ),
  );
  const t0 = performance.now();
  for (const w of workers) w.postMessage('go');
  await new Promise((r) => setTimeout(r, MS));
  Atomics.store(shared, 0, 1);
  const counts = await Promise.all(done);
  const seconds = (performance.now() - t0) / 1000;
  for (const c of channels) c.port1.close();
  await Promise.all(workers.map((w) => w.terminate()));
  const acquisitions = counts.reduce((a, c) => a + c.n, 0);
  if (shared[2] !== acquisitions) {
    throw new Error(`${subject}: mutual exclusion violated (${shared[2]} != ${acquisitions})`);
  }
  return {
    acquisitions,
    handoffs: counts.reduce((a, c) => a + c.handoffs, 0),
    seconds,
    elu: counts.reduce((a, c) => a + c.elu, 0) / counts.length,
  };
}

function uncontended(): { tryAcquire: number; run: number } {
  const m = new Mutex();
  const N = 2_000_000;
  let best = 0;
  let bestRun = 0;
  let x = 0;
  for (let r = 0; r < 5; r++) {
    let t = performance.now();
    for (let i = 0; i < N; i++) m.tryAcquire()!.release();
    best = Math.max(best, N / ((performance.now() - t) / 1000));
    t = performance.now();
    for (let i = 0; i < N; i++) void m.run(() => x++);
    bestRun = Math.max(bestRun, N / ((performance.now() - t) / 1000));
  }
  if (x !== 5 * N) throw new Error('run() lost a call');
  return { tryAcquire: best, run: bestRun };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number) =>
  n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(0);

export default async function main(): Promise<void> {
  const file = await bundle();
  const subjects: Subject[] = ['lockstep', 'floor', 'port'];
  const rates: Record<Subject, { acq: number[]; hand: number[]; elu: number[] }> = {
    lockstep: { acq: [], hand: [], elu: [] },
    floor: { acq: [], hand: [], elu: [] },
    port: { acq: [], hand: [], elu: [] },
  };
  for (let r = 0; r < ROUNDS; r++) {
    for (const s of r % 2 === 0 ? subjects : [...subjects].reverse()) {
      const res = await contended(file, s);
      rates[s].acq.push(res.acquisitions / res.seconds);
      rates[s].hand.push(res.handoffs / res.seconds);
      rates[s].elu.push(res.elu);
    }
  }
  console.log(`\nthreads: ${WORKERS} workers on one mutex, ${MS} ms x ${ROUNDS} rounds (median)`);
  const ls = median(rates.lockstep.hand);
  for (const s of subjects) {
    const acq = median(rates[s].acq);
    const hand = median(rates[s].hand);
    console.log(
      `  ${s.padEnd(9)} ${fmt(acq).padStart(8)} acquisitions/s  ${fmt(hand).padStart(8)} hand-offs/s  (${((100 * hand) / acq).toFixed(0)}% hand-offs; workers' loops busy ${(100 * median(rates[s].elu)).toFixed(0)}%)`,
    );
  }
  console.log(
    `  lockstep hand-offs vs floor ${(ls / median(rates.floor.hand)).toFixed(2)}x (target >= 0.5x), vs MessagePort server ${(ls / median(rates.port.hand)).toFixed(1)}x (target >= 10x)`,
  );
  const u = uncontended();
  console.log(
    `  uncontended tryAcquire()+release() ${fmt(u.tryAcquire)}/s (target >= 10M/s), run(syncFn) ${fmt(u.run)}/s`,
  );
}
