import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { memory } from '../../../src/backends/memory/index.js';
import { BackendError, ValidationError } from '../../../src/errors.js';
import { applyOps, evalGuard } from '../../../src/store/apply-ops.js';
import type {
  CheckIssue,
  Data,
  DocWrite,
  Guard,
  Json,
  Op,
  PatchWrite,
  StoredDoc,
  WriteResult,
} from '../../../src/store/backend.js';
import { bounded } from '../../../src/store/boundary.js';

const M = 'thing';

function patch(key: string, ops: Op[], extra: Partial<PatchWrite> = {}): PatchWrite {
  return { kind: 'patch', model: M, key, ops, ...extra };
}
const incr = (field: string, by = 1): Op => ({ op: 'incr', field, by });
const set = (field: string, value: Json): Op => ({ op: 'set', field, value });

async function get(b: ReturnType<typeof memory>, key: string): Promise<StoredDoc | undefined> {
  const [d] = await b.read([{ model: M, key }]);
  return d;
}

function applied(r: WriteResult): Extract<WriteResult, { applied: true }> {
  if (!r.applied) throw new Error(`expected applied, got ${JSON.stringify(r)}`);
  return r;
}

describe('memory backend: basics', () => {
  it('is named memory; create gives version 1 and every write bumps by 1', async () => {
    const b = memory();
    expect(b.name).toBe('memory');
    const r = applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { n: 1 } }]));
    expect(r.docs).toEqual([
      { key: 'k', version: 1, incarnation: expect.any(String), data: { n: 1 } },
    ]);
    expect(r.results).toEqual([[]]);
    applied(await b.write([patch('k', [incr('n')])]));
    // A patch with no ops writes nothing: the version stays.
    const none = applied(await b.write([patch('k', [])]));
    expect(none.docs[0]?.version).toBe(2);
    expect(none.results).toEqual([[]]);
    applied(await b.write([{ kind: 'put', model: M, key: 'k', data: { m: 1 } }]));
    expect(await get(b, 'k')).toEqual({
      key: 'k',
      version: 3,
      incarnation: expect.any(String),
      data: { m: 1 },
    });
    // Two writes on one document in one batch apply in order, each bumping the version.
    const r2 = applied(await b.write([patch('k', [incr('m')]), patch('k', [incr('m', 10)])]));
    expect(r2.docs.map((d) => d?.version)).toEqual([4, 5]);
    expect(r2.results).toEqual([[2], [12]]);
    expect(await get(b, 'k')).toEqual({
      key: 'k',
      version: 5,
      incarnation: expect.any(String),
      data: { m: 12 },
    });
  });

  it('create refuses an existing key; put upserts', async () => {
    const b = memory();
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: {} }]));
    expect(await b.write([{ kind: 'create', model: M, key: 'k', data: { x: 1 } }])).toMatchObject({
      applied: false,
      reason: 'exists',
      index: 0,
    });
    const r = applied(await b.write([{ kind: 'put', model: M, key: 'new', data: { x: 1 } }]));
    expect(r.docs[0]).toEqual({
      key: 'new',
      version: 1,
      incarnation: expect.any(String),
      data: { x: 1 },
    });
  });

  it('delete: [existed]; expectVersion refuses version / missing', async () => {
    const b = memory();
    expect(applied(await b.write([{ kind: 'delete', model: M, key: 'k' }])).results).toEqual([
      [false],
    ]);
    expect(await b.write([{ kind: 'delete', model: M, key: 'k', expectVersion: 1 }])).toMatchObject(
      { applied: false, reason: 'missing', index: 0 },
    );
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: {} }]));
    expect(await b.write([{ kind: 'delete', model: M, key: 'k', expectVersion: 2 }])).toMatchObject(
      { applied: false, reason: 'version' },
    );
    const r = applied(await b.write([{ kind: 'delete', model: M, key: 'k', expectVersion: 1 }]));
    expect(r).toEqual({ applied: true, docs: [undefined], results: [[true]] });
    expect(await get(b, 'k')).toBeUndefined();
    // Created again: version 1 again.
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: {} }]));
    expect((await get(b, 'k'))?.version).toBe(1);
  });

  it('patch: missing, expectVersion, guards, invalid ops', async () => {
    const b = memory();
    expect(await b.write([patch('nope', [incr('n')])])).toMatchObject({
      applied: false,
      reason: 'missing',
      index: 0,
    });
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { n: 1, s: 'x' } }]));
    expect(await b.write([patch('k', [incr('n')], { expectVersion: 7 })])).toMatchObject({
      applied: false,
      reason: 'version',
    });
    applied(await b.write([patch('k', [incr('n')], { expectVersion: 1 })]));
    const g = await b.write([
      patch('k', [incr('n')], {
        guards: [
          { guard: 'exists', field: 'n', value: true },
          { guard: 'cmp', field: 'n', cmp: 'lt', value: 2 },
        ],
      }),
    ]);
    expect(g).toMatchObject({ applied: false, reason: 'guard', index: 0, guard: 1 });
    expect(!g.applied && g.detail).toMatch(/guard #1 \("n" lt 2\) is false/);
    const inv = await b.write([patch('k', [incr('n'), incr('s')])]);
    expect(inv).toMatchObject({ applied: false, reason: 'invalid', index: 0 });
    expect(!inv.applied && inv.detail).toMatch(/op #1 \(incr\) on field "s"/);
    // A malformed guard never reaches the backend: the boundary refuses it.
    await expect(
      bounded(b).write([
        patch('k', [incr('n')], {
          guards: [{ guard: 'cmp', field: 'n', cmp: 'like', value: 1 } as never],
        }),
      ]),
    ).rejects.toBeInstanceOf(ValidationError);
    expect(await get(b, 'k')).toEqual({
      key: 'k',
      version: 2,
      incarnation: expect.any(String),
      data: { n: 2, s: 'x' },
    });
  });

  it('incarnation: stable over a life, new after delete + create; expectIncarnation refuses ABA', async () => {
    const b = memory();
    const first = applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { n: 0 } }]))
      .docs[0] as StoredDoc;
    expect(first.incarnation).toEqual(expect.any(String));
    applied(await b.write([patch('k', [incr('n')])]));
    applied(await b.write([{ kind: 'put', model: M, key: 'k', data: { n: 5 } }]));
    const same = await get(b, 'k');
    expect(same?.incarnation).toBe(first.incarnation);
    applied(
      await b.write([
        patch('k', [incr('n')], { expectVersion: 3, expectIncarnation: first.incarnation }),
      ]),
    );
    applied(await b.write([{ kind: 'delete', model: M, key: 'k' }]));
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { n: 100 } }]));
    const again = await get(b, 'k');
    expect(again?.version).toBe(1);
    expect(again?.incarnation).not.toBe(first.incarnation);
    // A stale read at version 1 of the first life: the version matches, the incarnation does not.
    const r = await b.write([
      patch('k', [set('n', 1)], { expectVersion: 1, expectIncarnation: first.incarnation }),
    ]);
    expect(r).toMatchObject({ applied: false, reason: 'version', index: 0 });
    expect((await get(b, 'k'))?.data).toEqual({ n: 100 });
    // Another backend instance never hands out the same incarnation.
    const other = memory();
    const o = applied(await other.write([{ kind: 'create', model: M, key: 'k', data: {} }]));
    expect(o.docs[0]?.incarnation).not.toBe(first.incarnation);
    expect(o.docs[0]?.incarnation).not.toBe(again?.incarnation);
  });

  it('refuses non-JSON or non-object data with invalid, and changes nothing', async () => {
    const b = memory();
    for (const data of [{ d: new Date() }, [1], null, { n: Number.NaN }, { f: () => 1 }]) {
      const r = await b.write([
        { kind: 'create', model: M, key: 'k', data: data as unknown as Data },
      ]);
      expect(r).toMatchObject({ applied: false, reason: 'invalid', index: 0 });
    }
    expect(await get(b, 'k')).toBeUndefined();
    expect(b.stats().documents).toBe(0);
  });

  it('behind the boundary: ValidationError for malformed refs and kinds; BackendError after close', async () => {
    const b = memory();
    const checked = bounded(b);
    await expect(checked.read([{ model: 'bad name', key: 'k' }])).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(checked.read([{ model: M, key: '' }])).rejects.toBeInstanceOf(ValidationError);
    await expect(
      checked.write([{ kind: 'upsert', model: M, key: 'k', data: {} } as unknown as DocWrite]),
    ).rejects.toBeInstanceOf(ValidationError);
    await b.close();
    await expect(b.read([{ model: M, key: 'k' }])).rejects.toBeInstanceOf(BackendError);
    await expect(b.write([])).rejects.toBeInstanceOf(BackendError);
    await b.close(); // idempotent
  });

  it('keys and fields may hold any character, including prototype names', async () => {
    const b = memory();
    const keys = ['a:b', '{x}', '"q"', 'é😀', '__proto__', 'constructor', 'a\nb'];
    for (const key of keys) {
      applied(
        await b.write([
          { kind: 'create', model: M, key, data: JSON.parse('{"__proto__": 1, "toString": 2}') },
        ]),
      );
    }
    const docs = await b.read(keys.map((key) => ({ model: M, key })));
    for (const [i, d] of docs.entries()) {
      expect(d?.key).toBe(keys[i]);
      expect(Object.keys(d?.data ?? {}).sort()).toEqual(['__proto__', 'toString']);
      expect(Object.getPrototypeOf(d?.data)).toBe(Object.prototype);
    }
    // The same key in another model is another document.
    expect(await b.read([{ model: 'other', key: 'a:b' }])).toEqual([undefined]);
  });
});

