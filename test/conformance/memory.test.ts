/**
 * Runs the conformance suite on the embedded memory backend (one shared instance: both clients
 * and every `open()` see the same documents), then checks the memory backend's own leak counters
 * and that a process using it exits by itself once the store is closed.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createStore, memory } from './api.js';
import { noHang, sleep } from './harness.js';
import { conformance } from './suite.js';

conformance('memory', async () => {
  const b = memory();
  return {
    open: async () => b,
    cleanup: async () => {},
    limitState: async (name) => b.limitKeys(name),
    // Pools are dropped when idle; the counts are the backend's (one suite file at a time).
    namedLockResidue: async () => {
      const { permitPools, permitLeases, timers } = b.stats();
      return Object.entries({ permitPools, permitLeases, timers })
        .filter(([, n]) => n !== 0)
        .map(([k, n]) => `${k}: ${n}`);
    },
  };
});

describe('memory: nothing leaks', () => {
  it('rate-limit keys, expiring documents and their sweep timer are all gone once idle', async () => {
    const b = memory();
    const store = createStore(b);
    const M = store.model('ttl', z.object({ n: z.number() }));
    const sw = store.rateLimiter('sw', { limit: 5, windowMs: 100 });
    const tb = store.rateLimiter('tb', { limit: 5, windowMs: 100, algorithm: 'token-bucket' });
    for (let i = 0; i < 50; i++) {
      await sw.consume(`k${i}`);
      await tb.consume(`k${i}`, { cost: 5 });
      await M.put(`d${i}`, { n: i }, { ttlMs: 100 });
    }
    await store.apply([sw.consumeOp('op'), M.createOp('op', { n: 0 }, { ttlMs: 100 })]);
    await M.put('stays', { n: 1 });
    expect(b.stats()).toMatchObject({ limitKeys: 101, expiring: 51, documents: 52 });
    expect(b.stats().sweeps).toBeGreaterThan(0);
    const idle = () => {
      const s = b.stats();
      return s.limitKeys === 0 && s.expiring === 0 && s.sweeps === 0 && s.documents === 1;
    };
    for (let i = 0; i < 1000 && !idle(); i++) await sleep(10);
    expect(b.stats()).toMatchObject({ limitKeys: 0, expiring: 0, sweeps: 0, documents: 1 });
    await store.close();
  });

  it('leases, locks, timers and reservations return to zero when idle', async () => {
    const b = memory();
    const store = createStore(b);
    const M = store.model('leak', z.object({ n: z.number().int().max(1000) }));
    await M.create('k', { n: 0 });
    await M.create('j', { n: 0 });
    await M.create('u', { n: 0 });
    const tasks: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      tasks.push(
        M.lock(
          ['k', 'j'],
          (ds) => {
            for (const d of ds) d.n += 1;
          },
          { leaseMs: 100 },
        ),
      );
      tasks.push(M.lock('k', () => 0, { timeoutMs: 1 }).catch(() => 0));
      tasks.push(M.lock('k', () => 0, { nowait: true }).catch(() => 0));
      tasks.push(M.lock('j', () => 0, { skipLocked: true }));
      const ac = new AbortController();
      tasks.push(M.lock('k', () => 0, { signal: ac.signal }).catch(() => 0));
      ac.abort(new Error('x'));
      tasks.push(M.update('u', (d) => void (d.n += 1), { retries: 100 }));
      tasks.push(M.apply('j', (d) => d.n.incr(5000)).catch(() => 0)); // invalid post-state
      tasks.push(
        M.lock('j', () => {
          throw new Error('boom');
        }).catch(() => 0),
      );
    }
    // an abandoned lease, which must expire and be cleaned up
    const crashed = M.lock('k', () => new Promise(() => {}), { leaseMs: 50, renew: false });
    crashed.catch(() => {});
    await noHang(Promise.all(tasks), 'leak workload');
    await noHang(
      M.lock('k', () => 0),
      'lock after the crashed holder',
    );
    const idle = async () => {
      const s = b.stats();
      return (
        s.leases === 0 && s.locks === 0 && s.timers === 0 && s.reservations === 0 && s.gated === 0
      );
    };
    for (let i = 0; i < 200 && !(await idle()); i++) await sleep(10);
    // The crashed holder's fn never settles; its lease must be gone all the same.
    expect(b.stats()).toMatchObject({
      leases: 0,
      locks: 0,
      timers: 0,
      reservations: 0,
      gated: 0,
    });
    expect((await M.get('k')).data.n).toBe(20);
    expect((await M.get('u')).data.n).toBe(20);
    await store.close();
    await store.close();
  });

  it('queues: claimers, queue timers and empty queues return to zero when idle', async () => {
    const b = memory();
    const store = createStore(b);
    const q = store.queue('leakq', z.object({ n: z.number() }), {
      leaseMs: 50,
      backoff: { baseMs: 1, maxMs: 5 },
    });
    const C = store.model('leakc', z.object({ n: z.number() }));
    await C.create('c', { n: 0 });
    await q.enqueueMany(
      Array.from({ length: 30 }, (_, i) => ({ data: { n: i }, delayMs: i % 2 ? 20 : 0 })),
    );
    await q.claim({ timeoutMs: 1 }).then((j) => j?.retry({ delayMs: 0 }));
    let throws = 0;
    const w = q.work(
      async (job) => {
        if (job.data.n % 3 === 0 && job.attempt === 1) {
          throws += 1;
          throw new Error('once');
        }
        await job.complete([C.ops('c', (c) => c.n.incr(1))]);
      },
      { concurrency: 4 },
    );
    const ac = new AbortController();
    const aborted = q.claim({ signal: ac.signal }).catch(() => undefined);
    ac.abort(new Error('x'));
    await aborted;
    await noHang(
      (async () => {
        while ((await C.get('c')).data.n < 30) await sleep(5);
      })(),
      'queue workload',
    );
    await w.close();
    expect(throws).toBe(9); // job 0 was retried by hand first: its attempt 2 passes
    expect(b.stats()).toMatchObject({ queues: 0, claimers: 0, queueTimers: 0, gated: 0 });
    await store.close();
  });

  it('a process that used locks, leases, timeouts and aborts exits by itself after close()', async () => {
    const entry = fileURLToPath(new URL('./api.ts', import.meta.url));
    const script = `
      const { createStore, memory } = await import(${JSON.stringify(entry)});
      const store = createStore(memory());
      const schema = { '~standard': { version: 1, vendor: 't', validate: (v) => ({ value: v }) } };
      const M = store.model('exit', schema);
      await M.create('k', { n: 0 });
      const hold = M.lock('k', async (d) => { await new Promise((r) => setTimeout(r, 50)); d.n = 1; }, { leaseMs: 40 });
      await M.lock('k', () => 0, { timeoutMs: 5 }).catch(() => {});
      const ac = new AbortController();
      const aborted = M.lock('k', () => 0, { signal: ac.signal }).catch(() => {});
      ac.abort(new Error('bye'));
      await aborted;
      await hold;
      M.lock('k', () => new Promise(() => {}), { leaseMs: 10_000 }).catch(() => {});
      await new Promise((r) => setTimeout(r, 20));
      await store.close();
      console.log('closed');
    `;
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        cwd: fileURLToPath(new URL('../..', import.meta.url)),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (c) => (out += String(c)));
    child.stderr.on('data', (c) => (out += String(c)));
    const code = await noHang(
      new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c))),
      'child process exit after store.close() (something keeps the event loop alive)',
      30_000,
    ).finally(() => child.kill());
    expect(out).toContain('closed');
    expect(code).toBe(0);
  });
});
