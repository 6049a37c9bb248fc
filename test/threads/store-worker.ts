/**
 * A worker that opens `createStore(remoteBackend(workerData.backend))` and, by `workerData.mode`:
 * - `hold`: locks counter "k" and never returns (posts 'holding'), so the test can terminate it;
 * - `hold-mutex`: the same with the named mutex "m" (`store.mutex`);
 * - `increment`: `n` lock-increments and `n` apply-increments of counter "k", then closes the
 *   store and ends by itself (posts 'done').
 */
import { parentPort, workerData } from 'node:worker_threads';
import { z } from 'zod';
import { createStore } from '../../src/index.js';
import { type BackendHandle, remoteBackend } from '../../src/threads/index.js';

const { backend, mode, n, model } = workerData as {
  backend: BackendHandle;
  mode: 'hold' | 'hold-mutex' | 'increment';
  n: number;
  model: string;
};
const store = createStore(remoteBackend(backend));
const Counter = store.model(model, z.object({ n: z.number().int() }));

if (mode === 'hold-mutex') {
  setInterval(() => {}, 1_000);
  void store.mutex('m', { leaseMs: 60_000 }).run(() => {
    parentPort?.postMessage('holding');
    return new Promise<void>(() => {});
  });
} else if (mode === 'hold') {
  // Stays alive until terminated (a never-settling promise alone would let the thread end).
  setInterval(() => {}, 1_000);
  void Counter.lock(
    'k',
    (d) => {
      d.n += 1000; // never committed
      parentPort?.postMessage('holding');
      return new Promise<void>(() => {});
    },
    { leaseMs: 60_000 },
  );
} else {
  for (let i = 0; i < n; i++) {
    await Counter.lock('k', (d) => {
      const seen = d.n;
      d.n = seen + 1;
    });
    await Counter.apply('k', (o) => o.n.incr(1));
  }
  await store.close();
  parentPort?.postMessage('done');
}
