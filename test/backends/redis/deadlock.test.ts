/**
 * In-process deadlock detection on the Redis backend, against a real Redis (REDIS_URL): nested
 * locks that would close a wait-for cycle between tasks of this process (opposite orders, or
 * re-entering a key and action held by the enclosing lock) fail at once with DeadlockError —
 * never a hang — without queueing in Redis; the other task completes; different actions and
 * shared re-entry do not conflict; a lapsed (not renewed) lease stops counting as a hold; and
 * after timeouts, aborts, closes and errors no waiter key is left in Redis and the in-process
 * graph is empty.
 */
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { redis } from '../../../src/backends/redis/index.js';
import { KeyLayout } from '../../../src/backends/redis/keys.js';
import {
  type Backend,
  bounded,
  createStore,
  DeadlockError,
  LeaseLostError,
  LockTimeoutError,
  runAsTask,
  ValidationError,
} from '../../../src/index.js';
import { trackedLocks, trackLease } from '../../../src/sync/tracked-leases.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `lsdead:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
const layout = new KeyLayout(prefix);
const doc = z.object({ a: z.number(), b: z.number() });
let admin: Redis;
let b0: Backend;
let b1: Backend;

beforeAll(() => {
  admin = new Redis(url);
  b0 = redis({ url, prefix });
  b1 = redis({ url, prefix }); // another backend (own connections) on the same server and prefix
});

afterAll(async () => {
  await b0.close();
  await b1.close();
  for (const k of await keysMatching(new KeyLayout(prefix).pattern)) await admin.del(k);
  await admin.quit();
});

