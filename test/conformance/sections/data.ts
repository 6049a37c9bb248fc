/**
 * Documents, field operations and guards: the exact semantics documented in
 * src/store/backend.ts. These are the tests that catch a Lua script or an SQL statement diverging
 * from JavaScript (floats, large integers, empty arrays vs empty objects, UTF-16 lengths, LIKE or
 * Lua-pattern wildcards, deep equality with key order ignored...).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Guard } from '../api.js';
import { NotFoundError, ValidationError } from '../api.js';
import type { Ctx } from '../harness.js';
import { rejectsWith } from '../harness.js';
import type { AnyGuards, AnyOps } from '../loose.js';
import { loose, looseWhen } from '../loose.js';

type Data = Record<string, unknown>;

/** Any field, any JSON value: the schema never gets in the way of the backend's own semantics. */
const anyDoc = z.record(z.string(), z.unknown());

interface OpCase {
  name: string;
  before: Data;
  build: (o: AnyOps) => void;
  results: unknown[];
  after: Data;
}

const S = 'héllo😀'; // 7 UTF-16 code units, 6 code points, 10 UTF-8 bytes

const opCases: OpCase[] = [
  // incr
  {
    name: 'incr adds',
    before: { n: 1 },
    build: (o) => o.n!.incr(2),
    results: [3],
    after: { n: 3 },
  },
  {
    name: 'incr default by is 1',
    before: { n: 1 },
    build: (o) => o.n!.incr(),
    results: [2],
    after: { n: 2 },
  },
  {
    name: 'incr on a missing field counts it as 0',
    before: { x: 1 },
    build: (o) => o.n!.incr(5),
    results: [5],
    after: { x: 1, n: 5 },
  },
  {
    name: 'incr negative and fractional',
    before: { n: -5 },
    build: (o) => o.n!.incr(-2.5),
    results: [-7.5],
    after: { n: -7.5 },
  },
  {
    name: 'incr floats exactly as JavaScript adds them (0.1 + 0.2)',
    before: { n: 0.1 },
    build: (o) => o.n!.incr(0.2),
    results: [0.1 + 0.2],
    after: { n: 0.1 + 0.2 },
  },
  {
    name: 'incr 1/3 + 1/7 exactly as JavaScript',
    before: { n: 1 / 3 },
    build: (o) => o.n!.incr(1 / 7),
    results: [1 / 3 + 1 / 7],
    after: { n: 1 / 3 + 1 / 7 },
  },
  {
    name: 'incr reaches 2**53-1 exactly',
    before: { n: 2 ** 53 - 2 },
    build: (o) => o.n!.incr(1),
    results: [2 ** 53 - 1],
    after: { n: 2 ** 53 - 1 },
  },
  {
    name: 'incr from -(2**53-1)',
    before: { n: -(2 ** 53 - 1) },
    build: (o) => o.n!.incr(2 ** 52),
    results: [-(2 ** 53 - 1) + 2 ** 52],
    after: { n: -(2 ** 53 - 1) + 2 ** 52 },
  },
  {
    name: 'incr of large doubles',
    before: { n: 1e300 },
    build: (o) => o.n!.incr(1e300),
    results: [2e300],
    after: { n: 2e300 },
  },
  {
    name: 'incr to zero',
    before: { n: 3 },
    build: (o) => o.n!.incr(-3),
    results: [0],
    after: { n: 0 },
  },
  {
    name: 'several incr in one batch see each other, in order',
    before: { n: 1, m: 10 },
    build: (o) => {
      o.n!.incr(1);
      o.m!.incr(-1);
      o.n!.incr(1);
    },
    results: [2, 9, 3],
    after: { n: 3, m: 9 },
  },
  // set / unset
  {
    name: 'set every JSON kind, read back exactly',
    before: { keep: 'k' },
    build: (o) => {
      o.third!.set(1 / 3);
      o.big!.set(2 ** 53 - 1);
      o.neg!.set(-(2 ** 53 - 1));
      o.tiny!.set(5e-324);
      o.small!.set(1e-7);
      o.huge!.set(1.7976931348623157e308);
      o.frac!.set(123456789.12345679);
      o.s!.set('☃ "quoted" \\ \n \t \u0001 </script>');
      o.t!.set(false);
      o.z!.set(null);
      o.o!.set({ b: 1, a: [{ c: null }, [], {}] });
      o.ea!.set([]);
      o.eo!.set({});
      o.es!.set('');
    },
    results: [null, null, null, null, null, null, null, null, null, null, null, null, null, null],
    after: {
      keep: 'k',
      third: 1 / 3,
      big: 2 ** 53 - 1,
      neg: -(2 ** 53 - 1),
      tiny: 5e-324,
      small: 1e-7,
      huge: 1.7976931348623157e308,
      frac: 123456789.12345679,
      s: '☃ "quoted" \\ \n \t \u0001 </script>',
      t: false,
      z: null,
      o: { b: 1, a: [{ c: null }, [], {}] },
      ea: [],
      eo: {},
      es: '',
    },
  },
  {
    name: 'set replaces a value of another type',
    before: { v: [1, 2] },
    build: (o) => o.v!.set({ x: 1 }),
    results: [null],
    after: { v: { x: 1 } },
  },
  {
    name: 'unset removes the field',
    before: { a: 1, b: 2 },
    build: (o) => o.a!.unset(),
    results: [null],
    after: { b: 2 },
  },
  {
    name: 'unset of a missing field changes nothing',
    before: { b: 2 },
    build: (o) => o.zz!.unset(),
    results: [null],
    after: { b: 2 },
  },
  {
    name: 'unset a null field removes it (null is a value, not absence)',
    before: { a: null, b: 2 },
    build: (o) => o.a!.unset(),
    results: [null],
    after: { b: 2 },
  },
  // append / extend
  {
    name: 'append returns the new length',
    before: { arr: [1] },
    build: (o) => o.arr!.append({ x: [1] }),
    results: [2],
    after: { arr: [1, { x: [1] }] },
  },
  {
    name: 'append to a missing field starts from []',
    before: {},
    build: (o) => o.arr!.append('a'),
    results: [1],
    after: { arr: ['a'] },
  },
  {
    name: 'append to an empty array',
    before: { arr: [] },
    build: (o) => o.arr!.append(null),
    results: [1],
    after: { arr: [null] },
  },
  {
    name: 'append an array as one element',
    before: { arr: [] },
    build: (o) => o.arr!.append([1, 2]),
    results: [1],
    after: { arr: [[1, 2]] },
  },
  {
    name: 'append an empty object and an empty array as elements',
    before: { arr: ['x'] },
    build: (o) => {
      o.arr!.append({});
      o.arr!.append([]);
    },
    results: [2, 3],
    after: { arr: ['x', {}, []] },
  },
  {
    name: 'extend returns the new length',
    before: { arr: [1] },
    build: (o) => o.arr!.extend([2, 3]),
    results: [3],
    after: { arr: [1, 2, 3] },
  },
  {
    name: 'extend a missing field',
    before: {},
    build: (o) => o.arr!.extend(['a', 'b']),
    results: [2],
    after: { arr: ['a', 'b'] },
  },
  {
    name: 'extend with nothing',
    before: { arr: [1] },
    build: (o) => o.arr!.extend([]),
    results: [1],
    after: { arr: [1] },
  },
  // insert
  {
    name: 'insert at 0',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.insert(0, 'x'),
    results: [4],
    after: { arr: ['x', 'a', 'b', 'c'] },
  },
  {
    name: 'insert at 1',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.insert(1, 'x'),
    results: [4],
    after: { arr: ['a', 'x', 'b', 'c'] },
  },
  {
    name: 'insert at length appends',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.insert(3, 'x'),
    results: [4],
    after: { arr: ['a', 'b', 'c', 'x'] },
  },
  {
    name: 'insert past the end is clamped to the end',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.insert(99, 'x'),
    results: [4],
    after: { arr: ['a', 'b', 'c', 'x'] },
  },
  {
    name: 'insert at -1 goes before the last element (splice)',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.insert(-1, 'x'),
    results: [4],
    after: { arr: ['a', 'b', 'x', 'c'] },
  },
  {
    name: 'insert at -length goes first',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.insert(-3, 'x'),
    results: [4],
    after: { arr: ['x', 'a', 'b', 'c'] },
  },
  {
    name: 'insert far negative is clamped to 0',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.insert(-99, 'x'),
    results: [4],
    after: { arr: ['x', 'a', 'b', 'c'] },
  },
  {
    name: 'insert into an empty array at any index',
    before: { arr: [] },
    build: (o) => o.arr!.insert(5, { k: [] }),
    results: [1],
    after: { arr: [{ k: [] }] },
  },
  // remove
  {
    name: 'remove removes every deep-equal element and counts them (1 is not "1")',
    before: { arr: [1, '1', 2, 1, { a: 1, b: 2 }, [1], null, true] },
    build: (o) => o.arr!.remove(1),
    results: [2],
    after: { arr: ['1', 2, { a: 1, b: 2 }, [1], null, true] },
  },
  {
    name: 'remove an object ignores key order',
    before: { arr: [{ a: 1, b: 2 }, { a: 1 }, { a: 1, b: 2, c: 3 }] },
    build: (o) => o.arr!.remove({ b: 2, a: 1 }),
    results: [1],
    after: { arr: [{ a: 1 }, { a: 1, b: 2, c: 3 }] },
  },
  {
    name: 'remove a string, a nested array, null',
    before: { arr: [1, '1', [1], [[1]], null, 0, false] },
    build: (o) => {
      o.arr!.remove('1');
      o.arr!.remove([1]);
      o.arr!.remove(null);
    },
    results: [1, 1, 1],
    after: { arr: [1, [[1]], 0, false] },
  },
  {
    name: 'remove true does not remove 1, remove 0 does not remove false',
    before: { arr: [1, true, 0, false] },
    build: (o) => {
      o.arr!.remove(true);
      o.arr!.remove(0);
    },
    results: [1, 1],
    after: { arr: [1, false] },
  },
  {
    name: 'remove of an absent value counts 0',
    before: { arr: [1, 2] },
    build: (o) => o.arr!.remove(3),
    results: [0],
    after: { arr: [1, 2] },
  },
  {
    name: 'remove the only element leaves an empty array (not an object)',
    before: { arr: ['x', 'x'] },
    build: (o) => o.arr!.remove('x'),
    results: [2],
    after: { arr: [] },
  },
  // pop
  {
    name: 'pop() takes the last',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.pop(),
    results: ['c'],
    after: { arr: ['a', 'b'] },
  },
  {
    name: 'pop(0) takes the first',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.pop(0),
    results: ['a'],
    after: { arr: ['b', 'c'] },
  },
  {
    name: 'pop(-2) counts from the end',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.pop(-2),
    results: ['b'],
    after: { arr: ['a', 'c'] },
  },
  {
    name: 'pop(-3) on three elements takes the first',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.pop(-3),
    results: ['a'],
    after: { arr: ['b', 'c'] },
  },
  {
    name: 'pop(2) on three elements takes the last',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.pop(2),
    results: ['c'],
    after: { arr: ['a', 'b'] },
  },
  {
    name: 'pop(3) out of range: null, no change',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.pop(3),
    results: [null],
    after: { arr: ['a', 'b', 'c'] },
  },
  {
    name: 'pop(-4) out of range: null, no change',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => o.arr!.pop(-4),
    results: [null],
    after: { arr: ['a', 'b', 'c'] },
  },
  {
    name: 'pop on an empty array: null, stays an empty array',
    before: { arr: [] },
    build: (o) => o.arr!.pop(),
    results: [null],
    after: { arr: [] },
  },
  {
    name: 'pop on a missing field: null, stays missing',
    before: { other: 1 },
    build: (o) => o.arr!.pop(),
    results: [null],
    after: { other: 1 },
  },
  {
    name: 'pop the last element leaves an empty array',
    before: { arr: [{ a: [1] }] },
    build: (o) => o.arr!.pop(),
    results: [{ a: [1] }],
    after: { arr: [] },
  },
  {
    name: 'pop a null element returns null and removes it',
    before: { arr: [1, null] },
    build: (o) => o.arr!.pop(),
    results: [null],
    after: { arr: [1] },
  },
  {
    name: 'pop until empty, then once more',
    before: { arr: ['a', 'b', 'c'] },
    build: (o) => {
      o.arr!.pop();
      o.arr!.pop();
      o.arr!.pop();
      o.arr!.pop();
    },
    results: ['c', 'b', 'a', null],
    after: { arr: [] },
  },
  {
    name: 'append, insert, pop and remove in one batch, in order',
    before: { arr: [1] },
    build: (o) => {
      o.arr!.append(2);
      o.arr!.insert(0, 0);
      o.arr!.pop(1);
      o.arr!.remove(2);
      o.arr!.extend([3, 3]);
    },
    results: [2, 3, 1, 1, 3],
    after: { arr: [0, 3, 3] },
  },
  // records
  {
    name: 'setItem adds an entry',
    before: { rec: { a: 1 } },
    build: (o) => o.rec!.setItem('b', 2),
    results: [null],
    after: { rec: { a: 1, b: 2 } },
  },
  {
    name: 'setItem replaces an entry',
    before: { rec: { a: 1 } },
    build: (o) => o.rec!.setItem('a', [1]),
    results: [null],
    after: { rec: { a: [1] } },
  },
  {
    name: 'setItem on a missing field starts from {}',
    before: {},
    build: (o) => o.rec!.setItem('a', { x: 1 }),
    results: [null],
    after: { rec: { a: { x: 1 } } },
  },
  {
    name: 'setItem with a null value keeps the entry',
    before: { rec: {} },
    build: (o) => o.rec!.setItem('a', null),
    results: [null],
    after: { rec: { a: null } },
  },
  {
    name: 'setItem into an empty record',
    before: { rec: {} },
    build: (o) => o.rec!.setItem('0', 0),
    results: [null],
    after: { rec: { '0': 0 } },
  },
  {
    name: 'deleteItem of an existing entry: true',
    before: { rec: { a: 1, b: 2 } },
    build: (o) => o.rec!.deleteItem('a'),
    results: [true],
    after: { rec: { b: 2 } },
  },
  {
    name: 'deleteItem of an absent entry: false',
    before: { rec: { a: 1 } },
    build: (o) => o.rec!.deleteItem('zz'),
    results: [false],
    after: { rec: { a: 1 } },
  },
  {
    name: 'deleteItem of the last entry leaves an empty object (not an array)',
    before: { rec: { a: 1 } },
    build: (o) => o.rec!.deleteItem('a'),
    results: [true],
    after: { rec: {} },
  },
  {
    name: 'deleteItem of an entry whose value is null: true',
    before: { rec: { a: null } },
    build: (o) => o.rec!.deleteItem('a'),
    results: [true],
    after: { rec: {} },
  },
  {
    name: 'merge is shallow',
    before: { rec: { a: { x: 1, y: 2 }, b: 1 } },
    build: (o) => o.rec!.merge({ a: { z: 3 }, c: null }),
    results: [null],
    after: { rec: { a: { z: 3 }, b: 1, c: null } },
  },
  {
    name: 'merge into a missing field',
    before: {},
    build: (o) => o.rec!.merge({ a: 1 }),
    results: [null],
    after: { rec: { a: 1 } },
  },
  {
    name: 'merge an empty object',
    before: { rec: { a: 1 } },
    build: (o) => o.rec!.merge({}),
    results: [null],
    after: { rec: { a: 1 } },
  },
  {
    name: 'record items that look like paths, patterns or SQL',
    before: { rec: {} },
    build: (o) => {
      for (const [i, item] of [
        'a,b',
        '{x}',
        '"q"',
        "it's",
        'a.b',
        '\\',
        '$.x',
        '😀',
        '',
        '%',
        '[0]',
        '-1',
        '1',
        'null',
      ].entries()) {
        o.rec!.setItem(item, i);
      }
      o.rec!.deleteItem('a,b');
      o.rec!.deleteItem('{x}');
      o.rec!.merge({ 'x y': true, "'); --": 'sql' });
    },
    results: [...Array.from({ length: 14 }, () => null), true, true, null],
    after: {
      rec: {
        '"q"': 2,
        "it's": 3,
        'a.b': 4,
        '\\': 5,
        '$.x': 6,
        '😀': 7,
        '': 8,
        '%': 9,
        '[0]': 10,
        '-1': 11,
        '1': 12,
        null: 13,
        'x y': true,
        "'); --": 'sql',
      },
    },
  },
  {
    name: 'field names that look like paths, patterns, SQL or metadata',
    before: {
      "it's": 1,
      'a.b': 1,
      'a,b': 1,
      '{f}': 1,
      '😀': 1,
      $x: 1,
      'x y': 1,
      version: 'v',
      key: 'k',
      data: 'd',
      _v: 1,
      __fields: 1,
      fence: 1,
      lock: 1,
    },
    build: (o) => {
      for (const f of ["it's", 'a.b', 'a,b', '{f}', '😀', '$x', 'x y', '_v', '__fields', 'fence'])
        o[f]!.incr(1);
      o.version!.set('vv');
      o.lock!.unset();
    },
    results: [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, null, null],
    after: {
      "it's": 2,
      'a.b': 2,
      'a,b': 2,
      '{f}': 2,
      '😀': 2,
      $x: 2,
      'x y': 2,
      version: 'vv',
      key: 'k',
      data: 'd',
      _v: 2,
      __fields: 2,
      fence: 2,
    },
  },
];

