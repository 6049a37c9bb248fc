/**
 * Redis backend specifics, against a real Redis (REDIS_URL): the Lua engine agrees with the
 * reference ops/guards (src/store/apply-ops.ts) on random inputs, numbers round-trip exactly,
 * keys with any characters never collide, waiters are served FIFO and leave no trace when they
 * give up, scripts reload after SCRIPT FLUSH and FUNCTION DELETE, Cluster slot refusal, and a client we did not open
 * is never closed.
 */
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { memory } from '../../../src/backends/memory/index.js';
import { clusterSlot, escapeSegment, redis } from '../../../src/backends/redis/index.js';
import { KeyLayout } from '../../../src/backends/redis/keys.js';
import { ValidationError } from '../../../src/errors.js';
import { applyOps, evalGuards } from '../../../src/store/apply-ops.js';
import type {
  Backend,
  Data,
  DocWrite,
  Guard,
  Json,
  LeaseRequest,
  Op,
} from '../../../src/store/backend.js';
import { deepEqual } from '../../../src/store/json.js';
import { type RedisServer, startRedis } from '../../support/servers.js';
import { dropPrefix } from './drop-prefix.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `lstest:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
let admin: Redis;
let b: Backend;

beforeAll(() => {
  admin = new Redis(url);
  b = redis({ url, prefix });
});

afterAll(async () => {
  await b.close();
  await dropPrefix(admin, prefix);
  await admin.quit();
});

let seq = 0;
const model = () => `m${++seq}`;

const lease = (m: string, keys: string[], extra: Partial<LeaseRequest> = {}): LeaseRequest => ({
  model: m,
  keys,
  action: 'default',
  mode: 'exclusive',
  leaseMs: 5_000,
  renew: true,
  nowait: false,
  skipLocked: false,
  ...extra,
});

// ------------------------------------------------------------------------------ arbitraries
const fieldArb = fc.constantFrom('a', 'b', 'n', 'list', 'rec', '__proto__', 'x:{y}', 'é😀');
const leafArb: fc.Arbitrary<Json> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer({ min: -5, max: 5 }),
  fc
    .double({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 })
    .map((x) => (x === 0 ? 0 : x)),
  fc.constantFrom(0.1, 0.2, 2 ** 53 - 1, 1e21, 1.5e-7, -0.5),
  fc.string({ maxLength: 4 }),
  fc.constantFrom('a', 'b', '😀', '\u0000\n"\\', 'é'),
);
const jsonArb: fc.Arbitrary<Json> = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leafArb,
    fc.array(tie('v'), { maxLength: 3 }),
    fc.dictionary(fc.constantFrom('k', 'l', 'é', '1', ''), tie('v'), { maxKeys: 3 }),
  ),
})).v as fc.Arbitrary<Json>;
const dataArb: fc.Arbitrary<Data> = fc.dictionary(fieldArb, jsonArb, { maxKeys: 5 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), field: fieldArb, value: jsonArb }),
  fc.record({ op: fc.constant('unset' as const), field: fieldArb }),
  fc.record({
    op: fc.constant('incr' as const),
    field: fieldArb,
    by: fc.oneof(fc.integer({ min: -3, max: 3 }), fc.constantFrom(0.1, 0.2, 1 / 3, -1e-9)),
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
    index: fc.oneof(fc.integer({ min: -4, max: 4 }), fc.constant(1.5)),
    value: jsonArb,
  }),
  fc.record({ op: fc.constant('remove' as const), field: fieldArb, value: jsonArb }),
  fc.record({
    op: fc.constant('pop' as const),
    field: fieldArb,
    index: fc.oneof(fc.integer({ min: -4, max: 4 }), fc.constant(1.5)),
  }),
  fc.record({
    op: fc.constant('setItem' as const),
    field: fieldArb,
    item: fc.constantFrom('k', 'l', '1', ''),
    value: jsonArb,
  }),
  fc.record({
    op: fc.constant('deleteItem' as const),
    field: fieldArb,
    item: fc.constantFrom('k', 'l', '1'),
  }),
  fc.record({
    op: fc.constant('merge' as const),
    field: fieldArb,
    value: fc.dictionary(fc.constantFrom('k', 'l', '1'), jsonArb, { maxKeys: 2 }),
  }),
);
const guardArb: fc.Arbitrary<Guard> = fc.oneof(
  fc.record({
    guard: fc.constant('cmp' as const),
    field: fieldArb,
    cmp: fc.constantFrom('eq', 'ne', 'lt', 'lte', 'gt', 'gte'),
    value: jsonArb,
    length: fc.boolean(),
  }),
  fc.record({
    guard: fc.constantFrom('contains' as const, 'notContains' as const),
    field: fieldArb,
    value: jsonArb,
  }),
  fc.record({ guard: fc.constant('exists' as const), field: fieldArb, value: fc.boolean() }),
);

