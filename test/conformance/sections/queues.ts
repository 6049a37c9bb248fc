/**
 * Job queues (`store.queue`): claimed by exactly one worker at a time under a lease, fenced
 * completion whose effects commit atomically with it (a stale worker's effects are refused),
 * enqueue inside `store.apply` (the job exists iff the batch applied), order (priority, run time,
 * enqueue order), delays never early, key deduplication, retries then the dead letter, wake-ups
 * across clients, bad input refused with nothing enqueued, and `worker.close()`.
 */
import { describe, expect, it as vitestIt } from 'vitest';
import { z } from 'zod';
import { BackendError, ConflictError, LeaseLostError, ValidationError } from '../api.js';
import type { Ctx } from '../harness.js';
import { deferred, noHang, rejectsWith, sleep, until } from '../harness.js';

const payload = z.object({ n: z.number().int() });
const counter = z.object({ n: z.number().int(), seen: z.array(z.number()) });

/** Registers the queues section. */
export function queuesSection(ctx: Ctx): void {
  // `Backend.queues` is optional while backends gain it (see backend.ts): a backend without it
  // skips these tests, and must refuse store.queue with BackendError (the last test).
  const has = () => ctx.backend(0).queues !== undefined;
  const it = (name: string, fn: () => Promise<void>) =>
    vitestIt(name, async (t) => {
      if (!has()) {
        t.skip();
        return;
      }
      await fn();
    });
  const setup = async (
    prefix: string,
    options: Parameters<ReturnType<Ctx['client']>['queue']>[2] = {},
  ) => {
    const name = ctx.name(prefix);
    const q = [0, 1].map((i) => ctx.client(i).queue(name, payload, options)) as [
      ReturnType<typeof mk>,
      ReturnType<typeof mk>,
    ];
    const C = [0, 1].map((i) => ctx.client(i).model(`${name}_c`, counter)) as [
      ReturnType<typeof mc>,
      ReturnType<typeof mc>,
    ];
    await C[0].create('c', { n: 0, seen: [] });
    return { q, C };
  };
  const mk = () => ctx.client(0).queue('x', payload);
  const mc = () => ctx.client(0).model('x', counter);

  describe('queues', () => {
    it('enqueue, claim, complete with an effect: the effect is applied and the job is gone', async () => {
      const { q, C } = await setup('q_basic');
      const ref = await q[0].enqueue({ n: 7 });
      expect(ref.created).toBe(true);
      expect(await q[1].stats()).toEqual({ waiting: 1, delayed: 0, active: 0, failed: 0 });
      const job = await q[1].claim({ timeoutMs: 0 });
      expect(job?.id).toBe(ref.id);
      expect(job?.data).toEqual({ n: 7 });
      expect(job?.attempt).toBe(1);
      expect(await q[0].stats()).toMatchObject({ waiting: 0, active: 1 });
      expect((await q[0].get(ref.id))?.state).toBe('active');
      await job?.complete([C[1].ops('c', (c) => c.n.incr(job.data.n))]);
      expect((await C[0].get('c')).data.n).toBe(7);
      expect(await q[0].get(ref.id)).toBeUndefined();
      expect(await q[0].stats()).toEqual({ waiting: 0, delayed: 0, active: 0, failed: 0 });
      expect(await q[0].claim({ timeoutMs: 0 })).toBeUndefined();
    });

    it('a stale worker (its claim expired and the job was claimed again) can neither complete nor write its effects', async () => {
      const { q, C } = await setup('q_stale', { leaseMs: 150 });
      await q[0].enqueue({ n: 1 });
      const stale = await q[0].claim({ timeoutMs: 0 });
      expect(stale).toBeDefined();
      await sleep(300);
      const fresh = await noHang(q[1].claim({ timeoutMs: 5000 }), 'reclaim');
      expect(fresh?.id).toBe(stale?.id);
      expect(fresh?.attempt).toBe(2);
      expect(fresh?.fence).toBeGreaterThan(stale?.fence as number);
      await rejectsWith(
        stale?.complete([C[0].ops('c', (c) => c.n.incr(1))]) as Promise<void>,
        LeaseLostError,
        'LEASE_LOST',
      );
      for (const step of [() => stale?.retry(), () => stale?.extend(), () => stale?.fail('x')]) {
        await rejectsWith(step() as Promise<void>, LeaseLostError, 'LEASE_LOST');
      }
      await fresh?.complete([C[1].ops('c', (c) => c.n.incr(1))]);
      expect((await C[0].get('c')).data.n).toBe(1);
    });

    it('a claim whose lease expired aborts its signal with LeaseLostError; extend keeps it', async () => {
      const { q } = await setup('q_signal', { leaseMs: 150 });
      await q[0].enqueue({ n: 1 });
      const job = await q[0].claim({ timeoutMs: 0 });
      const signal = job?.signal as AbortSignal;
      await job?.extend(400);
      expect(signal.aborted).toBe(false);
      await noHang(
        new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true })),
        'signal abort',
      );
      expect(signal.reason).toBeInstanceOf(LeaseLostError);
      await rejectsWith(job?.complete() as Promise<void>, LeaseLostError, 'LEASE_LOST');
    });

    it('every job is handled by one worker at a time and its effect applied exactly once (workers on two clients)', async () => {
      const { q, C } = await setup('q_once');
      const N = 60;
      await q[0].enqueueMany(Array.from({ length: N }, (_, i) => ({ data: { n: i } })));
      const running = new Set<string>();
      let overlap = 0;
      const handled: number[] = [];
      const workers = [0, 1].map((i) =>
        q[i]!.work(
          async (job) => {
            if (running.has(job.id)) overlap += 1;
            running.add(job.id);
            await sleep(1);
            handled.push(job.data.n);
            await job.complete([
              C[i]!.ops('c', (c) => {
                c.n.incr(1);
                c.seen.append(job.data.n);
              }),
            ]);
            running.delete(job.id);
          },
          { concurrency: 4 },
        ),
      );
      await until(async () => (await C[0].get('c')).data.n >= N, 'all jobs done');
      await Promise.all(workers.map((w) => noHang(w.close(), 'worker close')));
      const c = (await C[0].get('c')).data;
      expect(overlap).toBe(0);
      expect(c.n).toBe(N);
      expect([...c.seen].sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i));
      expect(await q[0].stats()).toEqual({ waiting: 0, delayed: 0, active: 0, failed: 0 });
    });

    it('enqueueOp inside store.apply: the job exists iff the batch applied', async () => {
      const { q, C } = await setup('q_outbox');
      const refused = await ctx.client(0).apply([
        C[0].ops(
          'c',
          (c) => c.n.incr(1),
          (c) => c.n.gt(100),
        ),
        q[0].enqueueOp({ n: 1 }),
      ]);
      expect(refused.applied).toBe(false);
      expect(refused.refusedBy).toEqual({ index: 0, guard: 0 });
      expect(await q[1].stats()).toMatchObject({ waiting: 0 });
      const ok = await ctx
        .client(0)
        .apply([q[0].enqueueOp({ n: 2 }), C[0].ops('c', (c) => c.n.incr(1))]);
      expect(ok.applied).toBe(true);
      expect((await C[1].get('c')).data.n).toBe(1);
      const job = await q[1].claim({ timeoutMs: 0 });
      expect(job?.data).toEqual({ n: 2 });
      await job?.complete();
    });

    it('order: priority (lower first), then run time, then enqueue order; a delay never starts early', async () => {
      const { q } = await setup('q_order');
      await q[0].enqueue({ n: 1 });
      await q[0].enqueue({ n: 2 }, { priority: -1 });
      await q[0].enqueue({ n: 3 });
      await q[0].enqueue({ n: 4 }, { priority: 5 });
      await q[0].enqueue({ n: 5 }, { priority: -10, delayMs: 400 });
      const got: number[] = [];
      for (let i = 0; i < 4; i++) {
        const j = await q[i % 2]!.claim({ timeoutMs: 0 });
        got.push(j?.data.n as number);
        await j?.complete();
      }
      expect(got).toEqual([2, 1, 3, 4]);
      // the delayed job is not claimable yet, and a waiting claim gets it once due
      expect(await q[0].claim({ timeoutMs: 0 })).toBeUndefined();
      expect(await q[1].stats()).toMatchObject({ delayed: 1, waiting: 0 });
      const late = await noHang(q[1].claim({ timeoutMs: 10_000 }), 'delayed claim');
      expect(late?.data.n).toBe(5);
      const info = await q[0].get(late?.id as string);
      expect(info?.state).toBe('active');
      await late?.complete();
      const at = new Date(Date.now() + 60_000);
      const far = await q[0].enqueue({ n: 6 }, { runAt: at });
      expect((await q[1].get(far.id))?.state).toBe('delayed');
      expect(await q[1].claim({ timeoutMs: 50 })).toBeUndefined();
    });

    it('key: at most one live job per key; completing it frees the key', async () => {
      const { q } = await setup('q_key');
      const a = await q[0].enqueue({ n: 1 }, { key: 'k' });
      const b = await q[1].enqueue({ n: 2 }, { key: 'k' });
      expect(b).toEqual({ id: a.id, created: false });
      const [c, d] = await q[0].enqueueMany([
        { data: { n: 3 }, key: 'j' },
        { data: { n: 4 }, key: 'j' },
      ]);
      expect(c?.created).toBe(true);
      expect(d).toEqual({ id: c?.id, created: false });
      const job = await q[1].claim({ timeoutMs: 0 });
      expect(job?.id).toBe(a.id);
      expect((await q[0].enqueue({ n: 5 }, { key: 'k' })).id).toBe(a.id); // active still counts
      await job?.complete();
      const e = await q[0].enqueue({ n: 6 }, { key: 'k' });
      expect(e.created).toBe(true);
      expect(e.id).not.toBe(a.id);
    });

    it('a throwing handler is retried with backoff, then dead-lettered and kept; retryFailed runs it again', async () => {
      const { q } = await setup('q_dead', { maxAttempts: 3, backoff: { baseMs: 5, maxMs: 20 } });
      const { id } = await q[0].enqueue({ n: 1 });
      const attempts: number[] = [];
      const w = q[1].work(async (job) => {
        attempts.push(job.attempt);
        throw new Error(`boom ${job.attempt}`);
      });
      await until(async () => (await q[0].get(id))?.state === 'failed', 'dead letter');
      const info = await q[0].get(id);
      expect(info?.attempt).toBe(3);
      expect(info?.error).toContain('boom 3');
      expect(attempts).toEqual([1, 2, 3]);
      expect(await q[0].stats()).toMatchObject({ failed: 1, waiting: 0, active: 0 });
      await w.close();
      expect(await q[0].retryFailed(id)).toBe(true);
      expect(await q[0].retryFailed(id)).toBe(false);
      const again = await q[0].claim({ timeoutMs: 0 });
      expect(again?.id).toBe(id);
      expect(again?.attempt).toBe(1);
      await again?.complete();
      expect(await q[0].get(id)).toBeUndefined();
    });

    it('a claim whose lease expires on the last attempt fails the job instead of running it again', async () => {
      const { q } = await setup('q_lastlease', { maxAttempts: 1, leaseMs: 100 });
      const { id } = await q[0].enqueue({ n: 1 });
      const job = await q[0].claim({ timeoutMs: 0 });
      expect(job?.attempt).toBe(1);
      await sleep(250);
      expect(await q[1].claim({ timeoutMs: 0 })).toBeUndefined();
      expect((await q[1].get(id))?.state).toBe('failed');
    });

    it('a waiting claim on one client is woken by an enqueue on the other; timeout and abort end it', async () => {
      const { q } = await setup('q_wake');
      const waiting = q[1].claim({ timeoutMs: 15_000 });
      await sleep(50);
      await q[0].enqueue({ n: 9 });
      const job = await noHang(waiting, 'woken claim');
      expect(job?.data.n).toBe(9);
      await job?.complete();
      expect(await noHang(q[0].claim({ timeoutMs: 60 }), 'timed-out claim')).toBeUndefined();
      const ac = new AbortController();
      const aborted = q[1].claim({ signal: ac.signal });
      const reason = new Error('stop');
      setTimeout(() => ac.abort(reason), 30);
      await expect(noHang(aborted, 'aborted claim')).rejects.toBe(reason);
    });

    it('bad input is refused with ValidationError and nothing is enqueued', async () => {
      const { q } = await setup('q_bad');
      await rejectsWith(q[0].enqueue({ n: 1.5 }), ValidationError, 'INVALID');
      await rejectsWith(q[0].enqueue({ n: 1 }, { delayMs: -1 }), ValidationError, 'INVALID');
      await rejectsWith(q[0].enqueue({ n: 1 }, { priority: 0.5 }), ValidationError, 'INVALID');
      await rejectsWith(
        q[0].enqueue({ n: 1 }, { runAt: new Date(Number.NaN) }),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        q[0].enqueueMany([{ data: { n: 1 } }, { data: { n: 'x' as unknown as number } }]),
        ValidationError,
        'INVALID',
      );
      expect(() => ctx.client(0).queue('bad name', payload)).toThrow(ValidationError);
      expect(() => ctx.client(0).queue(ctx.name('q_opts'), payload, { leaseMs: 0 })).toThrow(
        ValidationError,
      );
      expect(await q[1].stats()).toEqual({ waiting: 0, delayed: 0, active: 0, failed: 0 });
    });

    it('a refused effect refuses the completion too and leaves the job claimed', async () => {
      const { q, C } = await setup('q_refused');
      await q[0].enqueue({ n: 1 });
      const job = await q[0].claim({ timeoutMs: 0 });
      await rejectsWith(
        job?.complete([
          C[0].ops(
            'c',
            (c) => c.n.incr(1),
            (c) => c.n.gt(5),
          ),
        ]) as Promise<void>,
        ConflictError,
        'CONFLICT',
      );
      expect((await q[1].get(job?.id as string))?.state).toBe('active');
      await job?.complete([C[0].ops('c', (c) => c.n.incr(1))]);
      expect((await C[1].get('c')).data.n).toBe(1);
    });

    it('worker.close() stops claiming and waits for the running handler', async () => {
      const { q, C } = await setup('q_close');
      await q[0].enqueue({ n: 1 });
      const inside = deferred();
      const release = deferred();
      const w = q[1].work(async (job) => {
        inside.resolve();
        await release.promise;
        await job.complete([C[1].ops('c', (c) => c.n.incr(1))]);
      });
      await noHang(inside.promise, 'handler start');
      let closed = false;
      const closing = w.close().then(() => {
        closed = true;
      });
      await sleep(30);
      expect(closed).toBe(false);
      release.resolve();
      await noHang(closing, 'close');
      expect((await C[0].get('c')).data.n).toBe(1);
      await q[0].enqueue({ n: 2 });
      await sleep(50);
      expect(await q[0].stats()).toMatchObject({ waiting: 1 });
    });

    vitestIt('a backend without queues refuses store.queue with BackendError', (t) => {
      if (has()) {
        t.skip();
        return;
      }
      expect(() => ctx.client(0).queue(ctx.name('q_none'), payload)).toThrow(BackendError);
    });
  });
}