describe('memory backend: isolation', () => {
  it('nothing returned or passed in aliases stored state', async () => {
    const b = memory();
    const input = { tags: ['a'], meta: { k: 1 } };
    const r = applied(await b.write([{ kind: 'create', model: M, key: 'k', data: input }]));
    input.tags.push('in');
    (r.docs[0]?.data.tags as Json[]).push('returned');
    const [read1] = await b.read([{ model: M, key: 'k' }]);
    (read1?.data.meta as Record<string, Json>).k = 99;
    const value = { deep: [1] };
    const r2 = applied(
      await b.write([
        patch('k', [
          { op: 'append', field: 'tags', value },
          { op: 'pop', field: 'tags', index: 0 },
        ]),
      ]),
    );
    value.deep.push(2);
    (r2.docs[0]?.data.tags as Json[]).push('again');
    expect(r2.results[0]).toEqual([2, 'a']);
    const lease = await b.acquire({
      model: M,
      keys: ['k'],
      action: 'default',
      mode: 'exclusive',
      leaseMs: 1000,
      renew: true,
      nowait: false,
      skipLocked: false,
    });
    (lease?.docs[0]?.data.tags as Json[]).push('lease');
    await lease?.release();
    expect(await get(b, 'k')).toEqual({
      key: 'k',
      version: 2,
      incarnation: expect.any(String),
      data: { tags: [{ deep: [1] }], meta: { k: 1 } },
    });
  });

  it('a field named __proto__ holding an object is stored, copied and isolated as a field', async () => {
    const b = memory();
    const data = JSON.parse('{"__proto__": {"x": [1]}, "n": 1}') as Data;
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data }]));
    const [d] = await b.read([{ model: M, key: 'k' }]);
    expect(Object.getPrototypeOf(d?.data)).toBe(Object.prototype);
    const field = Object.getOwnPropertyDescriptor(d?.data, '__proto__')?.value as { x: number[] };
    expect(field).toEqual({ x: [1] });
    field.x.push(2);
    applied(await b.write([patch('k', [incr('n')])]));
    const [again] = await b.read([{ model: M, key: 'k' }]);
    expect(Object.getOwnPropertyDescriptor(again?.data, '__proto__')?.value).toEqual({ x: [1] });
    expect(({} as { x?: unknown }).x).toBeUndefined();
  });

  it('a post-check that mutates its argument cannot change what is stored', async () => {
    const b = memory();
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { n: 1 } }]));
    const r = applied(
      await b.write([
        patch('k', [incr('n')], {
          check: (d) => {
            d.n = 1000;
            d.extra = true;
            return undefined;
          },
        }),
      ]),
    );
    expect(r.results).toEqual([[2]]);
    expect(await get(b, 'k')).toEqual({
      key: 'k',
      version: 2,
      incarnation: expect.any(String),
      data: { n: 2 },
    });
  });

  it('property: any sequence of batches matches a sequential all-or-nothing model, whatever callers mutate', async () => {
    const keyArb = fc.constantFrom('a', 'b', 'c');
    const jsonArb = fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>;
    const opArb: fc.Arbitrary<Op> = fc.oneof(
      fc.record({
        op: fc.constant('incr' as const),
        field: fc.constantFrom('n', 's'),
        by: fc.integer({ min: -3, max: 3 }),
      }),
      fc.record({
        op: fc.constant('append' as const),
        field: fc.constantFrom('l', 'n'),
        value: jsonArb,
      }),
      fc.record({
        op: fc.constant('pop' as const),
        field: fc.constant('l'),
        index: fc.integer({ min: -2, max: 2 }),
      }),
      fc.record({
        op: fc.constant('set' as const),
        field: fc.constantFrom('s', 'n'),
        value: jsonArb,
      }),
      fc.record({ op: fc.constant('unset' as const), field: fc.constantFrom('s', 'l') }),
    );
    const guardArb: fc.Arbitrary<Guard> = fc.oneof(
      fc.record({
        guard: fc.constant('cmp' as const),
        field: fc.constantFrom('n', 'l'),
        cmp: fc.constantFrom('lt' as const, 'gte' as const, 'eq' as const, 'ne' as const),
        value: fc.integer({ min: -2, max: 3 }),
        length: fc.boolean(),
      }),
      fc.record({
        guard: fc.constant('exists' as const),
        field: fc.constantFrom('s', 'l'),
        value: fc.boolean(),
      }),
    );
    const versionArb = fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined });
    const writeArb: fc.Arbitrary<DocWrite> = fc.oneof(
      fc.record({
        kind: fc.constant('create' as const),
        model: fc.constant(M),
        key: keyArb,
        data: fc.constant<Data>({ n: 0, l: [] }),
      }),
      fc.record({
        kind: fc.constant('put' as const),
        model: fc.constant(M),
        key: keyArb,
        data: fc.constant<Data>({ n: 10, s: 'put' }),
      }),
      fc.record({
        kind: fc.constant('delete' as const),
        model: fc.constant(M),
        key: keyArb,
        expectVersion: versionArb,
      }),
      fc.record({
        kind: fc.constant('patch' as const),
        model: fc.constant(M),
        key: keyArb,
        ops: fc.array(opArb, { maxLength: 3 }),
        guards: fc.array(guardArb, { maxLength: 2 }),
        expectVersion: versionArb,
      }),
    );
    type ModelDoc = { version: number; data: Data };
    const copy = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;
    /** The model: sequential writes on a copy; the first refusal discards the whole batch. */
    function model(
      state: Map<string, ModelDoc>,
      batch: DocWrite[],
    ): {
      next: Map<string, ModelDoc>;
      refusal?: { reason: string; index: number };
      results?: Json[][];
    } {
      const next = new Map([...state].map(([k, d]) => [k, copy(d)]));
      const results: Json[][] = [];
      for (const [index, w] of batch.entries()) {
        const cur = next.get(w.key);
        const no = (reason: string) => ({ next: state, refusal: { reason, index } });
        if (w.kind === 'create') {
          if (cur) return no('exists');
          next.set(w.key, { version: 1, data: copy(w.data) });
          results.push([]);
        } else if (w.kind === 'put') {
          next.set(w.key, { version: (cur?.version ?? 0) + 1, data: copy(w.data) });
          results.push([]);
        } else if (w.kind === 'delete') {
          if (!cur && w.expectVersion !== undefined) return no('missing');
          if (cur && w.expectVersion !== undefined && w.expectVersion !== cur.version) {
            return no('version');
          }
          next.delete(w.key);
          results.push([cur !== undefined]);
        } else {
          if (!cur) return no('missing');
          if (w.expectVersion !== undefined && w.expectVersion !== cur.version)
            return no('version');
          if (!(w.guards ?? []).every((g) => evalGuard(cur.data, g))) return no('guard');
          const r = applyOps(cur.data, w.ops);
          if (!r.ok) return no('invalid');
          // A patch with no ops writes nothing (its guards decided).
          if (w.ops.length > 0) next.set(w.key, { version: cur.version + 1, data: copy(r.data) });
          results.push(copy(r.results));
        }
      }
      return { next, results };
    }
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(writeArb, { minLength: 1, maxLength: 3 }), { maxLength: 12 }),
        async (batches) => {
          const b = memory();
          let state = new Map<string, ModelDoc>();
          for (const batch of batches) {
            const expected = model(state, batch);
            const r = await b.write(batch);
            if (expected.refusal) {
              expect(r).toMatchObject({ applied: false, ...expected.refusal });
            } else {
              expect(r.applied).toBe(true);
              if (!r.applied) return;
              expect(r.results).toEqual(expected.results);
              // Scribble on everything returned: storage must not change.
              for (const d of r.docs) if (d) (d.data as Record<string, Json>).n = -1e9;
              for (const res of r.results) for (const x of res) if (Array.isArray(x)) x.push('x');
            }
            state = expected.next;
            const keys = ['a', 'b', 'c'];
            const reads = await b.read(keys.map((key) => ({ model: M, key })));
            for (const [i, key] of keys.entries()) {
              const want = state.get(key);
              const got = reads[i];
              expect(
                got === undefined ? undefined : { version: got.version, data: got.data },
              ).toEqual(want);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('memory backend: all-or-nothing across documents', () => {
  async function setup() {
    const b = memory();
    applied(
      await b.write([
        { kind: 'create', model: M, key: 'a', data: { n: 10, l: [] } },
        { kind: 'create', model: M, key: 'b', data: { n: 0, l: 'not a list' } },
        { kind: 'create', model: 'other', key: 'a', data: { n: 0 } },
      ]),
    );
    return b;
  }
  const snapshot = async (b: ReturnType<typeof memory>) =>
    b.read([
      { model: M, key: 'a' },
      { model: M, key: 'b' },
      { model: 'other', key: 'a' },
      { model: M, key: 'c' },
    ]);

  const failing: Array<[string, DocWrite, string]> = [
    [
      'guard',
      patch('b', [incr('n')], { guards: [{ guard: 'cmp', field: 'n', cmp: 'gt', value: 5 }] }),
      'guard',
    ],
    ['invalid op', patch('b', [{ op: 'append', field: 'l', value: 1 }]), 'invalid'],
    ['missing', patch('zzz', [incr('n')]), 'missing'],
    ['exists', { kind: 'create', model: M, key: 'b', data: {} }, 'exists'],
    ['version', patch('b', [incr('n')], { expectVersion: 9 }), 'version'],
    ['conflict', patch('b', [incr('n')], { fieldsUnchangedSince: 0 }), 'conflict'],
    ['check', patch('b', [incr('n')], { check: () => [{ message: 'no' }] }), 'invalid'],
    ['async check', patch('b', [incr('n')], { check: async () => [{ message: 'no' }] }), 'invalid'],
  ];
  for (const [name, bad, reason] of failing) {
    it(`a refused write (${name}) at the end leaves every earlier write unapplied`, async () => {
      const b = await setup();
      const before = await snapshot(b);
      const r = await b.write([
        patch('a', [incr('n', -5), { op: 'append', field: 'l', value: 'x' }]),
        { kind: 'create', model: M, key: 'c', data: { n: 1 } },
        { kind: 'delete', model: 'other', key: 'a' },
        bad,
      ]);
      expect(r).toMatchObject({ applied: false, reason, index: 3 });
      expect(await snapshot(b)).toEqual(before);
    });
  }

  it('reports the first refusal in batch order, even behind an async check', async () => {
    const b = await setup();
    const r = await b.write([
      patch('a', [incr('n')], {
        check: async () => {
          await new Promise((r) => setImmediate(r));
          return [{ message: 'first', path: ['n'] }];
        },
      }),
      patch('b', [incr('n')], { guards: [{ guard: 'exists', field: 'n', value: false }] }),
    ]);
    expect(r).toEqual({
      applied: false,
      reason: 'invalid',
      index: 0,
      detail: expect.stringContaining('fails the schema'),
      issues: [{ message: 'first', path: ['n'] }],
    });
    const r2 = await b.write([
      patch('a', [incr('n')], { check: async () => undefined }),
      patch('b', [incr('n')], { guards: [{ guard: 'exists', field: 'n', value: false }] }),
    ]);
    expect(r2).toMatchObject({ applied: false, reason: 'guard', index: 1 });
  });

  it('a check that throws rejects the write and writes nothing', async () => {
    const b = await setup();
    const before = await snapshot(b);
    await expect(
      b.write([
        patch('a', [incr('n')], { check: async () => Promise.reject(new Error('async boom')) }),
      ]),
    ).rejects.toThrow('async boom');
    await expect(
      b.write([
        patch('a', [incr('n')], { check: async () => undefined }),
        patch('b', [incr('n')], {
          check: () => {
            throw new Error('sync boom');
          },
        }),
      ]),
    ).rejects.toThrow('sync boom');
    expect(await snapshot(b)).toEqual(before);
  });

  it('post-checks see the post-image, sync and async', async () => {
    const b = await setup();
    const seen: Data[] = [];
    const check = (d: Data): readonly CheckIssue[] | undefined => {
      seen.push(structuredClone(d));
      return (d.n as number) < 0 ? [{ message: 'n below 0', path: ['n'] }] : undefined;
    };
    applied(await b.write([patch('a', [incr('n', -10)], { check })]));
    expect(seen).toEqual([{ n: 0, l: [] }]);
    const r = await b.write([patch('a', [incr('n', -1)], { check: async (d) => check(d) })]);
    expect(r).toMatchObject({
      applied: false,
      reason: 'invalid',
      issues: [{ message: 'n below 0' }],
    });
    expect((await get(b, 'a'))?.data.n).toBe(0);
  });
});

describe('memory backend: per-field conflicts (fieldsUnchangedSince)', () => {
  it('refuses only when a field the patch touches was written after `since`', async () => {
    const b = memory();
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { a: 0, b: 0, c: 0 } }]));
    applied(await b.write([patch('k', [incr('a')])])); // v2 writes a
    applied(await b.write([patch('k', [incr('c')])])); // v3 writes c
    // Read at v1: b and a new field untouched since → ok.
    applied(await b.write([patch('k', [set('b', 5), set('d', 1)], { fieldsUnchangedSince: 1 })])); // v4
    const r = await b.write([patch('k', [set('e', 6), set('a', 9)], { fieldsUnchangedSince: 1 })]);
    expect(r).toMatchObject({ applied: false, reason: 'conflict', index: 0 });
    expect(!r.applied && r.detail).toMatch(/field "a" was written at version 2/);
    // Read at v2: c (v3) conflicts, a (v2) does not.
    expect(await b.write([patch('k', [set('a', 1)], { fieldsUnchangedSince: 2 })])).toMatchObject({
      applied: true,
    }); // v5
    expect(await b.write([patch('k', [set('c', 1)], { fieldsUnchangedSince: 2 })])).toMatchObject({
      applied: false,
      reason: 'conflict',
    });
    // An unset counts as a write of that field.
    applied(await b.write([{ ...patch('k', [{ op: 'unset', field: 'd' }]) }])); // v6
    expect(await b.write([patch('k', [set('d', 2)], { fieldsUnchangedSince: 5 })])).toMatchObject({
      reason: 'conflict',
    });
    // A put rewrites every field (even ones it removed).
    applied(await b.write([{ kind: 'put', model: M, key: 'k', data: { a: 1 } }])); // v7
    for (const f of ['a', 'b', 'zzz']) {
      expect(await b.write([patch('k', [set(f, 1)], { fieldsUnchangedSince: 6 })])).toMatchObject({
        reason: 'conflict',
      });
    }
    applied(await b.write([patch('k', [set('b', 1)], { fieldsUnchangedSince: 7 })]));
    expect((await get(b, 'k'))?.version).toBe(8);
  });

  it('a document deleted and created again since the read conflicts', async () => {
    const b = memory();
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { a: 0 } }]));
    for (let i = 0; i < 3; i++) applied(await b.write([patch('k', [incr('a')])])); // v4
    applied(await b.write([{ kind: 'delete', model: M, key: 'k' }]));
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { a: 0 } }])); // v1
    expect(await b.write([patch('k', [set('b', 1)], { fieldsUnchangedSince: 4 })])).toMatchObject({
      reason: 'conflict',
    });
  });
});