interface InvalidCase {
  name: string;
  before: Data;
  build: (o: AnyOps) => void;
}

/** Ops that do not fit the field's type: the whole batch fails (ValidationError), nothing changes. */
const invalidCases: InvalidCase[] = [
  {
    name: 'incr on a string (even a numeric one)',
    before: { n: 1, s: '5' },
    build: (o) => {
      o.n!.incr(1);
      o.s!.incr(1);
    },
  },
  { name: 'incr on null', before: { n: null }, build: (o) => o.n!.incr(1) },
  { name: 'incr on a boolean', before: { t: true }, build: (o) => o.t!.incr(1) },
  { name: 'incr on an array', before: { a: [1] }, build: (o) => o.a!.incr(1) },
  {
    name: 'append on a number',
    before: { n: 1 },
    build: (o) => {
      o.n!.incr(1);
      o.n!.append(1);
    },
  },
  { name: 'append on a string', before: { s: 'ab' }, build: (o) => o.s!.append('c') },
  { name: 'append on an empty object', before: { r: {} }, build: (o) => o.r!.append(1) },
  { name: 'append on a record', before: { r: { a: 1 } }, build: (o) => o.r!.append(1) },
  { name: 'extend on an empty object', before: { r: {} }, build: (o) => o.r!.extend([1]) },
  { name: 'insert on a record', before: { r: { a: 1 } }, build: (o) => o.r!.insert(0, 1) },
  { name: 'remove on a string', before: { s: 'aa' }, build: (o) => o.s!.remove('a') },
  { name: 'pop on an object', before: { r: { a: 1 } }, build: (o) => o.r!.pop() },
  { name: 'pop on a number', before: { n: 1 }, build: (o) => o.n!.pop() },
  { name: 'setItem on an array', before: { a: [1] }, build: (o) => o.a!.setItem('a', 1) },
  { name: 'setItem on an empty array', before: { a: [] }, build: (o) => o.a!.setItem('0', 1) },
  { name: 'setItem on a string', before: { s: 'x' }, build: (o) => o.s!.setItem('a', 1) },
  { name: 'deleteItem on an array', before: { a: ['x'] }, build: (o) => o.a!.deleteItem('0') },
  { name: 'merge into an array', before: { a: [] }, build: (o) => o.a!.merge({ a: 1 }) },
  { name: 'merge into null', before: { a: null }, build: (o) => o.a!.merge({ a: 1 }) },
];

