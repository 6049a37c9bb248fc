/**
 * Plain writers wait for exclusive leases of the default action (backend.ts, "Unwritten rules";
 * write_gate in lib.lua, write-wait.ts): a lock holder's commit never meets ConflictError from
 * an apply/update, every increment lands; a waiting write is queued in the FIFO (a lock holder
 * arriving after it cannot overtake it), gives up with LockTimeoutError or the signal's reason
 * having written nothing and leaving no queue entry behind; shared leases and leases of other
 * actions do not hold writers back.
 */
import type { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { redis } from '../../../src/backends/redis/index.js';
import { ConflictError, createStore, LockTimeoutError } from '../../../src/index.js';
import type { Backend, DocWrite } from '../../../src/store/backend.js';
import { oneKeyLease as lease, prefixedSpace } from './prefixed.js';

const space = prefixedSpace('lsww', 2);
const { url, prefix, layout } = space;
let admin: Redis;
let b1: Backend;
let b2: Backend;
beforeAll(() => {
  admin = space.admin;
  b1 = space.backends[0] as Backend;
  b2 = space.backends[1] as Backend;
});

const incr = (m: string, key: string, by = 1): DocWrite => ({
  kind: 'patch',
  model: m,
  key,
  ops: [{ op: 'incr', field: 'n', by }],
});

/** Waits (bounded) until the default-action queue of (m, key) holds `n` entries. */
async function queued(m: string, key: string, n: number): Promise<void> {
  const qa = layout.lease(layout.doc(m, key), 'default').queueInfo;
  for (let i = 0; i < 2_000; i++) {
    if ((await admin.hlen(qa)) === n) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`the queue of ${m} ${key} never held ${n} entries`);
}

/** `p` settled (bounded): its value, or the error it rejected with. */
async function settled<T>(p: Promise<T>, what: string): Promise<T | unknown> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} hung`)), 15_000);
  });
  try {
    return await Promise.race([
      p.then(
        (v) => v,
        (e: unknown) => e,
      ),
      hang,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe('redis: plain writers wait for the default action’s exclusive leases', () => {
  it('800 lock calls of two processes mixed with applies and updates on one document: 0 ConflictError for the holders, every increment lands', async () => {
    const stores = [createStore(redis({ url, prefix })), createStore(redis({ url, prefix }))];
    try {
      const C = stores.map((s) => s.model('mix', z.object({ n: z.number().int() })));
      const [c0, c1] = C as [(typeof C)[number], (typeof C)[number]];
      await c0.put('hot', { n: 0 });
      const [HOLDERS, LOCKS, APPLIERS, APPLIES] = [8, 100, 4, 60];
      const conflicts = { lock: 0, apply: 0, update: 0 };
      let landed = 0;
      const count = async (kind: keyof typeof conflicts, p: Promise<unknown>) => {
        try {
          await p;
          landed += 1;
        } catch (err) {
          if (err instanceof ConflictError) conflicts[kind] += 1;
          else throw err;
        }
      };
      await Promise.all([
        ...Array.from({ length: HOLDERS }, (_, t) =>
          (async () => {
            const M = t % 2 === 0 ? c0 : c1;
            for (let i = 0; i < LOCKS; i++) {
              await count(
                'lock',
                M.lock('hot', (d) => {
                  d.n += 1;
                }),
              );
            }
          })(),
        ),
        ...Array.from({ length: APPLIERS }, (_, t) =>
          (async () => {
            const M = t % 2 === 0 ? c1 : c0;
            for (let i = 0; i < APPLIES; i++) {
              // Half applies, half optimistic updates (read, compute, compare-and-set; they wait
              // for the lease like any write, and go again when a holder moved the version).
              if (t < APPLIERS / 2)
                await count(
                  'apply',
                  M.apply('hot', (d) => d.n.incr(1)),
                );
              else
                await count(
                  'update',
                  M.update(
                    'hot',
                    (d) => {
                      d.n += 1;
                    },
                    { retries: 1_000 },
                  ),
                );
            }
          })(),
        ),
      ]);
      expect(conflicts).toEqual({ lock: 0, apply: 0, update: 0 });
      expect(landed).toBe(HOLDERS * LOCKS + APPLIERS * APPLIES);
      expect((await c0.get('hot')).data.n).toBe(landed);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it('a write waits for the lease, is not overtaken by a holder queued after it, and the holder’s commit is not refused', async () => {
    const m = 'fifo';
    await b1.write([{ kind: 'put', model: m, key: 'k', data: { n: 0, s: 'start' } }]);
    const held = await b1.acquire(lease(m, 'k'));
    const since = held?.docs[0]?.version as number;
    // The writer of another process: it waits, queued.
    const write = b2.write([incr(m, 'k', 10)]);
    await queued(m, 'k', 1);
    expect((await b1.read([{ model: m, key: 'k' }]))[0]?.data.n).toBe(0);
    // A lock holder arriving after the writer queues behind it.
    const next = b1.acquire(lease(m, 'k'));
    await queued(m, 'k', 2);
    const committed = await held?.commit([
      {
        kind: 'patch',
        model: m,
        key: 'k',
        ops: [{ op: 'set', field: 's', value: 'holder' }],
        fieldsUnchangedSince: since,
      },
    ]);
    expect(committed?.applied).toBe(true);
    expect(await settled(write, 'the waiting write')).toMatchObject({ applied: true });
    // The next holder's snapshot has the write: it went before it.
    const second = await next;
    expect(second?.docs[0]?.data).toEqual({ n: 10, s: 'holder' });
    await second?.release();
    await queued(m, 'k', 0);
  });

  it('timeoutMs: LockTimeoutError, nothing written, and no queue entry left to hold the next holder back', async () => {
    const m = 'timeout';
    await b1.write([{ kind: 'put', model: m, key: 'k', data: { n: 0 } }]);
    const held = await b1.acquire(lease(m, 'k'));
    const err = await settled(b2.write([incr(m, 'k')], { timeoutMs: 150 }), 'the timed write');
    expect(err).toBeInstanceOf(LockTimeoutError);
    await held?.release();
    // The writer left its queues: a holder of the other process takes the lease at once.
    const free = await b2.acquire(lease(m, 'k', { nowait: true }));
    expect(free?.docs[0]?.data).toEqual({ n: 0 });
    await free?.release();
  });

  it('signal: an abort rejects with its reason, nothing written, the queue is left', async () => {
    const m = 'abort';
    await b1.write([{ kind: 'put', model: m, key: 'k', data: { n: 0 } }]);
    const held = await b1.acquire(lease(m, 'k'));
    const ac = new AbortController();
    const write = b2.write([incr(m, 'k')], { signal: ac.signal });
    await queued(m, 'k', 1);
    const reason = new Error('stop waiting');
    ac.abort(reason);
    expect(await settled(write, 'the aborted write')).toBe(reason);
    await queued(m, 'k', 0);
    await held?.release();
    expect((await b1.read([{ model: m, key: 'k' }]))[0]?.data).toEqual({ n: 0 });
  });

  it('a multi-document batch waits for a lease on any of its documents, then lands whole', async () => {
    const m = 'multi';
    await b1.write([
      { kind: 'put', model: m, key: 'a', data: { n: 0 } },
      { kind: 'put', model: m, key: 'b', data: { n: 0 } },
    ]);
    const held = await b1.acquire(lease(m, 'b'));
    const write = b2.write([incr(m, 'a'), incr(m, 'b')]);
    await queued(m, 'b', 1);
    expect((await b1.read([{ model: m, key: 'a' }]))[0]?.data.n).toBe(0);
    await held?.release();
    expect(await settled(write, 'the batch')).toMatchObject({ applied: true });
    const docs = await b1.read([
      { model: m, key: 'a' },
      { model: m, key: 'b' },
    ]);
    expect(docs.map((d) => d?.data.n)).toEqual([1, 1]);
    await queued(m, 'a', 0);
    await queued(m, 'b', 0);
  });

  it('shared leases and exclusive leases of another action do not hold plain writers back', async () => {
    const m = 'lanes';
    await b1.write([{ kind: 'put', model: m, key: 'k', data: { n: 0 } }]);
    const shared = await b1.acquire(lease(m, 'k', { mode: 'shared' }));
    expect(await settled(b2.write([incr(m, 'k')]), 'a write under a shared lease')).toMatchObject({
      applied: true,
    });
    await shared?.release();
    const other = await b1.acquire(lease(m, 'k', { action: 'audit' }));
    expect(await settled(b2.write([incr(m, 'k')]), 'a write under another action')).toMatchObject({
      applied: true,
    });
    await other?.release();
    expect((await b1.read([{ model: m, key: 'k' }]))[0]?.data.n).toBe(2);
  });

  it('a lease that expires silently (its holder gone) lets the waiting write through', async () => {
    const m = 'expiry';
    await b1.write([{ kind: 'put', model: m, key: 'k', data: { n: 0 } }]);
    await b1.acquire(lease(m, 'k', { leaseMs: 200, renew: false }));
    expect(await settled(b2.write([incr(m, 'k')]), 'the write')).toMatchObject({ applied: true });
    expect((await b1.read([{ model: m, key: 'k' }]))[0]?.data.n).toBe(1);
  });
});