describe('memory backend: per-field versions against a reference model', () => {
  // Field versions are kept compactly (the latest single-field patch apart from the per-field
  // record); this checks every conflict answer against a plain per-field map.
  const fieldArb = fc.constantFrom('a', 'b', 'c', '__proto__');
  const stepArb = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        t: fc.constant('patch' as const),
        fields: fc.array(fieldArb, { minLength: 1, maxLength: 3 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        t: fc.constant('batch' as const),
        a: fc.array(fieldArb, { minLength: 1, maxLength: 2 }),
        b: fc.array(fieldArb, { minLength: 1, maxLength: 2 }),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        t: fc.constant('put' as const),
        fields: fc.array(fieldArb, { maxLength: 2 }),
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        t: fc.constant('check' as const),
        fields: fc.array(fieldArb, { minLength: 1, maxLength: 2 }),
        back: fc.nat(6),
      }),
    },
  );
  it('a conflict is reported exactly when a patched field was written after `since`', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { maxLength: 30 }), async (steps) => {
        const b = memory();
        applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { a: 0 } }]));
        let version = 1;
        let replacedAt = 1;
        const written = new Map<string, number>();
        const record = (fields: string[], at: number) => {
          for (const f of fields) written.set(f, at);
        };
        for (const step of steps) {
          if (step.t === 'patch') {
            applied(
              await b.write([
                patch(
                  'k',
                  step.fields.map((f) => set(f, version)),
                ),
              ]),
            );
            record(step.fields, ++version);
          } else if (step.t === 'batch') {
            applied(
              await b.write([
                patch(
                  'k',
                  step.a.map((f) => set(f, 1)),
                ),
                patch(
                  'k',
                  step.b.map((f) => set(f, 2)),
                ),
              ]),
            );
            record(step.a, ++version);
            record(step.b, ++version);
          } else if (step.t === 'put') {
            const data: Data = {};
            for (const f of step.fields)
              Object.defineProperty(data, f, {
                value: 1,
                enumerable: true,
                writable: true,
                configurable: true,
              });
            applied(await b.write([{ kind: 'put', model: M, key: 'k', data }]));
            replacedAt = ++version;
            written.clear();
          } else {
            const since = Math.max(0, version - step.back);
            const last = Math.max(
              ...step.fields.map((f) => Math.max(written.get(f) ?? 0, replacedAt)),
            );
            const r = await b.write([
              patch(
                'k',
                step.fields.map((f) => set(f, 3)),
                { fieldsUnchangedSince: since },
              ),
            ]);
            if (last > since) {
              expect(r).toMatchObject({ applied: false, reason: 'conflict' });
            } else {
              expect(r).toMatchObject({ applied: true });
              record(step.fields, ++version);
            }
          }
        }
        expect((await get(b, 'k'))?.version).toBe(version);
      }),
      { numRuns: 300 },
    );
  });
});

