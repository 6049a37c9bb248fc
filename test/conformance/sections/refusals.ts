/**
 * One rule for bad input, on every backend and at the same moment: a `ValidationError` (INVALID)
 * and nothing written — fields the schema does not know (through every write path, even when the
 * schema would silently strip them), arrays with holes or `undefined` elements, values that
 * contain themselves, bad lock options, and a lease commit that names a document outside the lease.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ValidationError } from '../api.js';
import type { Ctx } from '../harness.js';
import { rejectsWith } from '../harness.js';

const strict = z.object({
  n: z.number().int(),
  l: z.array(z.unknown()),
  o: z.record(z.string(), z.unknown()),
});
type Doc = z.infer<typeof strict>;
const init: Doc = { n: 0, l: [], o: {} };

/** Registers the refusals section. */
export function refusalsSection(ctx: Ctx): void {
  const model = (prefix: string) => ctx.client(0).model(ctx.name(prefix), strict);

  describe('unknown fields are refused on every write path (nothing written)', () => {
    it('create, put, createOp and putOp', async () => {
      const M = model('unk_whole');
      const bogus = { ...init, bogus: 'junk' } as Doc;
      await rejectsWith(M.create('k', bogus), ValidationError, 'INVALID');
      expect(await M.find('k')).toBeUndefined();
      await M.create('k', init);
      await rejectsWith(M.put('k', bogus), ValidationError, 'INVALID');
      expect(() => M.createOp('j', bogus)).toThrow(ValidationError);
      expect(() => M.putOp('j', bogus)).toThrow(ValidationError);
      expect((await M.get('k')).data).toStrictEqual(init);
    });

    it('apply through an untyped call, and store.apply', async () => {
      const M = model('unk_apply');
      await M.create('k', init);
      const untyped = (o: unknown) => (o as { bogus: { set(v: string): void } }).bogus.set('junk');
      await rejectsWith(M.apply('k', untyped), ValidationError, 'INVALID');
      await rejectsWith(ctx.client(0).apply([M.ops('k', untyped)]), ValidationError, 'INVALID');
      const after = await M.get('k');
      expect(after.data).toStrictEqual(init);
      expect(after.version).toBe(1);
    });

    it('a lock draft or an update draft that gains a field', async () => {
      const M = model('unk_draft');
      await M.create('k', init);
      await rejectsWith(
        M.lock('k', (d) => {
          (d as Record<string, unknown>).bogus = 'junk';
          d.n = 1;
        }),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M.update('k', (d) => {
          (d as Record<string, unknown>).bogus = 'junk';
        }),
        ValidationError,
        'INVALID',
      );
      expect((await M.get('k')).data).toStrictEqual(init);
    });
  });

  describe('values that are not JSON are refused everywhere', () => {
    it('arrays holding undefined or holes', async () => {
      const M = model('holes');
      await M.create('k', init);
      // biome-ignore lint/suspicious/noSparseArray: the hole is the point
      const holes = [1, , 3];
      for (const bad of [[1, undefined], holes]) {
        await rejectsWith(
          M.apply('k', (o) => o.l.set(bad)),
          ValidationError,
          'INVALID',
        );
        await rejectsWith(M.put('k', { ...init, l: bad }), ValidationError, 'INVALID');
        await rejectsWith(
          M.apply('k', (o) => o.l.append(bad)),
          ValidationError,
          'INVALID',
        );
      }
      expect((await M.get('k')).data).toStrictEqual(init);
    });

    it('a value that contains itself is a ValidationError, not a RangeError', async () => {
      const M = model('cycle');
      await M.create('k', init);
      const loop: Record<string, unknown> = { a: 1 };
      loop.self = loop;
      const list: unknown[] = [1];
      list.push(list);
      await rejectsWith(
        M.apply('k', (o) => o.o.set(loop)),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M.apply('k', (o) => o.l.set(list)),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(M.put('k', { ...init, o: loop }), ValidationError, 'INVALID');
      await rejectsWith(M.create('j', { ...init, l: list }), ValidationError, 'INVALID');
      expect((await M.get('k')).data).toStrictEqual(init);
      expect(await M.find('j')).toBeUndefined();
    });
  });

  describe('bad lock and write options', () => {
    it('the same ValidationError on every backend, before anything waits', async () => {
      const M = model('badopts');
      await M.create('k', init);
      for (const o of [
        { timeoutMs: -1 },
        { timeoutMs: Number.NaN },
        { leaseMs: 0 },
        { leaseMs: -5 },
        { leaseMs: Number.POSITIVE_INFINITY },
        { action: '' },
        { mode: 'both' as 'shared' },
      ]) {
        await rejectsWith(
          M.lock('k', () => 1, o),
          ValidationError,
          'INVALID',
        );
      }
      await rejectsWith(
        M.apply('k', (x) => x.n.incr(), { timeoutMs: -1 }),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(M.put('k', init, { timeoutMs: -1 }), ValidationError, 'INVALID');
      expect((await M.get('k')).version).toBe(1);
      // nothing was left held
      expect(await M.lock('k', () => 'free', { nowait: true })).toBe('free');
    });

    it('a lease commit naming a document outside the lease: ValidationError, lease released, nothing written', async () => {
      const b = ctx.client(0).backend;
      const M = model('outside');
      await M.create('k', init);
      await M.create('j', init);
      const lease = await b.acquire({
        model: M.name,
        keys: ['k'],
        action: 'default',
        mode: 'exclusive',
        leaseMs: 5_000,
        renew: true,
        nowait: false,
        skipLocked: false,
      });
      expect(lease).toBeDefined();
      await rejectsWith(
        (lease as NonNullable<typeof lease>).commit([
          { kind: 'patch', model: M.name, key: 'j', ops: [{ op: 'set', field: 'n', value: 9 }] },
        ]),
        ValidationError,
        'INVALID',
      );
      expect((await M.get('j')).data.n).toBe(0);
      expect(await M.lock('k', () => 'free', { nowait: true })).toBe('free');
    });
  });
}
