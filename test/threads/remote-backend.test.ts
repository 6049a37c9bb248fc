/**
 * The store across threads beyond the conformance suite (test/conformance/threads.test.ts): a
 * worker terminated while holding a lease loses it (the owner sees its port close), workers and
 * the main thread increment one counter through one served backend (total exact), everything
 * returns to zero once clients close, a worker using a remote store exits by itself after
 * close(), an owner that goes away fails its clients' calls, and bad input.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { memory } from '../../src/backends/memory/index.js';
import { BackendError, LeaseLostError, ValidationError } from '../../src/errors.js';
import { createStore } from '../../src/index.js';
import { remoteBackend, serveBackend } from '../../src/threads/index.js';
import { type Owner, startOwner } from './owner.js';
import { exited, message, noHang, sleep, startWorker } from './support.js';

const schema = z.object({ n: z.number().int() });

/** The owner's memory stats once its leases, locks and waits are gone (or after 2 s). */
async function idle(owner: Owner) {
  for (let i = 0; i < 200; i++) {
    const s = await owner.stats();
    if (s.leases === 0 && s.locks === 0 && s.gated === 0 && s.reservations === 0) break;
    await sleep(10);
  }
  return owner.stats();
}

async function withOwner(fn: (owner: Owner) => Promise<void>): Promise<void> {
  const owner = await startOwner();
  try {
    await fn(owner);
  } finally {
    await owner.worker.terminate();
  }
}

async function storeWorker(owner: Owner, data: Record<string, unknown>) {
  const backend = await owner.handle();
  return startWorker('./store-worker.ts', { ...data, backend }, [backend.port]);
}