describe('memory backend: concurrency without lost updates', () => {
  it('many concurrent compare-and-set loops, atomic incrs and async-checked writes', async () => {
    const b = memory();
    applied(
      await b.write([{ kind: 'create', model: M, key: 'hot', data: { n: 0, m: 0, log: [] } }]),
    );
    const tasks = 24;
    const rounds = 25;
    const slowCheck = async (d: Data) => {
      for (let i = 0; i < 3; i++) await Promise.resolve();
      return typeof d.n === 'number' ? undefined : [{ message: 'n must be a number' }];
    };
    await Promise.all(
      Array.from({ length: tasks }, async (_, t) => {
        for (let r = 0; r < rounds; r++) {
          if (t % 3 === 0) {
            // Optimistic: read, compute, write with expectVersion, retry.
            for (;;) {
              const d = await get(b, 'hot');
              await new Promise((res) => setImmediate(res));
              const w = await b.write([
                patch('hot', [set('n', (d?.data.n as number) + 1)], { expectVersion: d?.version }),
              ]);
              if (w.applied) break;
              expect(w).toMatchObject({ reason: 'version' });
            }
          } else if (t % 3 === 1) {
            applied(
              await b.write([patch('hot', [incr('n'), { op: 'append', field: 'log', value: t }])]),
            );
          } else {
            applied(await b.write([patch('hot', [incr('n'), incr('m')], { check: slowCheck })]));
          }
        }
      }),
    );
    const d = await get(b, 'hot');
    expect(d?.data.n).toBe(tasks * rounds);
    expect((d?.data.log as Json[]).length).toBe((tasks / 3) * rounds);
    expect(d?.data.m).toBe((tasks / 3) * rounds);
    expect(d?.version).toBe(1 + tasks * rounds);
    expect(b.stats()).toMatchObject({ reservations: 0, leases: 0, locks: 0 });
  });

  it('fc.scheduler: interleaved CAS writers across two documents never lose a transfer', async () => {
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), fc.integer({ min: 2, max: 6 }), async (s, n) => {
        const b = memory();
        applied(
          await b.write([
            { kind: 'create', model: M, key: 'x', data: { v: 100 } },
            { kind: 'create', model: M, key: 'y', data: { v: 100 } },
          ]),
        );
        const transfer = async (amount: number) => {
          for (;;) {
            const [x, y] = await s.schedule(
              b.read([
                { model: M, key: 'x' },
                { model: M, key: 'y' },
              ]),
            );
            const r = await s.schedule(
              b.write([
                patch('x', [set('v', (x?.data.v as number) - amount)], {
                  expectVersion: x?.version,
                }),
                patch('y', [set('v', (y?.data.v as number) + amount)], {
                  expectVersion: y?.version,
                }),
              ]),
            );
            if (r.applied) return;
          }
        };
        const atomic = (amount: number) =>
          s
            .schedule(Promise.resolve())
            .then(() =>
              b.write([patch('x', [incr('v', -amount)]), patch('y', [incr('v', amount)])]),
            );
        const all = Promise.all(
          Array.from({ length: n }, (_, i) => (i % 2 ? transfer(i + 1) : atomic(i + 1))),
        );
        await s.waitFor(all);
        const [x, y] = await b.read([
          { model: M, key: 'x' },
          { model: M, key: 'y' },
        ]);
        let moved = 0;
        for (let i = 0; i < n; i++) moved += i + 1;
        expect(x?.data.v).toBe(100 - moved);
        expect(y?.data.v).toBe(100 + moved);
      }),
      { numRuns: 100 },
    );
  });
});

