/**
 * Named permit pools on Redis (acquirePermit / permitsHeld), through the Backend contract, on
 * the run's Redis under a prefix of this file's own, with several backend instances standing in
 * for processes:
 * - never more than `permits` units held by weight, 18 clients on 3 instances;
 * - FIFO: a weight-5 request is not starved by a stream of weight-1s; an rwlock writer is not
 *   overtaken by later readers;
 * - a waiter that times out or is aborted leaves the queue at once and wakes whoever it blocked;
 * - fences strictly increase per pool, across instances and across the counter's expiry;
 * - lost: `renew: false` past its lease aborts `signal`, `release()` resolves false, `extend`
 *   rejects; `extend()` keeps a permit; a silent expiry hands the units to a waiter;
 * - `permits` mismatch is a ValidationError with nothing queued; nowait; namespaces;
 * - idle: no key is left but the fence counters, and those expire.
 */
import { describe, expect, it } from 'vitest';
import { redis } from '../../../src/backends/redis/index.js';
import { KeyLayout } from '../../../src/backends/redis/keys.js';
import {
  BackendError,
  LeaseLostError,
  LockTimeoutError,
  ValidationError,
} from '../../../src/errors.js';
import {
  type Backend,
  type PermitKind,
  type PermitLease,
  type PermitRequest,
  RWLOCK_PERMITS,
} from '../../../src/store/backend.js';
import { type Bounded, bounded } from '../../../src/store/boundary.js';
import { prefixedSpace } from './prefixed.js';

const space = prefixedSpace('lsperm', 3);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A permit request: a mutex-like weight 1 of 1 unless `extra` says otherwise. */
function req(kind: PermitKind, name: string, extra: Partial<PermitRequest> = {}): PermitRequest {
  return {
    kind,
    name,
    permits: 1,
    weight: 1,
    leaseMs: 10_000,
    renew: true,
    nowait: false,
    ...extra,
  };
}

/** Backend `i` of the space behind the boundary (what createStore runs), made once. */
const wrapped = new Map<number, Bounded>();
const b = (i: number): Bounded => {
  let w = wrapped.get(i);
  if (!w) {
    w = bounded(space.backends[i] as Backend);
    wrapped.set(i, w);
  }
  return w;
};

/** Resolves with the reason when `signal` aborts (a hang guard rejects after 10 s). */
function aborted(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the permit signal never aborted')), 10_000);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve(signal.reason);
    });
  });
}