describe('the Lua engine agrees with the reference ops and guards', () => {
  it('random documents, ops and guards: same applied/refused, same results, same post-image', async () => {
    const m = model();
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        dataArb,
        fc.array(opArb, { minLength: 1, maxLength: 4 }),
        fc.array(guardArb, { maxLength: 2 }),
        async (data, ops, guards) => {
          const key = `k${++n}`;
          const c = await b.write([{ kind: 'create', model: m, key, data }]);
          expect(c.applied).toBe(true);
          const r = await b.write([{ kind: 'patch', model: m, key, ops, guards }]);
          const [after] = await b.read([{ model: m, key }]);
          const expected = applyOps(data, ops);
          if (!evalGuards(data, guards)) {
            expect(r).toMatchObject({ applied: false, reason: 'guard' });
            expect(deepEqual(after?.data ?? null, data)).toBe(true);
          } else if (!expected.ok) {
            expect(r).toMatchObject({ applied: false, reason: 'invalid' });
            expect(deepEqual(after?.data ?? null, data)).toBe(true);
            expect(after?.version).toBe(1);
          } else {
            expect(r.applied).toBe(true);
            if (!r.applied) return;
            expect(r.results[0]).toEqual(expected.results);
            expect(after?.data).toEqual(expected.data);
            expect(r.docs[0]?.data).toEqual(expected.data);
            expect(after?.version).toBe(2);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('incr adds exactly as JavaScript does, for any pair of doubles', async () => {
    const m = model();
    const dbl = fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e300, max: 1e300 });
    let n = 0;
    await fc.assert(
      fc.asyncProperty(dbl, dbl, async (x, y) => {
        const key = `n${++n}`;
        const x0 = x === 0 ? 0 : x;
        await b.write([{ kind: 'create', model: m, key, data: { v: x0 } }]);
        const r = await b.write([
          { kind: 'patch', model: m, key, ops: [{ op: 'incr', field: 'v', by: y }] },
        ]);
        const sum = x0 + y === 0 ? 0 : x0 + y;
        expect(r.applied && r.results[0]?.[0]).toBe(sum);
        const [d] = await b.read([{ model: m, key }]);
        expect(d?.data.v).toBe(sum);
      }),
      { numRuns: 200 },
    );
  });
});

describe('group commit (several batches per script call)', () => {
  // Batches fired without awaiting go out together through writes.lua, which loads each
  // document once, applies the batches in memory (a refused batch rolled back) and stores once.
  // The outcome must be exactly that of running them one by one: compare with the memory backend.
  const writeArb = (m: string): fc.Arbitrary<DocWrite> =>
    fc
      .oneof(
        {
          weight: 4,
          arbitrary: fc.record({
            kind: fc.constant('patch' as const),
            model: fc.constant(m),
            key: fc.constantFrom('a', 'b', 'c'),
            ops: fc.array(
              fc.oneof(
                fc.record({
                  op: fc.constant('incr' as const),
                  field: fc.constant('n'),
                  by: fc.integer({ min: -3, max: 3 }),
                }),
                fc.record({ op: fc.constant('set' as const), field: fieldArb, value: jsonArb }),
                fc.record({ op: fc.constant('unset' as const), field: fieldArb }),
              ),
              { minLength: 1, maxLength: 2 },
            ),
            fieldsUnchangedSince: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
          }),
        },
        {
          weight: 4,
          arbitrary: fc.record({
            kind: fc.constant('patch' as const),
            model: fc.constant(m),
            key: fc.constantFrom('a', 'b', 'c'),
            ops: fc.array(opArb, { minLength: 1, maxLength: 3 }),
            guards: fc.array(guardArb, { maxLength: 1 }),
            expectVersion: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
            fieldsUnchangedSince: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
          }),
        },
        {
          weight: 1,
          arbitrary: fc.record({
            kind: fc.constant('create' as const),
            model: fc.constant(m),
            key: fc.constantFrom('a', 'b', 'c'),
            data: dataArb,
          }),
        },
        {
          weight: 1,
          arbitrary: fc.record({
            kind: fc.constant('put' as const),
            model: fc.constant(m),
            key: fc.constantFrom('a', 'b', 'c'),
            data: dataArb,
          }),
        },
        {
          weight: 1,
          arbitrary: fc.record({
            kind: fc.constant('delete' as const),
            model: fc.constant(m),
            key: fc.constantFrom('a', 'b', 'c'),
            expectVersion: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
          }),
        },
      )
      .map((w) => JSON.parse(JSON.stringify(w)) as DocWrite);

  it('random concurrent batches: same outcomes, results and final documents as one by one', async () => {
    const m = model();
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        // One write per document per batch (several writes on one document inside ONE batch are
        // the single-batch engine's business, covered by the conformance suite).
        fc.array(
          fc.uniqueArray(writeArb(m), { minLength: 1, maxLength: 3, selector: (w) => w.key }),
          {
            minLength: 2,
            maxLength: 12,
          },
        ),
        async (generated) => {
          const run = ++n;
          const batches = generated.map((ws) => ws.map((w) => ({ ...w, key: `${run}.${w.key}` })));
          const ref = memory();
          for (const key of ['a', 'b']) {
            const seed: DocWrite[] = [
              { kind: 'create', model: m, key: `${run}.${key}`, data: { n: 0 } },
            ];
            await ref.write(seed);
            await b.write(seed);
          }
          const expected = [];
          for (const w of batches) expected.push(await ref.write(w));
          const got = await Promise.all(batches.map((w) => b.write(w)));
          // Per batch: the outcome, the op results, and the document after the batch per key.
          const strip = (r: Awaited<ReturnType<Backend['write']>>, ws: DocWrite[]) => {
            if (!r.applied) return { applied: false, reason: r.reason, index: r.index };
            const after = new Map(ws.map((w, i) => [w.key, r.docs[i]]));
            return {
              applied: true,
              results: r.results,
              after: [...after].map(([k, d]) => [k, d && { v: d.version, data: d.data }]),
            };
          };
          expect(got.map((r, i) => strip(r, batches[i] as DocWrite[]))).toEqual(
            expected.map((r, i) => strip(r, batches[i] as DocWrite[])),
          );
          const keys = ['a', 'b', 'c'].map((key) => ({ model: m, key: `${run}.${key}` }));
          const [mine, theirs] = await Promise.all([b.read(keys), ref.read(keys)]);
          expect(mine.map((d) => d && { v: d.version, data: d.data })).toEqual(
            theirs.map((d) => d && { v: d.version, data: d.data }),
          );
          // Field versions (what fieldsUnchangedSince compares) must have been stored too.
          for (const d of theirs) {
            if (!d) continue;
            for (const field of ['a', 'n', 'list', 'é😀']) {
              const probe: DocWrite[] = [
                {
                  kind: 'patch',
                  model: m,
                  key: d.key,
                  ops: [{ op: 'unset', field }],
                  fieldsUnchangedSince: Math.max(1, d.version - 1),
                },
              ];
              const [x, y] = [await b.write(probe), await ref.write(probe)];
              expect(x.applied ? 'applied' : x.reason).toBe(y.applied ? 'applied' : y.reason);
            }
          }
          await ref.close();
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('keys', () => {
  it('distinct (model, key) pairs never share a Redis key, and a key never leaves its hash tag', () => {
    const layout = new KeyLayout('p:{x}');
    const keyArb = fc.string({
      unit: fc.constantFrom('a', ':', '{', '}', '%', '7', 'B', '😀', '\ud800', 'u'),
      maxLength: 6,
    });
    fc.assert(
      fc.property(keyArb, keyArb, (k1, k2) => {
        const d1 = layout.doc('m', k1);
        const d2 = layout.doc('m', k2);
        if (k1 !== k2) expect(d1.doc).not.toBe(d2.doc);
        // The hash tag is the text between the first '{' and the next '}': the whole tag.
        const open = d1.doc.indexOf('{');
        const close = d1.doc.indexOf('}', open + 1);
        expect(d1.doc.slice(open + 1, close)).toBe(d1.tag);
        expect(layout.lease(d1, 'act').lease.startsWith(d1.doc)).toBe(true);
      }),
      { numRuns: 2000 },
    );
    expect(escapeSegment('a:{b}%')).toBe('a%3A%7Bb%7D%25');
    expect(clusterSlot('123456789')).toBe(12739);
  });

  it('keys with any characters are distinct documents end to end', async () => {
    const m = model();
    const keys = ['a:b', 'a%3Ab', '{a}', '}', '{', 'a', 'é😀', ' ', 'a:b:c', '%', '%25'];
    for (const [i, key] of keys.entries()) {
      const r = await b.write([{ kind: 'create', model: m, key, data: { i } }]);
      expect(r.applied).toBe(true);
    }
    const docs = await b.read(keys.map((key) => ({ model: m, key })));
    expect(docs.map((d) => d?.data.i)).toEqual(keys.map((_, i) => i));
  });
});

describe('leases', () => {
  it('waiters are served in FIFO order', async () => {
    const m = model();
    await b.write([{ kind: 'create', model: m, key: 'k', data: { n: 0 } }]);
    const first = await b.acquire(lease(m, ['k']));
    const order: number[] = [];
    const others = [redis({ url, prefix }), redis({ url, prefix })];
    const waiters: Promise<void>[] = [];
    const queueKey = `${new KeyLayout(prefix).lease(new KeyLayout(prefix).doc(m, 'k'), 'default').queue}`;
    for (let i = 0; i < 6; i++) {
      const backend = i % 3 === 2 ? b : (others[i % 2] as Backend);
      waiters.push(
        backend.acquire(lease(m, ['k'])).then(async (l) => {
          order.push(i);
          await l?.release();
        }),
      );
      // Wait until this waiter is queued in Redis before starting the next one.
      for (let t = 0; t < 500 && (await admin.llen(queueKey)) < i + 1; t++) {
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    await first?.release();
    await Promise.all(waiters);
    expect(order).toEqual([0, 1, 2, 3, 4, 5]);
    await Promise.all(others.map((o) => o.close()));
  });

  it('a commit or release hands over to a multi-key or shared waiter at the head of the queue at once', async () => {
    // A sole holder's release takes the short hand-off (release_owner in lib.lua); a head it
    // cannot grant there (several keys, or shared) must still be woken now, not by its fallback
    // timer (seconds away with leaseMs 30 s): each waiter's timeout below is far shorter.
    const m = model();
    await b.write([
      { kind: 'create', model: m, key: 'k', data: { n: 0 } },
      { kind: 'create', model: m, key: 'k2', data: { n: 0 } },
    ]);
    const queueKey = new KeyLayout(prefix).lease(
      new KeyLayout(prefix).doc(m, 'k'),
      'default',
    ).queue;
    const other = redis({ url, prefix });
    try {
      for (const end of ['commit', 'release'] as const) {
        const slow = { leaseMs: 30_000, timeoutMs: 2_000 };
        const holder = await b.acquire(lease(m, ['k'], { leaseMs: 30_000 }));
        const order: string[] = [];
        const wait = (who: string, backend: Backend, req: LeaseRequest) =>
          backend.acquire(req).then(async (l) => {
            order.push(who);
            await l?.release();
          });
        const waiters: Promise<void>[] = [];
        const queue = async (who: string, backend: Backend, req: LeaseRequest, len: number) => {
          waiters.push(wait(who, backend, req));
          for (let t = 0; t < 500 && (await admin.llen(queueKey)) < len; t++) {
            await new Promise((r) => setTimeout(r, 5));
          }
        };
        await queue('multi', other, lease(m, ['k', 'k2'], slow), 1);
        await queue('shared1', b, lease(m, ['k'], { ...slow, mode: 'shared' }), 2);
        await queue('shared2', other, lease(m, ['k'], { ...slow, mode: 'shared' }), 3);
        await queue('exclusive', b, lease(m, ['k'], slow), 4);
        if (end === 'commit') {
          const r = await holder?.commit([
            { kind: 'patch', model: m, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
          ]);
          expect(r?.applied).toBe(true);
        } else await holder?.release();
        await Promise.all(waiters);
        expect(order[0]).toBe('multi');
        expect(order.slice(1, 3).sort()).toEqual(['shared1', 'shared2']);
        expect(order[3]).toBe('exclusive');
      }
      expect(await admin.llen(queueKey)).toBe(0);
    } finally {
      await other.close();
    }
  });

  it('hands over to waiters of the same process in the commit reply, to others by pub/sub', async () => {
    // Every backend publishes its wake-ups on `<prefix>:wake:<instance>`: watch them all.
    const own = `lshand:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
    const watcher = new Redis(url);
    const messages: string[] = [];
    watcher.on('pmessage', (_p: string, channel: string) => messages.push(channel));
    await watcher.psubscribe(new KeyLayout(own).channel('*'));
    const one = redis({ url, prefix: own });
    const two = redis({ url, prefix: own });
    try {
      const m = model();
      await one.write([{ kind: 'create', model: m, key: 'k', data: { n: 0 } }]);
      const bump = async (backend: Backend, times: number) => {
        for (let i = 0; i < times; i++) {
          const l = await backend.acquire(lease(m, ['k']));
          const r = await l?.commit([
            { kind: 'patch', model: m, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
          ]);
          expect(r?.applied).toBe(true);
        }
      };
      // One process, 4 tasks, 100 hand-offs: none goes through pub/sub.
      await Promise.all([0, 1, 2, 3].map(() => bump(one, 25)));
      expect((await one.read([{ model: m, key: 'k' }]))[0]?.data).toEqual({ n: 100 });
      await watcher.ping();
      expect(messages).toEqual([]);
      // Two processes: hand-offs between them are published; every increment still counts once.
      await Promise.all([0, 1, 2, 3].map((i) => bump(i % 2 === 0 ? one : two, 25)));
      expect((await one.read([{ model: m, key: 'k' }]))[0]?.data).toEqual({ n: 200 });
      await watcher.ping();
      expect(messages.length).toBeGreaterThan(0);
    } finally {
      await one.close();
      await two.close();
      await watcher.quit();
      await dropPrefix(admin, own);
    }
  });

  it('an aborted or timed-out waiter leaves nothing queued and wakes the next one', async () => {
    const m = model();
    await b.write([{ kind: 'create', model: m, key: 'k', data: { n: 0 } }]);
    const holder = await b.acquire(lease(m, ['k']));
    const ac = new AbortController();
    const reason = new Error('stop');
    const aborted = b.acquire(lease(m, ['k'], { signal: ac.signal }));
    const timed = b.acquire(lease(m, ['k'], { timeoutMs: 30 }));
    const last = b.acquire(lease(m, ['k']));
    setTimeout(() => ac.abort(reason), 20);
    await expect(aborted).rejects.toBe(reason);
    await expect(timed).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
    await holder?.release();
    const l = await last;
    expect(l).toBeDefined();
    await l?.release();
    const layout = new KeyLayout(prefix);
    const lk = layout.lease(layout.doc(m, 'k'), 'default');
    expect(await admin.exists(lk.queue, lk.queueInfo, lk.lease)).toBe(0);
  });

  it('fences strictly increase across holders; a released lease cannot commit', async () => {
    const m = model();
    await b.write([{ kind: 'create', model: m, key: 'k', data: { n: 0 } }]);
    const fences: number[] = [];
    for (let i = 0; i < 5; i++) {
      const l = await b.acquire(lease(m, ['k']));
      fences.push(l?.fences[0] as number);
      await l?.release();
      const r = await l?.commit([
        { kind: 'patch', model: m, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
      ]);
      expect(r).toMatchObject({ applied: false, reason: 'fence' });
    }
    expect(fences).toEqual([...fences].sort((x, y) => x - y));
    expect(new Set(fences).size).toBe(5);
  });
});

describe('scripts and clients', () => {
  // SCRIPT FLUSH, FUNCTION DELETE, ACL SETUSER and CONFIG RESETSTAT act on the whole server: these
  // run on a Redis of their own, which no other test file uses.
  let server: RedisServer;
  let url: string;
  let admin: Redis;
  let b: Backend;
  beforeAll(async () => {
    server = await startRedis();
    url = server.url;
    admin = new Redis(url);
    b = redis({ url, prefix });
  });
  afterAll(async () => {
    await b?.close();
    admin?.disconnect();
    await server?.stop();
  });

  it("scripts: 'eval' reloads after SCRIPT FLUSH (NOSCRIPT) and needs no function library", async () => {
    const viaEval = redis({ url, prefix, scripts: 'eval' });
    try {
      const m = model();
      await admin.script('FLUSH');
      const r = await viaEval.write([{ kind: 'create', model: m, key: 'k', data: { n: 1 } }]);
      expect(r.applied).toBe(true);
      const l = await viaEval.acquire(lease(m, ['k']));
      expect(l?.docs[0]?.data).toEqual({ n: 1 });
      const c = await l?.commit([
        { kind: 'patch', model: m, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
      ]);
      expect(c?.applied).toBe(true);
      expect((await b.read([{ model: m, key: 'k' }]))[0]?.data).toEqual({ n: 2 });
    } finally {
      await viaEval.close();
    }
  });

  it('the function library is loaded again after FUNCTION DELETE', async () => {
    const m = model();
    await b.write([{ kind: 'create', model: m, key: 'k', data: { n: 1 } }]);
    const libraries = async (): Promise<string[]> => {
      const list = (await admin.call(
        'FUNCTION',
        'LIST',
        'LIBRARYNAME',
        'lockstep_*',
      )) as unknown[][];
      return list.map((entry) => String(entry[1]));
    };
    const before = await libraries();
    expect(before.length).toBeGreaterThan(0);
    // Deleted under a backend that has it loaded: exactly the situation the reload is for.
    for (const name of before) await admin.call('FUNCTION', 'DELETE', name).catch(() => {});
    const r = await b.write([
      { kind: 'patch', model: m, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
    ]);
    expect(r.applied).toBe(true);
    expect((await b.read([{ model: m, key: 'k' }]))[0]?.data).toEqual({ n: 2 });
    expect((await libraries()).length).toBeGreaterThan(0);
  });

  it("scripts: 'auto' falls back to EVALSHA when FUNCTION LOAD is not allowed (ACL)", async () => {
    const user = `lsnofn${process.pid}`;
    await admin.call('ACL', 'SETUSER', user, 'on', 'nopass', '~*', '&*', '+@all', '-function');
    const client = new Redis(url, { username: user, password: 'x' });
    const client2 = new Redis(url, { username: user, password: 'x' });
    const auto = redis({ client, prefix });
    const strict = redis({
      client: client2,
      prefix,
      scripts: 'functions',
    });
    try {
      const m = model();
      const r = await auto.write([{ kind: 'create', model: m, key: 'k', data: { n: 1 } }]);
      expect(r.applied).toBe(true);
      const l = await auto.acquire(lease(m, ['k']));
      const c = await l?.commit([
        { kind: 'patch', model: m, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
      ]);
      expect(c?.applied).toBe(true);
      // Asked for functions explicitly: a clear error instead of a silent fallback.
      await expect(strict.read([{ model: m, key: 'k' }])).rejects.toMatchObject({
        code: 'BACKEND',
        message: expect.stringContaining('FUNCTION LOAD'),
      });
    } finally {
      await auto.close();
      await strict.close();
      await client.quit();
      await client2.quit();
      await admin.call('ACL', 'DELUSER', user);
    }
  });

  it("scripts: 'functions' uses FCALL, and a bad scripts option is refused", async () => {
    const viaFunctions = redis({ url, prefix, scripts: 'functions' });
    try {
      const m = model();
      await admin.config('RESETSTAT');
      await viaFunctions.write([{ kind: 'create', model: m, key: 'k', data: { n: 1 } }]);
      const stats = await admin.info('commandstats');
      expect(stats).toMatch(/cmdstat_fcall:calls=[1-9]/);
    } finally {
      await viaFunctions.close();
    }
    expect(() => redis({ url, prefix, scripts: 'lua' as 'eval' })).toThrow(ValidationError);
  });

  it('never closes a client it did not open', async () => {
    const client = new Redis(url);
    const mine = redis({ client, prefix });
    const m = model();
    await mine.write([{ kind: 'create', model: m, key: 'k', data: { n: 1 } }]);
    const l = await mine.acquire(lease(m, ['k']));
    await l?.release();
    await mine.close();
    expect(await client.ping()).toBe('PONG');
    await client.quit();
  });

  it('with cluster: true, a batch across slots is refused with how to co-locate; hashTag co-locates', async () => {
    const m = model();
    const c = redis({ url, prefix, cluster: true });
    const writes = [
      { kind: 'create' as const, model: m, key: 'user:1:a', data: { n: 1 } },
      { kind: 'create' as const, model: m, key: 'user:2:b', data: { n: 1 } },
    ];
    const err = await c.write(writes).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect(String((err as Error).message)).toContain('hashTag');
    expect(await c.read([{ model: m, key: 'user:1:a' }])).toEqual([undefined]);
    await c.close();
    const tagged = redis({ url, prefix, cluster: true, hashTag: (_m, k) => k.split(':')[1] ?? k });
    const ok = await tagged.write([
      { kind: 'create', model: m, key: 'user:7:a', data: { n: 1 } },
      { kind: 'create', model: m, key: 'user:7:b', data: { n: 2 } },
    ]);
    expect(ok.applied).toBe(true);
    await tagged.close();
  });
});

describe('renewal, expiry and errors through the store API', () => {
  const schema = z.object({ n: z.number() });

  /** Two stores (two backends, as two processes would have) and one model in each. */
  const twoStores = async () => {
    const { createStore } = await import('../../../src/index.js');
    const s1 = createStore(redis({ url, prefix }));
    const s2 = createStore(redis({ url, prefix }));
    const name = model();
    return { s1, s2, M1: s1.model(name, schema), M2: s2.model(name, schema) };
  };

  it('renew: true keeps a lease past leaseMs while fn runs; renew: false lets it expire', async () => {
    const { s1, s2, M1, M2 } = await twoStores();
    await M1.create('k', { n: 0 });
    // Renewed: another process sees it busy well past leaseMs, and the holder commits.
    let busyLate = false;
    await M1.lock(
      'k',
      async (d) => {
        await new Promise((r) => setTimeout(r, 450));
        busyLate = await M2.lock('k', () => false, { nowait: true }).catch(
          (e: { code?: string }) => e.code === 'LOCK_BUSY',
        );
        d.n = 1;
      },
      { leaseMs: 150 },
    );
    expect(busyLate).toBe(true);
    expect((await M2.get('k')).data.n).toBe(1);
    // Not renewed: the lease expires, someone else writes, the late commit is refused.
    const late = M1.lock(
      'k',
      async (d) => {
        await new Promise((r) => setTimeout(r, 400));
        d.n = 100;
      },
      { leaseMs: 100, renew: false },
    );
    await new Promise((r) => setTimeout(r, 150));
    await M2.lock('k', (d) => void (d.n = 2), { timeoutMs: 5_000 });
    await expect(late).rejects.toMatchObject({ code: 'LEASE_LOST' });
    expect((await M2.get('k')).data.n).toBe(2);
    await s1.close();
    await s2.close();
  });

  it('one renewal timer serves leases of different lengths: a short lease taken after a long one is renewed in time', async () => {
    // The backend renews every held lease from one timer, at the shortest period among them: a
    // 150 ms lease taken while a 30 s lease sets a 10 s period must shorten it, or it expires.
    const { s1, s2, M1, M2 } = await twoStores();
    await M1.create('long', { n: 0 });
    await M1.create('short', { n: 0 });
    const busy = (key: string) =>
      M2.lock(key, () => false, { nowait: true }).catch(
        (e: { code?: string }) => e.code === 'LOCK_BUSY',
      );
    let letGo = (): void => {};
    const gate = new Promise<void>((r) => (letGo = r));
    const long = M1.lock(
      'long',
      async (d) => {
        await gate;
        d.n = 1;
      },
      { leaseMs: 30_000 },
    );
    const checks: boolean[] = [];
    await M1.lock(
      'short',
      async (d) => {
        for (let i = 0; i < 4; i++) {
          await new Promise((r) => setTimeout(r, 150));
          checks.push(await busy('short'));
        }
        d.n = 1;
      },
      { leaseMs: 150 },
    );
    letGo();
    await long;
    expect(checks).toEqual([true, true, true, true]);
    expect((await M2.get('short')).data.n).toBe(1);
    expect((await M2.get('long')).data.n).toBe(1);
    await s1.close();
    await s2.close();
  });

  it("a throw in fn is the caller's error even when the connection is gone (never hidden by release)", async () => {
    const { createStore } = await import('../../../src/index.js');
    const client = new Redis(url, {
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
    });
    client.on('error', () => {});
    const store = createStore(redis({ client, prefix }));
    const M = store.model(model(), schema);
    await M.create('k', { n: 0 });
    const mine = new Error('my own failure');
    const err = await M.lock('k', async () => {
      client.disconnect(); // the release that follows cannot reach Redis
      throw mine;
    }).catch((e: unknown) => e);
    expect(err).toBe(mine);
    await store.close();
  });

  it('close() rejects waiting acquires with BackendError and later calls fail clearly', async () => {
    const other = redis({ url, prefix });
    const m = model();
    await b.write([{ kind: 'create', model: m, key: 'k', data: { n: 0 } }]);
    const holder = await b.acquire(lease(m, ['k']));
    const waiting = other.acquire(lease(m, ['k']));
    await new Promise((r) => setTimeout(r, 50));
    const outcome = waiting.catch((e: unknown) => e);
    await other.close();
    expect(await outcome).toMatchObject({ code: 'BACKEND' });
    await expect(other.read([{ model: m, key: 'k' }])).rejects.toMatchObject({ code: 'BACKEND' });
    await holder?.release();
    // The closed waiter left the queue: the key is free at once.
    const again = await b.acquire(lease(m, ['k'], { nowait: true }));
    expect(again).toBeDefined();
    await again?.release();
  });
});
