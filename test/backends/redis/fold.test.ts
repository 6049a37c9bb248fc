/**
 * Folded chains of predicted applies (src/backends/redis/group.ts): how chains are found, and
 * that applies folded into one patch keep every guarantee of applying them one by one — each
 * increment counted once, every apply's result and version its own, schema limits exact — with
 * two "processes" (backends) racing on the same documents so that chains also go stale.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { foldChains } from '../../../src/backends/redis/group.js';
import { redis } from '../../../src/backends/redis/index.js';
import type { Reply, Speculation } from '../../../src/backends/redis/wire.js';
import { createStore, type Store } from '../../../src/index.js';
import { dropPrefix } from './drop-prefix.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `lsfold:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
let admin: Redis;
let one: Store;
let two: Store;

beforeAll(() => {
  admin = new Redis(url);
  one = createStore(redis({ url, prefix }));
  two = createStore(redis({ url, prefix }));
});

afterAll(async () => {
  await one.close();
  await two.close();
  await dropPrefix(admin, prefix);
  await admin.quit();
});

const spec = (doc: string, base: string, token: string, data: Record<string, number>) =>
  ({
    doc,
    base,
    token,
    fields: Object.keys(data),
    data,
    version: 1,
    results: [null],
  }) satisfies Speculation;

const entry = (s: Speculation | undefined, keys = [s?.doc ?? 'other']) => ({
  keys,
  env: { t: s?.token ?? 'plain' },
  spec: s,
  resolve: (_r: Reply) => {},
  reject: (_e: unknown) => {},
});

describe('finding chains', () => {
  it('folds runs of linked speculations on one document, and nothing else', () => {
    const units = foldChains([
      entry(spec('A', 't0', 't1', { n: 1 })),
      entry(spec('A', 't1', 't2', { n: 2, m: 1 })),
      entry(spec('A', 't2', 't3', { n: 3, m: 1 })),
      entry(spec('B', 't9', 'u1', { n: 1 })), // another document: a new chain (of one)
      entry(undefined), // not a speculation: sent as it is
      entry(spec('A', 't3', 't4', { n: 4 })), // linked, but not adjacent: alone
      entry(spec('A', 'zz', 't5', { n: 5 })), // not linked to t4
    ]);
    expect(units.map((u) => u.chain?.length ?? 0)).toEqual([3, 1, 0, 1, 1]);
    expect(units[2]?.env).toEqual({ t: 'plain' });
    const folded = units[0] as { keys: string[]; env: unknown };
    expect(folded.keys).toEqual(['A']);
    expect(folded.env).toEqual({
      t: 't3',
      w: [
        {
          k: 'patch',
          d: 1,
          ops: [
            { o: 'set', f: '"n"', v: '3' },
            { o: 'set', f: '"m"', v: '1' },
          ],
          ck: { t: 't0', ok: true },
          vb: 3,
        },
      ],
      sd: [1],
      nd: 1,
    });
  });

  it('a field the chain removed is unset', () => {
    const a = spec('A', 't0', 't1', { x: 1 });
    const b = { ...spec('A', 't1', 't2', {}), fields: ['x'] };
    const [u] = foldChains([entry(a), entry(b)]);
    expect((u?.env as { w: Array<{ ops: unknown }> }).w[0]?.ops).toEqual([
      { o: 'unset', f: '"x"' },
    ]);
  });
});

describe('folded applies through the store', () => {
  it('every increment counts once; results and versions are each apply’s own', async () => {
    const schema = z.object({ n: z.number().int(), log: z.array(z.number()) });
    const A = one.model('counter', schema);
    const B = two.model('counter', schema);
    await A.put('hot', { n: 0, log: [] });
    const results: number[] = [];
    const versions: number[] = [];
    const worker = async (m: typeof A, times: number) => {
      for (let i = 0; i < times; i++) {
        const r = await m.apply('hot', (d) => {
          d.n.incr(1);
          d.log.append(i);
        });
        expect(r.applied).toBe(true);
        results.push(r.results[0] as number);
        versions.push(r.doc?.version as number);
        // The returned document is this apply's own post-image.
        expect(r.doc?.data.n).toBe(r.results[0]);
        expect(r.doc?.data.log.length).toBe(r.results[1]);
      }
    };
    await Promise.all(Array.from({ length: 24 }, (_, w) => worker(w % 3 === 0 ? B : A, 40)));
    const total = 24 * 40;
    expect((await A.get('hot')).data.n).toBe(total);
    expect((await B.get('hot')).data.log.length).toBe(total);
    expect([...results].sort((x, y) => x - y)).toEqual(
      Array.from({ length: total }, (_, i) => i + 1),
    );
    // put made version 1; each apply advanced it by exactly one.
    expect([...versions].sort((x, y) => x - y)).toEqual(
      Array.from({ length: total }, (_, i) => i + 2),
    );
    expect((await A.get('hot')).version).toBe(total + 1);
  });

  it('a schema limit holds exactly while applies are folded', async () => {
    const schema = z.object({ seats: z.number().int().min(0) });
    const A = one.model('campaign', schema);
    const B = two.model('campaign', schema);
    await A.put('spring', { seats: 100 });
    let taken = 0;
    let refused = 0;
    const worker = async (m: typeof A) => {
      for (let i = 0; i < 15; i++) {
        try {
          const r = await m.apply('spring', (d) => d.seats.incr(-1));
          if (r.applied) taken += 1;
        } catch (err) {
          expect((err as { code?: string }).code).toBe('INVALID');
          refused += 1;
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, (_, w) => worker(w % 4 === 0 ? B : A)));
    expect(taken).toBe(100);
    expect(refused).toBe(16 * 15 - 100);
    expect((await A.get('spring')).data.seats).toBe(0);
  });

  it('a checked batch writing one document twice leaves the prediction cache on its final state', async () => {
    // Raw backend writes (the store never sends one document twice in a batch): the cache must
    // take the document's LAST state from the reply, or the next predicted apply, folded into
    // plain sets, would store a value computed from a stale base.
    const backend = redis({ url, prefix });
    try {
      const check = () => undefined;
      const incr = { kind: 'patch', model: 'twice', key: 'k', check } as const;
      await backend.write([{ kind: 'put', model: 'twice', key: 'k', data: { n: 0 } }]);
      const r = await backend.write([
        { ...incr, ops: [{ op: 'incr', field: 'n', by: 1 }] },
        { ...incr, ops: [{ op: 'incr', field: 'n', by: 1 }] },
      ]);
      expect(r.applied && r.docs.map((d) => d?.data)).toEqual([{ n: 1 }, { n: 2 }]);
      const again = await backend.write([{ ...incr, ops: [{ op: 'incr', field: 'n', by: 1 }] }]);
      expect(again.applied && again.results).toEqual([[3]]);
      expect((await backend.read([{ model: 'twice', key: 'k' }]))[0]?.data).toEqual({ n: 3 });
    } finally {
      await backend.close();
    }
  });
});
