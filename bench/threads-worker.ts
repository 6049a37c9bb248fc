/**
 * A worker of bench/threads.ts (bundled to plain JavaScript by it). It loops on one lock until
 * the stop word is set, incrementing a shared counter non-atomically inside, and reports its
 * acquisitions and hand-offs (acquisitions whose previous owner was another thread), its event
 * loop utilization (the share of the window its loop was running rather than idle, waiting) and
 * the CPU time of the whole process during its window (process.cpuUsage is per process).
 * Subjects: "lockstep" (lockstep/threads Mutex), "floor" (a minimal unfair SharedArrayBuffer +
 * Atomics.waitAsync mutex) and "port" (a lock server on the main thread over a MessagePort).
 */
import { type MessagePort, parentPort, threadId, workerData } from 'node:worker_threads';
import { Mutex, type MutexHandle } from '../src/threads/index.js';

interface Data {
  subject: 'lockstep' | 'floor' | 'port';
  handle: MutexHandle;
  floor: Int32Array;
  /** [0] stop, [1] last owner, [2] counter */
  shared: Int32Array;
  port: MessagePort;
}

const d = workerData as Data;
const s = d.shared;
const me = threadId;

const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      i: number,
      v: number,
    ): { async: false; value: string } | { async: true; value: Promise<string> };
  }
).waitAsync;

/**
 * The floor: Drepper's futex mutex over waitAsync (0 free, 1 held, 2 held with waiters): CAS,
 * sleep on the word, release by store + notify one. Unfair: the releasing thread usually takes
 * it again before a woken waiter runs.
 */
async function floorLock(a: Int32Array): Promise<void> {
  let c = Atomics.compareExchange(a, 0, 0, 1);
  if (c === 0) return;
  do {
    if (c === 2 || Atomics.compareExchange(a, 0, 1, 2) !== 0) {
      const r = waitAsync(a, 0, 2);
      if (r.async) await r.value;
    }
  } while ((c = Atomics.compareExchange(a, 0, 0, 2)) !== 0);
}
function floorUnlock(a: Int32Array): void {
  if (Atomics.sub(a, 0, 1) !== 1) {
    Atomics.store(a, 0, 0);
    Atomics.notify(a, 0, 1);
  }
}

function critical(counts: { n: number; handoffs: number }): void {
  const prev = s[1];
  if (prev !== me) {
    s[1] = me;
    counts.handoffs++;
  }
  s[2] = s[2]! + 1;
  counts.n++;
}

async function main(): Promise<void> {
  const counts = { n: 0, handoffs: 0 };
  const go = new Promise<void>((r) => parentPort!.once('message', () => r()));
  parentPort!.postMessage('ready');
  await go;
  // A pending waitAsync does not keep a thread alive (the floor's waiters would exit).
  const keep = setInterval(() => {}, 1 << 30);
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  if (d.subject === 'lockstep') {
    const m = Mutex.from(d.handle);
    while (Atomics.load(s, 0) === 0) {
      const p = await m.acquire();
      critical(counts);
      p.release();
    }
  } else if (d.subject === 'floor') {
    while (Atomics.load(s, 0) === 0) {
      await floorLock(d.floor);
      critical(counts);
      floorUnlock(d.floor);
    }
  } else {
    const port = d.port;
    let grant: (() => void) | undefined;
    port.on('message', () => grant?.());
    while (Atomics.load(s, 0) === 0) {
      await new Promise<void>((r) => {
        grant = r;
        port.postMessage(1);
      });
      critical(counts);
      port.postMessage(0);
    }
    port.close();
  }
  clearInterval(keep);
  const elu = performance.eventLoopUtilization(elu0).utilization;
  const cpu = process.cpuUsage(cpu0);
  parentPort!.postMessage({ ...counts, elu, cpuMs: (cpu.user + cpu.system) / 1000 });
}

void main();