interface GuardCase {
  name: string;
  when: (g: AnyGuards) => Guard | Guard[];
  expect: boolean;
}

/** The one document every guard case is evaluated against. */
const guardDoc: Data = {
  n: 5,
  f: 0.5,
  zero: 0,
  big: 2 ** 53 - 1,
  s: S,
  e: '',
  digits: '10',
  t: true,
  nul: null,
  arr: [1, 'two', { a: 1, b: [1, 2] }, null, [3]],
  empty: [],
  rec: { k: 1, 'a,b': 2, '': 3 },
  erec: {},
  obj: { x: 1, y: { p: 1, q: [2, { r: 3, s: 4 }] } },
  'a.b': 1,
  a: { b: 2 },
  'a,b': 'comma',
  '{x}': 'braces',
  "it's": "'; drop table x; --",
  pct: '50%_off\\now',
};

const guardCases: GuardCase[] = [
  // numbers
  { name: 'n.eq(5)', when: (g) => g.n!.eq(5), expect: true },
  { name: 'n.eq(5.0)', when: (g) => g.n!.eq(5.0), expect: true },
  { name: 'n.eq("5") (type matters)', when: (g) => g.n!.eq('5'), expect: false },
  { name: 'n.ne(5)', when: (g) => g.n!.ne(5), expect: false },
  { name: 'n.ne(6)', when: (g) => g.n!.ne(6), expect: true },
  { name: 'n.ne("5")', when: (g) => g.n!.ne('5'), expect: true },
  { name: 'n.lt(6)', when: (g) => g.n!.lt(6), expect: true },
  { name: 'n.lt(5)', when: (g) => g.n!.lt(5), expect: false },
  { name: 'n.lte(5)', when: (g) => g.n!.lte(5), expect: true },
  { name: 'n.lte(4.999)', when: (g) => g.n!.lte(4.999), expect: false },
  { name: 'n.gt(4)', when: (g) => g.n!.gt(4), expect: true },
  { name: 'n.gt(5)', when: (g) => g.n!.gt(5), expect: false },
  { name: 'n.gte(5)', when: (g) => g.n!.gte(5), expect: true },
  { name: 'n.gte(5.000000000000001)', when: (g) => g.n!.gte(5.000000000000001), expect: false },
  { name: 'n.gt(-1e308)', when: (g) => g.n!.gt(-1e308), expect: true },
  {
    name: 'f.lt(0.5000000000000001) (full precision)',
    when: (g) => g.f!.lt(0.5000000000000001),
    expect: true,
  },
  { name: 'f.eq(0.5)', when: (g) => g.f!.eq(0.5), expect: true },
  { name: 'zero.eq(0)', when: (g) => g.zero!.eq(0), expect: true },
  { name: 'zero.eq(false)', when: (g) => g.zero!.eq(false), expect: false },
  { name: 'zero.eq(null)', when: (g) => g.zero!.eq(null), expect: false },
  { name: 'zero.exists()', when: (g) => g.zero!.exists(), expect: true },
  { name: 'big.eq(2**53-1)', when: (g) => g.big!.eq(2 ** 53 - 1), expect: true },
  { name: 'big.eq(2**53-2)', when: (g) => g.big!.eq(2 ** 53 - 2), expect: false },
  { name: 'big.lt(2**53-1)', when: (g) => g.big!.lt(2 ** 53 - 1), expect: false },
  { name: 'big.gt(2**53-2)', when: (g) => g.big!.gt(2 ** 53 - 2), expect: true },
  // lt/lte/gt/gte are false unless the field is a number
  { name: 'string field lt(1e9) is false', when: (g) => g.s!.lt(1e9), expect: false },
  { name: 'string field gt(-1e9) is false', when: (g) => g.s!.gt(-1e9), expect: false },
  { name: 'numeric string "10" gt(5) is false', when: (g) => g.digits!.gt(5), expect: false },
  { name: 'numeric string "10" gte(10) is false', when: (g) => g.digits!.gte(10), expect: false },
  { name: 'numeric string "10" eq(10) is false', when: (g) => g.digits!.eq(10), expect: false },
  { name: 'boolean true gt(0) is false', when: (g) => g.t!.gt(0), expect: false },
  { name: 'boolean true gte(1) is false', when: (g) => g.t!.gte(1), expect: false },
  { name: 'null lt(1) is false', when: (g) => g.nul!.lt(1), expect: false },
  { name: 'null gte(-1) is false', when: (g) => g.nul!.gte(-1), expect: false },
  { name: 'array lt(100) is false', when: (g) => g.arr!.lt(100), expect: false },
  { name: 'object gt(-100) is false', when: (g) => g.obj!.gt(-100), expect: false },
  // booleans and null
  { name: 't.eq(true)', when: (g) => g.t!.eq(true), expect: true },
  { name: 't.eq(1)', when: (g) => g.t!.eq(1), expect: false },
  { name: 't.eq("true")', when: (g) => g.t!.eq('true'), expect: false },
  { name: 't.ne(false)', when: (g) => g.t!.ne(false), expect: true },
  { name: 'nul.eq(null)', when: (g) => g.nul!.eq(null), expect: true },
  { name: 'nul.ne(null)', when: (g) => g.nul!.ne(null), expect: false },
  { name: 'nul.eq(0)', when: (g) => g.nul!.eq(0), expect: false },
  { name: 'nul.eq("null")', when: (g) => g.nul!.eq('null'), expect: false },
  { name: 'nul.exists() (null is present)', when: (g) => g.nul!.exists(), expect: true },
  { name: 'nul.exists(false)', when: (g) => g.nul!.exists(false), expect: false },
  // a missing field: ne true, every other comparison false, length 0
  { name: 'missing.eq(null)', when: (g) => g.missing!.eq(null), expect: false },
  { name: 'missing.eq(0)', when: (g) => g.missing!.eq(0), expect: false },
  { name: 'missing.ne(null)', when: (g) => g.missing!.ne(null), expect: true },
  { name: 'missing.ne(1)', when: (g) => g.missing!.ne(1), expect: true },
  { name: 'missing.lt(1)', when: (g) => g.missing!.lt(1), expect: false },
  { name: 'missing.lte(0)', when: (g) => g.missing!.lte(0), expect: false },
  { name: 'missing.gt(-1)', when: (g) => g.missing!.gt(-1), expect: false },
  { name: 'missing.gte(0)', when: (g) => g.missing!.gte(0), expect: false },
  { name: 'missing.length.eq(0)', when: (g) => g.missing!.length.eq(0), expect: true },
  { name: 'missing.length.lt(1)', when: (g) => g.missing!.length.lt(1), expect: true },
  { name: 'missing.length.gt(0)', when: (g) => g.missing!.length.gt(0), expect: false },
  { name: 'missing.length.ne(0)', when: (g) => g.missing!.length.ne(0), expect: false },
  { name: 'missing.contains(1)', when: (g) => g.missing!.contains(1), expect: false },
  { name: 'missing.contains("")', when: (g) => g.missing!.contains(''), expect: false },
  { name: 'missing.notContains(1)', when: (g) => g.missing!.notContains(1), expect: true },
  { name: 'missing.exists()', when: (g) => g.missing!.exists(), expect: false },
  { name: 'missing.exists(false)', when: (g) => g.missing!.exists(false), expect: true },
  // strings: UTF-16 length, literal substrings
  { name: 's.eq(S)', when: (g) => g.s!.eq(S), expect: true },
  {
    name: 's.eq(S normalized differently)',
    when: (g) => g.s!.eq(S.normalize('NFD')),
    expect: false,
  },
  { name: 's.length.eq(7) (UTF-16 code units)', when: (g) => g.s!.length.eq(7), expect: true },
  { name: 's.length.eq(6) (not code points)', when: (g) => g.s!.length.eq(6), expect: false },
  { name: 's.length.eq(10) (not bytes)', when: (g) => g.s!.length.eq(10), expect: false },
  { name: 's.length.lte(7)', when: (g) => g.s!.length.lte(7), expect: true },
  { name: 's.length.gt(6)', when: (g) => g.s!.length.gt(6), expect: true },
  { name: 's.length.gte(8)', when: (g) => g.s!.length.gte(8), expect: false },
  { name: 's.contains("llo😀")', when: (g) => g.s!.contains('llo😀'), expect: true },
  { name: 's.contains("é")', when: (g) => g.s!.contains('é'), expect: true },
  { name: 's.contains("HÉ") (case-sensitive)', when: (g) => g.s!.contains('HÉ'), expect: false },
  { name: 's.contains("%") (no LIKE wildcard)', when: (g) => g.s!.contains('%'), expect: false },
  {
    name: 's.contains("h_llo") (no LIKE wildcard)',
    when: (g) => g.s!.contains('h_llo'),
    expect: false,
  },
  { name: 's.contains("h.llo") (no pattern)', when: (g) => g.s!.contains('h.llo'), expect: false },
  { name: 's.contains(".") (no pattern)', when: (g) => g.s!.contains('.'), expect: false },
  { name: 's.contains("l+") (no pattern)', when: (g) => g.s!.contains('l+'), expect: false },
  { name: 's.contains("[h]") (no pattern)', when: (g) => g.s!.contains('[h]'), expect: false },
  { name: 's.contains("") (every string has "")', when: (g) => g.s!.contains(''), expect: true },
  { name: 's.notContains("x")', when: (g) => g.s!.notContains('x'), expect: true },
  { name: 's.notContains("llo")', when: (g) => g.s!.notContains('llo'), expect: false },
  { name: 'e.length.eq(0)', when: (g) => g.e!.length.eq(0), expect: true },
  { name: 'e.exists() (empty string is present)', when: (g) => g.e!.exists(), expect: true },
  { name: 'e.eq("")', when: (g) => g.e!.eq(''), expect: true },
  { name: 'e.eq(null)', when: (g) => g.e!.eq(null), expect: false },
  { name: 'e.contains("")', when: (g) => g.e!.contains(''), expect: true },
  { name: 'e.contains("a")', when: (g) => g.e!.contains('a'), expect: false },
  { name: 'digits.contains("1")', when: (g) => g.digits!.contains('1'), expect: true },
  // arrays: deep equality (key order ignored), element membership
  {
    name: 'arr.eq(same, object keys reordered)',
    when: (g) => g.arr!.eq([1, 'two', { b: [1, 2], a: 1 }, null, [3]]),
    expect: true,
  },
  {
    name: 'arr.eq(nested array order differs)',
    when: (g) => g.arr!.eq([1, 'two', { a: 1, b: [2, 1] }, null, [3]]),
    expect: false,
  },
  {
    name: 'arr.eq(element order differs)',
    when: (g) => g.arr!.eq(['two', 1, { a: 1, b: [1, 2] }, null, [3]]),
    expect: false,
  },
  { name: 'arr.eq(prefix)', when: (g) => g.arr!.eq([1, 'two']), expect: false },
  {
    name: 'arr.ne(same, keys reordered)',
    when: (g) => g.arr!.ne([1, 'two', { b: [1, 2], a: 1 }, null, [3]]),
    expect: false,
  },
  { name: 'arr.length.eq(5)', when: (g) => g.arr!.length.eq(5), expect: true },
  { name: 'arr.length.lt(5)', when: (g) => g.arr!.length.lt(5), expect: false },
  { name: 'arr.length.gte(5)', when: (g) => g.arr!.length.gte(5), expect: true },
  { name: 'arr.length.ne(4)', when: (g) => g.arr!.length.ne(4), expect: true },
  { name: 'arr.contains(1)', when: (g) => g.arr!.contains(1), expect: true },
  { name: 'arr.contains("1")', when: (g) => g.arr!.contains('1'), expect: false },
  { name: 'arr.contains(true)', when: (g) => g.arr!.contains(true), expect: false },
  { name: 'arr.contains(null)', when: (g) => g.arr!.contains(null), expect: true },
  {
    name: 'arr.contains("tw") (elements, not substrings)',
    when: (g) => g.arr!.contains('tw'),
    expect: false,
  },
  {
    name: 'arr.contains({b,a} reordered)',
    when: (g) => g.arr!.contains({ b: [1, 2], a: 1 }),
    expect: true,
  },
  {
    name: 'arr.contains({a:1}) (no partial match)',
    when: (g) => g.arr!.contains({ a: 1 }),
    expect: false,
  },
  { name: 'arr.contains([3])', when: (g) => g.arr!.contains([3]), expect: true },
  { name: 'arr.contains(3) (not nested)', when: (g) => g.arr!.contains(3), expect: false },
  { name: 'arr.contains(2) (not nested)', when: (g) => g.arr!.contains(2), expect: false },
  { name: 'arr.notContains("two")', when: (g) => g.arr!.notContains('two'), expect: false },
  { name: 'arr.notContains(2)', when: (g) => g.arr!.notContains(2), expect: true },
  { name: 'empty.length.eq(0)', when: (g) => g.empty!.length.eq(0), expect: true },
  { name: 'empty.eq([])', when: (g) => g.empty!.eq([]), expect: true },
  { name: 'empty.eq({})', when: (g) => g.empty!.eq({}), expect: false },
  { name: 'empty.contains(null)', when: (g) => g.empty!.contains(null), expect: false },
  { name: 'empty.notContains(null)', when: (g) => g.empty!.notContains(null), expect: true },
  { name: 'empty.exists()', when: (g) => g.empty!.exists(), expect: true },
  // records / objects
  { name: 'rec.contains("k")', when: (g) => g.rec!.contains('k'), expect: true },
  { name: 'rec.contains("a,b")', when: (g) => g.rec!.contains('a,b'), expect: true },
  { name: 'rec.contains("")', when: (g) => g.rec!.contains(''), expect: true },
  { name: 'rec.contains("zz")', when: (g) => g.rec!.contains('zz'), expect: false },
  {
    name: 'rec.contains("a") (keys, not substrings)',
    when: (g) => g.rec!.contains('a'),
    expect: false,
  },
  { name: 'rec.notContains("zz")', when: (g) => g.rec!.notContains('zz'), expect: true },
  { name: 'rec.notContains("k")', when: (g) => g.rec!.notContains('k'), expect: false },
  { name: 'rec.eq(reordered)', when: (g) => g.rec!.eq({ '': 3, 'a,b': 2, k: 1 }), expect: true },
  { name: 'erec.eq({})', when: (g) => g.erec!.eq({}), expect: true },
  { name: 'erec.eq([])', when: (g) => g.erec!.eq([]), expect: false },
  { name: 'erec.contains("")', when: (g) => g.erec!.contains(''), expect: false },
  {
    name: 'obj.eq(deeply reordered)',
    when: (g) => g.obj!.eq({ y: { q: [2, { s: 4, r: 3 }], p: 1 }, x: 1 }),
    expect: true,
  },
  { name: 'obj.eq(subset)', when: (g) => g.obj!.eq({ x: 1 }), expect: false },
  {
    name: 'obj.eq(extra null key) (null is not absence)',
    when: (g) => g.obj!.eq({ x: 1, y: { p: 1, q: [2, { r: 3, s: 4 }] }, z: null }),
    expect: false,
  },
  {
    name: 'obj.eq(1 vs "1" deep inside)',
    when: (g) => g.obj!.eq({ x: '1', y: { p: 1, q: [2, { r: 3, s: 4 }] } }),
    expect: false,
  },
  { name: 'obj.ne(subset)', when: (g) => g.obj!.ne({ x: 1 }), expect: true },
  // field names that look like paths; values that look like SQL or patterns
  { name: '["a.b"].eq(1) (a field name, not a path)', when: (g) => g['a.b']!.eq(1), expect: true },
  { name: '["a.b"].eq(2)', when: (g) => g['a.b']!.eq(2), expect: false },
  { name: 'a.eq({b:2})', when: (g) => g.a!.eq({ b: 2 }), expect: true },
  { name: '["a,b"].eq("comma")', when: (g) => g['a,b']!.eq('comma'), expect: true },
  { name: '["{x}"].eq("braces")', when: (g) => g['{x}']!.eq('braces'), expect: true },
  { name: '["{x}"].exists()', when: (g) => g['{x}']!.exists(), expect: true },
  { name: '["{y}"].exists()', when: (g) => g['{y}']!.exists(), expect: false },
  {
    name: '["it\'s"].eq(SQL-looking string)',
    when: (g) => g["it's"]!.eq("'; drop table x; --"),
    expect: true,
  },
  {
    name: '["it\'s"].contains("\'; drop")',
    when: (g) => g["it's"]!.contains("'; drop"),
    expect: true,
  },
  { name: '["it\'s"].eq("\'")', when: (g) => g["it's"]!.eq("'"), expect: false },
  { name: 'pct.contains("%_") (literal)', when: (g) => g.pct!.contains('%_'), expect: true },
  { name: 'pct.contains("_o") (literal)', when: (g) => g.pct!.contains('_o'), expect: true },
  {
    name: 'pct.contains("\\") (literal backslash)',
    when: (g) => g.pct!.contains('\\'),
    expect: true,
  },
  {
    name: 'pct.contains("\\n") (backslash n, literal)',
    when: (g) => g.pct!.contains('\\now'),
    expect: true,
  },
  {
    name: 'pct.contains("%off") (no wildcard)',
    when: (g) => g.pct!.contains('%off'),
    expect: false,
  },
  {
    name: 'pct.contains("50%\\_off") (no escape)',
    when: (g) => g.pct!.contains('50%\\_off'),
    expect: false,
  },
  { name: 'pct.length.eq(11)', when: (g) => g.pct!.length.eq(11), expect: true },
  // several guards: all must hold
  { name: '[] (no guards) holds', when: () => [], expect: true },
  { name: '[n.eq(5), s.length.eq(7)]', when: (g) => [g.n!.eq(5), g.s!.length.eq(7)], expect: true },
  { name: '[n.eq(5), n.eq(6)]', when: (g) => [g.n!.eq(5), g.n!.eq(6)], expect: false },
  {
    name: '[missing.exists(false), arr.contains(null), rec.notContains("x")]',
    when: (g) => [g.missing!.exists(false), g.arr!.contains(null), g.rec!.notContains('x')],
    expect: true,
  },
];

