import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { LockTimeoutError, ValidationError } from '../../src/errors.js';
import { Mutex } from '../../src/sync/index.js';

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('Mutex', () => {
  it('is synchronous when free and excludes while held', () => {
    const m = new Mutex();
    const p = m.tryAcquire();
    expect(p).toBeDefined();
    expect(m.isLocked).toBe(true);
    expect(m.tryAcquire()).toBeUndefined();
    expect(m.waiting).toBe(0);
    p!.release();
    p!.release(); // idempotent: must not free someone else's hold
    expect(m.isLocked).toBe(false);
  });

  it('a second release() of a stale permit does not release the next holder', async () => {
    const m = new Mutex();
    const a = await m.acquire();
    const bp = m.acquire();
    a.release();
    const b = await bp;
    a.release();
    expect(m.isLocked).toBe(true);
    expect(m.tryAcquire()).toBeUndefined();
    b.release();
  });

  it('hands off in FIFO order with no barging', async () => {
    const m = new Mutex();
    const first = m.tryAcquire()!;
    const order: number[] = [];
    const waits = [0, 1, 2, 3].map((i) =>
      m.acquire().then((p) => {
        order.push(i);
        p.release();
      }),
    );
    first.release();
    // the lock went straight to waiter 0: a newcomer cannot take it
    expect(m.isLocked).toBe(true);
    expect(m.tryAcquire()).toBeUndefined();
    await Promise.all(waits);
    expect(order).toEqual([0, 1, 2, 3]);
    expect(m.isLocked).toBe(false);
  });

  it('keeps mutual exclusion with awaits inside the critical section', async () => {
    const m = new Mutex();
    let inside = 0;
    let max = 0;
    let done = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let i = 0; i < 50; i++) {
          using _p = await m.acquire();
          inside++;
          max = Math.max(max, inside);
          await null;
          inside--;
          done++;
        }
      }),
    );
    expect(max).toBe(1);
    expect(done).toBe(800);
  });

  it('run() releases on return, on throw and on rejection, and runs a sync body inline', async () => {
    const m = new Mutex();
    let ran = false;
    const p = m.run(() => {
      ran = true;
      return 7;
    });
    expect(ran).toBe(true); // inline: free and synchronous
    expect(m.isLocked).toBe(false);
    await expect(p).resolves.toBe(7);
    await expect(
      m.run(() => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(m.isLocked).toBe(false);
    await expect(m.run(async () => Promise.reject(new Error('later')))).rejects.toThrow('later');
    expect(m.isLocked).toBe(false);
  });

  it('run() queues behind waiters instead of running inline (FIFO)', async () => {
    const m = new Mutex();
    const held = m.tryAcquire()!;
    const order: string[] = [];
    const w = m.acquire().then((p) => {
      order.push('acquire');
      p.release();
    });
    const r = m.run(() => order.push('run'));
    expect(order).toEqual([]);
    held.release();
    await Promise.all([w, r]);
    expect(order).toEqual(['acquire', 'run']);
  });

  it('times out with LockTimeoutError naming the lock, leaving nothing queued', async () => {
    const m = new Mutex({ name: 'orders' });
    const held = m.tryAcquire()!;
    const err = await m.acquire({ timeoutMs: 5 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as LockTimeoutError).code).toBe('LOCK_TIMEOUT');
    expect((err as LockTimeoutError).message).toContain('Mutex "orders"');
    expect((err as LockTimeoutError).waitedMs).toBeGreaterThanOrEqual(5);
    expect(m.waiting).toBe(0);
    const zero = await m.acquire({ timeoutMs: 0 }).catch((e: unknown) => e);
    expect(zero).toBeInstanceOf(LockTimeoutError);
    expect(m.waiting).toBe(0);
    held.release();
    expect(m.isLocked).toBe(false);
  });

  it('a timed-out or aborted waiter wakes the one behind it (no lost wake-up)', async () => {
    const m = new Mutex();
    const held = m.tryAcquire()!;
    const ac = new AbortController();
    const a = m.acquire({ signal: ac.signal });
    const b = m.acquire({ timeoutMs: 1 });
    const c = m.acquire();
    ac.abort(new Error('stop'));
    await expect(a).rejects.toThrow('stop');
    await expect(b).rejects.toBeInstanceOf(LockTimeoutError);
    expect(m.waiting).toBe(1);
    held.release();
    const pc = await c;
    expect(m.isLocked).toBe(true);
    pc.release();
  });

  it('an already-aborted signal rejects at once with its reason, even when free', async () => {
    const m = new Mutex();
    const reason = new Error('already');
    await expect(m.acquire({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    await expect(m.run(() => 1, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(m.isLocked).toBe(false);
    expect(m.waiting).toBe(0);
  });

  it('rejects bad input with a clear error and changes nothing', async () => {
    const m = new Mutex();
    await expect(m.acquire({ timeoutMs: -1 })).rejects.toThrow(ValidationError);
    await expect(m.acquire({ timeoutMs: Number.NaN })).rejects.toThrow(/timeoutMs/);
    await expect(m.acquire({ timeoutMs: '5' as unknown as number })).rejects.toThrow(
      ValidationError,
    );
    await expect(m.acquire({ signal: {} as unknown as AbortSignal })).rejects.toThrow(
      /AbortSignal/,
    );
    await expect(m.run(42 as unknown as () => void)).rejects.toThrow(ValidationError);
    expect(() => new Mutex({ name: 3 as unknown as string })).toThrow(ValidationError);
    expect(m.isLocked).toBe(false);
    await tick();
  });

  it('leaves no abort listener and no timer behind once granted or given up', async () => {
    const m = new Mutex();
    const ac = new AbortController();
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = 0; i < 20; i++) {
          const p = await m.acquire({ signal: ac.signal, timeoutMs: 60_000 });
          await null;
          p.release();
        }
      }),
    );
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    expect(timers()).toBe(before);
    const held = m.tryAcquire()!;
    const gaveUp = m.acquire({ signal: ac.signal, timeoutMs: 1 }).catch(() => 'gave up');
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    expect(await gaveUp).toBe('gave up');
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    expect(timers()).toBe(before);
    held.release();
  });

  it('a long queue of run() calls completes in FIFO order without deep recursion', async () => {
    const m = new Mutex();
    const order: number[] = [];
    const holder = m.run(async () => {
      await new Promise((r) => setTimeout(r, 1));
    });
    const runs: Promise<unknown>[] = [];
    for (let i = 0; i < 20_000; i++) {
      // synchronous bodies first (a recursive hand-off would overflow the stack), then mixed
      runs.push(
        i < 15_000 || i % 2 === 0
          ? m.run(() => order.push(i))
          : m.run(async () => {
              order.push(i);
            }),
      );
    }
    await Promise.all([holder, ...runs]);
    expect(order).toHaveLength(20_000);
    expect(order.every((v, i) => v === i)).toBe(true);
    expect(m.isLocked).toBe(false);
  });

  it('release() never runs a queued run() body synchronously', async () => {
    const m = new Mutex();
    const p = await m.acquire();
    let started = false;
    const r = m.run(() => {
      started = true;
    });
    p.release();
    expect(started).toBe(false); // starts in a microtask, not inside release()
    await r;
    expect(started).toBe(true);
  });

  it('works with using', async () => {
    const m = new Mutex();
    {
      using _p = await m.acquire();
      expect(m.isLocked).toBe(true);
    }
    expect(m.isLocked).toBe(false);
  });
});

describe('async context', () => {
  it('queued run() bodies run in their caller’s AsyncLocalStorage context', async () => {
    const { AsyncLocalStorage } = await import('node:async_hooks');
    const { RWLock, Semaphore } = await import('../../src/sync/index.js');
    const als = new AsyncLocalStorage<number>();
    const m = new Mutex();
    const l = new RWLock();
    const s = new Semaphore(2);
    const seen: Array<[number, number | undefined]> = [];
    await Promise.all(
      Array.from({ length: 12 }, (_, id) =>
        als.run(id, async () => {
          for (let j = 0; j < 5; j++) {
            await m.run(async () => {
              seen.push([id, als.getStore()]);
              await null;
            });
            await m.run(() => seen.push([id, als.getStore()]));
            await l.write(async () => {
              await null;
              seen.push([id, als.getStore()]);
            });
            await s.run(
              async () => {
                await null;
                seen.push([id, als.getStore()]);
              },
              { weight: 2 },
            );
          }
        }),
      ),
    );
    expect(seen).toHaveLength(12 * 5 * 4);
    for (const [id, store] of seen) expect(store).toBe(id);
  });
});
