/**
 * Named locks — `store.mutex`, `store.rwlock`, `store.semaphore` — on every backend, with the
 * two clients standing for two processes: never more than `permits` holders by weight, FIFO
 * (weights included; rwlock write-preferring), a waiter that times out or is aborted leaves the
 * queue and wakes whoever it blocked, fences strictly increasing per name, a lost permit aborts
 * its signal and fails `run`, `extend`, idempotent `release`, `await using`, separate namespaces,
 * bad input refused at once, in-process deadlocks found, and nothing left behind when idle.
 *
 * Ordering a queue across clients needs the first waiter to have reached the server before the
 * second asks: the tests wait until the backend reports the waiter (`tryAcquire` refused and,
 * for a weighted queue, `available()`), or give it a pause, never asserting a duration.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { DeadlockError, LeaseLostError, LockTimeoutError, ValidationError } from '../api.js';
import type { Ctx } from '../harness.js';
import { deferred, noHang, rejectsWith, sleep, until } from '../harness.js';

/** How long a waiter is given to reach the server before the next one asks (ordering only). */
const QUEUE_GAP_MS = 120;

/** Registers the named-locks section. */
export function namedLocksSection(ctx: Ctx): void {
  const c = (i: number) => ctx.client(i);

  describe('named locks', () => {
    it('mutex: 16 tasks on two clients never overlap, and fences increase in grant order', async () => {
      const name = ctx.name('mx');
      let inside = 0;
      let overlaps = 0;
      const fences: number[] = [];
      await noHang(
        Promise.all(
          Array.from({ length: 16 }, (_, i) =>
            c(i)
              .mutex(name)
              .run(async (lc) => {
                inside += 1;
                if (inside > 1) overlaps += 1;
                fences.push(lc.fence);
                await sleep(1);
                inside -= 1;
                return lc.fence;
              }),
          ),
        ),
        '16 mutex holders',
      );
      expect(overlaps).toBe(0);
      expect(fences).toHaveLength(16);
      for (let i = 1; i < fences.length; i++) {
        expect(fences[i]).toBeGreaterThan(fences[i - 1] as number);
      }
    });

    it('mutex: waiters on both clients are granted in the order they queued (FIFO)', async () => {
      const name = ctx.name('mx_fifo');
      const holder = await c(0).mutex(name).acquire();
      const order: number[] = [];
      const waits: Promise<void>[] = [];
      for (let i = 0; i < 4; i++) {
        waits.push(
          c(i)
            .mutex(name)
            .run(() => {
              order.push(i);
            }),
        );
        await sleep(QUEUE_GAP_MS);
      }
      await holder.release();
      await noHang(Promise.all(waits), 'FIFO waiters');
      expect(order).toEqual([0, 1, 2, 3]);
    });

    it('semaphore: 24 tasks of weights 1-3 on two clients never hold more than permits by weight', async () => {
      const name = ctx.name('sem');
      let held = 0;
      let most = 0;
      let over = 0;
      await noHang(
        Promise.all(
          Array.from({ length: 24 }, (_, i) => {
            const weight = (i % 3) + 1;
            return c(i)
              .semaphore(name, { permits: 5 })
              .run(
                async () => {
                  held += weight;
                  most = Math.max(most, held);
                  if (held > 5) over += 1;
                  await sleep(2);
                  held -= weight;
                },
                { weight },
              );
          }),
        ),
        '24 weighted holders',
      );
      expect(over).toBe(0);
      expect(most).toBeGreaterThan(1); // it did admit several at once
      expect(await c(1).semaphore(name, { permits: 5 }).available()).toBe(5);
    });

    it('semaphore: a heavy waiter at the head is not overtaken by lighter newcomers', async () => {
      const name = ctx.name('sem_fifo');
      const sem = (i: number) => c(i).semaphore(name, { permits: 3 });
      const first = await sem(0).acquire({ weight: 2 });
      const order: string[] = [];
      const heavy = sem(1).run(() => void order.push('heavy'), { weight: 3 });
      await sleep(QUEUE_GAP_MS);
      // one unit is free, but the heavy waiter is first in line: a light one must not pass
      expect(await sem(0).tryAcquire(1)).toBeUndefined();
      const light = sem(0).run(() => void order.push('light'), { weight: 1 });
      await sleep(QUEUE_GAP_MS);
      expect(order).toEqual([]);
      await first.release();
      await noHang(Promise.all([heavy, light]), 'heavy then light');
      expect(order).toEqual(['heavy', 'light']);
    });

    it('a waiter that times out leaves the queue at once and wakes the one it was blocking', async () => {
      const name = ctx.name('sem_timeout');
      const sem = (i: number) => c(i).semaphore(name, { permits: 2 });
      const holder = await sem(0).acquire();
      const blocked = sem(1).acquire({ weight: 2, timeoutMs: 300 });
      await sleep(QUEUE_GAP_MS / 2);
      const behind = sem(0).acquire({ weight: 1 });
      await rejectsWith(noHang(blocked, 'timed-out waiter'), LockTimeoutError, 'LOCK_TIMEOUT');
      // the unit the holder left free goes to the waiter that was queued behind, while the
      // holder still holds
      const got = await noHang(behind, 'the waiter behind');
      expect(await sem(1).available()).toBe(0);
      await got.release();
      await holder.release();
      expect(await sem(1).available()).toBe(2);
    });

    it('an aborted waiter rejects with signal.reason, leaves the queue and wakes the next', async () => {
      const name = ctx.name('mx_abort');
      const holder = await c(0).mutex(name).acquire();
      const ac = new AbortController();
      const aborted = c(1).mutex(name).acquire({ signal: ac.signal });
      await sleep(QUEUE_GAP_MS / 2);
      const next = c(0).mutex(name).acquire();
      await sleep(QUEUE_GAP_MS / 2);
      const why = new Error('caller gave up');
      ac.abort(why);
      await expect(noHang(aborted, 'aborted waiter')).rejects.toBe(why);
      await holder.release();
      const p = await noHang(next, 'next waiter');
      expect(p.fence).toBeGreaterThan(holder.fence);
      await p.release();
      // an already-aborted signal rejects at once, nothing queued
      await expect(
        c(1)
          .mutex(name)
          .acquire({ signal: AbortSignal.abort(why) }),
      ).rejects.toBe(why);
    });

    it('tryAcquire: undefined while held or while someone is queued, a permit when free', async () => {
      const name = ctx.name('mx_try');
      const a = await c(0).mutex(name).tryAcquire();
      expect(a).toBeDefined();
      expect(await c(1).mutex(name).tryAcquire()).toBeUndefined();
      await a?.release();
      const b = await c(1).mutex(name).tryAcquire();
      expect(b?.fence).toBeGreaterThan(a?.fence as number);
      await b?.release();
    });

    it('rwlock: readers share, a writer excludes, and a queued writer goes before later readers', async () => {
      const name = ctx.name('rw');
      const rw = (i: number) => c(i).rwlock(name);
      const r1 = await rw(0).acquireRead();
      const r2 = await noHang(rw(1).acquireRead(), 'second reader alongside the first');
      expect(await rw(0).tryAcquireWrite()).toBeUndefined();
      const order: string[] = [];
      const writer = rw(1).write(() => void order.push('writer'));
      await sleep(QUEUE_GAP_MS);
      // write-preferring: a reader arriving behind the queued writer waits for it
      expect(await rw(0).tryAcquireRead()).toBeUndefined();
      const reader = rw(0).read(() => void order.push('reader'));
      await sleep(QUEUE_GAP_MS);
      expect(order).toEqual([]);
      await r1.release();
      await r2.release();
      await noHang(Promise.all([writer, reader]), 'writer then reader');
      expect(order).toEqual(['writer', 'reader']);
    });

    it('rwlock: while a writer holds, nobody else is inside (many tasks, both clients)', async () => {
      const name = ctx.name('rw_many');
      let readers = 0;
      let writers = 0;
      let bad = 0;
      await noHang(
        Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            i % 4 === 0
              ? c(i)
                  .rwlock(name)
                  .write(async () => {
                    writers += 1;
                    if (writers > 1 || readers > 0) bad += 1;
                    await sleep(2);
                    writers -= 1;
                  })
              : c(i)
                  .rwlock(name)
                  .read(async () => {
                    readers += 1;
                    if (writers > 0) bad += 1;
                    await sleep(2);
                    readers -= 1;
                  }),
          ),
        ),
        '20 rwlock tasks',
      );
      expect(bad).toBe(0);
    });

    it('a permit lost at leaseMs aborts its signal with LeaseLostError, run rejects, and the next holder has a larger fence', async () => {
      const name = ctx.name('mx_lost');
      let reason: unknown;
      let fence = 0;
      const call = c(0)
        .mutex(name, { leaseMs: 150, renew: false })
        .run(async (lc) => {
          fence = lc.fence;
          await new Promise<void>((resolve) => {
            if (lc.signal.aborted) resolve();
            lc.signal.addEventListener('abort', () => resolve(), { once: true });
          });
          reason = lc.signal.reason;
        });
      await rejectsWith(noHang(call, 'expiring holder'), LeaseLostError, 'LEASE_LOST');
      expect(reason).toBeInstanceOf(LeaseLostError);
      const next = await noHang(c(1).mutex(name).acquire(), 'next holder');
      expect(next.fence).toBeGreaterThan(fence);
      await next.release();
    });

    it('a holder that stops renewing loses its permit to a waiter on the other client; its release and extend say so', async () => {
      const name = ctx.name('mx_stale');
      const stale = await c(0).mutex(name, { leaseMs: 150, renew: false }).acquire();
      const taker = await noHang(c(1).mutex(name).acquire(), 'waiter after the expiry');
      expect(taker.fence).toBeGreaterThan(stale.fence);
      await until(() => stale.lost, 'the stale holder learns it lost the permit');
      expect(stale.signal.aborted).toBe(true);
      await rejectsWith(stale.extend(), LeaseLostError, 'LEASE_LOST');
      await stale.release(); // never throws for a lost permit
      await stale.release();
      expect(await c(0).mutex(name).tryAcquire()).toBeUndefined(); // the taker still holds
      await taker.release();
    });

    it('extend() keeps a permit that does not renew past its leaseMs', async () => {
      const name = ctx.name('mx_extend');
      const p = await c(0).mutex(name, { leaseMs: 200, renew: false }).acquire();
      for (let i = 0; i < 4; i++) {
        await sleep(100);
        await p.extend(400);
      }
      expect(p.lost).toBe(false);
      expect(await c(1).mutex(name).tryAcquire()).toBeUndefined();
      await p.release();
      const q = await c(1).mutex(name).tryAcquire();
      expect(q).toBeDefined();
      await q?.release();
    });

    it('a renewing permit outlives several leaseMs while held', async () => {
      const name = ctx.name('mx_renew');
      const p = await c(0).mutex(name, { leaseMs: 150 }).acquire();
      await sleep(500);
      expect(p.lost).toBe(false);
      expect(await c(1).mutex(name).tryAcquire()).toBeUndefined();
      await p.release();
    });

    it('release is idempotent, await using releases, and run returns the result or rethrows', async () => {
      const name = ctx.name('mx_using');
      const m = c(0).mutex(name);
      {
        await using p = await m.acquire();
        expect(await c(1).mutex(name).tryAcquire()).toBeUndefined();
        await p.release();
        await p.release();
      }
      {
        await using _p = await m.acquire();
      }
      const q = await noHang(c(1).mutex(name).acquire(), 'after await using');
      await q.release();
      expect(await m.run((lc) => lc.fence)).toBeGreaterThan(q.fence);
      const boom = new Error('boom');
      await expect(
        m.run(() => {
          throw boom;
        }),
      ).rejects.toBe(boom);
      const r = await noHang(c(1).mutex(name).acquire(), 'after a throwing run');
      await r.release();
    });

    it('a mutex, an rwlock, a semaphore and a document lock of one name are four locks', async () => {
      const name = ctx.name('ns');
      const M = c(0).model(name, z.object({ n: z.number() }));
      await M.create(name, { n: 0 });
      const held = [
        await c(0).mutex(name).acquire(),
        await c(0).rwlock(name).acquireWrite(),
        await c(0).semaphore(name, { permits: 1 }).acquire(),
      ];
      await noHang(
        M.lock(name, (d) => {
          d.n = 1;
        }),
        'document lock beside named locks',
      );
      for (const p of held) await p.release();
      expect((await M.get(name)).data.n).toBe(1);
    });

    it('available() counts units held across clients', async () => {
      const name = ctx.name('sem_avail');
      const sem = (i: number) => c(i).semaphore(name, { permits: 4 });
      expect(await sem(0).available()).toBe(4);
      const a = await sem(0).acquire({ weight: 3 });
      expect(await sem(1).available()).toBe(1);
      await a.release();
      expect(await sem(1).available()).toBe(4);
    });

    it('bad input is refused at once: empty name, bad permits, weight above permits, bad leaseMs, another permits in use', async () => {
      const s = c(0);
      expect(() => s.mutex('')).toThrow(ValidationError);
      for (const permits of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
        expect(() => s.semaphore(ctx.name('bad'), { permits })).toThrow(ValidationError);
      }
      expect(() => s.mutex(ctx.name('bad'), { leaseMs: Number.NaN })).toThrow(ValidationError);
      expect(() => s.mutex(ctx.name('bad'), { leaseMs: 0 })).toThrow(ValidationError);
      const name = ctx.name('sem_bad');
      const sem = s.semaphore(name, { permits: 2 });
      await rejectsWith(
        noHang(sem.acquire({ weight: 3 }), 'weight 3 of 2'),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(sem.acquire({ weight: 0 }), ValidationError, 'INVALID');
      await rejectsWith(sem.tryAcquire(1.5), ValidationError, 'INVALID');
      await rejectsWith(sem.acquire({ timeoutMs: -1 }), ValidationError, 'INVALID');
      const held = await sem.acquire();
      await rejectsWith(
        noHang(c(1).semaphore(name, { permits: 3 }).acquire(), 'permits mismatch'),
        ValidationError,
        'INVALID',
      );
      await held.release();
      expect(await sem.available()).toBe(2);
    });

    it('nested named locks in opposite orders: DeadlockError where the backend tracks this process, else the timeout', async () => {
      const a = ctx.name('dl_a');
      const b = ctx.name('dl_b');
      const s = c(0);
      const inA = deferred();
      const inB = deferred();
      const timeoutMs = 400;
      const one = s.mutex(a).run(async () => {
        inA.resolve();
        await inB.promise;
        return s.mutex(b).run(() => 'one', { timeoutMs });
      });
      const two = s.mutex(b).run(async () => {
        inB.resolve();
        await inA.promise;
        return s.mutex(a).run(() => 'two', { timeoutMs });
      });
      const outcomes = await noHang(Promise.allSettled([one, two]), 'nested named locks');
      const errors = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
      expect(errors.length).toBeGreaterThan(0);
      if (ctx.backend(0).supports.inProcessDeadlocks) {
        expect(errors.some((e) => e instanceof DeadlockError)).toBe(true);
      } else {
        expect(errors.every((e) => e instanceof LockTimeoutError)).toBe(true);
      }
    });

    it('nothing is left behind once every named lock is released or timed out', async () => {
      const residue = ctx.target().namedLockResidue;
      if (residue === undefined) {
        throw new Error(
          'the runner must implement namedLockResidue() (what named locks leave stored)',
        );
      }
      const name = ctx.name('idle');
      const tasks: Promise<unknown>[] = [];
      for (let i = 0; i < 8; i++) {
        tasks.push(
          c(i)
            .mutex(name)
            .run(() => sleep(1)),
        );
        tasks.push(
          c(i)
            .semaphore(name, { permits: 2 })
            .run(() => sleep(1), { weight: 2 }),
        );
        tasks.push(
          c(i)
            .rwlock(name)
            .read(() => sleep(1)),
        );
        tasks.push(
          c(i)
            .mutex(name)
            .acquire({ timeoutMs: 1 })
            .then(
              (p) => p.release(),
              () => 0,
            ),
        );
        const ac = new AbortController();
        tasks.push(
          c(i)
            .mutex(name)
            .acquire({ signal: ac.signal })
            .then(
              (p) => p.release(),
              () => 0,
            ),
        );
        ac.abort(new Error('x'));
      }
      tasks.push(
        c(0)
          .mutex(name, { leaseMs: 100, renew: false })
          .run(() => sleep(250))
          .catch(() => 0),
      );
      await noHang(Promise.all(tasks), 'idle workload');
      await until(
        async () => (await residue(name)).length === 0,
        'named locks leave nothing',
        10_000,
      ).catch(async () => {
        throw new Error(`left behind: ${JSON.stringify(await residue(name))}`);
      });
    });
  });
}