describe('remoteBackend / serveBackend', () => {
  it('a worker terminated while it holds a lease (leaseMs 60 s, renewing) loses it at once: the next client gets the key, the holder wrote nothing', async () => {
    await withOwner(async (owner) => {
      const store = createStore(remoteBackend(await owner.handle()));
      const M = store.model('held', schema);
      await M.create('k', { n: 0 });
      const holder = await storeWorker(owner, { mode: 'hold', model: 'held', n: 0 });
      await noHang(
        message(holder, (m) => m === 'holding'),
        'the worker holds the lease',
      );
      expect(await M.lock('k', () => 'free', { skipLocked: true })).toBeUndefined();
      await holder.terminate();
      // Without the owner releasing on port close this waits for the 60 s lease: the guard fails.
      const after = M.lock('k', (d) => void (d.n += 1), { timeoutMs: 20_000 });
      await noHang(after, 'lock after the terminated holder', 25_000);
      expect((await M.get('k')).data.n).toBe(1);
      await store.close();
      expect(await idle(owner)).toMatchObject({ leases: 0, locks: 0, gated: 0, reservations: 0 });
      expect(await owner.connections()).toBe(0);
    });
  });

  it('a worker terminated while it holds a named mutex (store.mutex, leaseMs 60 s) loses it at once; nothing stays held', async () => {
    await withOwner(async (owner) => {
      const store = createStore(remoteBackend(await owner.handle()));
      const holder = await storeWorker(owner, { mode: 'hold-mutex', model: 'unused', n: 0 });
      await noHang(
        message(holder, (m) => m === 'holding'),
        'the worker holds the mutex',
      );
      const mutex = store.mutex('m');
      expect(await mutex.tryAcquire()).toBeUndefined();
      await holder.terminate();
      const permit = await noHang(
        mutex.acquire({ timeoutMs: 20_000 }),
        'mutex after the holder',
        25_000,
      );
      expect(permit.fence).toBeGreaterThan(1);
      await permit.release();
      await store.close();
      expect(await owner.stats()).toMatchObject({ permitLeases: 0, permitPools: 0 });
      expect(await owner.connections()).toBe(0);
    });
  });

  it('4 workers and the main thread increment one counter with lock and apply through one served backend: the total is exact; workers exit by themselves after close()', async () => {
    await withOwner(async (owner) => {
      const store = createStore(remoteBackend(await owner.handle()));
      const M = store.model('hammer', schema);
      await M.create('k', { n: 0 });
      const N = 100;
      const workers = await Promise.all(
        Array.from({ length: 4 }, () =>
          storeWorker(owner, { mode: 'increment', model: 'hammer', n: N }),
        ),
      );
      const mine = (async () => {
        for (let i = 0; i < N; i++) {
          await M.lock('k', (d) => {
            const seen = d.n;
            d.n = seen + 1;
          });
        }
      })();
      // exit code 0 without terminate(): nothing of the remote store keeps a worker alive
      const codes = await noHang(Promise.all(workers.map((w) => exited(w))), 'workers exit');
      await mine;
      expect(codes).toStrictEqual([0, 0, 0, 0]);
      expect((await M.get('k')).data.n).toBe(4 * 2 * N + N);
      await store.close();
      expect(await idle(owner)).toMatchObject({ leases: 0, locks: 0, gated: 0, reservations: 0 });
      expect(await owner.connections()).toBe(0);
    });
  });

  it('the owner thread goes away: waiting calls and later calls reject with BackendError, held leases are lost', async () => {
    const owner = await startOwner();
    const a = createStore(remoteBackend(await owner.handle()));
    const b = createStore(remoteBackend(await owner.handle()));
    const M = [a.model('gone', schema), b.model('gone', schema)] as const;
    await M[0].create('k', { n: 0 });
    const lease = await a.backend.acquire({
      model: 'gone',
      keys: ['k'],
      action: 'default',
      mode: 'exclusive',
      leaseMs: 60_000,
      renew: true,
      nowait: false,
      skipLocked: false,
    });
    const waiting = M[1].lock('k', () => 0);
    waiting.catch(() => {});
    await sleep(20);
    await owner.worker.terminate();
    await expect(noHang(waiting, 'waiter of a dead owner')).rejects.toBeInstanceOf(BackendError);
    await noHang(
      new Promise<void>((resolve) => {
        if (lease?.signal.aborted) resolve();
        lease?.signal.addEventListener('abort', () => resolve());
      }),
      'the lease is lost',
    );
    expect(lease?.lost).toBe(true);
    expect(lease?.signal.reason).toBeInstanceOf(LeaseLostError);
    expect(await lease?.release()).toBe(false);
    await expect(M[0].get('k')).rejects.toMatchObject({ code: 'BACKEND' });
    await a.close();
    await b.close();
  });

  it('served in this thread too: a client closing releases what it held; the server closing ends every connection', async () => {
    const backend = memory();
    const server = serveBackend(backend);
    const c1 = createStore(remoteBackend(server.handle()));
    const c2 = createStore(remoteBackend(server.handle()));
    expect(server.connections).toBe(2);
    const M1 = c1.model('local', schema);
    const M2 = c2.model('local', schema);
    await M1.create('k', { n: 0 });
    // The holder returns once its lease is known lost: its lock call then rejects.
    const holding = M1.lock(
      'k',
      (d, ctx) =>
        new Promise<void>((resolve) => {
          d.n = 1000;
          ctx.signal.addEventListener('abort', () => resolve());
        }),
      { leaseMs: 60_000 },
    );
    holding.catch(() => {});
    await sleep(20);
    expect(backend.stats().leases).toBe(1);
    await c1.close();
    await expect(noHang(holding, 'holder of a closed client')).rejects.toBeInstanceOf(
      LeaseLostError,
    );
    expect(
      await noHang(
        M2.lock('k', (d) => (d.n += 1)),
        'lock after close',
      ),
    ).toBe(1);
    expect(backend.stats()).toMatchObject({ leases: 0, locks: 0, gated: 0 });
    expect(server.connections).toBe(1);
    await server.close();
    expect(server.connections).toBe(0);
    await expect(noHang(M2.get('k'), 'get after server close')).rejects.toMatchObject({
      code: 'BACKEND',
    });
    await c2.close();
    await backend.close();
  });

  it('predicted checks: a client whose known state went stale is still validated on the real post-image (another client wrote in between)', async () => {
    await withOwner(async (owner) => {
      const a = createStore(remoteBackend(await owner.handle()));
      const b = createStore(remoteBackend(await owner.handle()));
      const capped = z.object({ n: z.number().int().max(100) });
      const A = a.model('capped', capped);
      const B = b.model('capped', capped);
      await A.create('k', { n: 0 }); // A now knows n = 0
      expect((await A.apply('k', (o) => o.n.incr(1))).doc?.data.n).toBe(1); // predicted: n = 1
      await B.apply('k', (o) => o.n.incr(98)); // 99, unknown to A
      // A predicts 1 + 5 = 6 (valid); the real post-image is 104: refused, nothing written
      await expect(A.apply('k', (o) => o.n.incr(5))).rejects.toBeInstanceOf(ValidationError);
      expect((await B.get('k')).data.n).toBe(99);
      // and a valid write on the stale state lands on the real one
      expect((await A.apply('k', (o) => o.n.incr(1))).doc?.data.n).toBe(100);
      // many concurrent applies of one client, predictions chained: every one lands
      await Promise.all(Array.from({ length: 50 }, () => A.apply('k', (o) => o.n.incr(-1))));
      expect((await B.get('k')).data.n).toBe(50);
      await a.close();
      await b.close();
    });
  });

  it('bad input: not a backend, not a handle, a handle used twice → ValidationError', () => {
    expect(() => serveBackend({} as never)).toThrow(ValidationError);
    expect(() => remoteBackend({} as never)).toThrow(ValidationError);
    expect(() => remoteBackend({ kind: 'lockstep/threads:Backend' } as never)).toThrow(
      /transferList/,
    );
    const server = serveBackend(memory());
    const h = server.handle();
    const r = remoteBackend(h);
    expect(() => remoteBackend(h)).toThrow(/new handle/);
    expect(r.supports).toMatchObject({ sharedAcrossProcesses: false, sharedAcrossThreads: true });
    void r.close();
    void server.close();
  });
});
