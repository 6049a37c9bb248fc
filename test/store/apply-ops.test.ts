import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyOps,
  copyJson,
  deepEqual,
  describeGuard,
  evalGuard,
  evalGuards,
  firstFalseGuard,
  guardProblem,
  NotJsonError,
} from '../../src/store/apply-ops.js';
import type { CmpOp, Data, Guard, Json, Op } from '../../src/store/backend.js';
import { cloneJson } from '../../src/store/json.js';

function ok(data: Data, ops: Op[]): { data: Data; results: Json[] } {
  const r = applyOps(data, ops);
  if (!r.ok) throw new Error(`expected ok, got: ${r.detail}`);
  return { data: r.data, results: r.results };
}

function fail(data: Data, ops: Op[]): string {
  const r = applyOps(data, ops);
  if (r.ok) throw new Error(`expected a failure, got ${JSON.stringify(r.data)}`);
  return r.detail;
}

const cmp = (field: string, op: CmpOp, value: Json, length?: boolean): Guard =>
  length
    ? { guard: 'cmp', field, cmp: op, value, length }
    : { guard: 'cmp', field, cmp: op, value };

describe('applyOps: set / unset', () => {
  it('sets and unsets fields, results null', () => {
    expect(
      ok({ a: 1, b: 2 }, [
        { op: 'set', field: 'a', value: { x: [1] } },
        { op: 'unset', field: 'b' },
        { op: 'unset', field: 'missing' },
      ]),
    ).toEqual({ data: { a: { x: [1] } }, results: [null, null, null] });
  });

  it('copies set values: mutating the op value later changes nothing', () => {
    const value = { x: [1] };
    const { data } = ok({}, [{ op: 'set', field: 'a', value }]);
    value.x.push(2);
    expect(data).toEqual({ a: { x: [1] } });
  });

  it('refuses a set without a value, and non-JSON values', () => {
    expect(fail({}, [{ op: 'set', field: 'a', value: undefined as unknown as Json }])).toMatch(
      /op #0 \(set\) on field "a": needs a value/,
    );
    expect(fail({}, [{ op: 'set', field: 'a', value: new Date() as unknown as Json }])).toMatch(
      /Date object/,
    );
    expect(fail({}, [{ op: 'set', field: 'a', value: [Number.NaN] as unknown as Json }])).toMatch(
      /NaN/,
    );
  });

  it('handles field names that are Object.prototype names', () => {
    const { data } = ok({}, [
      { op: 'set', field: '__proto__', value: { polluted: true } },
      { op: 'incr', field: 'toString', by: 2 },
      { op: 'append', field: 'constructor', value: 1 },
    ]);
    expect(Object.getPrototypeOf(data)).toBe(Object.prototype);
    expect(Object.keys(data).sort()).toEqual(['__proto__', 'constructor', 'toString']);
    expect(Object.getOwnPropertyDescriptor(data, '__proto__')?.value).toEqual({ polluted: true });
    expect(data.toString).toBe(2);
    expect(({} as { polluted?: boolean }).polluted).toBeUndefined();
  });
});

describe('applyOps: incr', () => {
  it('adds to a number, a missing field counts as 0, result is the new value', () => {
    expect(
      ok({ n: 5 }, [
        { op: 'incr', field: 'n', by: -2 },
        { op: 'incr', field: 'n', by: 0.5 },
        { op: 'incr', field: 'm', by: 3 },
      ]),
    ).toEqual({ data: { n: 3.5, m: 3 }, results: [3, 3.5, 3] });
  });

  it('fails on a non-number field, naming the field and op', () => {
    for (const v of ['1', null, true, [1], { a: 1 }] as Json[]) {
      expect(fail({ n: v }, [{ op: 'incr', field: 'n', by: 1 }])).toMatch(
        /^op #0 \(incr\) on field "n": needs a number field, found /,
      );
    }
  });

  it('validates by: finite number only', () => {
    for (const by of [Number.NaN, Number.POSITIVE_INFINITY, '1', undefined, null]) {
      expect(fail({ n: 1 }, [{ op: 'incr', field: 'n', by: by as number }])).toMatch(
        /by must be a finite number/,
      );
    }
  });

  it('refuses a result that is not finite', () => {
    expect(
      fail({ n: Number.MAX_VALUE }, [{ op: 'incr', field: 'n', by: Number.MAX_VALUE }]),
    ).toMatch(/not finite/);
  });
});