describe('memory backend: async post-checks never install an unchecked image', () => {
  it('re-evaluates when the document moved while the check ran', async () => {
    const b = memory();
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { n: 0 } }]));
    const seen: number[] = [];
    let interfered: Promise<WriteResult> | undefined;
    const r = await b.write([
      patch('k', [incr('n', 10)], {
        check: async (d) => {
          seen.push(d.n as number);
          // The first time, someone else writes while this check is pending.
          interfered ??= b.write([patch('k', [incr('n', 1)])]);
          await new Promise((res) => setImmediate(res));
          return undefined;
        },
      }),
    ]);
    expect(applied(await (interfered as Promise<WriteResult>)).results).toEqual([[1]]);
    expect(applied(r).results).toEqual([[11]]);
    expect(seen).toEqual([10, 11]);
    expect(await get(b, 'k')).toEqual({
      key: 'k',
      version: 3,
      incarnation: expect.any(String),
      data: { n: 11 },
    });
    expect(b.stats().reservations).toBe(0);
  });

  it('a slow async writer still completes while sync writers hammer the document', async () => {
    const b = memory();
    applied(await b.write([{ kind: 'create', model: M, key: 'k', data: { n: 0 } }]));
    let stop = false;
    let checks = 0;
    const slow = b
      .write([
        patch('k', [incr('n', 1000)], {
          check: async () => {
            checks++;
            for (let i = 0; i < 20; i++) await new Promise((res) => setImmediate(res));
            return undefined;
          },
        }),
      ])
      .finally(() => {
        stop = true;
      });
    let fast = 0;
    const hammers = Array.from({ length: 8 }, async () => {
      while (!stop) {
        applied(await b.write([patch('k', [incr('n')])]));
        fast++;
        // Yield to the event loop (memory writes settle in microtasks; the check waits on setImmediate).
        if (fast % 4 === 0) await new Promise((res) => setImmediate(res));
      }
    });
    await Promise.all([slow, ...hammers]);
    expect(applied(await slow).applied).toBe(true);
    expect(checks).toBeGreaterThanOrEqual(2); // it had to recompute at least once
    expect((await get(b, 'k'))?.data.n).toBe(1000 + fast);
  });
});
