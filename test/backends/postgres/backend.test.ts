/**
 * PostgreSQL-specific guarantees of the backend, against a real server: exact numbers through
 * jsonb, data jsonb cannot hold, hostile keys, migrations, pools we own vs pools we were given,
 * row-lock mode, fences stamped on rows, SQLSTATE classification, and no lost update when many
 * tasks on two backends mix every write path.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  classify,
  migrationSql,
  type PostgresBackend,
  postgres,
  sqlState,
} from '../../../src/backends/postgres/index.js';
import {
  BackendError,
  ConflictError,
  DeadlockError,
  LockBusyError,
  LockTimeoutError,
} from '../../../src/errors.js';
import type { LeaseRequest, PatchWrite } from '../../../src/store/backend.js';
import { createStore } from '../../../src/store/index.js';
import { trackedLocks } from '../../../src/sync/tracked-leases.js';

const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const schema = `lspg_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
let pool: pg.Pool;
let b0: PostgresBackend;
let b1: PostgresBackend;

beforeAll(() => {
  pool = new pg.Pool({ connectionString: url, max: 4 });
  b0 = postgres({ pool }, { schema });
  b1 = postgres({ url, schema, poolSize: 4 });
});

afterAll(async () => {
  await b0.close();
  await b1.close();
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
});

const lease = (model: string, keys: string[], extra: Partial<LeaseRequest> = {}): LeaseRequest => ({
  model,
  keys,
  action: 'default',
  mode: 'exclusive',
  leaseMs: 30_000,
  renew: true,
  nowait: false,
  skipLocked: false,
  ...extra,
});

describe('postgres backend', () => {
  it('a lock commit checks the schema in one message while the document has not moved', async () => {
    // Every statement text sent on this pool's connections.
    const seen: string[] = [];
    const spied = new pg.Pool({ connectionString: url, max: 4 });
    spied.on('connect', (client) => {
      const query = client.query.bind(client) as (...a: unknown[]) => unknown;
      (client as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
        const q = a[0] as string | { text?: string };
        seen.push(typeof q === 'string' ? q : (q.text ?? ''));
        return query(...a);
      };
    });
    const store = createStore(postgres({ pool: spied }, { schema }));
    const other = createStore(postgres({ url, schema, poolSize: 2 }));
    try {
      const rule = z
        .object({ a: z.number().int(), b: z.number().int() })
        .refine((d) => d.a + d.b <= 10, 'a + b must stay <= 10');
      const M = store.model('snapcheck', rule);
      const O = other.model('snapcheck', rule);
      await M.put('k', { a: 0, b: 0 });
      seen.length = 0;
      await M.lock('k', (d) => {
        d.a = 1;
      });
      expect(seen.filter((t) => t.startsWith('SAVEPOINT lockstep_checked')).length).toBe(1);
      expect(seen.some((t) => t.includes('ROLLBACK TO SAVEPOINT'))).toBe(false);
      // Another writer changes b meanwhile: the savepoint is rolled back, the general path
      // checks the merge.
      seen.length = 0;
      // (A named action: plain writers wait for the default action's exclusive holders.)
      await M.lock(
        'k',
        async (d) => {
          await O.apply('k', (x) => x.b.incr(3));
          d.a = 2;
        },
        { action: 'edit' },
      );
      expect(seen.some((t) => t.includes('ROLLBACK TO SAVEPOINT lockstep_checked'))).toBe(true);
      expect((await O.get('k')).data).toStrictEqual({ a: 2, b: 3 });
      // Several documents under one lease: the same, in one message for all of them.
      await M.put('x', { a: 0, b: 0 });
      await M.put('y', { a: 0, b: 0 });
      seen.length = 0;
      await M.lock(['x', 'y'], ([x, y]) => {
        (x as { a: number }).a = 1;
        (y as { a: number }).a = 2;
      });
      expect(seen.filter((t) => t.startsWith('SAVEPOINT lockstep_checked')).length).toBe(1);
      expect(seen.some((t) => t.includes('ROLLBACK TO SAVEPOINT'))).toBe(false);
      seen.length = 0;
      await expect(
        M.lock(
          ['x', 'y'],
          async ([x, y]) => {
            await O.apply('y', (d) => d.b.incr(5));
            (x as { a: number }).a = 3;
            (y as { a: number }).a = 6; // 6 + 5 > 10: the whole commit is refused
          },
          { action: 'edit' },
        ),
      ).rejects.toMatchObject({ code: 'INVALID' });
      expect(seen.some((t) => t.includes('ROLLBACK TO SAVEPOINT lockstep_checked'))).toBe(true);
      expect((await O.get('x')).data).toStrictEqual({ a: 1, b: 0 });
      expect((await O.get('y')).data).toStrictEqual({ a: 2, b: 5 });
    } finally {
      await store.close();
      await other.close();
      await spied.end();
    }
  });

  it('numbers round-trip exactly as JavaScript numbers; incr is IEEE arithmetic', async () => {
    const data = {
      sum: 0.1 + 0.2,
      max: 2 ** 53 - 1,
      min: -(2 ** 53 - 1),
      big: 1e300,
      tiny: 5e-324,
      top: Number.MAX_VALUE,
      frac: 123456789.12345679,
      neg: -0.000001,
      nested: [{ x: 1 / 3 }],
    };
    await b0.write([{ kind: 'create', model: 'nums', key: 'k', data }]);
    const [doc] = await b1.read([{ model: 'nums', key: 'k' }]);
    expect(doc?.data).toStrictEqual(data);
    await b0.write([{ kind: 'put', model: 'nums', key: 'i', data: { v: 0.1 } }]);
    const r = await b1.write([
      {
        kind: 'patch',
        model: 'nums',
        key: 'i',
        ops: [
          { op: 'incr', field: 'v', by: 0.2 },
          { op: 'incr', field: 'w', by: 2 ** 53 - 2 },
          { op: 'incr', field: 'w', by: 1 },
        ],
      },
    ]);
    expect(r.applied && r.results[0]).toStrictEqual([0.1 + 0.2, 2 ** 53 - 2, 2 ** 53 - 1]);
    const [i] = await b0.read([{ model: 'nums', key: 'i' }]);
    expect(i?.data).toStrictEqual({ v: 0.1 + 0.2, w: 2 ** 53 - 1 });
  });

  it('strings jsonb cannot hold (NUL, lone surrogates) are refused as invalid, nothing written', async () => {
    for (const bad of ['a\u0000b', 'x\ud800', '\udc00y']) {
      const c = await b0.write([{ kind: 'create', model: 'strs', key: 'k', data: { s: bad } }]);
      expect(c.applied ? 'applied' : c.reason).toBe('invalid');
      const p = await b0.write([
        { kind: 'put', model: 'strs', key: 'ok', data: { s: 'fine' } },
        {
          kind: 'patch',
          model: 'strs',
          key: 'ok',
          ops: [{ op: 'append', field: 'l', value: bad }],
        },
      ]);
      expect(p.applied ? 'applied' : p.reason).toBe('invalid');
    }
    // an escaped backslash followed by "u0000" is an ordinary string
    const fine = { s: '\\u0000 and \\ud800', emoji: '😀' };
    const ok = await b0.write([{ kind: 'put', model: 'strs', key: 'fine', data: fine }]);
    expect(ok.applied).toBe(true);
    const docs = await b1.read([
      { model: 'strs', key: 'k' },
      { model: 'strs', key: 'ok' },
      { model: 'strs', key: 'fine' },
    ]);
    expect(docs[0]).toBeUndefined();
    expect(docs[1]).toBeUndefined();
    expect(docs[2]?.data).toStrictEqual(fine);
  });

  it('hostile keys are stored exactly and lock like any other key', async () => {
    const keys = ["it's", 'back\\slash', "'; DROP TABLE x; --", '😀', "E'\\x'", '"q"'];
    for (const key of keys) {
      await b0.write([{ kind: 'create', model: 'keys', key, data: { n: 0 } }]);
    }
    const l = await b1.acquire(lease('keys', [...keys].sort()));
    expect(l?.docs.map((d) => d?.key)).toStrictEqual([...keys].sort());
    const r = await l!.commit(
      keys.map((key) => ({
        kind: 'patch' as const,
        model: 'keys',
        key,
        ops: [{ op: 'incr' as const, field: 'n', by: 1 }],
      })),
    );
    expect(r.applied).toBe(true);
    const docs = await b0.read(keys.map((key) => ({ model: 'keys', key })));
    expect(docs.map((d) => [d?.key, d?.data.n])).toStrictEqual(keys.map((k) => [k, 1]));
  });

  it('incarnations: every doc carries one; a re-created document has a new one; expectIncarnation refuses a stale one', async () => {
    const m = 'incarn';
    const c = await b0.write([{ kind: 'create', model: m, key: 'k', data: { n: 0 } }]);
    const first = c.applied ? c.docs[0]?.incarnation : undefined;
    expect(typeof first).toBe('string');
    const [read] = await b1.read([{ model: m, key: 'k' }]);
    expect(read?.incarnation).toBe(first);
    // a batch that deletes and creates again: the result carries the new incarnation
    const again = await b0.write([
      { kind: 'delete', model: m, key: 'k' },
      { kind: 'create', model: m, key: 'k', data: { n: 1 } },
      { kind: 'patch', model: m, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
    ]);
    if (!again.applied) throw new Error('expected applied');
    const second = again.docs[1]?.incarnation;
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
    expect(again.docs[2]?.incarnation).toBe(second);
    const [now] = await b1.read([{ model: m, key: 'k' }]);
    expect(now).toStrictEqual({ key: 'k', version: 2, data: { n: 2 }, incarnation: second });
    // compare-and-set with the old incarnation (same version number 2 exists): refused
    const set = (expectIncarnation: string | undefined) =>
      b1.write([
        {
          kind: 'patch',
          model: m,
          key: 'k',
          ops: [{ op: 'set', field: 'n', value: 9 }],
          expectVersion: 2,
          ...(expectIncarnation === undefined ? {} : { expectIncarnation }),
        },
      ]);
    const stale = await set(first);
    expect(stale.applied ? 'applied' : stale.reason).toBe('version');
    const odd = await set("1 OR true; --'");
    expect(odd.applied ? 'applied' : odd.reason).toBe('version');
    const ok = await set(second);
    expect(ok.applied && ok.docs[0]?.incarnation).toBe(second);
  });

  it('a post-check that throws: the error comes back as is, nothing written, the row unlocked', async () => {
    await b0.write([{ kind: 'create', model: 'throws', key: 'k', data: { n: 0 } }]);
    const boom = new Error('schema library bug');
    const patch = (check: PatchWrite['check']): PatchWrite => ({
      kind: 'patch',
      model: 'throws',
      key: 'k',
      ops: [{ op: 'incr', field: 'n', by: 1 }],
      check,
    });
    await expect(
      b0.write([
        patch(() => {
          throw boom;
        }),
      ]),
    ).rejects.toBe(boom);
    await expect(
      b0.write([
        patch(() => undefined),
        { kind: 'put', model: 'throws', key: 'j', data: {} },
        patch(async () => {
          throw boom;
        }),
      ]),
    ).rejects.toBe(boom);
    const docs = await b1.read([
      { model: 'throws', key: 'k' },
      { model: 'throws', key: 'j' },
    ]);
    expect(docs[0]?.data).toStrictEqual({ n: 0 });
    expect(docs[1]).toBeUndefined();
    const ok = await b1.write([patch(() => undefined)]);
    expect(ok.applied).toBe(true);
  });

  it('a lease commit stamps its fence on the rows it writes', async () => {
    await b0.write([{ kind: 'create', model: 'fenced', key: 'k', data: { n: 0 } }]);
    const l = await b0.acquire(lease('fenced', ['k']));
    await l!.commit([
      { kind: 'patch', model: 'fenced', key: 'k', ops: [{ op: 'set', field: 'n', value: 1 }] },
    ]);
    const r = await pool.query(`SELECT fence FROM "${schema}".fenced WHERE key = 'k'`);
    expect(Number(r.rows[0].fence)).toBe(l!.fences[0]);
  });

  it('a multi-document lock commit is all-or-nothing: one conflicting document refuses the whole commit', async () => {
    await b0.write([
      { kind: 'create', model: 'multi', key: 'a', data: { x: 0, y: 0 } },
      { kind: 'create', model: 'multi', key: 'b', data: { x: 0, y: 0 } },
      { kind: 'create', model: 'multi', key: 'c', data: { x: 0, y: 0 } },
    ]);
    const set = (key: string, field: string, value: number) => ({
      kind: 'patch' as const,
      model: 'multi',
      key,
      ops: [{ op: 'set' as const, field, value }],
      fieldsUnchangedSince: 1,
    });
    // A named action: plain writers wait only for the default action's exclusive holders.
    const l = await b0.acquire(lease('multi', ['a', 'b', 'c'], { action: 'edit' }));
    // someone else writes b.x meanwhile (a plain write goes through a named action's lease)
    await b1.write([
      { kind: 'patch', model: 'multi', key: 'b', ops: [{ op: 'incr', field: 'x', by: 1 }] },
    ]);
    const r = await l!.commit([set('a', 'x', 7), set('b', 'x', 7), set('c', 'x', 7)]);
    expect(r.applied ? 'applied' : [r.reason, r.index]).toStrictEqual(['conflict', 1]);
    const docs = await b1.read(['a', 'b', 'c'].map((key) => ({ model: 'multi', key })));
    expect(docs.map((d) => d?.data.x)).toStrictEqual([0, 1, 0]);
    // another field of b is still fine, and the lease was released by the refused commit
    const l2 = await b1.acquire(lease('multi', ['a', 'b'], { nowait: true }));
    const ok = await l2!.commit([set('a', 'y', 1), set('b', 'y', 1)]);
    expect(ok.applied).toBe(true);
    // a deleted document: refused as missing, nothing written on the other
    await b0.write([{ kind: 'delete', model: 'multi', key: 'c' }]);
    const l3 = await b0.acquire(lease('multi', ['a', 'c']));
    const since = l3?.docs[0]?.version ?? 0;
    const gone = await l3!.commit([
      { ...set('a', 'y', 9), fieldsUnchangedSince: since },
      { ...set('c', 'y', 9), fieldsUnchangedSince: since },
    ]);
    expect(gone.applied ? 'applied' : [gone.reason, gone.index]).toStrictEqual(['missing', 1]);
    const [a] = await b0.read([{ model: 'multi', key: 'a' }]);
    expect(a?.data).toStrictEqual({ x: 0, y: 1 });
  });

  it('combined applies: 64 concurrent guarded appends on one document admit exactly the limit', async () => {
    await b0.write([{ kind: 'create', model: 'camp', key: 'k', data: { who: [] } }]);
    const limit = 20;
    const rs = await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        (i % 2 ? b1 : b0).write([
          {
            kind: 'patch',
            model: 'camp',
            key: 'k',
            ops: [{ op: 'append', field: 'who', value: `u${i % 40}` }],
            guards: [
              { guard: 'cmp', field: 'who', cmp: 'lt', value: limit, length: true },
              { guard: 'notContains', field: 'who', value: `u${i % 40}` },
            ],
            check: (d) => ((d.who as string[]).length > limit ? [{ message: 'over' }] : undefined),
          },
        ]),
      ),
    );
    const applied = rs.filter((r) => r.applied);
    expect(applied.length).toBe(limit);
    expect(rs.every((r) => r.applied || r.reason === 'guard')).toBe(true);
    const [d] = await b0.read([{ model: 'camp', key: 'k' }]);
    expect((d?.data.who as string[]).length).toBe(limit);
    expect(new Set(d?.data.who as string[]).size).toBe(limit);
    expect(d?.version).toBe(1 + limit);
    // every applied result reports its own version, each exactly once
    const versions = applied
      .map((r) => (r.applied ? r.docs[0]?.version : 0))
      .sort((x, y) => x! - y!);
    expect(versions).toStrictEqual(Array.from({ length: limit }, (_, i) => i + 2));
  });

  it('speculative one-round-trip applies never act on a stale remembered row', async () => {
    const m = 'spec';
    const incr = (key: string, by: number, guards: PatchWrite['guards'] = []): PatchWrite => ({
      kind: 'patch',
      model: m,
      key,
      ops: [{ op: 'incr', field: 'n', by }],
      guards,
      check: (d) => (typeof d.n === 'number' && d.n > 1000 ? [{ message: 'too big' }] : undefined),
    });
    const n = async (key: string) => (await b0.read([{ model: m, key }]))[0]?.data.n;
    await b0.write([{ kind: 'create', model: m, key: 'k', data: { n: 0 } }]);
    await b0.write([incr('k', 1)]); // remembered by b0
    await b0.write([incr('k', 1)]); // speculative
    await b1.write([incr('k', 10)]); // b0's memory is now stale
    // on the stale row (n = 2) the guard is false; on the real one (n = 12) it holds
    const g = await b0.write([incr('k', 1, [{ guard: 'cmp', field: 'n', cmp: 'gte', value: 5 }])]);
    expect(g.applied && g.docs[0]).toMatchObject({ key: 'k', version: 5, data: { n: 13 } });
    await b1.write([{ kind: 'put', model: m, key: 'k', data: { n: 100 } }]);
    const p = await b0.write([incr('k', 1)]);
    expect(p.applied && p.docs[0]?.data).toStrictEqual({ n: 101 });
    // the post-check judges the real post-image, not the remembered one
    await b1.write([incr('k', 899)]); // n = 1000
    const big = await b0.write([incr('k', 1)]);
    expect(big.applied ? 'applied' : big.reason).toBe('invalid');
    expect(await n('k')).toBe(1000);
    // deleted and created again at the same version: the remembered row is another incarnation
    await b0.write([{ kind: 'create', model: m, key: 'j', data: { n: 0 } }]);
    await b0.write([incr('j', 1)]); // b0 remembers j at version 2, n = 1
    await b1.write([{ kind: 'delete', model: m, key: 'j' }]);
    await b1.write([{ kind: 'create', model: m, key: 'j', data: { n: 50 } }]);
    await b1.write([incr('j', 0)]); // version 2 again, n = 50
    const a = await b0.write([incr('j', 1)]);
    expect(a.applied && a.docs[0]).toMatchObject({ key: 'j', version: 3, data: { n: 51 } });
    expect(await n('j')).toBe(51);
  });

  it('close() releases open leases; a pool we were given stays open, our own pool is ended', async () => {
    const mine = postgres({ url, schema, poolSize: 2 });
    const theirs = postgres({ pool }, { schema });
    await mine.write([{ kind: 'put', model: 'closing', key: 'k', data: {} }]);
    await mine.acquire(lease('closing', ['k']));
    await theirs.acquire(lease('closing', ['j']));
    await mine.close();
    await theirs.close();
    expect(mine.pool.totalCount).toBe(0);
    expect((await pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    const again = await b1.acquire(lease('closing', ['k', 'j'], { nowait: true }));
    await again!.release();
    await expect(mine.read([{ model: 'closing', key: 'k' }])).rejects.toBeInstanceOf(BackendError);
  });

  it('autoMigrate: false needs migrate(); migrationSql quotes every name', async () => {
    const s2 = `${schema}_m`;
    const manual = postgres({ pool }, { schema: s2, autoMigrate: false });
    try {
      await expect(
        manual.write([{ kind: 'create', model: 'late', key: 'k', data: {} }]),
      ).rejects.toMatchObject({ code: 'BACKEND', message: expect.stringMatching(/migrate\(\)/) });
      expect(await manual.read([{ model: 'late', key: 'k' }])).toStrictEqual([undefined]);
      await manual.migrate(['late']);
      const w = await manual.write([{ kind: 'create', model: 'late', key: 'k', data: { a: 1 } }]);
      expect(w.applied).toBe(true);
    } finally {
      await manual.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${s2}" CASCADE`);
    }
    const sql = migrationSql('app', ['account']);
    expect(sql).toContain('CREATE TABLE IF NOT EXISTS "app"."account"');
    expect(() => postgres({ pool }, { schema: 'bad"name' })).toThrow(/schema name/);
  });

  it('a plain write queues behind a default-action exclusive holder (no conflict), like SELECT ... FOR UPDATE', async () => {
    const locking = postgres({ pool }, { schema });
    try {
      await b0.write([{ kind: 'create', model: 'rowlock', key: 'k', data: { n: 0, m: 0 } }]);
      const l = await locking.acquire(lease('rowlock', ['k']));
      const plain = b1.write([
        { kind: 'patch', model: 'rowlock', key: 'k', ops: [{ op: 'incr', field: 'n', by: 10 }] },
      ]);
      // wait until PostgreSQL shows the plain write waiting for a lock (no sleeps, no timing)
      for (let i = 0; ; i++) {
        const w = await pool.query(
          `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.query LIKE '%' || $1 || '%'`,
          [schema],
        );
        if (w.rows[0].n > 0) break;
        if (i > 400) throw new Error('the plain write never waited');
        await new Promise((r) => setTimeout(r, 25));
      }
      const c = await l!.commit([
        {
          kind: 'patch',
          model: 'rowlock',
          key: 'k',
          ops: [{ op: 'set', field: 'n', value: 5 }],
          fieldsUnchangedSince: 1,
        },
      ]);
      expect(c.applied).toBe(true);
      const p = await plain;
      expect(p.applied && p.docs[0]?.data).toStrictEqual({ n: 15, m: 0 });
    } finally {
      await locking.close();
    }
  });

  it('a lease commit of several documents is all-or-nothing: a conflict on any one writes none', async () => {
    const keys = ['m1', 'm2', 'm3'];
    for (const k of keys)
      await b0.write([{ kind: 'create', model: 'multi_commit', key: k, data: { n: 0, o: 0 } }]);
    const snapshot = async () =>
      (
        await pool.query(
          `SELECT key, version, fence, data::text AS data FROM "${schema}".multi_commit ORDER BY key`,
        )
      ).rows;
    for (let bad = 0; bad < keys.length; bad++) {
      // A named action, so that a plain write can go through while it is held.
      const l = await b0.acquire(lease('multi_commit', keys, { action: 'edit' }));
      const since = l!.docs.map((d) => d!.version);
      // Someone else writes field n of one document while the lease is held.
      const other = await b1.write([
        {
          kind: 'patch',
          model: 'multi_commit',
          key: keys[bad] as string,
          ops: [{ op: 'incr', field: 'n', by: 1 }],
        } as PatchWrite,
      ]);
      expect(other.applied).toBe(true);
      const before = await snapshot();
      // Written in reverse key order: the refusal names the index of the conflicting write.
      const order = [...keys].reverse();
      const r = await l!.commit(
        order.map((k) => ({
          kind: 'patch' as const,
          model: 'multi_commit',
          key: k,
          ops: [{ op: 'set' as const, field: 'n', value: 100 }],
          fieldsUnchangedSince: since[keys.indexOf(k)] as number,
        })),
      );
      expect(r.applied).toBe(false);
      if (!r.applied) {
        expect(r.reason).toBe('conflict');
        expect(r.index).toBe(order.indexOf(keys[bad] as string));
      }
      expect(await snapshot()).toStrictEqual(before);
    }
    // Without interference every row is written, stamped with the lease's fence, docs in order.
    const held = await b0.acquire(lease('multi_commit', keys));
    if (!held) throw new Error('no lease');
    const l = held;
    const order = ['m2', 'm3', 'm1'];
    const r = await l.commit(
      order.map((k) => ({
        kind: 'patch' as const,
        model: 'multi_commit',
        key: k,
        ops: [{ op: 'set' as const, field: 'o', value: k }],
        fieldsUnchangedSince: l.docs[keys.indexOf(k)]!.version,
      })),
    );
    expect(r.applied).toBe(true);
    if (r.applied) expect(r.docs.map((d) => d?.data.o)).toStrictEqual(order);
    const rows = await snapshot();
    for (const row of rows) {
      expect(Number(row.fence)).toBe(l.fences[0]);
      expect(JSON.parse(row.data).o).toBe(row.key);
    }
  });

  it('prepare: false sends no named statements (pooler without prepared statements); true does', async () => {
    for (const prepare of [false, true]) {
      // One connection, so the session we inspect is the one the backend used.
      const one = new pg.Pool({ connectionString: url, max: 1 });
      const b = postgres({ pool: one }, { schema, prepare });
      const s = createStore(b);
      const M = s.model(`prep_${prepare}`, z.object({ n: z.number() }));
      await M.create('k', { n: 0 });
      await M.put('j', { n: 1 });
      for (let i = 0; i < 3; i++) await M.apply('k', (d) => d.n.incr(1));
      expect((await M.get('k')).data.n).toBe(3);
      expect(await M.delete('j')).toBe(true);
      const r = await one.query(`SELECT count(*)::int AS n FROM pg_prepared_statements`);
      if (prepare) expect(r.rows[0].n).toBeGreaterThan(0);
      else expect(r.rows[0].n).toBe(0);
      await b.close();
      await one.end();
    }
  });

  it('nothing leaks: after timeouts, aborts, busy and lost leases, close() leaves no session and no waiter', async () => {
    const app = `lsleak_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    const b = postgres({ url: `${url}?application_name=${app}`, schema, poolSize: 4 });
    await b.write([{ kind: 'put', model: 'leak', key: 'k', data: { n: 0 } }]);
    const held = await b.acquire(lease('leak', ['k']));
    // a timed-out waiter, an aborted waiter, a busy one, a skipLocked one
    await expect(b.acquire(lease('leak', ['k'], { timeoutMs: 30 }))).rejects.toMatchObject({
      code: 'LOCK_TIMEOUT',
    });
    const ac = new AbortController();
    const aborted = b.acquire(lease('leak', ['k'], { signal: ac.signal }));
    // abort once PostgreSQL shows the waiter waiting
    for (let i = 0; ; i++) {
      const w = await pool.query(
        `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.application_name = $1`,
        [app],
      );
      if (w.rows[0].n > 0) break;
      if (i > 400) throw new Error('the waiter never waited');
      await new Promise((r) => setTimeout(r, 10));
    }
    const reason = new Error('gone');
    ac.abort(reason);
    await expect(aborted).rejects.toBe(reason);
    await expect(b.acquire(lease('leak', ['k'], { nowait: true }))).rejects.toMatchObject({
      code: 'LOCK_BUSY',
    });
    expect(await b.acquire(lease('leak', ['k'], { skipLocked: true }))).toBeUndefined();
    // nobody waits any more on the server
    const waiting = await pool.query(
      `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND a.application_name = $1`,
      [app],
    );
    expect(waiting.rows[0].n).toBe(0);
    // a lease left open is released by close(); then no session of ours remains
    expect(held).toBeDefined();
    await b.close();
    for (let i = 0; ; i++) {
      const r = await pool.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [app],
      );
      if (r.rows[0].n === 0) break;
      if (i > 400) throw new Error(`${r.rows[0].n} sessions left after close()`);
      await new Promise((res) => setTimeout(res, 10));
    }
    const again = await b1.acquire(lease('leak', ['k'], { nowait: true }));
    await again!.release();
  });

  it('nested locks in opposite orders in one process: DeadlockError at once, nothing written, nothing tracked after', async () => {
    const s0 = createStore(b0);
    const s1 = createStore(b1);
    const doc = z.object({ a: z.number(), b: z.number() });
    const M = [s0.model('nested', doc), s1.model('nested', doc)] as const;
    await M[0].create('x', { a: 0, b: 0 });
    await M[0].create('y', { a: 0, b: 0 });
    let arrived = 0;
    let open!: () => void;
    const both = new Promise<void>((r) => {
      open = r;
    });
    const arrive = () => {
      arrived += 1;
      if (arrived === 2) open();
      return both;
    };
    const results = await Promise.allSettled([
      M[0].lock('x', async (x) => {
        await arrive();
        x.a += 1;
        // no timeout: only detection can end this wait
        await M[0].lock('y', (y) => void (y.a += 1));
      }),
      M[1].lock('y', async (y) => {
        await arrive();
        y.b += 1;
        await M[1].lock('x', (x) => void (x.b += 1));
      }),
    ]);
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const f of failed) {
      const e = (f as PromiseRejectedResult).reason as DeadlockError;
      expect(e).toBeInstanceOf(DeadlockError);
      expect(e.cycle.length).toBeGreaterThanOrEqual(2);
    }
    const [x, y] = await b0.read([
      { model: 'nested', key: 'x' },
      { model: 'nested', key: 'y' },
    ]);
    // whoever failed wrote nothing: increments come in pairs (outer + inner)
    expect(x?.data.a).toBe(y?.data.a);
    expect(x?.data.b).toBe(y?.data.b);
    // re-entering a key held by the enclosing lock is a cycle too (not a wait until timeout)
    await expect(
      M[0].lock('x', async () => {
        await M[1].lock('x', () => 0);
      }),
    ).rejects.toBeInstanceOf(DeadlockError);
    expect(trackedLocks()).toBe(0);
    // detectDeadlocks: false — no task tracking; the same re-entry waits until its timeout
    const plain = postgres({ pool }, { schema, detectDeadlocks: false });
    expect(plain.supports.inProcessDeadlocks).toBe(false);
    const P = createStore(plain).model('nested', doc);
    await expect(
      P.lock('x', async () => {
        await P.lock('x', () => 0, { timeoutMs: 50 });
      }),
    ).rejects.toBeInstanceOf(LockTimeoutError);
    await plain.close();
    expect(trackedLocks()).toBe(0);
  });

  it('classifies by SQLSTATE, walking .cause', () => {
    const wrap = (code: string) =>
      new Error('outer', { cause: Object.assign(new Error('pg'), { code }) });
    expect(sqlState(wrap('40P01'))).toBe('40P01');
    expect(classify(wrap('40P01'), 'x')).toBeInstanceOf(DeadlockError);
    expect(classify(wrap('55P03'), 'x')).toBeInstanceOf(LockBusyError);
    const lost = classify(wrap('57P01'), 'x');
    expect(lost).toBeInstanceOf(BackendError);
    expect((lost as BackendError).cause).toBeDefined();
    expect(sqlState(new Error('ECONNRESET'))).toBeUndefined();
  });

  it('no lost update: 120 tasks on two backends mix apply, update, lock and store.apply', async () => {
    const s0 = createStore(b0);
    const s1 = createStore(b1);
    const schemaDoc = z.object({ a: z.number(), u: z.number(), l: z.number(), s: z.number() });
    const M = [s0.model('mix', schemaDoc), s1.model('mix', schemaDoc)] as const;
    await M[0].create('k', { a: 0, u: 0, l: 0, s: 0 });
    await M[0].create('j', { a: 0, u: 0, l: 0, s: 0 });
    const tasks: Promise<unknown>[] = [];
    let conflicts = 0;
    for (let i = 0; i < 30; i++) {
      const m = M[i % 2]!;
      const st = i % 2 ? s1 : s0;
      tasks.push(m.apply('k', (d) => d.a.incr(1)));
      tasks.push(m.update('k', (d) => void (d.u += 1), { retries: 1000 }));
      tasks.push(
        m
          .lock('k', (d) => void (d.l += 1))
          .catch((e: unknown) => {
            // a lock's field may only conflict with a writer of the same field: none here
            if (e instanceof ConflictError) conflicts += 1;
            throw e;
          }),
      );
      tasks.push(st.apply([m.ops('k', (d) => d.s.incr(1)), m.ops('j', (d) => d.s.incr(-1))]));
    }
    await Promise.all(tasks);
    expect(conflicts).toBe(0);
    expect((await M[1].get('k')).data).toStrictEqual({ a: 30, u: 30, l: 30, s: 30 });
    expect((await M[0].get('j')).data.s).toBe(-30);
    expect((await M[0].get('k')).version).toBe(121);
  });
});