describe('applyOps: arrays', () => {
  it('append / extend on missing and existing arrays return the new length', () => {
    expect(
      ok({ a: [1] }, [
        { op: 'append', field: 'a', value: 2 },
        { op: 'extend', field: 'a', values: [3, 4] },
        { op: 'append', field: 'b', value: 'x' },
        { op: 'extend', field: 'c', values: [] },
      ]),
    ).toEqual({ data: { a: [1, 2, 3, 4], b: ['x'], c: [] }, results: [2, 4, 1, 0] });
  });

  it('insert clamps like splice', () => {
    const cases: Array<[number, Json[]]> = [
      [0, ['x', 1, 2, 3]],
      [1, [1, 'x', 2, 3]],
      [3, [1, 2, 3, 'x']],
      [99, [1, 2, 3, 'x']],
      [-1, [1, 2, 'x', 3]],
      [-3, ['x', 1, 2, 3]],
      [-99, ['x', 1, 2, 3]],
    ];
    for (const [index, expected] of cases) {
      const { data, results } = ok({ a: [1, 2, 3] }, [
        { op: 'insert', field: 'a', index, value: 'x' },
      ]);
      expect(data.a, `index ${index}`).toEqual(expected);
      expect(results).toEqual([4]);
      const spliced = [1, 2, 3] as Json[];
      spliced.splice(index, 0, 'x');
      expect(data.a, `index ${index} vs splice`).toEqual(spliced);
    }
    expect(ok({}, [{ op: 'insert', field: 'a', index: -5, value: 1 }]).data).toEqual({ a: [1] });
  });

  it('insert and pop need integer indexes', () => {
    for (const index of [1.5, Number.NaN, '1', null, Number.POSITIVE_INFINITY]) {
      expect(
        fail({ a: [1] }, [{ op: 'insert', field: 'a', index: index as number, value: 0 }]),
      ).toMatch(/op #0 \(insert\) on field "a": index must be an integer/);
      expect(fail({ a: [1] }, [{ op: 'pop', field: 'a', index: index as number }])).toMatch(
        /op #0 \(pop\) on field "a": index must be an integer/,
      );
    }
  });

  it('remove drops every deep-equal element and returns the count', () => {
    expect(
      ok({ a: [{ x: 1, y: 2 }, 1, { y: 2, x: 1 }, [1], { x: 1 }] }, [
        { op: 'remove', field: 'a', value: { x: 1, y: 2 } },
        { op: 'remove', field: 'a', value: 'nope' },
        { op: 'remove', field: 'missing', value: 1 },
      ]),
    ).toEqual({ data: { a: [1, [1], { x: 1 }] }, results: [2, 0, 0] });
  });

  it('pop: default last, 0 first, negative from the end, out of range null', () => {
    const base = { a: [10, 20, 30] };
    expect(ok(base, [{ op: 'pop', field: 'a', index: -1 }])).toEqual({
      data: { a: [10, 20] },
      results: [30],
    });
    expect(ok(base, [{ op: 'pop', field: 'a', index: undefined as unknown as number }])).toEqual({
      data: { a: [10, 20] },
      results: [30],
    });
    expect(ok(base, [{ op: 'pop', field: 'a', index: 0 }])).toEqual({
      data: { a: [20, 30] },
      results: [10],
    });
    expect(ok(base, [{ op: 'pop', field: 'a', index: -3 }])).toEqual({
      data: { a: [20, 30] },
      results: [10],
    });
    for (const index of [3, -4, 100]) {
      expect(ok(base, [{ op: 'pop', field: 'a', index }])).toEqual({ data: base, results: [null] });
    }
    expect(ok({ a: [] }, [{ op: 'pop', field: 'a', index: -1 }])).toEqual({
      data: { a: [] },
      results: [null],
    });
    expect(ok({}, [{ op: 'pop', field: 'a', index: -1 }])).toEqual({ data: {}, results: [null] });
  });

  it('the popped element does not alias the input', () => {
    const input = { a: [{ deep: [1] }] } as Data;
    const { results } = ok(input, [{ op: 'pop', field: 'a', index: 0 }]);
    (results[0] as { deep: number[] }).deep.push(2);
    expect(input).toEqual({ a: [{ deep: [1] }] });
  });

  it('array ops on a non-array fail with the field and op named', () => {
    const ops: Op[] = [
      { op: 'append', field: 'f', value: 1 },
      { op: 'extend', field: 'f', values: [1] },
      { op: 'insert', field: 'f', index: 0, value: 1 },
      { op: 'remove', field: 'f', value: 1 },
      { op: 'pop', field: 'f', index: -1 },
    ];
    for (const v of ['abc', 3, { a: 1 }, null, true] as Json[]) {
      for (const op of ops) {
        expect(fail({ f: v }, [{ op: 'set', field: 'x', value: 1 }, op])).toMatch(
          new RegExp(`^op #1 \\(${op.op}\\) on field "f": needs an array field, found `),
        );
      }
    }
    expect(fail({}, [{ op: 'extend', field: 'f', values: 1 as unknown as Json[] }])).toMatch(
      /values must be an array/,
    );
  });
});

describe('applyOps: records', () => {
  it('setItem / deleteItem / merge', () => {
    expect(
      ok({ r: { a: 1, b: 2 } }, [
        { op: 'setItem', field: 'r', item: 'c', value: [3] },
        { op: 'deleteItem', field: 'r', item: 'a' },
        { op: 'deleteItem', field: 'r', item: 'zz' },
        { op: 'merge', field: 'r', value: { b: 20, d: 4 } },
        { op: 'setItem', field: 'new', item: 'k', value: 'v' },
        { op: 'merge', field: 'new2', value: { x: 1 } },
        { op: 'deleteItem', field: 'gone', item: 'k' },
      ]),
    ).toEqual({
      data: { r: { b: 20, c: [3], d: 4 }, new: { k: 'v' }, new2: { x: 1 } },
      results: [null, true, false, null, null, null, false],
    });
  });

  it('items named like Object.prototype members are plain entries', () => {
    const { data, results } = ok({ r: {} }, [
      { op: 'deleteItem', field: 'r', item: 'toString' },
      { op: 'setItem', field: 'r', item: '__proto__', value: 1 },
      { op: 'merge', field: 'r', value: JSON.parse('{"__proto__": {"x": 1}, "constructor": 2}') },
    ]);
    expect(results[0]).toBe(false);
    const r = data.r as Record<string, Json>;
    expect(Object.getPrototypeOf(r)).toBe(Object.prototype);
    expect(Object.keys(r).sort()).toEqual(['__proto__', 'constructor']);
    expect(Object.getOwnPropertyDescriptor(r, '__proto__')?.value).toEqual({ x: 1 });
  });

  it('record ops on a non-record fail', () => {
    const ops: Op[] = [
      { op: 'setItem', field: 'f', item: 'k', value: 1 },
      { op: 'deleteItem', field: 'f', item: 'k' },
      { op: 'merge', field: 'f', value: { k: 1 } },
    ];
    for (const v of ['abc', 3, [1], null, false] as Json[]) {
      for (const op of ops) {
        expect(fail({ f: v }, [op])).toMatch(
          new RegExp(`^op #0 \\(${op.op}\\) on field "f": needs a record field, found `),
        );
      }
    }
    expect(
      fail({}, [{ op: 'merge', field: 'f', value: [1] as unknown as Record<string, Json> }]),
    ).toMatch(/value must be an object/);
    expect(
      fail({}, [{ op: 'setItem', field: 'f', item: 1 as unknown as string, value: 1 }]),
    ).toMatch(/item must be a string/);
  });
});

describe('applyOps: malformed batches', () => {
  it('refuses unknown ops, missing field names and non-arrays', () => {
    expect(fail({}, [{ op: 'explode', field: 'f' } as unknown as Op])).toMatch(
      /op #0 \(explode\) on field "f": unknown op "explode"/,
    );
    expect(fail({}, [{ op: 'set', value: 1 } as unknown as Op])).toMatch(/string field name/);
    expect(fail({}, [null as unknown as Op])).toMatch(/not an op object/);
    expect(applyOps({}, 'nope' as unknown as Op[])).toEqual({
      ok: false,
      detail: 'ops must be an array',
    });
  });

  it('a failure anywhere returns no data and leaves the input untouched', () => {
    const input: Data = { a: [1], n: 1 };
    const r = applyOps(input, [
      { op: 'append', field: 'a', value: 2 },
      { op: 'incr', field: 'n', by: 1 },
      { op: 'incr', field: 'a', by: 1 },
    ]);
    expect(r).toEqual({ ok: false, detail: expect.stringMatching(/^op #2 \(incr\) on field "a"/) });
    expect(input).toEqual({ a: [1], n: 1 });
  });

  it('an empty batch returns an equal copy', () => {
    const input = { a: 1 };
    const r = ok(input, []);
    expect(r).toEqual({ data: { a: 1 }, results: [] });
    expect(r.data).not.toBe(input);
  });
});

describe('guards', () => {
  const doc: Data = {
    n: 5,
    s: 'hello',
    a: [1, { x: 1, y: [2] }, 'z'],
    r: { k: 1, toString: 2 },
    nil: null,
    b: false,
  };

  it('cmp eq/ne deep, key order ignored', () => {
    expect(evalGuard(doc, cmp('a', 'eq', [1, { y: [2], x: 1 }, 'z']))).toBe(true);
    expect(evalGuard(doc, cmp('a', 'ne', [1, { y: [2], x: 1 }, 'z']))).toBe(false);
    expect(evalGuard(doc, cmp('n', 'eq', 5))).toBe(true);
    expect(evalGuard(doc, cmp('n', 'eq', '5'))).toBe(false);
    expect(evalGuard(doc, cmp('nil', 'eq', null))).toBe(true);
    expect(evalGuard(doc, cmp('b', 'ne', true))).toBe(true);
  });

  it('lt/lte/gt/gte hold only when both sides are numbers', () => {
    expect(evalGuard(doc, cmp('n', 'lt', 6))).toBe(true);
    expect(evalGuard(doc, cmp('n', 'lt', 5))).toBe(false);
    expect(evalGuard(doc, cmp('n', 'lte', 5))).toBe(true);
    expect(evalGuard(doc, cmp('n', 'gt', 4))).toBe(true);
    expect(evalGuard(doc, cmp('n', 'gte', 5))).toBe(true);
    expect(evalGuard(doc, cmp('n', 'gte', 6))).toBe(false);
    for (const op of ['lt', 'lte', 'gt', 'gte'] as const) {
      expect(evalGuard(doc, cmp('s', op, 'zzz')), `string ${op}`).toBe(false);
      expect(evalGuard(doc, cmp('s', op, 'a')), `string ${op}`).toBe(false);
      expect(evalGuard(doc, cmp('n', op, '5')), `mixed ${op}`).toBe(false);
      expect(evalGuard(doc, cmp('nil', op, 0)), `null ${op}`).toBe(false);
    }
  });

  it('missing fields: ne true, every other comparison false', () => {
    for (const op of ['eq', 'lt', 'lte', 'gt', 'gte'] as const) {
      expect(evalGuard(doc, cmp('missing', op, 0))).toBe(false);
      expect(evalGuard(doc, cmp('missing', op, null))).toBe(false);
    }
    expect(evalGuard(doc, cmp('missing', 'ne', 0))).toBe(true);
    expect(evalGuard(doc, cmp('missing', 'ne', null))).toBe(true);
    // Object.prototype names are not fields.
    expect(evalGuard({}, cmp('toString', 'ne', 1))).toBe(true);
    expect(evalGuard({}, { guard: 'exists', field: 'constructor', value: true })).toBe(false);
  });

  it('length of strings (UTF-16 units) and arrays; missing = 0; other types have none', () => {
    expect(evalGuard(doc, cmp('s', 'eq', 5, true))).toBe(true);
    expect(evalGuard({ s: '😀' }, cmp('s', 'eq', 2, true))).toBe(true);
    expect(evalGuard(doc, cmp('a', 'eq', 3, true))).toBe(true);
    expect(evalGuard(doc, cmp('a', 'lt', 4, true))).toBe(true);
    expect(evalGuard(doc, cmp('a', 'lt', 3, true))).toBe(false);
    expect(evalGuard(doc, cmp('missing', 'eq', 0, true))).toBe(true);
    expect(evalGuard(doc, cmp('missing', 'lt', 1, true))).toBe(true);
    expect(evalGuard(doc, cmp('missing', 'gt', 0, true))).toBe(false);
    expect(evalGuard(doc, cmp('n', 'eq', 0, true))).toBe(false);
    expect(evalGuard(doc, cmp('r', 'gte', 0, true))).toBe(false);
    expect(evalGuard(doc, cmp('n', 'ne', 0, true))).toBe(true);
  });

  it('contains / notContains on arrays, records, strings, missing and other fields', () => {
    const c = (field: string, value: Json): Guard => ({ guard: 'contains', field, value });
    const nc = (field: string, value: Json): Guard => ({ guard: 'notContains', field, value });
    expect(evalGuard(doc, c('a', { y: [2], x: 1 }))).toBe(true);
    expect(evalGuard(doc, c('a', { x: 1 }))).toBe(false);
    expect(evalGuard(doc, c('a', 'z'))).toBe(true);
    expect(evalGuard(doc, c('r', 'k'))).toBe(true);
    expect(evalGuard(doc, c('r', 'toString'))).toBe(true);
    expect(evalGuard(doc, c('r', 'valueOf'))).toBe(false);
    expect(evalGuard(doc, c('r', 1))).toBe(false);
    expect(evalGuard(doc, c('s', 'ell'))).toBe(true);
    expect(evalGuard(doc, c('s', ''))).toBe(true);
    expect(evalGuard(doc, c('s', 'xyz'))).toBe(false);
    expect(evalGuard(doc, c('s', 5))).toBe(false);
    expect(evalGuard(doc, c('missing', 1))).toBe(false);
    expect(evalGuard(doc, nc('missing', 1))).toBe(true);
    expect(evalGuard(doc, c('n', 5))).toBe(false);
    expect(evalGuard(doc, nc('a', 'z'))).toBe(false);
    expect(evalGuard(doc, nc('a', 'q'))).toBe(true);
  });

  it('exists', () => {
    expect(evalGuard(doc, { guard: 'exists', field: 'nil', value: true })).toBe(true);
    expect(evalGuard(doc, { guard: 'exists', field: 'nil', value: false })).toBe(false);
    expect(evalGuard(doc, { guard: 'exists', field: 'missing', value: false })).toBe(true);
    expect(evalGuard(doc, { guard: 'exists', field: 'missing', value: true })).toBe(false);
  });

  it('evalGuards / firstFalseGuard', () => {
    expect(evalGuards(doc, [])).toBe(true);
    const gs = [cmp('n', 'eq', 5), cmp('n', 'gt', 10), cmp('n', 'lt', 0)];
    expect(evalGuards(doc, gs)).toBe(false);
    expect(firstFalseGuard(doc, gs)).toBe(1);
    expect(firstFalseGuard(doc, gs.slice(0, 1))).toBe(-1);
  });

  it('guardProblem spots malformed guards; evalGuard treats them as false', () => {
    expect(guardProblem(cmp('n', 'eq', 1))).toBeUndefined();
    expect(guardProblem({ guard: 'exists', field: 'n', value: true })).toBeUndefined();
    const bad = [
      { guard: 'cmp', field: 'n', cmp: 'like', value: 1 },
      { guard: 'cmp', field: 'n', cmp: 'eq' },
      { guard: 'cmp', field: 'n', cmp: 'eq', value: Number.NaN },
      { guard: 'exists', field: 'n', value: 'yes' },
      { guard: 'nope', field: 'n', value: 1 },
      { guard: 'contains', field: 1, value: 1 },
      null,
    ] as unknown as Guard[];
    for (const g of bad) {
      expect(guardProblem(g), JSON.stringify(g)).toEqual(expect.any(String));
    }
    expect(evalGuard(doc, bad[0] as Guard)).toBe(false);
    expect(evalGuard(doc, bad[4] as Guard)).toBe(false);
  });

  it('describeGuard', () => {
    expect(describeGuard(cmp('a', 'lt', 3, true))).toBe('"a" length lt 3');
    expect(describeGuard({ guard: 'exists', field: 'a', value: false })).toBe('"a" is absent');
    expect(describeGuard({ guard: 'contains', field: 'a', value: 'x' })).toBe('"a" contains "x"');
  });
});

describe('json helpers', () => {
  it('deepEqual ignores key order, not array order', () => {
    expect(deepEqual({ a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 })).toBe(true);
    expect(deepEqual([1, 2], [2, 1])).toBe(false);
    expect(deepEqual({ a: 1 }, { a: 1, b: 2 })).toBe(false);
    expect(deepEqual({ a: undefined } as unknown as Json, { b: 1 })).toBe(false);
    expect(deepEqual([], {})).toBe(false);
    expect(deepEqual(null, {})).toBe(false);
  });

  it('copyJson copies, drops undefined properties, refuses non-JSON', () => {
    const src = { a: [1, { b: 'x' }], u: undefined };
    const c = copyJson(src) as { a: [number, { b: string }] };
    expect(c).toEqual({ a: [1, { b: 'x' }] });
    expect(c.a).not.toBe(src.a);
    expect(c.a[1]).not.toBe(src.a[1]);
    for (const bad of [
      undefined,
      () => 1,
      Symbol('s'),
      10n,
      Number.NaN,
      new Map(),
      [undefined],
      { d: new Date() },
    ]) {
      expect(() => copyJson(bad, 'data')).toThrow(NotJsonError);
    }
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => copyJson(cyclic)).toThrow(/cyclic/);
    expect(copyJson(Object.assign(Object.create(null), { a: 1 }))).toEqual({ a: 1 });
  });

  it('cloneJson (the unchecked copy) shares nothing, drops undefined, keeps __proto__ as data', () => {
    const src = JSON.parse('{"a":[1,{"b":"x"}],"__proto__":{"p":[2]},"r":{"s":{"t":null}}}');
    const c = cloneJson(src) as typeof src;
    expect(c).toEqual(src);
    expect(Object.getPrototypeOf(c)).toBe(Object.prototype);
    expect(Object.hasOwn(c, '__proto__')).toBe(true);
    expect(c.a).not.toBe(src.a);
    expect(c.a[1]).not.toBe(src.a[1]);
    expect(Object.getOwnPropertyDescriptor(c, '__proto__')?.value).not.toBe(
      Object.getOwnPropertyDescriptor(src, '__proto__')?.value,
    );
    expect(c.r.s).not.toBe(src.r.s);
    const withUndefined = { a: 1, u: undefined, n: { v: undefined, w: 2 } } as unknown as Json;
    const d = cloneJson(withUndefined);
    expect(Object.keys(d as object)).toEqual(['a', 'n']);
    expect(Object.keys((d as { n: object }).n)).toEqual(['w']);
    expect(cloneJson([1, undefined, [2]] as unknown as Json)).toEqual([1, null, [2]]);
  });

  it('cloneJson equals copyJson on JSON values (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (v) => {
        // JSON text: copyJson also turns -0 into 0, which JSON cannot tell apart.
        expect(JSON.stringify(cloneJson(v as Json))).toBe(JSON.stringify(copyJson(v)));
      }),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

const fieldArb = fc.constantFrom('a', 'b', 'c', 'n', '__proto__', 'toString');
const jsonArb: fc.Arbitrary<Json> = fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>;
const dataArb: fc.Arbitrary<Data> = fc
  .array(fc.tuple(fieldArb, jsonArb), { maxLength: 5 })
  .map((entries) => {
    const d: Data = {};
    for (const [k, v] of entries) {
      Object.defineProperty(d, k, {
        value: v,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return d;
  });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), field: fieldArb, value: jsonArb }),
  fc.record({ op: fc.constant('unset' as const), field: fieldArb }),
  fc.record({
    op: fc.constant('incr' as const),
    field: fieldArb,
    by: fc.integer({ min: -5, max: 5 }),
  }),
  fc.record({ op: fc.constant('append' as const), field: fieldArb, value: jsonArb }),
  fc.record({
    op: fc.constant('extend' as const),
    field: fieldArb,
    values: fc.array(jsonArb, { maxLength: 3 }),
  }),
  fc.record({
    op: fc.constant('insert' as const),
    field: fieldArb,
    index: fc.integer({ min: -6, max: 6 }),
    value: jsonArb,
  }),
  fc.record({ op: fc.constant('remove' as const), field: fieldArb, value: jsonArb }),
  fc.record({
    op: fc.constant('pop' as const),
    field: fieldArb,
    index: fc.integer({ min: -6, max: 6 }),
  }),
  fc.record({
    op: fc.constant('setItem' as const),
    field: fieldArb,
    item: fc.string({ maxLength: 3 }),
    value: jsonArb,
  }),
  fc.record({
    op: fc.constant('deleteItem' as const),
    field: fieldArb,
    item: fc.string({ maxLength: 3 }),
  }),
  fc.record({
    op: fc.constant('merge' as const),
    field: fieldArb,
    value: fc.dictionary(fc.string({ maxLength: 3 }), jsonArb, { maxKeys: 3 }),
  }),
);

/** A naive model of one op, written independently of the implementation (JSON round trips). */
function modelOp(d: Record<string, Json>, op: Op): { ok: boolean; result?: Json } {
  const has = Object.hasOwn(d, op.field);
  const cur = has ? d[op.field] : undefined;
  const put = (v: Json) =>
    Object.defineProperty(d, op.field, {
      value: v,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  const isArr = Array.isArray(cur);
  const isRec = typeof cur === 'object' && cur !== null && !isArr;
  switch (op.op) {
    case 'set':
      put(JSON.parse(JSON.stringify(op.value)));
      return { ok: true, result: null };
    case 'unset':
      delete d[op.field];
      return { ok: true, result: null };
    case 'incr':
      if (has && typeof cur !== 'number') return { ok: false };
      put(((cur as number | undefined) ?? 0) + op.by);
      return { ok: true, result: d[op.field] as Json };
    case 'append':
    case 'extend':
    case 'insert': {
      if (has && !isArr) return { ok: false };
      const arr = [...((cur as Json[] | undefined) ?? [])];
      if (op.op === 'append') arr.push(op.value);
      else if (op.op === 'extend') arr.push(...op.values);
      else arr.splice(op.index, 0, op.value);
      put(JSON.parse(JSON.stringify(arr)));
      return { ok: true, result: arr.length };
    }
    case 'remove': {
      if (!has) return { ok: true, result: 0 };
      if (!isArr) return { ok: false };
      const arr = cur as Json[];
      const key = (v: Json): string => JSON.stringify(sortKeys(v));
      const kept = arr.filter((x) => key(x) !== key(op.value));
      put(kept);
      return { ok: true, result: arr.length - kept.length };
    }
    case 'pop': {
      if (!has) return { ok: true, result: null };
      if (!isArr) return { ok: false };
      const arr = [...(cur as Json[])];
      const at = op.index < 0 ? arr.length + op.index : op.index;
      if (at < 0 || at >= arr.length) return { ok: true, result: null };
      const [x] = arr.splice(at, 1);
      put(arr);
      return { ok: true, result: x as Json };
    }
    case 'setItem':
    case 'merge': {
      if (has && !isRec) return { ok: false };
      const rec = JSON.parse(JSON.stringify(cur ?? {})) as Record<string, Json>;
      const entries: Array<[string, Json]> =
        op.op === 'setItem' ? [[op.item, op.value]] : Object.entries(op.value);
      for (const [k, v] of entries) {
        Object.defineProperty(rec, k, {
          value: v,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      put(rec);
      return { ok: true, result: null };
    }
    case 'deleteItem': {
      if (!has) return { ok: true, result: false };
      if (!isRec) return { ok: false };
      const rec = cur as Record<string, Json>;
      if (!Object.hasOwn(rec, op.item)) return { ok: true, result: false };
      const copy = JSON.parse(JSON.stringify(rec)) as Record<string, Json>;
      delete copy[op.item];
      put(copy);
      return { ok: true, result: true };
    }
  }
}

function sortKeys(v: Json): Json {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, Json> = {};
    for (const k of Object.keys(v).sort()) {
      Object.defineProperty(out, k, {
        value: sortKeys(v[k] as Json),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  }
  return v;
}

describe('properties', () => {
  it('applyOps never mutates its input data or ops', () => {
    fc.assert(
      fc.property(dataArb, fc.array(opArb, { maxLength: 8 }), (data, ops) => {
        const before = structuredClone(data);
        const opsBefore = structuredClone(ops);
        const r = applyOps(data, ops);
        expect(sortKeys(data)).toEqual(sortKeys(before));
        expect(ops).toEqual(opsBefore);
        if (r.ok) {
          // Results never alias the input nor the output (the output may share unchanged
          // nested values with the input: both are treated as immutable by backends).
          const outBefore = structuredClone(r.data);
          const scribble = (v: Json): void => {
            if (Array.isArray(v)) {
              for (const x of v) scribble(x);
              v.push('scribble');
            } else if (typeof v === 'object' && v !== null) {
              for (const k of Object.keys(v)) scribble(v[k] as Json);
              (v as Record<string, Json>).scribble = 1;
            }
          };
          for (const x of r.results) scribble(x);
          expect(sortKeys(data)).toEqual(sortKeys(before));
          expect(sortKeys(r.data)).toEqual(sortKeys(outBefore));
        }
      }),
      { numRuns: 500 },
    );
  });

  it('agrees with an independent naive model of every op', () => {
    fc.assert(
      fc.property(dataArb, fc.array(opArb, { maxLength: 8 }), (generated, ops) => {
        // Stored documents never hold -0 (JSON has none): start from what a backend would hold.
        const data = JSON.parse(JSON.stringify(generated)) as Record<string, Json>;
        const model = JSON.parse(JSON.stringify(data)) as Record<string, Json>;
        // JSON.parse keeps "__proto__" as an own key, as the implementation does.
        // The model sees the ops as they would cross a wire: JSON has no -0, so a value of -0
        // arrives as 0. applyOps gets the raw ops and must store and return 0 there too.
        const wireOps = JSON.parse(JSON.stringify(ops)) as typeof ops;
        const results: Json[] = [];
        let modelOk = true;
        for (const op of wireOps) {
          const r = modelOp(model, op);
          if (!r.ok) {
            modelOk = false;
            break;
          }
          results.push(r.result as Json);
        }
        const r = applyOps(data, ops);
        expect(r.ok).toBe(modelOk);
        if (r.ok) {
          expect(sortKeys(r.data)).toEqual(sortKeys(model));
          expect(r.results.map(sortKeys)).toEqual(results.map(sortKeys));
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('pop after append returns the appended value and restores the array', () => {
    fc.assert(
      fc.property(
        fc.option(fc.array(jsonArb, { maxLength: 4 }), { nil: undefined }),
        jsonArb,
        (arr, value) => {
          const data: Data = arr === undefined ? {} : { q: arr };
          const r = applyOps(data, [
            { op: 'append', field: 'q', value },
            { op: 'pop', field: 'q', index: -1 },
          ]);
          expect(r.ok).toBe(true);
          if (!r.ok) return;
          expect(deepEqual(r.results[1] as Json, value)).toBe(true);
          expect(r.data.q).toEqual(arr ?? []);
        },
      ),
    );
  });

  it('guards on missing fields follow the rules for any value', () => {
    fc.assert(
      fc.property(
        jsonArb,
        fc.constantFrom<CmpOp>('eq', 'ne', 'lt', 'lte', 'gt', 'gte'),
        (value, op) => {
          expect(evalGuard({}, cmp('f', op, value))).toBe(op === 'ne');
          expect(evalGuard({}, { guard: 'contains', field: 'f', value })).toBe(false);
          expect(evalGuard({}, { guard: 'notContains', field: 'f', value })).toBe(true);
          expect(evalGuard({}, { guard: 'exists', field: 'f', value: false })).toBe(true);
          if (typeof value === 'number') {
            const expected = {
              eq: value === 0,
              ne: value !== 0,
              lt: 0 < value,
              lte: 0 <= value,
              gt: 0 > value,
              gte: 0 >= value,
            }[op];
            expect(evalGuard({}, cmp('f', op, value, true))).toBe(expected);
          }
        },
      ),
    );
  });

  it('contains and notContains are complements; eq and ne are complements', () => {
    fc.assert(
      fc.property(dataArb, fieldArb, jsonArb, (data, field, value) => {
        expect(evalGuard(data, { guard: 'contains', field, value })).toBe(
          !evalGuard(data, { guard: 'notContains', field, value }),
        );
        expect(evalGuard(data, cmp(field, 'eq', value))).toBe(
          !evalGuard(data, cmp(field, 'ne', value)),
        );
        // eq of a field with itself (in a different key order) holds.
        if (Object.hasOwn(data, field)) {
          const self = JSON.parse(JSON.stringify(sortKeys(data[field] as Json))) as Json;
          expect(evalGuard(data, cmp(field, 'eq', self))).toBe(true);
        }
      }),
    );
  });
});
