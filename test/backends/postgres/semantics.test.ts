/**
 * PostgreSQL write semantics the contract states and this backend's own paths must keep: a patch
 * with no ops writes nothing (also when combined with other patches of the same document), a
 * guard refusal names the first false guard (combined group, general batch, lease commit),
 * field-to-field guards (`ref`), and a bad url refused at construction.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresBackend, postgres } from '../../../src/backends/postgres/index.js';
import { ValidationError } from '../../../src/errors.js';
import type { Guard, PatchWrite } from '../../../src/store/backend.js';

const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const schema = `lssem_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
let b: PostgresBackend;
let admin: pg.Client;

beforeAll(async () => {
  b = postgres({ url, schema, poolSize: 4 });
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
});

afterAll(async () => {
  await b.close();
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.end();
});

const patch = (key: string, extra: Partial<PatchWrite>): PatchWrite => ({
  kind: 'patch',
  model: 's',
  key,
  ops: [],
  ...extra,
});

describe('postgres write semantics', () => {
  it('a patch with no ops writes nothing, alone or combined with patches of the same document', async () => {
    await b.write([{ kind: 'create', model: 's', key: 'n', data: { n: 0 } }]);
    const alone = await b.write([
      patch('n', { guards: [{ guard: 'exists', field: 'n', value: true }] }),
    ]);
    expect(alone.applied && alone.docs[0]?.version).toBe(1);
    // Patches arriving together on one document are combined: the first goes alone, the rest
    // in one transaction (a refused guard in the group keeps it off the one-statement path), in
    // which an incr followed by a no-op patch must keep the incr (the group's last written row).
    const rs = await Promise.all([
      b.write([patch('n', { ops: [{ op: 'incr', field: 'n', by: 1 }] })]),
      b.write([patch('n', { ops: [{ op: 'incr', field: 'n', by: 1 }] })]),
      b.write([patch('n', { guards: [{ guard: 'exists', field: 'zz', value: true }] })]),
      b.write([patch('n', {})]),
    ]);
    expect(rs.map((r) => r.applied)).toStrictEqual([true, true, false, true]);
    const [doc] = await b.read([{ model: 's', key: 'n' }]);
    expect([doc?.data.n, doc?.version]).toStrictEqual([2, 3]);
    // a refused guard on a no-op patch is still a refusal
    const no = await b.write([
      patch('n', { guards: [{ guard: 'cmp', field: 'n', cmp: 'eq', value: 9 }] }),
    ]);
    expect(no.applied ? 'applied' : [no.reason, no.guard]).toStrictEqual(['guard', 0]);
  });

  it('a guard refusal names the first false guard, on every path', async () => {
    await b.write([
      { kind: 'create', model: 's', key: 'g', data: { n: 5, tags: ['a', 'b'], max: 2 } },
      { kind: 'create', model: 's', key: 'h', data: { n: 1 } },
    ]);
    const guards: Guard[] = [
      { guard: 'exists', field: 'n', value: true },
      { guard: 'cmp', field: 'n', cmp: 'gt', value: 1 },
      { guard: 'cmp', field: 'n', cmp: 'lt', value: 3 }, // false
      { guard: 'cmp', field: 'n', cmp: 'eq', value: 7 }, // false too, but later
    ];
    const ops = [{ op: 'incr' as const, field: 'n', by: 1 }];
    const one = await b.write([patch('g', { ops, guards })]);
    expect(one.applied ? 'applied' : [one.reason, one.index, one.guard]).toStrictEqual([
      'guard',
      0,
      2,
    ]);
    const two = await b.write([patch('h', { ops }), patch('g', { ops, guards })]);
    expect(two.applied ? 'applied' : [two.reason, two.index, two.guard]).toStrictEqual([
      'guard',
      1,
      2,
    ]);
    const lease = await b.acquire({
      model: 's',
      keys: ['g'],
      action: 'default',
      mode: 'exclusive',
      leaseMs: 5_000,
      renew: true,
      nowait: false,
      skipLocked: false,
    });
    const c = await lease?.commit([patch('g', { ops, guards })]);
    expect(c?.applied ? 'applied' : [c?.reason, c?.guard]).toStrictEqual(['guard', 2]);
    const [g] = await b.read([{ model: 's', key: 'g' }]);
    expect(g?.version).toBe(1);
  });

  it('field-to-field guards compare with the other field of the pre-image (value or length)', async () => {
    await b.write([
      { kind: 'create', model: 's', key: 'r', data: { apps: ['x'], max: 2, cap: 2 } },
    ]);
    const full: Guard = {
      guard: 'cmp',
      field: 'apps',
      cmp: 'lt',
      length: true,
      ref: { field: 'max' },
    };
    const add = (v: string) =>
      b.write([patch('r', { ops: [{ op: 'append', field: 'apps', value: v }], guards: [full] })]);
    expect((await add('y')).applied).toBe(true);
    const refused = await add('z'); // 2 < 2 is false
    expect(refused.applied ? 'applied' : [refused.reason, refused.guard]).toStrictEqual([
      'guard',
      0,
    ]);
    const check = async (g: Guard) => {
      const r = await b.write([patch('r', { guards: [g] })]);
      return r.applied;
    };
    expect(await check({ guard: 'cmp', field: 'max', cmp: 'eq', ref: { field: 'cap' } })).toBe(
      true,
    );
    expect(
      await check({ guard: 'cmp', field: 'max', cmp: 'eq', ref: { field: 'apps', length: true } }),
    ).toBe(true);
    // a missing ref field: ne holds, every other comparison is false
    expect(await check({ guard: 'cmp', field: 'max', cmp: 'ne', ref: { field: 'nope' } })).toBe(
      true,
    );
    expect(await check({ guard: 'cmp', field: 'max', cmp: 'eq', ref: { field: 'nope' } })).toBe(
      false,
    );
    expect(await check({ guard: 'cmp', field: 'max', cmp: 'lt', ref: { field: 'nope' } })).toBe(
      false,
    );
    // a missing ref field's length is 0
    expect(
      await check({ guard: 'cmp', field: 'max', cmp: 'gt', ref: { field: 'nope', length: true } }),
    ).toBe(true);
  });

  it('postgres({ url }) refuses a url that is not PostgreSQL at construction', () => {
    for (const bad of ['not a url', 'http://example.test/db', '']) {
      let caught: unknown;
      try {
        postgres({ url: bad, schema });
      } catch (err) {
        caught = err;
      }
      if (bad === '') continue; // empty: "give { url } or { pool }" (also a ValidationError)
      expect(caught).toBeInstanceOf(ValidationError);
      expect((caught as ValidationError).code).toBe('INVALID');
    }
    const ok = postgres({ url, schema });
    return ok.close();
  });
});
