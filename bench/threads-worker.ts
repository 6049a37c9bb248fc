/**
 * A worker of bench/threads.ts (bundled to plain JavaScript by it). It loops on one lock until
 * the stop word is set, incrementing a shared counter non-atomically inside, and reports its
 * acquisitions and hand-offs (acquisitions whose previous owner was another thread).
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

/** The floor: CAS 0 -> 1, else sleep on the word; release stores 0 and wakes one (unfair). */
async function floorLock(a: Int32Array): Promise<void> {
  for (;;) {
    if (Atomics.compareExchange(a, 0, 0, 1) === 0) return;
    Atomics.store(a, 1, 1); // someone waits
    const r = waitAsync(a, 0, 1);
    if (r.async) await r.value;
  }
}
function floorUnlock(a: Int32Array): void {
  Atomics.store(a, 0, 0);
  if (Atomics.load(a, 1) !== 0) {
    Atomics.store(a, 1, 0);
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
  await new Promise<void>((r) => parentPort!.once('message', () => r()));
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
  parentPort!.postMessage(counts);
}

void main();
