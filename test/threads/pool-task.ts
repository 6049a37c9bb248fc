/**
 * The task of test/threads/pool.test.ts, run by tinypool's workers: with the pool's shared
 * Mutex, RWLock and store (handles in the task), `n` rounds of
 * - a non-atomic read-modify-write of a shared counter, an await inside, under the Mutex;
 * - a read of the shared weights under the RWLock's read lock (they must all be equal: a writer
 *   sets them one by one) and, every 4th round, a write of them under its write lock;
 * - one lock-increment and one apply-increment of counter "k" in the store.
 */
import { z } from 'zod';
import { createStore } from '../../src/index.js';
import {
  type BackendHandle,
  Mutex,
  type MutexHandle,
  RWLock,
  type RWLockHandle,
  remoteBackend,
} from '../../src/threads/index.js';

export interface PoolTask {
  mutex: MutexHandle;
  rwlock: RWLockHandle;
  counter: Int32Array;
  weights: Float64Array;
  backend: BackendHandle;
  n: number;
}

const tick = () => new Promise<void>((r) => setImmediate(r));

export default async function task(t: PoolTask): Promise<{ torn: number }> {
  const mutex = Mutex.from(t.mutex);
  const rwlock = RWLock.from(t.rwlock);
  const store = createStore(remoteBackend(t.backend));
  const Counter = store.model('pool', z.object({ n: z.number().int() }));
  let torn = 0;
  try {
    for (let i = 0; i < t.n; i++) {
      await mutex.run(async () => {
        const seen = t.counter[0] as number;
        await tick();
        t.counter[0] = seen + 1;
      });
      await rwlock.read(async () => {
        const first = t.weights[0];
        await tick();
        if (t.weights.some((w) => w !== first)) torn += 1;
      });
      if (i % 4 === 0) {
        await rwlock.write(async () => {
          const next = (t.weights[0] as number) + 1;
          for (let j = 0; j < t.weights.length; j++) {
            t.weights[j] = next;
            await tick(); // readers would see a half-written vector here
          }
        });
      }
      await Counter.lock('k', (d) => {
        d.n += 1;
      });
      await Counter.apply('k', (o) => o.n.incr(1));
    }
  } finally {
    await store.close();
  }
  return { torn };
}
