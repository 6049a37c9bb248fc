import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import type { Data, Json } from '../../src/store/backend.js';
import { diffFields } from '../../src/store/draft.js';
import { cloneJson, deepEqual } from '../../src/store/json.js';
import { checkKey, checkModelName } from '../../src/store/keys.js';
import { recordGuards, recordOps } from '../../src/store/ops.js';

type Doc = {
  n: number;
  s: string;
  list: string[];
  rec: Record<string, number>;
  opt?: boolean;
};

describe('ops builder', () => {
  it('records one plain op per call, in call order', () => {
    const ops = recordOps<Doc>((d) => {
      d.n.incr();
      d.n.incr(-2.5);
      d.list.append('a');
      d.list.extend(['b', 'c']);
      d.list.insert(-1, 'z');
      d.list.remove('a');
      d.list.pop();
      d.list.pop(0);
      d.rec.setItem('k', 1);
      d.rec.deleteItem('k');
      d.rec.merge({ a: 1 });
      d.s.set('x');
      d.opt.unset();
    });
    expect(ops).toEqual([
      { op: 'incr', field: 'n', by: 1 },
      { op: 'incr', field: 'n', by: -2.5 },
      { op: 'append', field: 'list', value: 'a' },
      { op: 'extend', field: 'list', values: ['b', 'c'] },
      { op: 'insert', field: 'list', index: -1, value: 'z' },
      { op: 'remove', field: 'list', value: 'a' },
      { op: 'pop', field: 'list', index: -1 },
      { op: 'pop', field: 'list', index: 0 },
      { op: 'setItem', field: 'rec', item: 'k', value: 1 },
      { op: 'deleteItem', field: 'rec', item: 'k' },
      { op: 'merge', field: 'rec', value: { a: 1 } },
      { op: 'set', field: 's', value: 'x' },
      { op: 'unset', field: 'opt' },
    ]);
  });

  it('refuses values that are not JSON, with a ValidationError naming the field', () => {
    const bad: Array<(d: Record<string, unknown>) => void> = [
      (d) => (d.n as unknown as { incr(x: unknown): void }).incr(Number.NaN),
      (d) => (d.n as unknown as { incr(x: unknown): void }).incr('1'),
      (d) => (d.x as unknown as { set(x: unknown): void }).set(undefined),
      (d) => (d.x as unknown as { set(x: unknown): void }).set(new Date()),
      (d) => (d.x as unknown as { append(x: unknown): void }).append(Number.POSITIVE_INFINITY),
      (d) => (d.x as unknown as { pop(x: unknown): void }).pop(1.5),
      (d) => (d.x as unknown as { insert(i: unknown, x: unknown): void }).insert('0', 1),
      (d) => (d.x as unknown as { merge(x: unknown): void }).merge([1]),
      (d) => (d.x as unknown as { extend(x: unknown): void }).extend('abc'),
      (d) => (d.x as unknown as { setItem(k: unknown, v: unknown): void }).setItem(1, 1),
    ];
    for (const b of bad) {
      expect(() => recordOps((o) => b(o as unknown as Record<string, unknown>))).toThrow(
        ValidationError,
      );
    }
  });
});

describe('guard builder', () => {
  it('builds guards from a list or a single guard', () => {
    expect(recordGuards<Doc>((d) => d.n.lt(3))).toEqual([
      { guard: 'cmp', field: 'n', cmp: 'lt', value: 3 },
    ]);
    expect(
      recordGuards<Doc>((d) => [
        d.list.length.gte(1),
        d.list.contains('a'),
        d.rec.notContains('k'),
        d.opt.exists(false),
        d.s.eq('x'),
      ]),
    ).toEqual([
      { guard: 'cmp', field: 'list', cmp: 'gte', value: 1, length: true },
      { guard: 'contains', field: 'list', value: 'a' },
      { guard: 'notContains', field: 'rec', value: 'k' },
      { guard: 'exists', field: 'opt', value: false },
      { guard: 'cmp', field: 's', cmp: 'eq', value: 'x' },
    ]);
    expect(recordGuards<Doc>(undefined)).toEqual([]);
  });

  it('refuses a when() that returns something other than guards', () => {
    expect(() => recordGuards<Doc>(() => true as never)).toThrow(ValidationError);
  });
});

describe('diffFields', () => {
  it('sets changed and new fields, unsets removed ones, ignores deep-equal ones', () => {
    expect(
      diffFields({ a: 1, b: { x: [1, 2] }, c: 'gone' }, { a: 2, b: { x: [1, 2] }, d: null }),
    ).toEqual([
      { op: 'set', field: 'a', value: 2 },
      { op: 'set', field: 'd', value: null },
      { op: 'unset', field: 'c' },
    ]);
  });

  const json: fc.Arbitrary<Json> = fc.jsonValue() as fc.Arbitrary<Json>;
  const data = fc.dictionary(fc.string({ maxLength: 4 }), json, {
    maxKeys: 6,
  }) as fc.Arbitrary<Data>;

  it('applying the diff to before gives after (property)', () => {
    fc.assert(
      fc.property(data, data, (before, after) => {
        const result: Data = cloneJson(before);
        for (const op of diffFields(before, after)) {
          if (op.op === 'set') result[op.field] = op.value;
          else if (op.op === 'unset') delete result[op.field];
        }
        expect(deepEqual(result, after)).toBe(true);
        expect(diffFields(after, cloneJson(after))).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});

describe('names', () => {
  it('accepts any key characters and refuses empty, NUL, lone surrogates, too long', () => {
    for (const k of ['a:b', '{tag}', '*', "'; drop table x; --", 'é🙂', 'x'.repeat(1024)]) {
      expect(() => checkKey(k)).not.toThrow();
    }
    for (const k of ['', 'a\u0000b', '\ud800', 'x'.repeat(2049), 42]) {
      expect(() => checkKey(k)).toThrow(ValidationError);
    }
  });

  it('model names are identifiers', () => {
    expect(() => checkModelName('account_2')).not.toThrow();
    for (const n of ['', '2x', 'a-b', 'drop table', 'x'.repeat(64)]) {
      expect(() => checkModelName(n)).toThrow(ValidationError);
    }
  });
});
