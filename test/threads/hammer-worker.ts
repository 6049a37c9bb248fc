/**
 * A worker of the threads tests: rebuilds a primitive from its handle and runs a job on it.
 * Jobs: "hammer" (on "go", N non-atomic read-modify-writes of a shared counter under the lock,
 * each with an await inside), "queue" (one acquisition queued now, logged when granted, held until told),
 * "sync-hammer" (the same with the blocking acquireSync of each primitive), "hold" (takes the lock and reports, then never releases), "readers" (an RWLock: 3 reads for
 * each write, counting any reader that meets a writer or writer that meets anyone).
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { Mutex, RWLock, Semaphore } from '../../src/threads/index.js';

interface Data {
  kind: 'mutex' | 'rwlock' | 'semaphore';
  handle: never;
  job: 'hammer' | 'queue' | 'hold' | 'readers' | 'sync-hammer';
  counter: Int32Array;
  iterations?: number;
  weight?: number;
  log?: Int32Array;
  tag?: number;
}

const d = workerData as Data;
const port = parentPort!;

type Lock = {
  exclusive: <T>(fn: () => T | Promise<T>) => Promise<T>;
  acquire: () => Promise<{ release(): void }>;
};

function open(): Lock {
  if (d.kind === 'mutex') {
    const m = Mutex.from(d.handle);
    return { exclusive: (fn) => m.run(fn), acquire: () => m.acquire() };
  }
  if (d.kind === 'rwlock') {
    const l = RWLock.from(d.handle);
    return { exclusive: (fn) => l.write(fn), acquire: () => l.acquireWrite() };
  }
  const s = Semaphore.from(d.handle);
  const weight = d.weight ?? s.capacity;
  return {
    exclusive: (fn) => s.run(fn, { weight }),
    acquire: () => s.acquire({ weight }),
  };
}

const lock = open();

async function main(): Promise<void> {
  const c = d.counter;
  if (d.job === 'hammer') {
    // start together, once the test listens for "done"
    await new Promise<void>((resolve) => port.once('message', () => resolve()));
    for (let i = 0; i < (d.iterations ?? 1000); i++) {
      await lock.exclusive(async () => {
        const v = c[0]!;
        if (i % 2 === 0) await Promise.resolve();
        else await new Promise<void>((r) => setImmediate(r));
        c[0] = v + 1;
      });
    }
    port.postMessage({ done: true });
    return;
  }
  if (d.job === 'sync-hammer') {
    // The blocking acquires (Mutex.acquireSync, RWLock.acquireWriteSync/acquireReadSync,
    // Semaphore.acquireSync with every permit): this thread blocks while it waits; the
    // read-modify-write spans a spin. RWLock readers check that nothing moves while they read
    // (c[3] counts the reads that saw a write).
    const take = (() => {
      if (d.kind === 'mutex') {
        const m = Mutex.from(d.handle);
        return () => m.acquireSync();
      }
      if (d.kind === 'rwlock') {
        const l = RWLock.from(d.handle);
        return () => l.acquireWriteSync();
      }
      const s = Semaphore.from(d.handle);
      return () => s.acquireSync({ weight: s.capacity });
    })();
    const reader = d.kind === 'rwlock' ? RWLock.from(d.handle) : undefined;
    await new Promise<void>((resolve) => port.once('message', () => resolve()));
    for (let i = 0; i < (d.iterations ?? 1000); i++) {
      const permit = take();
      const v = c[0]!;
      for (let k = 0; k < 200; k++) Atomics.load(c, 1);
      c[0] = v + 1;
      permit.release();
      if (reader) {
        const r = reader.acquireReadSync({ timeoutMs: 30_000 });
        const before = c[0]!;
        for (let k = 0; k < 200; k++) Atomics.load(c, 1);
        if (c[0] !== before) Atomics.add(c, 3, 1);
        r.release();
      }
    }
    port.postMessage({ done: true });
    return;
  }
  if (d.job === 'readers') {
    // counter: [0] writes (non-atomic), [1] readers inside, [2] writers inside, [3] violations
    const l = RWLock.from(d.handle);
    await new Promise<void>((resolve) => port.once('message', () => resolve()));
    for (let i = 0; i < (d.iterations ?? 1000); i++) {
      if (i % 4 === 0) {
        await l.write(async () => {
          if (Atomics.add(c, 2, 1) !== 0 || Atomics.load(c, 1) !== 0) Atomics.add(c, 3, 1);
          const v = c[0]!;
          await new Promise<void>((r) => setImmediate(r));
          c[0] = v + 1;
          Atomics.sub(c, 2, 1);
        });
      } else {
        await l.read(async () => {
          Atomics.add(c, 1, 1);
          if (Atomics.load(c, 2) !== 0) Atomics.add(c, 3, 1);
          await new Promise<void>((r) => setImmediate(r));
          if (Atomics.load(c, 2) !== 0) Atomics.add(c, 3, 1);
          Atomics.sub(c, 1, 1);
        });
      }
    }
    port.postMessage({ done: true });
    return;
  }
  if (d.job === 'queue') {
    const p = lock.acquire();
    port.postMessage({ queued: threadId });
    const permit = await p;
    const log = d.log!;
    log[Atomics.add(log, 0, 1) + 1] = d.tag!;
    port.postMessage({ granted: d.tag });
    await new Promise<void>((resolve) => port.once('message', () => resolve()));
    permit.release();
    port.postMessage({ released: d.tag });
    return;
  }
  if (d.job === 'hold') {
    await lock.acquire();
    port.postMessage({ holding: threadId });
    setInterval(() => {}, 1000); // stays alive holding it until terminated, or told how to end
    port.on('message', (how: string) => {
      if (how === 'exit') process.exit(0);
      if (how === 'throw') throw new Error('crash while holding the lock');
    });
  }
}

main().catch((err: unknown) => {
  port.postMessage({ error: String((err as Error)?.stack ?? err) });
});