/** Rejects when `p` has not settled within `ms` (a hang guard, not a duration assertion). */
function guard<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} hung`)), ms)),
  ]);
}

/** Every key under `prefix` with its PTTL. */
async function keysOf(prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let cursor = '0';
  do {
    const [next, keys] = await space.admin.scan(
      cursor,
      'MATCH',
      new KeyLayout(prefix).pattern,
      'COUNT',
      500,
    );
    cursor = next;
    for (const k of keys) out.set(k, await space.admin.pttl(k));
  } while (cursor !== '0');
  return out;
}

/** Waits (bounded) until `name`'s queue holds `n` waiters. */
async function queued(kind: PermitKind, name: string, n: number): Promise<void> {
  const keys = space.layout.permit(kind, name);
  for (let i = 0; i < 2_000; i++) {
    if ((await space.admin.llen(keys.queue)) === n) return;
    await sleep(2);
  }
  throw new Error(`the queue of ${kind} ${name} never held ${n}`);
}

describe('redis permits: capacity and order', () => {
  it('never more than permits by weight: 18 clients on 3 instances, weights 1..3 of 5', async () => {
    const permits = 5;
    let inUse = 0;
    let max = 0;
    let grants = 0;
    const client = async (c: number) => {
      const backend = b(c % 3);
      for (let i = 0; i < 25; i++) {
        const weight = 1 + ((c + i) % 3);
        const p = (await backend.acquirePermit(
          req('semaphore', 'cap', { permits, weight, timeoutMs: 30_000 }),
        )) as PermitLease;
        inUse += weight;
        grants++;
        max = Math.max(max, inUse);
        expect(inUse).toBeLessThanOrEqual(permits);
        if (i % 4 === 0) await sleep(1);
        else await Promise.resolve();
        inUse -= weight;
        expect(await p.release()).toBe(true);
      }
    };
    await guard(Promise.all(Array.from({ length: 18 }, (_, c) => client(c))), 50_000, 'the run');
    expect(grants).toBe(18 * 25);
    expect(max).toBeLessThanOrEqual(permits);
    // Concurrency happened: more than one holder at once at some point.
    expect(max).toBeGreaterThan(1);
    expect(await b(0).permitsHeld('semaphore', 'cap')).toBe(0);
  });

  it('FIFO: a weight-5 request is not starved by weight-1 holders, and later requests wait behind it', async () => {
    const permits = 5;
    const events: string[] = [];
    let stop = false;
    // Four weight-1 holders coming back at once: some unit is busy at every moment, so a
    // weight-5 request that took its turn only when all were free would wait forever.
    const streamer = async (c: number) => {
      while (!stop) {
        const p = (await b(c % 2).acquirePermit(
          req('semaphore', 'fifo', { permits, timeoutMs: 30_000 }),
        )) as PermitLease;
        events.push('small');
        await sleep(1 + (c % 3));
        await p.release();
      }
    };
    const streams = Array.from({ length: 4 }, (_, c) => streamer(c));
    await sleep(30);
    const big = b(2)
      .acquirePermit(req('semaphore', 'fifo', { permits, weight: 5, timeoutMs: 30_000 }))
      .then((p) => {
        events.push('big');
        return p as PermitLease;
      });
    // The streamers never queue (4 of 5 units): the one queued entry is the big request.
    await queued('semaphore', 'fifo', 1);
    // Made after the big request queued: granted after it, although it fits at once.
    const late = b(0)
      .acquirePermit(req('semaphore', 'fifo', { permits, timeoutMs: 30_000 }))
      .then((p) => {
        events.push('late');
        return p as PermitLease;
      });
    const bigPermit = await guard(big, 30_000, 'the weight-5 request');
    expect(events).not.toContain('late');
    expect(await b(0).permitsHeld('semaphore', 'fifo')).toBe(5);
    stop = true;
    await bigPermit.release();
    const latePermit = await guard(late, 30_000, 'the late request');
    expect(events.indexOf('late')).toBeGreaterThan(events.indexOf('big'));
    await latePermit.release();
    await Promise.all(streams);
  });

  it('rwlock is write-preferring: a reader arriving behind a queued writer waits for it', async () => {
    const rw = (weight: number) =>
      req('rwlock', 'doc', { permits: RWLOCK_PERMITS, weight, timeoutMs: 20_000 });
    const r1 = (await b(0).acquirePermit(rw(1))) as PermitLease;
    const r2 = (await b(1).acquirePermit(rw(1))) as PermitLease;
    const events: string[] = [];
    const writer = b(2)
      .acquirePermit(rw(RWLOCK_PERMITS))
      .then((p) => {
        events.push('writer');
        return p as PermitLease;
      });
    await queued('rwlock', 'doc', 1);
    const reader = b(0)
      .acquirePermit(rw(1))
      .then((p) => {
        events.push('reader');
        return p as PermitLease;
      });
    await queued('rwlock', 'doc', 2);
    // A nowait reader is refused too (somebody is queued before it).
    expect(await b(1).acquirePermit({ ...rw(1), nowait: true })).toBeUndefined();
    await r1.release();
    await r2.release();
    const w = await guard(writer, 20_000, 'the writer');
    expect(events).toEqual(['writer']);
    expect(await b(0).permitsHeld('rwlock', 'doc')).toBe(RWLOCK_PERMITS);
    await w.release();
    const r = await guard(reader, 20_000, 'the reader');
    expect(events).toEqual(['writer', 'reader']);
    await r.release();
  });
});

describe('redis permits: leaving the queue', () => {
  for (const how of ['timeout', 'abort'] as const) {
    it(`a waiter that ${how === 'timeout' ? 'times out' : 'is aborted'} leaves at once and wakes the one it blocked`, async () => {
      const name = `leave-${how}`;
      const permits = 3;
      const holder = (await b(0).acquirePermit(
        req('semaphore', name, { permits, weight: 2 }),
      )) as PermitLease;
      const ac = new AbortController();
      const blocker = b(1).acquirePermit(
        req('semaphore', name, {
          permits,
          weight: 3,
          ...(how === 'timeout' ? { timeoutMs: 300 } : { signal: ac.signal }),
        }),
      );
      const blockerDone = blocker.then(
        () => 'granted',
        (err: unknown) => err,
      );
      await queued('semaphore', name, 1);
      // Weight 1 fits in what the holder leaves, but waits behind the blocker (FIFO).
      const next = b(2).acquirePermit(req('semaphore', name, { permits, timeoutMs: 20_000 }));
      await queued('semaphore', name, 2);
      if (how === 'abort') ac.abort(new Error('gave up'));
      const err = await guard(blockerDone, 20_000, 'the blocker');
      if (how === 'timeout') expect(err).toBeInstanceOf(LockTimeoutError);
      else expect((err as Error).message).toBe('gave up');
      // Woken by the blocker's leaving, while the holder still holds.
      const p = (await guard(next, 20_000, 'the next waiter')) as PermitLease;
      expect(await b(0).permitsHeld('semaphore', name)).toBe(3);
      const keys = space.layout.permit('semaphore', name);
      expect(await space.admin.llen(keys.queue)).toBe(0);
      expect(await space.admin.exists(keys.queueInfo)).toBe(0);
      expect(await p.release()).toBe(true);
      expect(await holder.release()).toBe(true);
    });
  }

  it('close() rejects waiting requests with BackendError, takes them out of the queue, loses held permits', async () => {
    const own = bounded(redis({ url: space.url, prefix: space.prefix }));
    const holder = (await b(0).acquirePermit(req('mutex', 'close'))) as PermitLease;
    const mine = (await own.acquirePermit(
      req('semaphore', 'close-held', { permits: 2 }),
    )) as PermitLease;
    const signal = mine.signal;
    const waiting = own.acquirePermit(req('mutex', 'close'));
    const outcome = waiting.then(
      () => 'granted',
      (err: unknown) => err,
    );
    await queued('mutex', 'close', 1);
    await own.close();
    expect(await outcome).toBeInstanceOf(BackendError);
    expect(await aborted(signal)).toBeInstanceOf(LeaseLostError);
    expect(mine.lost).toBe(true);
    expect(await space.admin.llen(space.layout.permit('mutex', 'close').queue)).toBe(0);
    await holder.release();
    await expect(own.acquirePermit(req('mutex', 'close'))).rejects.toBeInstanceOf(BackendError);
  });
});

describe('redis permits: fences, expiry, extend', () => {
  it('fences strictly increase across holders on two instances and across the counter expiring', async () => {
    const fences: number[] = [];
    const worker = async (i: number) => {
      for (let k = 0; k < 20; k++) {
        const p = (await b(i % 2).acquirePermit(
          req('mutex', 'fence', { timeoutMs: 20_000 }),
        )) as PermitLease;
        fences.push(p.fence);
        if (k === 10 && i === 0) {
          // The counter's TTL passed (simulated): it is seeded again from the server's clock.
          await space.admin.del(space.layout.permit('mutex', 'fence').fence);
        }
        await p.release();
      }
    };
    await Promise.all([worker(0), worker(1), worker(2), worker(3)]);
    expect(fences).toHaveLength(80);
    for (let i = 1; i < fences.length; i++) {
      expect(fences[i]).toBeGreaterThan(fences[i - 1] as number);
      expect(Number.isSafeInteger(fences[i])).toBe(true);
    }
    const ttl = await space.admin.pttl(space.layout.permit('mutex', 'fence').fence);
    expect(ttl).toBeGreaterThan(0);
  });

  it('renew: false past its lease: lost, signal aborted with LeaseLostError, release() false, extend() rejects', async () => {
    const p = (await b(0).acquirePermit(
      req('mutex', 'expire', { leaseMs: 150, renew: false }),
    )) as PermitLease;
    expect(p.lost).toBe(false);
    expect(await aborted(p.signal)).toBeInstanceOf(LeaseLostError);
    expect(p.lost).toBe(true);
    await expect(p.extend(1_000)).rejects.toBeInstanceOf(LeaseLostError);
    expect(await p.release()).toBe(false);
    expect(await p.release()).toBe(false);
    expect(await b(0).permitsHeld('mutex', 'expire')).toBe(0);
  });

  it('a silent expiry hands the units to a waiter (its fallback timer, nobody released)', async () => {
    const dead = (await b(0).acquirePermit(
      req('mutex', 'silent', { leaseMs: 300, renew: false }),
    )) as PermitLease;
    const next = (await guard(
      b(1).acquirePermit(req('mutex', 'silent', { timeoutMs: 20_000 })),
      25_000,
      'the waiter',
    )) as PermitLease;
    expect(next.fence).toBeGreaterThan(dead.fence);
    expect(await dead.release()).toBe(false);
    expect(await next.release()).toBe(true);
  });

  it('extend() keeps a permit past its lease; renew: true keeps one held; release() is idempotent', async () => {
    const p = (await b(0).acquirePermit(
      req('mutex', 'extend', { leaseMs: 200, renew: false }),
    )) as PermitLease;
    await p.extend(20_000);
    const q = (await b(1).acquirePermit(req('mutex', 'renewed', { leaseMs: 200 }))) as PermitLease;
    await sleep(600);
    expect(p.lost).toBe(false);
    expect(q.lost).toBe(false);
    expect(await b(1).permitsHeld('mutex', 'extend')).toBe(1);
    expect(await b(1).permitsHeld('mutex', 'renewed')).toBe(1);
    expect(await b(1).acquirePermit(req('mutex', 'extend', { nowait: true }))).toBeUndefined();
    expect(await p.release()).toBe(true);
    expect(await p.release()).toBe(true);
    await expect(p.extend()).rejects.toBeInstanceOf(LeaseLostError);
    expect(await q.release()).toBe(true);
    expect(p.signal.aborted).toBe(false);
  });
});

describe('redis permits: identity of a pool', () => {
  it('permits is part of the pool while in use: another value is a ValidationError, nothing queued', async () => {
    const p = (await b(0).acquirePermit(req('semaphore', 'ident', { permits: 3 }))) as PermitLease;
    await expect(
      b(1).acquirePermit(req('semaphore', 'ident', { permits: 4 })),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      b(1).acquirePermit(req('semaphore', 'ident', { permits: 2, nowait: true })),
    ).rejects.toBeInstanceOf(ValidationError);
    const keys = space.layout.permit('semaphore', 'ident');
    expect(await space.admin.exists(keys.queue, keys.queueInfo)).toBe(0);
    await p.release();
    // Idle: any capacity again.
    const q = (await b(1).acquirePermit(req('semaphore', 'ident', { permits: 4 }))) as PermitLease;
    await q.release();
  });

  it('mutex "x", rwlock "x", semaphore "x" and a document lock on "x" are four unrelated locks', async () => {
    const m = (await b(0).acquirePermit(req('mutex', 'x'))) as PermitLease;
    const s = (await b(0).acquirePermit(req('semaphore', 'x'))) as PermitLease;
    const r = (await b(0).acquirePermit(
      req('rwlock', 'x', { permits: RWLOCK_PERMITS, weight: RWLOCK_PERMITS }),
    )) as PermitLease;
    const lease = await b(1).acquire({
      model: 'x',
      keys: ['x'],
      action: 'default',
      mode: 'exclusive',
      leaseMs: 10_000,
      renew: true,
      nowait: true,
      skipLocked: false,
    });
    expect(lease).toBeDefined();
    await lease?.release();
    for (const p of [m, s, r]) expect(await p.release()).toBe(true);
  });

  it('names with any characters are distinct pools and stay in their hash tag', async () => {
    const names = ['a:b', 'a%3Ab', '{x}', 'x}', 'ä', '🔒:{'];
    const held = [];
    for (const n of names) {
      held.push((await b(0).acquirePermit(req('mutex', n, { nowait: true }))) as PermitLease);
    }
    expect(held.every((p) => p !== undefined)).toBe(true);
    for (const n of names) {
      const keys = space.layout.permit('mutex', n);
      for (const k of keys.all) {
        // One hash tag per key, the same for all four: one Cluster slot per pool.
        const open = k.indexOf('{');
        expect(open).toBe(k.lastIndexOf('{'));
        const tag = k.slice(open + 1, k.indexOf('}', open));
        expect(tag).toBe(keys.tag);
      }
      expect(await b(1).permitsHeld('mutex', n)).toBe(1);
    }
    for (const p of held) await p.release();
  });
});

describe('redis permits: idle', () => {
  it('after grants, timeouts, aborts, nowait and expiries: no key under the prefix but fence counters with a TTL', async () => {
    const prefix = `${space.prefix}:idle`;
    const x = bounded(redis({ url: space.url, prefix }));
    const y = bounded(redis({ url: space.url, prefix }));
    try {
      const ps = await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          (i % 2 ? x : y).acquirePermit(req('semaphore', 'i', { permits: 2, timeoutMs: 20_000 })),
        ).map((p) => p.then(async (l) => l?.release())),
      );
      expect(ps).toHaveLength(6);
      const h = (await x.acquirePermit(req('mutex', 'i'))) as PermitLease;
      await expect(y.acquirePermit(req('mutex', 'i', { timeoutMs: 50 }))).rejects.toBeInstanceOf(
        LockTimeoutError,
      );
      const ac = new AbortController();
      const w = y.acquirePermit(req('mutex', 'i', { signal: ac.signal }));
      setTimeout(() => ac.abort(new Error('stop')), 30);
      await expect(w).rejects.toThrow('stop');
      expect(await y.acquirePermit(req('mutex', 'i', { nowait: true }))).toBeUndefined();
      await h.release();
      const e = (await x.acquirePermit(
        req('rwlock', 'i', { permits: RWLOCK_PERMITS, leaseMs: 100, renew: false }),
      )) as PermitLease;
      await aborted(e.signal);
      // Its holders hash lapses with its only holder.
      for (let i = 0; i < 200 && (await keysOf(prefix)).size > 3; i++) await sleep(10);
      const keys = await keysOf(prefix);
      expect([...keys.keys()].sort()).toEqual(
        (['mutex', 'rwlock', 'semaphore'] as const)
          .map((k) => new KeyLayout(prefix).permit(k, 'i').fence)
          .sort(),
      );
      for (const ttl of keys.values()) expect(ttl).toBeGreaterThan(0);
    } finally {
      await x.close();
      await y.close();
    }
  });
});
