/**
 * Expiring documents (`ttlMs` on create, put, apply, createOp and putOp), identical on every
 * backend: once the TTL has passed on the server's clock the document is gone for every path at
 * once (read, apply, update, lock, delete, a lease, store.apply), a create over it starts a new
 * life, a put without TTL makes it permanent, a patch without TTL keeps the expiry and one with a
 * TTL moves it; a TTL that is not a whole number of ms >= 1 is a ValidationError, nothing written.
 */
import { describe, expect, it as vitestIt } from 'vitest';
import { z } from 'zod';
import { NotFoundError, ValidationError } from '../api.js';
import type { Ctx } from '../harness.js';
import { rejectsWith, sleep } from '../harness.js';

const doc = z.object({ n: z.number().int() });
/** Comfortably past a 120 ms TTL on a loaded machine (the check is "gone after", never "gone at"). */
const PAST = 400;

/** Registers the expiring-documents section. */
export function expiringSection(ctx: Ctx): void {
  // A backend without rate limits has no expiring documents either (see backend.ts): skipped.
  const it = (name: string, fn: () => unknown) =>
    vitestIt(name, async (t) => {
      if (typeof ctx.backend(0).consume !== 'function') t.skip();
      await fn();
    });
  describe('expiring documents', () => {
    it('an expired document is gone for every read and write path; create starts a new life', async () => {
      const name = ctx.name('ttl_paths');
      const [A, B] = [ctx.client(0).model(name, doc), ctx.client(1).model(name, doc)];
      const first = await A.put('k', { n: 1 }, { ttlMs: 120 });
      await A.create('j', { n: 1 }, { ttlMs: 120 });
      await A.create('p', { n: 1 }); // permanent: untouched by the others' expiry
      expect((await B.get('k')).data.n).toBe(1);
      await sleep(PAST);
      expect(await B.find('k')).toBeUndefined();
      expect(await A.find('j')).toBeUndefined();
      expect((await A.get('p')).data.n).toBe(1);
      await rejectsWith(
        B.apply('k', (d) => d.n.incr(1)),
        NotFoundError,
        'NOT_FOUND',
      );
      expect(await B.apply('k', (d) => d.n.incr(1), { ignoreIfDeleted: true })).toMatchObject({
        applied: false,
      });
      await rejectsWith(
        B.update('k', (d) => void (d.n += 1)),
        NotFoundError,
        'NOT_FOUND',
      );
      await rejectsWith(
        A.lock('k', (d) => void (d.n += 1)),
        NotFoundError,
        'NOT_FOUND',
      );
      const lease = await ctx.backend(1).acquire({
        model: name,
        keys: ['k'],
        action: 'default',
        mode: 'exclusive',
        leaseMs: 5_000,
        renew: false,
        nowait: false,
        skipLocked: false,
      });
      expect(lease?.docs).toEqual([undefined]);
      await lease?.release();
      expect(await B.delete('j')).toBe(false);
      await expect(ctx.client(0).apply([A.ops('k', (d) => d.n.incr(1))])).rejects.toMatchObject({
        code: 'NOT_FOUND',
      });
      // A create over the expired key: a new life (version 1, another incarnation).
      const again = await B.create('k', { n: 7 });
      expect(again.version).toBe(1);
      expect(again.data.n).toBe(7);
      const [raw] = await ctx.backend(0).read([{ model: name, key: 'k' }]);
      expect(raw?.version).toBe(1);
      expect(raw?.incarnation).not.toBe(
        (await ctx.backend(0).read([{ model: name, key: 'p' }]))[0]?.incarnation,
      );
      expect(first.version).toBe(1);
      // The new life has no TTL: it stays.
      await sleep(PAST);
      expect((await A.get('k')).data.n).toBe(7);
    });

    it('a patch keeps the expiry; a patch with ttlMs moves it; put without ttlMs makes it permanent', async () => {
      const M = ctx.client(0).model(ctx.name('ttl_keep'), doc);
      await M.create('keep', { n: 0 }, { ttlMs: 120 });
      await M.apply('keep', (d) => d.n.incr(1));
      await M.create('moved', { n: 0 }, { ttlMs: 120 });
      await M.apply('moved', (d) => d.n.incr(1), { ttlMs: 60_000 });
      await M.put('perm', { n: 0 }, { ttlMs: 120 });
      await M.put('perm', { n: 1 });
      await M.put('short', { n: 0 }, { ttlMs: 60_000 });
      await M.put('short', { n: 1 }, { ttlMs: 120 });
      await sleep(PAST);
      expect(await M.find('keep')).toBeUndefined();
      expect((await M.get('moved')).data.n).toBe(1);
      expect((await M.get('perm')).data.n).toBe(1);
      expect(await M.find('short')).toBeUndefined();
    });

    it('createOp and putOp take ttlMs inside store.apply (with a rate limit in the same batch)', async () => {
      const store = ctx.client(1);
      const M = store.model(ctx.name('ttl_ops'), doc);
      const rl = store.rateLimiter(ctx.name('ttl_ops'), { limit: 5, windowMs: 60_000 });
      expect(
        await store.apply([
          M.createOp('a', { n: 1 }, { ttlMs: 120 }),
          M.putOp('b', { n: 2 }, { ttlMs: 120 }),
          M.putOp('c', { n: 3 }),
          rl.consumeOp('u'),
        ]),
      ).toEqual({ applied: true });
      expect((await M.get('a')).data.n).toBe(1);
      await sleep(PAST);
      expect(await M.find('a')).toBeUndefined();
      expect(await M.find('b')).toBeUndefined();
      expect((await M.get('c')).data.n).toBe(3);
      // A refused batch (the key exists) writes no TTL either.
      await expect(
        store.apply([M.createOp('c', { n: 9 }, { ttlMs: 120 }), rl.consumeOp('u')]),
      ).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
      await sleep(PAST);
      expect((await M.get('c')).data.n).toBe(3);
      expect((await rl.peek('u')).remaining).toBe(4);
    });

    it('a lock commit writes over an expiring document and keeps its expiry', async () => {
      const M = ctx.client(0).model(ctx.name('ttl_lock'), doc);
      await M.create('k', { n: 0 }, { ttlMs: 1_500 });
      await M.lock('k', (d) => void (d.n += 1));
      expect((await M.get('k')).data.n).toBe(1);
      await sleep(1_500 + PAST);
      expect(await M.find('k')).toBeUndefined();
    });

    it('a TTL that is not a whole number of ms >= 1 is a ValidationError, nothing written', async () => {
      const M = ctx.client(0).model(ctx.name('ttl_bad'), doc);
      await M.create('k', { n: 0 });
      for (const ttlMs of [0, -5, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
        await rejectsWith(M.create('new', { n: 1 }, { ttlMs }), ValidationError, 'INVALID');
        await rejectsWith(M.put('k', { n: 1 }, { ttlMs }), ValidationError, 'INVALID');
        await rejectsWith(
          M.apply('k', (d) => d.n.incr(1), { ttlMs }),
          ValidationError,
          'INVALID',
        );
        await rejectsWith(
          ctx.client(0).apply([M.putOp('k', { n: 1 }, { ttlMs })]),
          ValidationError,
          'INVALID',
        );
      }
      expect(await M.find('new')).toBeUndefined();
      expect(await M.get('k')).toMatchObject({ version: 1, data: { n: 0 } });
    });
  });
}
