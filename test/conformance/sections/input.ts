/**
 * Bad input changes nothing: schema violations through every write path, empty keys, bad model
 * names; and keys that try to break out of a key space or a query are stored exactly.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { NotFoundError, ValidationError } from '../api.js';
import type { Ctx } from '../harness.js';
import { rejectsWith } from '../harness.js';

const account = z.object({
  owner: z.string().min(1),
  balance: z.number().int().min(0),
  tags: z.array(z.string()).max(3),
});
type Account = z.infer<typeof account>;
const good: Account = { owner: 'ann', balance: 10, tags: ['a'] };

/** Keys meant to escape a key prefix, a hash tag, a glob, a LIKE, an SQL string, a JSON path. */
export const nastyKeys: readonly string[] = [
  'a:b',
  'a',
  'a:',
  ':a',
  'a::b',
  '{tag}',
  '{a}:b',
  '*',
  '?',
  '[a-z]',
  "'; drop table x; --",
  '"; drop table x; --',
  '%',
  '_',
  '\\',
  '\\\\',
  '/',
  '..',
  'null',
  'undefined',
  '0',
  ' ',
  ' a ',
  '\t\n\r',
  'a\u0001b',
  '😀',
  'شلوم עולם', // RTL
  '\u202Eevil', // right-to-left override
  'e\u0301', // decomposed é
  'é', // composed é
  '__proto__',
  'constructor',
  'k:lock',
  'k:fence',
  'k:meta',
  'k',
  'k\u0000'.slice(0, 1) + 'x', // "kx"
  `${'ł'.repeat(300)}${'k'.repeat(424)}`, // 724 chars, 1024 UTF-8 bytes
  'x'.repeat(1024),
];