async function keysMatching(pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

/** Every lease and waiter key left under the prefix (queues, queue entries, leases). */
async function leftovers(): Promise<string[]> {
  const keys = await keysMatching(new KeyLayout(prefix).pattern);
  return keys.filter((k) => /:(q|qa|l):[^:]*$/.test(k));
}

/** Rejects if `p` has not settled within `ms` (a hang is a failure, not a slow test). */
function noHang<T>(p: Promise<T>, what: string, ms = 15_000): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms (a hang)`)), ms);
    }),
  ]);
}

function barrier(n: number): () => Promise<void> {
  let arrived = 0;
  let open!: () => void;
  const all = new Promise<void>((r) => {
    open = r;
  });
  return () => {
    arrived += 1;
    if (arrived === n) open();
    return all;
  };
}

let seq = 0;
const modelName = () => `d${++seq}`;

describe('nested locks in one process (Redis)', () => {
  it('declares supports.inProcessDeadlocks (detectDeadlocks defaults to true) and refuses a non-boolean option', async () => {
    expect(b0.supports.inProcessDeadlocks).toBe(true);
    const off = redis({ url, prefix, detectDeadlocks: false });
    expect(off.supports.inProcessDeadlocks).toBe(false);
    await off.close();
    expect(() => redis({ url, prefix, detectDeadlocks: 'yes' as unknown as boolean })).toThrow(
      ValidationError,
    );
  });

  it('opposite orders from two tasks: exactly one DeadlockError at once (no timeout), the other completes', async () => {
    const name = modelName();
    const M = [createStore(b0).model(name, doc), createStore(b1).model(name, doc)] as const;
    await M[0].create('x', { a: 0, b: 0 });
    await M[0].create('y', { a: 0, b: 0 });
    for (let round = 0; round < 5; round++) {
      const arrive = barrier(2);
      // Alternate which backend takes which side; no timeoutMs anywhere: only detection ends it.
      const [P, Q] = round % 2 === 0 ? M : ([M[1], M[0]] as const);
      const results = await noHang(
        Promise.allSettled([
          P.lock('x', async (x) => {
            await arrive();
            x.a += 1;
            await P.lock('y', (y) => void (y.a += 1));
          }),
          Q.lock('y', async (y) => {
            await arrive();
            y.b += 1;
            await Q.lock('x', (x) => void (x.b += 1));
          }),
        ]),
        'opposite-order nested locks',
      );
      const failed = results.filter((r) => r.status === 'rejected');
      expect(failed).toHaveLength(1);
      const e = (failed[0] as PromiseRejectedResult).reason as DeadlockError;
      expect(e).toBeInstanceOf(DeadlockError);
      expect(e.code).toBe('DEADLOCK');
      expect(e.cycle.length).toBeGreaterThanOrEqual(2);
      expect(e.cycle[0]).toBe(e.cycle[e.cycle.length - 1]);
      // whoever failed wrote nothing (increments come in pairs); the other wrote both
      const [x, y] = await b0.read([
        { model: name, key: 'x' },
        { model: name, key: 'y' },
      ]);
      expect(x?.data.a).toBe(y?.data.a);
      expect(x?.data.b).toBe(y?.data.b);
      expect(Number(x?.data.a) + Number(x?.data.b)).toBe(round + 1);
    }
    expect(await leftovers()).toStrictEqual([]);
    expect(trackedLocks()).toBe(0);
  });

  it('re-entering the same key and action inside fn: DeadlockError at once, nothing queued in Redis', async () => {
    const name = modelName();
    const M0 = createStore(b0).model(name, doc);
    const M1 = createStore(b1).model(name, doc);
    await M0.create('x', { a: 0, b: 0 });
    const queue = layout.lease(layout.doc(name, 'x'), 'default');
    for (const inner of [M0, M1]) {
      let seen: unknown;
      let queuedMeanwhile = -1;
      await noHang(
        M0.lock('x', async (x) => {
          seen = await inner.lock('x', () => 0).catch((e: unknown) => e);
          // the refused wait never queued: no waiter entry while the outer lock is still held
          queuedMeanwhile = (await admin.llen(queue.queue)) + (await admin.hlen(queue.queueInfo));
          x.a += 1; // the outer lock still commits
        }),
        're-entry',
      );
      expect(seen).toBeInstanceOf(DeadlockError);
      expect(queuedMeanwhile).toBe(0);
    }
    // a shared re-entry inside an exclusive lock is the same cycle; exclusive inside shared too
    await expect(
      noHang(
        M0.lock('x', () => M1.lock('x', () => 0, { mode: 'shared' })),
        'shared in exclusive',
      ),
    ).rejects.toBeInstanceOf(DeadlockError);
    await expect(
      noHang(
        M0.lock('x', () => M0.lock('x', () => 0), { mode: 'shared' }),
        'exclusive in shared',
      ),
    ).rejects.toBeInstanceOf(DeadlockError);
    // a re-entry hidden in a multi-key lock is found too
    await M0.create('z', { a: 0, b: 0 });
    await expect(
      noHang(
        M0.lock('x', () => M1.lock(['x', 'z'], () => 0)),
        'multi-key re-entry',
      ),
    ).rejects.toBeInstanceOf(DeadlockError);
    expect((await M0.get('x')).data.a).toBe(2);
    expect(await leftovers()).toStrictEqual([]);
    expect(trackedLocks()).toBe(0);
  });

  it('different actions on the same key, and shared inside shared, are not cycles', async () => {
    const name = modelName();
    const M0 = createStore(b0).model(name, doc);
    const M1 = createStore(b1).model(name, doc);
    await M0.create('x', { a: 0, b: 0 });
    const r = await noHang(
      M0.lock('x', async (x) => {
        x.a += 1;
        return M1.lock('x', () => 'inner', { action: 'audit' });
      }),
      'different action',
    );
    expect(r).toBe('inner');
    const s = await noHang(
      M0.lock('x', () => M1.lock('x', () => 'read twice', { mode: 'shared' }), { mode: 'shared' }),
      'shared in shared',
    );
    expect(s).toBe('read twice');
    expect((await M0.get('x')).data.a).toBe(1);
    expect(await leftovers()).toStrictEqual([]);
    expect(trackedLocks()).toBe(0);
  });

  it('detectDeadlocks: false — no tracking; the same re-entry waits until its timeout', async () => {
    const plain = redis({ url, prefix, detectDeadlocks: false });
    const name = modelName();
    const P = createStore(plain).model(name, doc);
    await P.create('x', { a: 0, b: 0 });
    await expect(
      P.lock('x', async () => {
        expect(trackedLocks()).toBe(0);
        await P.lock('x', () => 0, { timeoutMs: 50 });
      }),
    ).rejects.toBeInstanceOf(LockTimeoutError);
    await plain.close();
    expect(await leftovers()).toStrictEqual([]);
    expect(trackedLocks()).toBe(0);
  });

  it('a lease that is not renewed stops holding once it lapses: waiting for it closes no cycle (and its holder learns it lost the lease)', async () => {
    const name = modelName();
    const M0 = createStore(b0).model(name, doc);
    const M1 = createStore(b1).model(name, doc);
    await M0.create('x', { a: 0, b: 0 });
    await M0.create('y', { a: 0, b: 0 });
    const yQueue = layout.lease(layout.doc(name, 'y'), 'default').queue;
    const bothIn = barrier(2);
    const results = await noHang(
      Promise.allSettled([
        // A: holds x (not renewed, short lease), then waits for y
        M0.lock(
          'x',
          async () => {
            await bothIn();
            await M0.lock('y', (y) => void (y.a += 1));
          },
          { leaseMs: 100, renew: false },
        ),
        // B: holds y; once A waits for y and A's lease on x has lapsed, takes x
        M1.lock('y', async (y) => {
          await bothIn();
          while ((await admin.llen(yQueue)) === 0) await new Promise((r) => setTimeout(r, 5));
          while ((await admin.exists(layout.lease(layout.doc(name, 'x'), 'default').lease)) === 1) {
            await new Promise((r) => setTimeout(r, 20));
          }
          y.b += 1;
          await M1.lock('x', (x) => void (x.b += 1));
        }),
      ]),
      'lapsed lease',
    );
    // A's lease on x lapsed before its fn ended: its lock rejects (it wrote nothing to x; its
    // inner lock on y, a lock of its own, landed). B took x and finished.
    expect(results.map((r) => r.status)).toStrictEqual(['rejected', 'fulfilled']);
    expect((results[0] as PromiseRejectedResult).reason).toBeInstanceOf(LeaseLostError);
    const [x, y] = await b0.read([
      { model: name, key: 'x' },
      { model: name, key: 'y' },
    ]);
    expect([x?.data, y?.data]).toStrictEqual([
      { a: 0, b: 1 },
      { a: 1, b: 1 },
    ]);
    expect(await leftovers()).toStrictEqual([]);
    expect(trackedLocks()).toBe(0);
  });

  it('random nested lock orders across many tasks and two backends: every task completes or gets DeadlockError; nothing leaks', async () => {
    const keys = ['k0', 'k1', 'k2', 'k3'];
    const task = fc.record({
      backend: fc.integer({ min: 0, max: 1 }),
      order: fc.shuffledSubarray(keys, { minLength: 2, maxLength: 3 }),
      shared: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
      action: fc.constantFrom('default', 'default', 'audit'),
    });
    let deadlocks = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(task, { minLength: 2, maxLength: 6 }), async (tasks) => {
        const name = modelName();
        const M = [createStore(b0).model(name, doc), createStore(b1).model(name, doc)] as const;
        for (const k of keys) await M[0].create(k, { a: 0, b: 0 });
        let inside = 0;
        // Contention: each task holds its first key until every task holds one (or 30 ms pass).
        let first = 0;
        let allIn!: () => void;
        const everyoneIn = new Promise<void>((r) => {
          allIn = r;
        });
        const nested = (
          t: (typeof tasks)[number],
          depth: number,
          wrote: string[],
        ): Promise<unknown> => {
          const key = t.order[depth] as string;
          const shared = t.shared[depth] === true;
          return (M[t.backend] as (typeof M)[0]).lock(
            key,
            async (d) => {
              inside += 1;
              if (depth === 0 && ++first === tasks.length) allIn();
              await (depth === 0
                ? Promise.race([everyoneIn, new Promise((r) => setTimeout(r, 30))])
                : new Promise((r) => setTimeout(r, 1)));
              // (locks of another action may hold the same key at once: they only read)
              if (!shared && (depth > 0 || t.action === 'default')) {
                d.a += 1;
                wrote.push(key);
              }
              if (depth + 1 < t.order.length) await nested(t, depth + 1, wrote);
            },
            { mode: shared ? 'shared' : 'exclusive', action: depth === 0 ? t.action : 'default' },
          );
        };
        const wrote = tasks.map(() => [] as string[]);
        const results = await noHang(
          Promise.allSettled(tasks.map((t, i) => nested(t, 0, wrote[i] as string[]))),
          'random nested locks',
          30_000,
        );
        for (const r of results) {
          if (r.status === 'rejected') {
            expect(r.reason).toBeInstanceOf(DeadlockError);
            deadlocks += 1;
          }
        }
        // a task that failed wrote nothing (a DeadlockError unwinds every enclosing lock)
        const expected = new Map(keys.map((k) => [k, 0]));
        results.forEach((r, i) => {
          if (r.status === 'fulfilled') {
            for (const k of wrote[i] as string[]) expected.set(k, (expected.get(k) ?? 0) + 1);
          }
        });
        const docs = await b1.read(keys.map((key) => ({ model: name, key })));
        expect(docs.map((d) => d?.data.a)).toStrictEqual(keys.map((k) => expected.get(k)));
        expect(inside).toBeGreaterThan(0);
        expect(await leftovers()).toStrictEqual([]);
        expect(trackedLocks()).toBe(0);
      }),
      { numRuns: 15, endOnFailure: true },
    );
    // the runs did close cycles (the property was not only checked on runs without any)
    expect(deadlocks).toBeGreaterThan(0);
  });

  it('nothing leaks: timeouts, aborts, busy, skipLocked, errors in fn and close() leave no waiter and an empty graph', async () => {
    const name = modelName();
    const extra = redis({ url, prefix });
    const M0 = createStore(b0).model(name, doc);
    const M1 = createStore(b1).model(name, doc);
    const Mx = createStore(extra).model(name, doc);
    await M0.create('x', { a: 0, b: 0 });
    // x is held by one task while other tasks (not nested in it) try it
    let entered!: () => void;
    const inside = new Promise<void>((r) => {
      entered = r;
    });
    let leave!: () => void;
    const gate = new Promise<void>((r) => {
      leave = r;
    });
    const holder = M0.lock('x', async () => {
      entered();
      await gate;
    });
    await inside;
    {
      // another task waits and gives up (timeout, abort), or does not wait (nowait, skipLocked)
      await expect(M1.lock('x', () => 0, { timeoutMs: 30 })).rejects.toBeInstanceOf(
        LockTimeoutError,
      );
      const ac = new AbortController();
      const aborted = M1.lock('x', () => 0, { signal: ac.signal });
      await new Promise((r) => setTimeout(r, 20));
      ac.abort(new Error('stop'));
      await expect(aborted).rejects.toThrow('stop');
      await expect(M1.lock('x', () => 0, { nowait: true })).rejects.toMatchObject({
        code: 'LOCK_BUSY',
      });
      expect(await M1.lock('x', () => 0, { skipLocked: true })).toBeUndefined();
      // a waiter whose backend closes
      const closing = Mx.lock('x', () => 0).catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 20));
      await extra.close();
      expect(await closing).toMatchObject({ code: 'BACKEND' });
    }
    leave();
    await holder;
    // an error thrown in fn releases the hold
    await expect(
      M0.lock('x', () => {
        throw new Error('mine');
      }),
    ).rejects.toThrow('mine');
    // a lease taken directly (outside any task, through the boundary) holds until released
    const closer = bounded(redis({ url, prefix }));
    const held = await closer.acquire({
      model: name,
      keys: ['x'],
      action: 'default',
      mode: 'exclusive',
      leaseMs: 5_000,
      renew: true,
      nowait: false,
      skipLocked: false,
    });
    expect(held).toBeDefined();
    expect(trackedLocks()).toBe(1);
    await held?.release();
    await closer.close();
    expect(await leftovers()).toStrictEqual([]);
    expect(trackedLocks()).toBe(0);
    // a lease held when its backend closes is lost (the graph asks lease.lost: it no longer
    // holds anyone back)
    const holding = bounded(redis({ url, prefix }));
    const kept = await holding.acquire({
      model: name,
      keys: ['x'],
      action: 'other',
      mode: 'exclusive',
      leaseMs: 200,
      renew: true,
      nowait: false,
      skipLocked: false,
    });
    expect(trackedLocks()).toBe(1);
    expect(kept?.lost).toBe(false);
    await holding.close();
    expect(kept?.lost).toBe(true);
    expect(kept?.signal.aborted).toBe(true);
    // Its release (the boundary's cue to leave the graph) says it no longer held.
    expect(await kept?.release()).toBe(false);
    expect(trackedLocks()).toBe(0);
  });
});

describe('the shared lease graph (src/sync/tracked-leases.ts)', () => {
  it('a lease granted without waiting (nowait) still counts as a hold after its entry was tidied meanwhile', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let holdsB!: () => void;
    const bHolds = new Promise<void>((r) => {
      holdsB = r;
    });
    let bWaits!: () => void;
    const bWaiting = new Promise<void>((r) => {
      bWaits = r;
    });
    // Task A holds "a".
    const a = runAsTask(async () => {
      const ta = trackLease(['t:a'], ['a'], true, false);
      ta.granted();
      await bWaiting;
      // ... and now wants "b", which B took with nowait: B waits for "a", so this is a cycle.
      let refused: unknown;
      try {
        trackLease(['t:b'], ['b'], true, false);
      } catch (e) {
        refused = e;
      }
      ta.released();
      release();
      return refused;
    });
    // Task B: a nowait lease on "b" is in flight while another lease on "b" comes and goes
    // (which tidies the entry away), then B's is granted and B waits for "a".
    const b = runAsTask(async () => {
      const tb = trackLease(['t:b'], ['b'], true, true);
      const other = trackLease(['t:b'], ['b'], true, false);
      other.granted();
      other.released();
      tb.granted();
      holdsB();
      const tw = trackLease(['t:a'], ['a'], true, false);
      bWaits();
      await gate;
      tw.abandoned();
      tb.released();
    });
    await bHolds;
    const [refused] = await Promise.all([a, b]);
    expect(refused).toBeInstanceOf(DeadlockError);
    expect(trackedLocks()).toBe(0);
  });
});
