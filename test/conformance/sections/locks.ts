/**
 * Locks: waiting (nowait, skipLocked, timeoutMs, signal), throws, named actions and field-level
 * conflicts, shared mode, leases with fencing and crashed holders, and nested locks in opposite
 * orders (deadlock detected, or a timeout — never a hang).
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  ConflictError,
  DeadlockError,
  LeaseLostError,
  LockBusyError,
  LockTimeoutError,
  ValidationError,
} from '../api.js';
import type { Ctx } from '../harness.js';
import { barrier, deferred, noHang, rejectsWith, sleep, tally, until } from '../harness.js';

const doc = z.object({
  a: z.number().int(),
  b: z.number().int(),
  s: z.string(),
  l: z.array(z.number()),
});
type Doc = z.infer<typeof doc>;
const init: Doc = { a: 0, b: 0, s: '', l: [] };

/** Registers the lock sections. */
export function locksSection(ctx: Ctx): void {
  const both = (prefix: string) => {
    const name = ctx.name(prefix);
    return [ctx.client(0).model(name, doc), ctx.client(1).model(name, doc)] as const;
  };

  /**
   * A holder on client 0 whose lease (150 ms, not renewed) runs out while its fn waits:
   * resolves once inside; `resume()` lets fn write with `write`; `result` is its error, if any.
   */
  async function expiringHolder(M: ReturnType<typeof both>, write: (d: Doc) => void) {
    const inside = deferred();
    const resumed = deferred();
    const result = M[0]
      .lock(
        'k',
        async (d) => {
          inside.resolve();
          await resumed.promise;
          write(d);
        },
        { leaseMs: 150, renew: false },
      )
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    await inside.promise;
    return { resume: () => resumed.resolve(), result };
  }

  /** Holds `key` on client 0 until the returned `release()` is called; resolves once held. */
  /**
   * A holder on client 0 that has read `keys` and waits inside fn until `finish()`, which lets it
   * apply `change` to its draft(s), commit, and resolves once the lock call did.
   */
  async function holdWhile(
    M: ReturnType<typeof both>,
    keys: string | string[],
    change: (d: Doc | Doc[]) => void,
  ) {
    const inside = deferred();
    const go = deferred();
    const fn = async (d: Doc | Doc[]) => {
      inside.resolve();
      await go.promise;
      change(d);
    };
    const done =
      typeof keys === 'string'
        ? M[0].lock(keys, (d) => fn(d))
        : M[0].lock(keys, (d) => fn(d as Doc[]));
    done.catch(() => {});
    await inside.promise;
    return {
      finish: async () => {
        go.resolve();
        await noHang(done, 'the holder');
      },
    };
  }

  async function hold(
    M: ReturnType<typeof both>,
    key: string | string[],
    opts: { action?: string; mode?: 'exclusive' | 'shared' } = {},
  ) {
    const inside = deferred();
    const gate = deferred();
    const done = M[0].lock(
      key as string,
      async () => {
        inside.resolve();
        await gate.promise;
      },
      opts,
    );
    done.catch(() => {});
    await noHang(inside.promise, 'holder entering');
    return {
      done,
      release: async () => {
        gate.resolve();
        await done;
      },
    };
  }

  describe('waiting', () => {
    it('nowait: LockBusyError while held, fn not called; acquires when free', async () => {
      const M = both('nowait');
      await M[0].create('k', init);
      const h = await hold(M, 'k');
      let called = false;
      await rejectsWith(
        M[1].lock(
          'k',
          () => {
            called = true;
          },
          { nowait: true },
        ),
        LockBusyError,
        'LOCK_BUSY',
      );
      expect(called).toBe(false);
      await h.release();
      expect(
        await M[1].lock(
          'k',
          (d) => {
            d.a = 1;
            return 'got it';
          },
          { nowait: true },
        ),
      ).toBe('got it');
      expect((await M[0].get('k')).data.a).toBe(1);
    });

    it('skipLocked: undefined without calling fn while held; runs fn when free', async () => {
      const M = both('skip');
      await M[0].create('k', init);
      await M[0].create('k2', init);
      const h = await hold(M, 'k');
      let called = false;
      const r = await M[1].lock(
        'k',
        () => {
          called = true;
          return 'ran';
        },
        { skipLocked: true },
      );
      expect(r).toBeUndefined();
      expect(called).toBe(false);
      // a multi-key lock with one key held is skipped too
      const r2 = await M[1].lock(
        ['k2', 'k'],
        () => {
          called = true;
          return 'ran';
        },
        { skipLocked: true },
      );
      expect(r2).toBeUndefined();
      expect(called).toBe(false);
      // and it left nothing held on k2
      expect(await M[1].lock('k2', () => 'free', { nowait: true })).toBe('free');
      await h.release();
      expect(await M[1].lock('k', () => 'ran', { skipLocked: true })).toBe('ran');
    });

    it('skipLocked spreads 20 workers over 5 keys: each key processed once per round, no waiting', async () => {
      const M = both('skipq');
      const keys = ['j0', 'j1', 'j2', 'j3', 'j4'];
      for (const k of keys) await M[0].create(k, init);
      const results = await noHang(
        Promise.all(
          Array.from({ length: 20 }, async (_, w) => {
            for (const k of keys) {
              const r = await M[w % 2]!.lock(
                k,
                async (d) => {
                  d.l.push(w);
                  await sleep(1);
                  return k;
                },
                { skipLocked: true },
              );
              if (r !== undefined) return r;
            }
            return undefined;
          }),
        ),
        'skipLocked workers',
      );
      const taken = results.filter((r) => r !== undefined);
      // no key processed twice concurrently: each key's log holds one entry per successful holder
      let entries = 0;
      for (const k of keys) entries += (await M[1].get(k)).data.l.length;
      expect(entries).toBe(taken.length);
      expect(taken.length).toBeGreaterThan(0);
    });

    it('timeoutMs: a waiter gives up with LockTimeoutError (fn not called) and leaves the queue', async () => {
      const M = both('timeout');
      await M[0].create('k', init);
      const h = await hold(M, 'k');
      let called = false;
      const waiters = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) =>
          M[i % 2]!.lock(
            'k',
            () => {
              called = true;
            },
            { timeoutMs: 50 + i * 10 },
          ),
        ),
      );
      for (const w of waiters) {
        expect(w.status).toBe('rejected');
        if (w.status === 'rejected') {
          expect(w.reason).toBeInstanceOf(LockTimeoutError);
          expect((w.reason as LockTimeoutError).code).toBe('LOCK_TIMEOUT');
        }
      }
      expect(called).toBe(false);
      // a later waiter (queued behind the timed-out ones) gets the lock as soon as it is released
      const next = M[1].lock('k', (d) => {
        d.a = 7;
      });
      await sleep(20);
      await h.release();
      await noHang(next, 'waiter after timeouts');
      expect((await M[0].get('k')).data.a).toBe(7);
    });

    it('several keys are taken all or nothing: a timed-out multi-key waiter holds none of them', async () => {
      const M = both('allornothing');
      for (const k of ['p', 'q', 'r']) await M[0].create(k, init);
      const h = await hold(M, 'q');
      await rejectsWith(
        M[1].lock(['r', 'q', 'p'], () => 1, { timeoutMs: 50 }),
        LockTimeoutError,
        'LOCK_TIMEOUT',
      );
      // p and r are free at once, q is still held
      expect(await M[1].lock(['p', 'r'], () => 'free', { nowait: true })).toBe('free');
      await rejectsWith(
        M[1].lock('q', () => 1, { nowait: true }),
        LockBusyError,
        'LOCK_BUSY',
      );
      // a multi-key waiter queued behind q does not block p meanwhile
      const waiter = M[1].lock(['p', 'q'], (ds) => {
        for (const d of ds) d.a += 1;
      });
      await sleep(20);
      await h.release();
      await noHang(waiter, 'multi-key waiter');
      expect((await M[0].get('p')).data.a).toBe(1);
      expect((await M[0].get('q')).data.a).toBe(1);
    });

    it('signal: aborting a waiter rejects with signal.reason; an aborted signal never acquires', async () => {
      const M = both('abort');
      await M[0].create('k', init);
      const h = await hold(M, 'k');
      const ac = new AbortController();
      const reason = new Error('user went away');
      let called = false;
      const waiting = M[1].lock(
        'k',
        () => {
          called = true;
        },
        { signal: ac.signal },
      );
      const settled = waiting.then(
        () => 'resolved',
        (e: unknown) => e,
      );
      await sleep(30);
      ac.abort(reason);
      expect(await noHang(settled, 'aborted waiter')).toBe(reason);
      // already aborted: rejects with its reason, even when the key is free
      const ac2 = new AbortController();
      const reason2 = { custom: 'reason' };
      ac2.abort(reason2);
      await expect(
        M[0].lock(
          'free',
          () => {
            called = true;
          },
          { signal: ac2.signal },
        ),
      ).rejects.toBe(reason2);
      expect(called).toBe(false);
      // the aborted waiter left the queue: the next one gets in after release
      const next = M[1].lock('k', (d) => {
        d.b = 1;
      });
      await h.release();
      await noHang(next, 'waiter after abort');
      expect((await M[0].get('k')).data.b).toBe(1);
    });

    it('a waiter with a signal AND a timeout: whichever comes first, never both, never a hang', async () => {
      const M = both('abort_to');
      await M[0].create('k', init);
      const h = await hold(M, 'k');
      const results = await noHang(
        Promise.allSettled(
          Array.from({ length: 10 }, (_, i) => {
            const ac = new AbortController();
            setTimeout(() => ac.abort(new Error(`abort${i}`)), 5 + i * 10);
            return M[i % 2]!.lock('k', () => 'no', { signal: ac.signal, timeoutMs: 50 });
          }),
        ),
        'signal+timeout waiters',
      );
      for (const r of results) {
        expect(r.status).toBe('rejected');
        if (r.status === 'rejected') {
          const e = r.reason as Error;
          expect(e instanceof LockTimeoutError || /^abort\d$/.test(e.message)).toBe(true);
        }
      }
      await h.release();
    });

    it('update with an aborted signal rejects with signal.reason and writes nothing', async () => {
      const M = both('upd_abort');
      await M[0].create('k', init);
      const ac = new AbortController();
      const reason = new Error('stop');
      ac.abort(reason);
      await expect(
        M[0].update(
          'k',
          (d) => {
            d.a = 1;
          },
          { signal: ac.signal },
        ),
      ).rejects.toBe(reason);
      expect((await M[1].get('k')).data.a).toBe(0);
    });

    it('update aborted while it keeps conflicting rejects with signal.reason, writes nothing of its own', async () => {
      const M = both('upd_abort2');
      await M[0].create('k', init);
      const ac = new AbortController();
      const reason = new Error('enough');
      let calls = 0;
      const p = M[0].update(
        'k',
        async (d) => {
          calls += 1;
          if (calls === 3) ac.abort(reason);
          await M[1].apply('k', (o) => o.b.incr(1)); // always conflicts
          d.a = 999;
        },
        { retries: 1_000_000, signal: ac.signal },
      );
      await expect(noHang(p, 'aborted update')).rejects.toBe(reason);
      const after = (await M[1].get('k')).data;
      expect(after.a).toBe(0);
      expect(after.b).toBe(calls);
    });

    it('16 queued waiters all get in, each exactly once', async () => {
      const M = both('fifo');
      await M[0].create('k', init);
      const h = await hold(M, 'k');
      const waiters = Array.from({ length: 16 }, (_, i) =>
        M[i % 2]!.lock('k', (d) => {
          d.l.push(i);
        }),
      );
      await sleep(20);
      await h.release();
      await noHang(Promise.all(waiters), 'waiters');
      const l = (await M[1].get('k')).data.l;
      expect([...l].sort((a, b) => a - b)).toStrictEqual(Array.from({ length: 16 }, (_, i) => i));
    });
  });

  describe('what a lock writes', () => {
    it('a throw inside fn writes nothing, rethrows the same error and releases the lease', async () => {
      const M = both('throw');
      await M[0].create('k', init);
      await M[0].create('k2', init);
      const boom = new Error('boom');
      const err = await M[0]
        .lock(['k', 'k2'], ([x, y]) => {
          x!.a = 100;
          y!.b = 100;
          throw boom;
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err).toBe(boom);
      const asyncBoom = { notAnError: true };
      await expect(
        M[1].lock('k', async (x) => {
          x.a = 200;
          await sleep(1);
          throw asyncBoom;
        }),
      ).rejects.toBe(asyncBoom);
      expect((await M[1].get('k')).data).toStrictEqual(init);
      expect((await M[1].get('k2')).data).toStrictEqual(init);
      expect((await M[1].get('k')).version).toBe(1);
      // released: nowait succeeds
      expect(await M[1].lock(['k2', 'k'], () => 'free', { nowait: true })).toBe('free');
    });

    it('multi-key drafts come in the order given; one atomic commit', async () => {
      const M = both('order');
      await M[0].create('x', { ...init, s: 'x' });
      await M[0].create('y', { ...init, s: 'y' });
      const seen = await M[0].lock(['y', 'x'], ([first, second]) => {
        const r = [first!.s, second!.s];
        first!.a = 1;
        second!.a = 2;
        return r;
      });
      expect(seen).toStrictEqual(['y', 'x']);
      expect((await M[1].get('y')).data.a).toBe(1);
      expect((await M[1].get('x')).data.a).toBe(2);
    });

    it('a multi-key lock refuses duplicate keys and empty key lists (ValidationError)', async () => {
      const M = both('dupkeys');
      await M[0].create('x', init);
      await rejectsWith(
        M[0].lock(['x', 'x'], () => 1),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].lock([], () => 1),
        ValidationError,
        'INVALID',
      );
      expect(await M[0].lock('x', () => 'free', { nowait: true })).toBe('free');
    });

    it('the document a commit leaves is checked whole: a cross-field rule broken by a concurrent write is refused', async () => {
      const name = ctx.name('crossfield');
      const pair = z
        .object({ a: z.number().int(), b: z.number().int() })
        .refine((d) => d.a + d.b <= 10, 'a + b must stay <= 10');
      const M0 = ctx.client(0).model(name, pair);
      const M1 = ctx.client(1).model(name, pair);
      await M0.create('k', { a: 0, b: 0 });
      const run = async (a: number, b: number) => {
        const inside = deferred();
        const go = deferred();
        // A named action: plain writers are not held back by it (the default action's lease
        // would make them wait), so one can change the other field meanwhile.
        const holder = M0.lock(
          'k',
          async (d) => {
            inside.resolve();
            await go.promise;
            d.a = a;
          },
          { action: 'edit' },
        );
        holder.catch(() => {});
        await noHang(inside.promise, 'holder entering');
        // A writer that does not take the lock changes the other field meanwhile.
        await M1.apply('k', (d) => d.b.incr(b));
        go.resolve();
        return holder;
      };
      // 6 + 5 > 10: refused as a whole, the holder's field is not written, the lease is released.
      await rejectsWith(run(6, 5), ValidationError, 'INVALID');
      expect((await M1.get('k')).data).toStrictEqual({ a: 0, b: 5 });
      // 4 + (5 + 1) <= 10: the merge is kept.
      await run(4, 1);
      expect((await M1.get('k')).data).toStrictEqual({ a: 4, b: 6 });
      expect(await M1.lock('k', () => 'free', { nowait: true })).toBe('free');
    });

    it('a cross-field rule holds under concurrent locks and applies from two clients', async () => {
      const name = ctx.name('crossrace');
      const pair = z
        .object({ a: z.number().int(), b: z.number().int() })
        .refine((d) => d.a + d.b <= 10, 'a + b must stay <= 10');
      const M = [ctx.client(0).model(name, pair), ctx.client(1).model(name, pair)] as const;
      await M[0].create('k', { a: 0, b: 0 });
      const seen: Array<{ a: number; b: number }> = [];
      const refused = { lock: 0, apply: 0 };
      const expectInvalid = (err: unknown, counter: 'lock' | 'apply') => {
        expect((err as { code?: string }).code).toBe('INVALID');
        refused[counter] += 1;
      };
      // Lockers raise a to the most the rule allows for the b they read, while appliers move b
      // up and down without taking the lock.
      const locker = async (m: (typeof M)[number]) => {
        for (let i = 0; i < 8; i++) {
          await m
            .lock('k', async (d) => {
              await sleep(1);
              d.a = 10 - d.b;
            })
            .catch((err: unknown) => expectInvalid(err, 'lock'));
        }
      };
      const applier = async (m: (typeof M)[number], by: number) => {
        for (let i = 0; i < 8; i++) {
          await m
            .apply('k', (d) => d.b.incr(by))
            .catch((err: unknown) => expectInvalid(err, 'apply'));
          seen.push((await m.get('k')).data);
        }
      };
      await noHang(
        Promise.all([
          locker(M[0]),
          locker(M[1]),
          applier(M[0], 1),
          applier(M[1], 1),
          applier(M[0], -1),
          applier(M[1], 2),
        ]),
        'lockers and appliers',
      );
      seen.push((await M[1].get('k')).data);
      for (const d of seen) expect(d.a + d.b).toBeLessThanOrEqual(10);
      // The rule was actually pressed: some writes had to be refused.
      expect(refused.lock + refused.apply).toBeGreaterThan(0);
    });

    it('named actions: two holders with different actions change disjoint fields concurrently; both kept', async () => {
      const M = both('actions');
      await M[0].create('k', init);
      const both2 = barrier(2);
      await noHang(
        Promise.all([
          M[0].lock(
            'k',
            async (d) => {
              await both2.arrive();
              d.a = 1;
              d.l = [1];
            },
            { action: 'reserve' },
          ),
          M[1].lock(
            'k',
            async (d) => {
              await both2.arrive();
              d.b = 2;
              d.s = 'paid';
            },
            { action: 'pay' },
          ),
        ]),
        'two actions',
      );
      expect((await M[0].get('k')).data).toStrictEqual({ a: 1, b: 2, s: 'paid', l: [1] });
    });

    it('same action still excludes: nowait on a held action is busy, another action is not', async () => {
      const M = both('actions2');
      await M[0].create('k', init);
      const h = await hold(M, 'k', { action: 'ship' });
      await rejectsWith(
        M[1].lock('k', () => 1, { action: 'ship', nowait: true }),
        LockBusyError,
        'LOCK_BUSY',
      );
      expect(await M[1].lock('k', () => 2, { action: 'bill', nowait: true })).toBe(2);
      await h.release();
    });

    it('a plain apply while locked waits for the holder, then lands on its commit (no ConflictError)', async () => {
      const M = both('conflict');
      await M[0].create('k', init);
      const h = await holdWhile(M, 'k', (d) => {
        (d as Doc).a += 1;
        (d as Doc).b = 9;
      });
      // another client's plain write of the locked document queues behind the lease
      const write = M[1].apply('k', (o) => o.a.incr(5));
      await sleep(30);
      expect((await M[1].get('k')).data, 'the apply waited').toStrictEqual(init);
      await h.finish();
      await noHang(write, 'the waiting apply');
      expect((await M[1].get('k')).data).toStrictEqual({ ...init, a: 6, b: 9 });
    });

    it('awaiting a plain write of your own locked document inside fn is a DeadlockError at once, nothing written', async () => {
      if (!ctx.backend(0).supports.inProcessDeadlocks) return;
      const M = both('selfwrite');
      await M[0].create('k', init);
      await rejectsWith(
        noHang(
          M[0].lock('k', async (d) => {
            d.b = 9;
            await M[1].apply('k', (o) => o.a.incr(5));
          }),
          'self-write',
        ),
        DeadlockError,
        'DEADLOCK',
      );
      expect((await M[1].get('k')).data).toStrictEqual(init);
      expect(await M[1].lock('k', () => 'free', { nowait: true })).toBe('free');
    });

    it('a field changed by another action’s holder since the read → ConflictError', async () => {
      const M = both('conflict2');
      await M[0].create('k', init);
      const first = deferred();
      const second = deferred();
      const p1 = M[0].lock(
        'k',
        async (d) => {
          first.resolve();
          await second.promise;
          d.s = 'one';
        },
        { action: 'one' },
      );
      await first.promise;
      await noHang(
        M[1].lock(
          'k',
          (d) => {
            d.s = 'two';
          },
          { action: 'two' },
        ),
        'second action holder',
      );
      second.resolve();
      await rejectsWith(noHang(p1, 'first action holder'), ConflictError, 'CONFLICT');
      expect((await M[0].get('k')).data.s).toBe('two');
    });

    it('a delete while locked waits for the commit, then deletes: nothing resurrected', async () => {
      const M = both('del_locked');
      await M[0].create('k', init);
      await M[0].create('j', init);
      const h = await holdWhile(M, ['j', 'k'], (d) => {
        const [j, k] = d as Doc[];
        (j as Doc).a = 1;
        (k as Doc).a = 1;
      });
      const del = M[1].delete('k');
      await sleep(30);
      expect(await M[1].find('k'), 'the delete waited').toBeDefined();
      await h.finish();
      expect(await noHang(del, 'the waiting delete')).toBe(true);
      expect(await M[1].find('k')).toBeUndefined();
      expect((await M[1].get('j')).data).toStrictEqual({ ...init, a: 1 });
    });

    it('a delete and a create again while locked wait for the commit: the new document is kept whole', async () => {
      const M = both('recreate_locked');
      await M[0].create('k', init);
      const h = await holdWhile(M, 'k', (k) => {
        (k as Doc).a += 1;
      });
      const again = M[1].delete('k').then(() => M[1].create('k', { ...init, a: 5, s: 'new' }));
      await sleep(30);
      await h.finish();
      await noHang(again, 'delete then create');
      expect(await M[1].get('k')).toStrictEqual({
        key: 'k',
        version: 1,
        data: { ...init, a: 5, s: 'new' },
      });
    });

    it('a different field changed by a waiting apply: both changes kept', async () => {
      const M = both('nonconflict');
      await M[0].create('k', init);
      const h = await holdWhile(M, 'k', (d) => {
        (d as Doc).a += 1;
      });
      const write = M[1].apply('k', (o) => o.b.incr(5));
      await h.finish();
      await noHang(write, 'the waiting apply');
      expect((await M[1].get('k')).data).toStrictEqual({ ...init, a: 1, b: 5 });
    });

    it('an invalid draft → ValidationError, nothing written, lease released', async () => {
      const M = both('lock_inv');
      await M[0].create('k', init);
      await rejectsWith(
        M[0].lock('k', (d) => {
          d.a = 1.5;
          d.s = 'changed';
        }),
        ValidationError,
        'INVALID',
      );
      expect(await M[1].get('k')).toStrictEqual({ key: 'k', version: 1, data: init });
      expect(await M[1].lock('k', () => 'free', { nowait: true })).toBe('free');
    });

    it('shared holders overlap; an exclusive locker waits for them', async () => {
      const M = both('shared');
      await M[0].create('k', init);
      const overlap = barrier(2);
      const release = deferred();
      const readers = [0, 1].map((i) =>
        M[i]!.lock(
          'k',
          async (d) => {
            await overlap.arrive();
            await release.promise;
            return d.a;
          },
          { mode: 'shared' },
        ),
      );
      // both readers inside at once (else the barrier times out)
      await until(async () => {
        try {
          await M[0].lock('k', () => 0, { nowait: true });
          return false;
        } catch (e) {
          return e instanceof LockBusyError;
        }
      }, 'readers holding');
      await rejectsWith(
        M[1].lock('k', () => 1, { nowait: true }),
        LockBusyError,
        'LOCK_BUSY',
      );
      const writer = M[1].lock('k', (d) => {
        d.a = 42;
      });
      release.resolve();
      expect(await noHang(Promise.all(readers), 'readers')).toStrictEqual([0, 0]);
      await noHang(writer, 'writer');
      expect((await M[0].get('k')).data.a).toBe(42);
    });
  });

  describe('leases and fencing', () => {
    it('an expired holder cannot write: LeaseLostError, the newer holder’s write stays', async () => {
      const M = both('fence');
      await M[0].create('k', init);
      // The other client is started from outside the holder's flow (another request, another
      // task): a lock taken inside the holder's own fn would be the holder re-entering its key.
      const holder = await expiringHolder(M, (d) => {
        d.a = 1;
        d.b = 1; // a field the newer holder did not touch: still refused (fencing)
      });
      // another client takes the key once our lease has expired, and writes
      await noHang(
        M[1].lock('k', (d2) => {
          d2.a = 2;
          d2.s = 'newer';
        }),
        'second locker after expiry',
      );
      holder.resume();
      const err = await holder.result;
      expect(err).toBeInstanceOf(LeaseLostError);
      expect((err as LeaseLostError).code).toBe('LEASE_LOST');
      const after = await M[1].get('k');
      expect(after.data).toStrictEqual({ ...init, a: 2, s: 'newer' });
      expect(after.version).toBe(2);
    });

    it('an expired holder refused while the newer holder still holds leaves that holder’s lease alone', async () => {
      const M = both('fence_during');
      await M[0].create('k', init);
      const holder = await expiringHolder(M, (d) => {
        d.a = 1;
      });
      const probed = deferred();
      const newer = M[1].lock(
        'k',
        async (d2) => {
          // We hold the key: the expired holder commits (and is refused) now.
          holder.resume();
          await probed.promise;
          d2.s = 'newer';
        },
        { leaseMs: 5_000 },
      );
      const err = await noHang(holder.result, 'expired holder');
      expect(err).toBeInstanceOf(LeaseLostError);
      // The refused commit released nothing of the newer holder's: the key is still taken, for
      // both clients (outside the holder's own task).
      for (const m of M) {
        await rejectsWith(
          m.lock('k', () => 'got in', { nowait: true }),
          LockBusyError,
          'LOCK_BUSY',
        );
      }
      probed.resolve();
      await noHang(newer, 'newer holder');
      expect((await M[1].get('k')).data).toStrictEqual({ ...init, s: 'newer' });
    });

    it('an expired holder cannot write even when nobody else took the key', async () => {
      const M = both('fence_alone');
      await M[0].create('k', init);
      await rejectsWith(
        M[0].lock(
          'k',
          async (d) => {
            await sleep(400);
            d.a = 1;
          },
          { leaseMs: 100, renew: false },
        ),
        LeaseLostError,
        'LEASE_LOST',
      );
      expect(await M[1].get('k')).toStrictEqual({ key: 'k', version: 1, data: init });
      expect(await M[1].lock('k', () => 'free', { nowait: true })).toBe('free');
    });

    it('an expired multi-key holder writes nothing on any key', async () => {
      const M = both('fence2');
      await M[0].create('x', init);
      await M[0].create('y', init);
      const inside = deferred();
      const takenOver = deferred();
      const p = M[0].lock(
        ['x', 'y'],
        async ([x, y]) => {
          inside.resolve();
          await takenOver.promise;
          x!.a = 1;
          y!.a = 1;
        },
        { leaseMs: 150, renew: false },
      );
      await inside.promise;
      await noHang(
        M[1].lock('y', (d) => {
          d.s = 'taken';
        }),
        'takeover',
      );
      takenOver.resolve();
      await rejectsWith(p, LeaseLostError, 'LEASE_LOST');
      expect((await M[1].get('x')).data).toStrictEqual(init);
      expect((await M[1].get('y')).data).toStrictEqual({ ...init, s: 'taken' });
    });

    it('a renewing holder keeps its lease past leaseMs and commits', async () => {
      const M = both('renew');
      await M[0].create('k', init);
      let busy = 0;
      await M[0].lock(
        'k',
        async (d) => {
          for (let i = 0; i < 5; i++) {
            await sleep(100);
            try {
              await M[1].lock('k', () => 0, { nowait: true });
            } catch (e) {
              if (e instanceof LockBusyError) busy += 1;
              else throw e;
            }
          }
          d.a = 1;
        },
        { leaseMs: 200 },
      );
      expect(busy).toBe(5);
      expect((await M[1].get('k')).data.a).toBe(1);
    });

    it('a crashed holder (lease not renewed, never released) blocks no longer than its lease', async () => {
      const M = both('crash');
      await M[0].create('k', init);
      const never = deferred();
      const inside = deferred();
      // the "crashed" holder: fn never returns, lease not renewed
      const crashed = M[0].lock(
        'k',
        async (d) => {
          inside.resolve();
          await never.promise;
          d.a = 666;
        },
        { leaseMs: 200, renew: false },
      );
      crashed.catch(() => {});
      await noHang(inside.promise, 'crashed holder entering');
      // the survivors get in once the lease expires (waiting, not polling by the test)
      await noHang(
        Promise.all(
          Array.from({ length: 4 }, (_, i) =>
            M[1].lock('k', (d) => {
              d.l.push(i);
            }),
          ),
        ),
        'lockers behind a crashed holder',
      );
      never.resolve();
      await rejectsWith(crashed, LeaseLostError, 'LEASE_LOST');
      const after = await M[1].get('k');
      expect(after.data.a).toBe(0);
      expect([...after.data.l].sort()).toStrictEqual([0, 1, 2, 3]);
    });

    it('a crashed raw lease (acquire, never commit or release) expires too', async () => {
      const M = both('rawcrash');
      await M[0].create('k', init);
      const lease = await ctx.backend(0).acquire({
        model: M[0].name,
        keys: ['k'],
        action: 'default',
        mode: 'exclusive',
        leaseMs: 200,
        renew: false,
        nowait: false,
        skipLocked: false,
      });
      expect(lease).toBeDefined();
      await rejectsWith(
        M[1].lock('k', () => 0, { nowait: true }),
        LockBusyError,
        'LOCK_BUSY',
      );
      await noHang(
        M[1].lock('k', (d) => {
          d.a = 1;
        }),
        'locker behind an abandoned lease',
      );
      const r = await lease!.commit([
        { kind: 'patch', model: M[0].name, key: 'k', ops: [{ op: 'set', field: 'a', value: 99 }] },
      ]);
      expect(r.applied).toBe(false);
      if (!r.applied) expect(r.reason).toBe('fence');
      expect((await M[0].get('k')).data.a).toBe(1);
      await lease!.release();
    });

    it('fencing tokens strictly increase across exclusive holders, including after expiry', async () => {
      const name = ctx.name('fences');
      const req = {
        model: name,
        keys: ['k'],
        action: 'default',
        mode: 'exclusive' as const,
        leaseMs: 150,
        renew: false,
        nowait: false,
        skipLocked: false,
      };
      const fences: number[] = [];
      for (let i = 0; i < 4; i++) {
        const l = await ctx.backend(i % 2).acquire(req);
        if (!l) throw new Error('acquire resolved undefined without skipLocked');
        fences.push(l.fences[0] ?? Number.NaN);
        await l.release();
      }
      const abandoned = await ctx.backend(0).acquire(req);
      const next = await noHang(ctx.backend(1).acquire({ ...req, timeoutMs: 10_000 }), 'takeover');
      if (!abandoned || !next) throw new Error('acquire resolved undefined without skipLocked');
      fences.push(abandoned.fences[0] ?? Number.NaN, next.fences[0] ?? Number.NaN);
      await next.release();
      await abandoned.release();
      for (let i = 1; i < fences.length; i++) expect(fences[i]!).toBeGreaterThan(fences[i - 1]!);
    });
  });

  describe('nested locks in opposite orders', () => {
    it('end in DeadlockError (or LockTimeoutError without detection) — never a hang; nothing half-written', async () => {
      const M = both('deadlock');
      await M[0].create('x', init);
      await M[0].create('y', init);
      const detect = ctx.backend(0).supports.inProcessDeadlocks;
      const inner = detect ? {} : { timeoutMs: 300 };
      for (let round = 0; round < 3; round++) {
        const both2 = barrier(2);
        const results = await noHang(
          Promise.allSettled([
            M[0].lock('x', async (x) => {
              await both2.arrive();
              x.a += 1;
              await M[0].lock(
                'y',
                (y) => {
                  y.a += 1;
                },
                inner,
              );
            }),
            M[1].lock('y', async (y) => {
              await both2.arrive();
              y.b += 1;
              await M[1].lock(
                'x',
                (x) => {
                  x.b += 1;
                },
                inner,
              );
            }),
          ]),
          'opposite-order nested locks',
          10_000,
        );
        const t = tally(results);
        const expectedError = detect ? 'DeadlockError' : 'LockTimeoutError';
        expect(t.errors[expectedError] ?? 0).toBeGreaterThanOrEqual(1);
        expect(Object.keys(t.errors).filter((e) => e !== expectedError)).toStrictEqual([]);
        for (const r of results) {
          if (r.status === 'rejected') {
            const e = r.reason as DeadlockError | LockTimeoutError;
            expect(e.code).toBe(detect ? 'DEADLOCK' : 'LOCK_TIMEOUT');
            if (detect) expect((e as DeadlockError).cycle.length).toBeGreaterThanOrEqual(2);
          }
        }
        expect(t.ok + Object.values(t.errors).reduce((a, b) => a + b, 0)).toBe(2);
        // whoever failed wrote nothing: a's and b's increments come in pairs (outer + inner)
        const x = (await M[1].get('x')).data;
        const y = (await M[1].get('y')).data;
        expect(x.a).toBe(y.a);
        expect(x.b).toBe(y.b);
      }
      const x = (await M[1].get('x')).data;
      // over three rounds, at least one task per round failed
      expect(x.a + x.b).toBeLessThanOrEqual(3);
      // and everything was released
      expect(await M[1].lock(['x', 'y'], () => 'free', { nowait: true })).toBe('free');
    });
  });
}
