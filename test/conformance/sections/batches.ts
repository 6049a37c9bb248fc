/**
 * Atomic batches beyond patches: `createOp` / `putOp` / `deleteOp` inside `store.apply` (the
 * campaign's check-then-insert as one step), guards that compare a field with another field of
 * the same document, which guard refused (`refusedBy`), and a patch with no ops.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AlreadyExistsError, NotFoundError, ValidationError } from '../api.js';
import type { Ctx } from '../harness.js';
import { rejectsWith } from '../harness.js';

const campaign = z.object({
  max: z.number().int(),
  count: z.number().int(),
  tags: z.array(z.string()),
});
const application = z.object({ user: z.string().min(1) });

/** Registers the batches section. */
export function batchesSection(ctx: Ctx): void {
  const models = (prefix: string) => {
    const s = ctx.client(0);
    return {
      store: s,
      other: ctx.client(1),
      Campaign: s.model(ctx.name(`${prefix}_c`), campaign),
      Application: s.model(ctx.name(`${prefix}_a`), application),
    };
  };

  describe('batches that create, put and delete', () => {
    it('the check-then-insert of a campaign is one atomic batch: never more applications than max', async () => {
      const { store, other, Campaign, Application } = models('cti');
      await Campaign.create('spring', { max: 3, count: 0, tags: [] });
      const users = Array.from({ length: 12 }, (_, i) => `u${i % 8}`); // duplicates included
      const outcomes = await Promise.allSettled(
        users.map((u, i) =>
          (i % 2 === 0 ? store : other).apply([
            Campaign.ops(
              'spring',
              (c) => c.count.incr(),
              (c) => c.count.lt(c.max),
            ),
            Application.createOp(`spring:${u}`, { user: u }),
          ]),
        ),
      );
      const applied = outcomes.filter((o) => o.status === 'fulfilled' && o.value.applied).length;
      for (const o of outcomes) {
        if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(AlreadyExistsError);
      }
      const c = await Campaign.get('spring');
      expect(c.data.count).toBe(applied);
      expect(applied).toBe(3);
      let stored = 0;
      for (let i = 0; i < 8; i++) if (await Application.find(`spring:u${i}`)) stored += 1;
      expect(stored).toBe(3);
    });

    it('putOp and deleteOp commit with the rest or not at all', async () => {
      const { store, Campaign, Application } = models('putdel');
      await Campaign.create('c', { max: 1, count: 0, tags: [] });
      await Application.create('old', { user: 'old' });
      const refused = await store.apply([
        Application.putOp('new', { user: 'new' }),
        Application.deleteOp('old'),
        Campaign.ops(
          'c',
          (c) => c.count.incr(),
          (c) => c.count.gte(c.max),
        ),
      ]);
      expect(refused.applied).toBe(false);
      expect(await Application.find('new')).toBeUndefined();
      expect(await Application.find('old')).toBeDefined();
      const ok = await store.apply([
        Application.putOp('new', { user: 'new' }),
        Application.deleteOp('old'),
        Campaign.ops('c', (c) => c.count.incr()),
      ]);
      expect(ok.applied).toBe(true);
      expect((await Application.get('new')).data.user).toBe('new');
      expect(await Application.find('old')).toBeUndefined();
      // deleting a missing document inside a batch is not an error
      expect((await store.apply([Application.deleteOp('nobody')])).applied).toBe(true);
    });

    it('createOp of an existing key refuses the whole batch with AlreadyExistsError', async () => {
      const { store, Campaign, Application } = models('dup');
      await Campaign.create('c', { max: 5, count: 0, tags: [] });
      await Application.create('ann', { user: 'ann' });
      await rejectsWith(
        store.apply([
          Campaign.ops('c', (c) => c.count.incr()),
          Application.createOp('ann', { user: 'ann2' }),
        ]),
        AlreadyExistsError,
        'ALREADY_EXISTS',
      );
      expect((await Campaign.get('c')).data.count).toBe(0);
      expect((await Application.get('ann')).data.user).toBe('ann');
    });

    it('createOp validates at once: invalid data is a ValidationError before anything is sent', () => {
      const { Application } = models('inv');
      expect(() => Application.createOp('x', { user: '' })).toThrow(ValidationError);
      expect(() => Application.putOp('x', { user: 3 as unknown as string })).toThrow(
        ValidationError,
      );
    });
  });

  describe('guards between fields, and which guard refused', () => {
    it('a field compared with another field, and a length with a field', async () => {
      const { Campaign } = models('refs');
      await Campaign.create('c', { max: 2, count: 0, tags: [] });
      const join = (tag: string) =>
        Campaign.apply('c', (c) => c.tags.append(tag), {
          when: (c) => [c.tags.length.lt(c.max), c.tags.notContains(tag)],
        });
      expect((await join('a')).applied).toBe(true);
      expect((await join('a')).applied).toBe(false);
      expect((await join('b')).applied).toBe(true);
      expect((await join('c')).applied).toBe(false);
      expect((await Campaign.get('c')).data.tags).toStrictEqual(['a', 'b']);
      // eq between two number fields
      const same = await Campaign.apply('c', (c) => c.count.set(9), {
        when: (c) => c.count.eq(c.max),
      });
      expect(same.applied).toBe(false);
      await Campaign.apply('c', (c) => c.count.set(2));
      expect(
        (await Campaign.apply('c', (c) => c.count.set(9), { when: (c) => c.count.eq(c.max) }))
          .applied,
      ).toBe(true);
    });

    it('refusedBy names the first guard that was false (apply and store.apply)', async () => {
      const { store, Campaign, Application } = models('refusedby');
      await Campaign.create('c', { max: 1, count: 0, tags: ['x'] });
      const r = await Campaign.apply('c', (c) => c.count.incr(), {
        when: (c) => [c.count.gte(0), c.tags.contains('nope'), c.count.gt(100)],
      });
      expect(r).toMatchObject({ applied: false, refusedBy: 1 });
      const s = await store.apply([
        Application.putOp('p', { user: 'p' }),
        Campaign.ops(
          'c',
          (c) => c.count.incr(),
          (c) => [c.count.lt(c.max), c.count.gte(5)],
        ),
      ]);
      expect(s).toStrictEqual({ applied: false, refusedBy: { index: 1, guard: 1 } });
      expect(await Application.find('p')).toBeUndefined();
    });

    it('a patch with no ops writes nothing: the version stays, the guards still decide', async () => {
      const { Campaign } = models('noop');
      const created = await Campaign.create('c', { max: 1, count: 0, tags: [] });
      const yes = await Campaign.apply('c', () => {}, { when: (c) => c.count.eq(0) });
      const no = await Campaign.apply('c', () => {}, { when: (c) => c.count.eq(1) });
      expect(yes.applied).toBe(true);
      expect(no.applied).toBe(false);
      expect((await Campaign.get('c')).version).toBe(created.version);
      await rejectsWith(
        Campaign.apply('missing', () => {}),
        NotFoundError,
        'NOT_FOUND',
      );
    });
  });
}