/** Registers the document, op and guard sections. */
export function dataSection(ctx: Ctx): void {
  describe('documents', () => {
    const schema = z.object({
      owner: z.string(),
      balance: z.number().int().min(0),
      tags: z.array(z.string()),
    });
    const models = () => {
      const name = ctx.name('doc');
      return [ctx.client(0).model(name, schema), ctx.client(1).model(name, schema)] as const;
    };

    it('create, get, find, put, delete round-trip with versions, across clients', async () => {
      const [A, B] = models();
      const created = await A.create('a1', { owner: 'ann', balance: 10, tags: ['x'] });
      expect(created).toStrictEqual({
        key: 'a1',
        version: 1,
        data: { owner: 'ann', balance: 10, tags: ['x'] },
      });
      expect(await B.get('a1')).toStrictEqual(created);
      expect(await B.find('a1')).toStrictEqual(created);
      expect(await B.find('nope')).toBeUndefined();
      await rejectsWith(B.get('nope'), NotFoundError, 'NOT_FOUND');

      const put = await B.put('a1', { owner: 'bob', balance: 0, tags: [] });
      expect(put).toStrictEqual({
        key: 'a1',
        version: 2,
        data: { owner: 'bob', balance: 0, tags: [] },
      });
      expect(await A.get('a1')).toStrictEqual(put);

      const fresh = await A.put('a2', { owner: 'cy', balance: 1, tags: [] });
      expect(fresh.version).toBe(1);

      const r = await A.apply('a1', (a) => a.balance.incr(3));
      expect(r.applied).toBe(true);
      expect(r.doc).toStrictEqual({
        key: 'a1',
        version: 3,
        data: { owner: 'bob', balance: 3, tags: [] },
      });
      await B.update('a1', (a) => {
        a.tags.push('u');
      });
      expect((await A.get('a1')).version).toBe(4);
      await A.lock('a1', (a) => {
        a.owner = 'dan';
      });
      expect(await B.get('a1')).toStrictEqual({
        key: 'a1',
        version: 5,
        data: { owner: 'dan', balance: 3, tags: ['u'] },
      });

      expect(await B.delete('a1')).toBe(true);
      expect(await A.find('a1')).toBeUndefined();
      expect(await A.delete('a1')).toBe(false);
      expect(await B.delete('never')).toBe(false);
      const again = await A.create('a1', { owner: 'eve', balance: 7, tags: [] });
      expect(again.version).toBe(1);
      expect((await B.get('a1')).data).toStrictEqual({ owner: 'eve', balance: 7, tags: [] });
    });

    it('put replaces the whole document (fields not given are gone)', async () => {
      const name = ctx.name('put');
      const M = ctx.client(0).model(name, anyDoc);
      await M.create('k', { a: 1, b: { c: 2 }, l: [1] });
      await M.put('k', { b: { d: 3 } });
      expect((await ctx.client(1).model(name, anyDoc).get('k')).data).toStrictEqual({
        b: { d: 3 },
      });
    });

    it('a write on a missing document: NotFoundError, or applied:false with ignoreIfDeleted; nothing created', async () => {
      const [A, B] = models();
      await rejectsWith(
        A.apply('ghost', (a) => a.balance.incr(1)),
        NotFoundError,
        'NOT_FOUND',
      );
      expect(await A.apply('ghost', (a) => a.balance.incr(1), { ignoreIfDeleted: true })).toEqual({
        applied: false,
        results: [],
      });
      await rejectsWith(
        A.update('ghost', (a) => {
          a.balance += 1;
        }),
        NotFoundError,
        'NOT_FOUND',
      );
      let called = false;
      await rejectsWith(
        A.lock('ghost', (a) => {
          called = true;
          a.balance += 1;
        }),
        NotFoundError,
        'NOT_FOUND',
      );
      expect(called).toBe(false);
      expect(await B.find('ghost')).toBeUndefined();
      // the failed lock released its lease
      await A.create('ghost', { owner: 'g', balance: 0, tags: [] });
      await A.lock(
        'ghost',
        (a) => {
          a.balance = 1;
        },
        { nowait: true },
      );
      expect((await B.get('ghost')).data.balance).toBe(1);
    });

    it('same key in two models is two documents', async () => {
      const n1 = ctx.name('m1');
      const n2 = ctx.name('m2');
      const M1 = ctx.client(0).model(n1, anyDoc);
      const M2 = ctx.client(1).model(n2, anyDoc);
      await M1.create('same', { m: 1 });
      await M2.create('same', { m: 2 });
      await M1.apply(
        'same',
        loose((o) => o.m!.incr(10)),
      );
      expect((await M2.get('same')).data).toStrictEqual({ m: 2 });
      expect((await M1.get('same')).data).toStrictEqual({ m: 11 });
      expect(await M2.delete('same')).toBe(true);
      expect(await M1.find('same')).toBeDefined();
    });

    it('everything returned is the caller’s own copy; inputs are copied too', async () => {
      const name = ctx.name('copy');
      const M = ctx.client(0).model(name, anyDoc);
      const input = { l: [1], o: { a: 1 } };
      const created = await M.create('k', input);
      input.l.push(2);
      input.o.a = 99;
      (created.data.l as number[]).push(3);
      const got = await M.get('k');
      (got.data.o as Record<string, number>).a = 42;
      (got.data as Record<string, unknown>).extra = true;
      const r = await M.apply(
        'k',
        loose((o) => o.n!.set(1)),
      );
      (r.doc!.data.l as number[]).push(4);
      expect((await M.get('k')).data).toStrictEqual({ l: [1], o: { a: 1 }, n: 1 });
      await M.lock('k', (d) => {
        (d.l as number[]).push(5);
        return d;
      });
      const after = await M.get('k');
      expect(after.data).toStrictEqual({ l: [1, 5], o: { a: 1 }, n: 1 });
    });

    it('large and deep documents round-trip exactly', async () => {
      const name = ctx.name('big');
      const M = ctx.client(0).model(name, anyDoc);
      let deep: unknown = { leaf: [1, 'x', null] };
      for (let i = 0; i < 100; i++) deep = i % 2 ? { d: deep } : [deep];
      const data = {
        text: 'ab☃😀'.repeat(64 * 1024),
        nums: Array.from({ length: 5000 }, (_, i) => i / 7),
        deep,
        wide: Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`f${i}`, i])),
      };
      await M.create('k', data);
      expect((await ctx.client(1).model(name, anyDoc).get('k')).data).toStrictEqual(data);
      const r = await M.apply(
        'k',
        loose((o) => o.nums!.append(1 / 3)),
      );
      expect(r.results).toStrictEqual([5001]);
    });

    it('strings a JSON store may not hold (NUL, lone surrogates): stored exactly, or refused with nothing written', async () => {
      const name = ctx.name('oddstr');
      const M = ctx.client(0).model(name, anyDoc);
      const B = ctx.client(1).model(name, anyDoc);
      const odd = ['a\u0000b', '\ud800', 'x\udfff', '\ud83d\ude00\ud83d', '\u0000'];
      for (const [i, v] of odd.entries()) {
        const key = `v${i}`;
        const outcome = await M.create(key, { v, [v]: 1 }).then(
          () => 'stored',
          (e: unknown) => e,
        );
        if (outcome === 'stored') {
          expect((await B.get(key)).data, JSON.stringify(v)).toStrictEqual({ v, [v]: 1 });
        } else {
          expect(outcome, JSON.stringify(v)).toBeInstanceOf(ValidationError);
          expect(await B.find(key)).toBeUndefined();
        }
        // through an op too
        await M.create(`o${i}`, { l: [] });
        const applied = await M.apply(
          `o${i}`,
          loose((o) => o.l!.append(v)),
        ).then(
          () => 'stored',
          (e: unknown) => e,
        );
        if (applied === 'stored') {
          expect((await B.get(`o${i}`)).data, JSON.stringify(v)).toStrictEqual({ l: [v] });
        } else {
          expect(applied, JSON.stringify(v)).toBeInstanceOf(ValidationError);
          expect((await B.get(`o${i}`)).data).toStrictEqual({ l: [] });
        }
      }
    });

    it('create/put/get data round-trips exactly, including empty arrays and objects', async () => {
      const name = ctx.name('rt');
      const M = ctx.client(0).model(name, anyDoc);
      const data = {
        ea: [],
        eo: {},
        nested: { ea: [], eo: {}, l: [[], {}, [[]], [{}]] },
        third: 1 / 3,
        big: 2 ** 53 - 1,
        tiny: 5e-324,
        s: S,
        z: null,
        t: true,
        f: false,
        zero: 0,
      };
      await M.create('k', data);
      expect((await ctx.client(1).model(name, anyDoc).get('k')).data).toStrictEqual(data);
      await M.put('p', data);
      expect((await ctx.client(1).model(name, anyDoc).get('p')).data).toStrictEqual(data);
    });
  });

  describe('field operations (exact results, post-state and version)', () => {
    let name: string;
    beforeAll(() => {
      name = ctx.name('ops');
    });
    opCases.forEach((c, i) => {
      it(c.name, async () => {
        const A = ctx.client(0).model(name, anyDoc);
        const B = ctx.client(1).model(name, anyDoc);
        const key = `op${i}`;
        await A.create(key, c.before);
        const r = await A.apply(key, loose(c.build));
        expect(r.applied).toBe(true);
        expect(r.results).toStrictEqual(c.results);
        expect(r.doc?.data).toStrictEqual(c.after);
        const after = await B.get(key);
        expect(after.data).toStrictEqual(c.after);
        expect(after.version).toBeGreaterThanOrEqual(1);
        expect(after.version).toBeLessThanOrEqual(2);
        expect(r.doc?.version).toBe(after.version);
      });
    });

    it('a write that changes the document bumps the version by exactly 1', async () => {
      const A = ctx.client(0).model(name, anyDoc);
      await A.create('ver', { n: 0, arr: [] });
      for (let i = 1; i <= 5; i++) {
        const r = await A.apply(
          'ver',
          loose((o) => {
            o.n!.incr(1);
            o.arr!.append(i);
          }),
        );
        expect(r.doc?.version).toBe(i + 1);
      }
      expect((await ctx.client(1).model(name, anyDoc).get('ver')).version).toBe(6);
    });

    invalidCases.forEach((c, i) => {
      it(`refused as a whole: ${c.name} → ValidationError, nothing written`, async () => {
        const A = ctx.client(0).model(name, anyDoc);
        const key = `bad${i}`;
        await A.create(key, c.before);
        await rejectsWith(
          A.apply(
            key,
            loose((o) => {
              o.marker!.set('written');
              c.build(o);
            }),
          ),
          ValidationError,
          'INVALID',
        );
        const after = await ctx.client(1).model(name, anyDoc).get(key);
        expect(after).toStrictEqual({ key, version: 1, data: c.before });
      });
    });
  });

  describe('guards (evaluated on the state before the ops)', () => {
    let name: string;
    beforeAll(async () => {
      name = ctx.name('grd');
    });
    guardCases.forEach((c, i) => {
      it(`${c.name} → ${c.expect}`, async () => {
        const A = ctx.client(0).model(name, anyDoc);
        const key = `g${i}`;
        await A.create(key, guardDoc);
        const r = await A.apply(
          key,
          loose((o) => o.hit!.incr(1)),
          { when: looseWhen(c.when) },
        );
        expect(r.applied).toBe(c.expect);
        const after = await ctx.client(1).model(name, anyDoc).get(key);
        if (c.expect) {
          expect(r.results).toStrictEqual([1]);
          expect(after.version).toBe(2);
          expect(after.data).toStrictEqual({ ...guardDoc, hit: 1 });
        } else {
          expect(r.results).toStrictEqual([]);
          expect(after.version).toBe(1);
          expect(after.data).toStrictEqual(guardDoc);
        }
      });
    });

    it('guards see the pre-image: a guarded append admits exactly until the limit', async () => {
      const A = ctx.client(0).model(name, anyDoc);
      await A.create('pre', { l: [] });
      const outcomes: boolean[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await A.apply(
          'pre',
          loose((o) => o.l!.append(i)),
          {
            when: looseWhen((g) => [g.l!.length.lt(2), g.l!.notContains(i)]),
          },
        );
        outcomes.push(r.applied);
      }
      expect(outcomes).toStrictEqual([true, true, false, false]);
      expect((await A.get('pre')).data).toStrictEqual({ l: [0, 1] });
      const r = await A.apply(
        'pre',
        loose((o) => {
          o.l!.pop();
          o.l!.pop();
        }),
        { when: looseWhen((g) => g.l!.length.eq(2)) },
      );
      expect(r.results).toStrictEqual([1, 0]);
      const again = await A.apply(
        'pre',
        loose((o) => o.l!.append(9)),
        {
          when: looseWhen((g) => g.l!.length.eq(2)),
        },
      );
      expect(again.applied).toBe(false);
    });
  });
}
