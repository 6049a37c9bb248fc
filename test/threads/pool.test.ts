/**
 * A tinypool example, as the seeds' `Pool.map` with a `Manager().Lock()`: a pool of 4 worker
 * threads runs 16 tasks that share one Mutex, one RWLock (lockstep/threads, handles in each task)
 * and one store (a memory backend served by this thread, one connection per task, its port
 * transferred with the task). Totals are exact, no reader sees half-written weights, and nothing
 * stays held or connected.
 */
import Tinypool from 'tinypool';
import { expect, it } from 'vitest';
import { z } from 'zod';
import { memory } from '../../src/backends/memory/index.js';
import { createStore } from '../../src/index.js';
import { Mutex, RWLock, serveBackend } from '../../src/threads/index.js';
import type { PoolTask } from './pool-task.js';
import { bundled, noHang } from './support.js';

it('tinypool: 16 tasks on 4 threads share a Mutex, an RWLock and a store; totals exact, no torn read', async () => {
  const backend = memory();
  const server = serveBackend(backend);
  const store = createStore(backend);
  const Counter = store.model('pool', z.object({ n: z.number().int() }));
  await Counter.create('k', { n: 0 });
  const mutex = new Mutex({ name: 'pool' });
  const rwlock = new RWLock({ name: 'weights' });
  const counter = new Int32Array(new SharedArrayBuffer(4));
  const weights = new Float64Array(new SharedArrayBuffer(8 * 8));
  const pool = new Tinypool({
    filename: await bundled('./pool-task.ts'),
    minThreads: 4,
    maxThreads: 4,
  });
  const TASKS = 16;
  const N = 25;
  try {
    const results = await noHang(
      Promise.all(
        Array.from({ length: TASKS }, () => {
          const handle = server.handle();
          const task: PoolTask = {
            mutex: mutex.handle,
            rwlock: rwlock.handle,
            counter,
            weights,
            backend: handle,
            n: N,
          };
          return pool.run(task, { transferList: [handle.port] }) as Promise<{ torn: number }>;
        }),
      ),
      'pool tasks',
      60_000,
    );
    expect(results.reduce((a, r) => a + r.torn, 0)).toBe(0);
    expect(counter[0]).toBe(TASKS * N);
    expect(weights.every((w) => w === TASKS * Math.ceil(N / 4))).toBe(true);
    expect((await Counter.get('k')).data.n).toBe(TASKS * N * 2);
    expect(mutex.isLocked || rwlock.isLocked).toBe(false);
    expect(backend.stats()).toMatchObject({ leases: 0, locks: 0, gated: 0 });
    expect(server.connections).toBe(0);
  } finally {
    await pool.destroy();
    await server.close();
    await store.close();
  }
});