/** Registers the input sections. */
export function inputSection(ctx: Ctx): void {
  const both = (prefix: string) => {
    const name = ctx.name(prefix);
    return [ctx.client(0).model(name, account), ctx.client(1).model(name, account)] as const;
  };

  describe('invalid data never reaches storage (ValidationError, code INVALID)', () => {
    const bad = [
      { owner: '', balance: 10, tags: [] },
      { owner: 'ann', balance: -1, tags: [] },
      { owner: 'ann', balance: 1.5, tags: [] },
      { owner: 'ann', balance: 10, tags: ['a', 'b', 'c', 'd'] },
      { owner: 'ann', tags: [] },
      { owner: 'ann', balance: '10', tags: [] },
    ] as unknown as Account[];

    it('create refuses and creates nothing', async () => {
      const M = both('v_create');
      for (const [i, data] of bad.entries()) {
        const e = await rejectsWith(M[0].create(`k${i}`, data), ValidationError, 'INVALID');
        expect(e.issues.length).toBeGreaterThan(0);
        expect(await M[1].find(`k${i}`)).toBeUndefined();
      }
    });

    it('put refuses and leaves the existing document unchanged', async () => {
      const M = both('v_put');
      await M[0].create('k', good);
      for (const data of bad) {
        await rejectsWith(M[0].put('k', data), ValidationError, 'INVALID');
        await rejectsWith(M[0].put('new', data), ValidationError, 'INVALID');
      }
      expect(await M[1].get('k')).toStrictEqual({ key: 'k', version: 1, data: good });
      expect(await M[1].find('new')).toBeUndefined();
    });

    it('update refuses and leaves the document unchanged', async () => {
      const M = both('v_update');
      await M[0].create('k', good);
      await rejectsWith(
        M[0].update('k', (d) => {
          d.balance = -5;
          d.owner = 'changed';
        }),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].update('k', (d) => {
          d.tags.push('b', 'c', 'd');
        }),
        ValidationError,
        'INVALID',
      );
      expect(await M[1].get('k')).toStrictEqual({ key: 'k', version: 1, data: good });
    });

    it('lock refuses, writes nothing on any of its keys', async () => {
      const M = both('v_lock');
      await M[0].create('k', good);
      await M[0].create('k2', good);
      await rejectsWith(
        M[0].lock(['k', 'k2'], ([a, b]) => {
          a!.balance = 0;
          b!.balance = -1;
        }),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].lock('k', (d) => {
          (d as { balance: unknown }).balance = 'lots';
        }),
        ValidationError,
        'INVALID',
      );
      expect(await M[1].get('k')).toStrictEqual({ key: 'k', version: 1, data: good });
      expect(await M[1].get('k2')).toStrictEqual({ key: 'k2', version: 1, data: good });
    });

    it('apply refuses an invalid post-state, even one reached through several ops', async () => {
      const M = both('v_apply');
      await M[0].create('k', good);
      await rejectsWith(
        M[0].apply('k', (d) => d.balance.incr(-11)),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].apply('k', (d) => d.balance.incr(0.5)),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].apply('k', (d) => {
          d.tags.append('x');
          d.tags.extend(['y', 'z']);
        }),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].apply('k', (d) => d.owner.set('')),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].apply('k', (d) => d.balance.unset()),
        ValidationError,
        'INVALID',
      );
      // guards hold, post-state invalid: still refused
      await rejectsWith(
        M[0].apply('k', (d) => d.balance.incr(-20), { when: (d) => d.balance.gte(0) }),
        ValidationError,
        'INVALID',
      );
      expect(await M[1].get('k')).toStrictEqual({ key: 'k', version: 1, data: good });
      // and a valid apply right after still works
      const r = await M[0].apply('k', (d) => d.balance.incr(-10));
      expect(r.doc?.data.balance).toBe(0);
    });

    it('non-JSON values are refused (undefined, NaN, Infinity, functions, class instances)', async () => {
      const name = ctx.name('v_json');
      const M = ctx.client(0).model(name, z.record(z.string(), z.unknown()));
      const nonJson: unknown[] = [
        { n: Number.NaN },
        { n: Number.POSITIVE_INFINITY },
        { d: new Date(0) },
        { f: () => 1 },
        { m: new Map() },
        { b: 10n },
      ];
      for (const [i, data] of nonJson.entries()) {
        await expect(M.create(`k${i}`, data as Record<string, unknown>)).rejects.toMatchObject({
          code: 'INVALID',
        });
        expect(await M.find(`k${i}`)).toBeUndefined();
      }
      await M.create('ok', { n: 1 });
      await expect(
        M.apply('ok', (o) => (o.n as unknown as { incr(n: number): void }).incr(Number.NaN)),
      ).rejects.toMatchObject({ code: 'INVALID' });
      await expect(
        M.apply('ok', (o) =>
          (o.n as unknown as { set(v: unknown): void }).set(Number.NEGATIVE_INFINITY),
        ),
      ).rejects.toMatchObject({ code: 'INVALID' });
      expect((await M.get('ok')).data).toStrictEqual({ n: 1 });
    });

    it('an empty key is refused everywhere (ValidationError)', async () => {
      const M = both('v_key');
      await rejectsWith(M[0].create('', good), ValidationError, 'INVALID');
      await rejectsWith(M[0].put('', good), ValidationError, 'INVALID');
      await rejectsWith(M[0].get(''), ValidationError, 'INVALID');
      await rejectsWith(M[0].find(''), ValidationError, 'INVALID');
      await rejectsWith(M[0].delete(''), ValidationError, 'INVALID');
      await rejectsWith(
        M[0].apply('', (d) => d.balance.incr(1)),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].update('', (d) => {
          d.balance += 1;
        }),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].lock('', () => 1),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        M[0].lock(['a', ''], () => 1),
        ValidationError,
        'INVALID',
      );
      expect(() => M[0].ops('', (d) => d.balance.incr(1))).toThrow(ValidationError);
      await rejectsWith(M[1].get(''), ValidationError, 'INVALID');
    });

    it('model names: reserved words, case and 63-character names are distinct data spaces', async () => {
      const schema = z.object({ who: z.string() });
      const base = ctx.name('Case');
      const long = (c: string) => `${base}_${'x'.repeat(62 - base.length - 1)}${c}`;
      const names = [
        base,
        base.toUpperCase(),
        base.toLowerCase(),
        long('a'),
        long('b'),
        'select',
        'user',
        'order',
        'Table',
        'table',
        '_',
        'pg_class',
        'lock',
      ];
      expect(long('a').length).toBe(63);
      const models = names.map(
        (n) => [ctx.client(0).model(n, schema), ctx.client(1).model(n, schema)] as const,
      );
      const key = `same-key-${base}`;
      for (const [i, [A]] of models.entries()) await A.create(key, { who: names[i]! });
      for (const [i, [A, B]] of models.entries()) {
        expect((await B.get(key)).data.who, names[i]).toBe(names[i]);
        await A.lock(key, (d) => {
          d.who = `${d.who}!`;
        });
        await B.apply(key, (d) => d.who.set(`${names[i]}!!`), {
          when: (d) => d.who.eq(`${names[i]}!`),
        });
      }
      for (const [i, [, B]] of models.entries()) {
        expect((await B.get(key)).data.who, names[i]).toBe(`${names[i]}!!`);
        expect(await B.delete(key)).toBe(true);
      }
    });

    it('a bad model name is refused (ValidationError)', () => {
      for (const bad of ['', '1abc', 'a-b', 'a:b', 'a b', "x'; drop", 'é', 'x'.repeat(64)]) {
        expect(() => ctx.client(0).model(bad, account), bad).toThrow(ValidationError);
      }
      expect(() => ctx.client(0).model(`_${'x'.repeat(62)}`, account)).not.toThrow();
    });
  });

  describe('keys that try to break out of a key space or a query', () => {
    it('are stored and read back exactly, each distinct, across clients', async () => {
      const name = ctx.name('keys');
      const A = ctx.client(0).model(name, z.object({ k: z.string(), i: z.number() }));
      const B = ctx.client(1).model(name, z.object({ k: z.string(), i: z.number() }));
      expect(new Set(nastyKeys).size).toBe(nastyKeys.length);
      for (const [i, k] of nastyKeys.entries()) {
        const d = await A.create(k, { k, i });
        expect(d.key).toBe(k);
      }
      for (const [i, k] of nastyKeys.entries()) {
        const d = await B.get(k);
        expect(d.key).toBe(k);
        expect(d.data).toStrictEqual({ k, i });
      }
      // prefixes, globs and patterns match nothing else
      for (const probe of [
        'a:b:',
        'a*',
        'k:',
        '{tag',
        'é'.normalize('NFD') + 'x',
        "'",
        '%%',
        'x'.repeat(1023),
      ]) {
        if (nastyKeys.includes(probe)) continue;
        expect(await B.find(probe), probe).toBeUndefined();
      }
      // every write path addresses exactly one key
      for (const k of nastyKeys) {
        await A.apply(k, (d) => d.i.incr(1000));
      }
      await A.lock([...nastyKeys].slice(0, 12), (ds) => {
        for (const d of ds) d.i += 1;
      });
      await B.update('%', (d) => {
        d.i += 1;
      });
      for (const [i, k] of nastyKeys.entries()) {
        const expected = i + 1000 + (i < 12 ? 1 : 0) + (k === '%' ? 1 : 0);
        expect((await A.get(k)).data.i, JSON.stringify(k)).toBe(expected);
      }
      // delete one: only that one goes
      expect(await B.delete('*')).toBe(true);
      expect(await B.delete('a:b')).toBe(true);
      for (const k of nastyKeys) {
        expect(await A.find(k), JSON.stringify(k)).toEqual(
          k === '*' || k === 'a:b' ? undefined : expect.objectContaining({ key: k }),
        );
      }
      await rejectsWith(A.get('*'), NotFoundError, 'NOT_FOUND');
    });

    it('locks on keys that look like another key’s lock or metadata do not collide', async () => {
      const name = ctx.name('lockkeys');
      const schema = z.object({ k: z.string(), i: z.number() });
      const A = ctx.client(0).model(name, schema);
      const B = ctx.client(1).model(name, schema);
      const keys = ['k', 'k:lock', 'k:fence', 'k:meta', '{k}', 'k*', 'k%'];
      for (const k of keys) await A.create(k, { k, i: 0 });
      await A.lock('k', async () => {
        for (const other of keys.slice(1)) {
          expect(
            await B.lock(
              other,
              (d) => {
                d.i = 1;
                return 'free';
              },
              { nowait: true },
            ),
            other,
          ).toBe('free');
        }
      });
      for (const k of keys) {
        expect((await B.get(k)).data).toStrictEqual({ k, i: k === 'k' ? 0 : 1 });
      }
    });

    it('a key longer than the limit is refused (ValidationError), nothing stored', async () => {
      const name = ctx.name('longkey');
      const A = ctx.client(0).model(name, z.object({ k: z.string(), i: z.number() }));
      const long = 'x'.repeat(64 * 1024);
      await rejectsWith(A.create(long, { k: 'x', i: 0 }), ValidationError, 'INVALID');
    });
  });
}
