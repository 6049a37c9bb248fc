/**
 * What locking leaves on Redis, and what a lease says about itself:
 * - no key without a TTL remains under the prefix but the documents, after locks, a lock on a
 *   missing document (NotFoundError), delete() and close(); fences stay strictly increasing, and
 *   exact integers, across the expiry of their counter;
 * - `lease.signal` aborts with LeaseLostError when the lease is known lost (`renew: false` at
 *   leaseMs, a refused renewal); `release()` answers whether the lease still held, the same on a
 *   second call;
 * - write semantics: a patch without ops writes nothing; a guard refusal names the first false
 *   guard; guards comparing with another field (`ref`); a malformed URL is a ValidationError.
 */
import type { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { redis } from '../../../src/backends/redis/index.js';
import { KeyLayout } from '../../../src/backends/redis/keys.js';
import { LeaseLostError, NotFoundError, ValidationError } from '../../../src/errors.js';
import { createStore } from '../../../src/index.js';
import type { Backend, DocWrite, Guard } from '../../../src/store/backend.js';
import { dropPrefix } from './drop-prefix.js';
import { oneKeyLease as lease, prefixedSpace } from './prefixed.js';

const space = prefixedSpace('lskl', 1);
const { url, prefix, layout } = space;
let admin: Redis;
let b: Backend;
beforeAll(() => {
  admin = space.admin;
  b = space.backends[0] as Backend;
});

/** Every key under `p` with its PTTL (-1: no TTL). */
async function keysWithTtl(p: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', new KeyLayout(p).pattern, 'COUNT', 500);
    cursor = next;
    for (const k of keys) out.set(k, await admin.pttl(k));
  } while (cursor !== '0');
  return out;
}

/** Resolves when `signal` aborts (bounded), with its reason. */
function aborted(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the lease signal never aborted')), 10_000);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve(signal.reason);
    });
  });
}

describe('redis: what locking leaves behind', () => {
  it('after locks, NotFoundError, delete() and close(): no key without a TTL but the documents', async () => {
    const p = `${prefix}:leak`;
    const store = createStore(redis({ url, prefix: p }));
    const M = store.model('acct', z.object({ n: z.number().int() }));
    await M.create('kept', { n: 0 });
    await M.create('gone', { n: 0 });
    for (let i = 0; i < 3; i++) {
      await M.lock('kept', (d) => {
        d.n += 1;
      });
    }
    await M.lock('gone', (d) => {
      d.n += 1;
    });
    await M.delete('gone');
    await expect(M.lock('never', (d) => void d)).rejects.toBeInstanceOf(NotFoundError);
    await expect(M.lock('gone', (d) => void d)).rejects.toBeInstanceOf(NotFoundError);
    // A lease of another action and a shared one too.
    await M.lock('kept', () => {}, { action: 'audit' });
    await M.lock('kept', () => {}, { mode: 'shared' } as never).catch(() => {});
    await store.close();
    const keys = await keysWithTtl(p);
    const docs = new Set([new KeyLayout(p).doc('acct', 'kept').doc]);
    const noTtl = [...keys].filter(([k, ttl]) => ttl === -1 && !docs.has(k)).map(([k]) => k);
    expect(noTtl).toEqual([]);
    // The fence counters are there (with their TTL), for the names that were locked.
    expect(keys.get(new KeyLayout(p).doc('acct', 'never').fence)).toBeGreaterThan(0);
    await dropPrefix(admin, p);
  });

  it('fences strictly increase across the expiry of their counter, and are exact integers', async () => {
    const m = 'fence';
    await b.write([{ kind: 'put', model: m, key: 'k', data: { n: 0 } }]);
    const fences: number[] = [];
    const fenceKey = layout.doc(m, 'k').fence;
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) {
        const l = await b.acquire(lease(m, 'k'));
        fences.push(l?.fences[0] as number);
        await l?.release();
      }
      // The counter expires (as it does FENCE_TTL_MS after it was seeded).
      expect(await admin.pttl(fenceKey)).toBeGreaterThan(0);
      await admin.del(fenceKey);
    }
    for (const f of fences) expect(Number.isSafeInteger(f)).toBe(true);
    for (let i = 1; i < fences.length; i++) {
      expect(fences[i] as number).toBeGreaterThan(fences[i - 1] as number);
    }
    // A counter left by an older version (small, no TTL) is seeded above itself.
    await admin.set(fenceKey, '41');
    const l = await b.acquire(lease(m, 'k'));
    expect(l?.fences[0] as number).toBeGreaterThan(fences[fences.length - 1] as number);
    await l?.release();
    expect(await admin.pttl(fenceKey)).toBeGreaterThan(0);
  });
});

describe('redis leases: signal, lost, release', () => {
  it('renew: false: lost and the signal aborted with LeaseLostError once leaseMs has passed', async () => {
    const m = 'norenew';
    await b.write([{ kind: 'put', model: m, key: 'k', data: { n: 0 } }]);
    const l = await b.acquire(lease(m, 'k', { leaseMs: 150, renew: false }));
    expect(l?.lost).toBe(false);
    expect(l?.signal.aborted).toBe(false);
    const reason = await aborted(l?.signal as AbortSignal);
    expect(reason).toBeInstanceOf(LeaseLostError);
    expect(l?.lost).toBe(true);
    // Expired on the server too: release finds it gone.
    await new Promise((r) => setTimeout(r, 50));
    expect(await l?.release()).toBe(false);
    expect(await l?.release()).toBe(false);
  });

  it('a refused renewal (the lease taken away) aborts the signal', async () => {
    const m = 'refused';
    await b.write([{ kind: 'put', model: m, key: 'k', data: { n: 0 } }]);
    const l = await b.acquire(lease(m, 'k', { leaseMs: 300 }));
    await admin.del(layout.lease(layout.doc(m, 'k'), 'default').lease);
    const reason = await aborted(l?.signal as AbortSignal);
    expect(reason).toBeInstanceOf(LeaseLostError);
    // Lost because the renewal was refused (not only later, when leaseMs ran out).
    expect((reason as LeaseLostError).message).toMatch(/renewal was refused/);
    expect(l?.lost).toBe(true);
    expect(await l?.release()).toBe(false);
  });

  it('release() is true while held, the same on a second call; false once taken over', async () => {
    const m = 'release';
    await b.write([{ kind: 'put', model: m, key: 'k', data: { n: 0 } }]);
    const held = await b.acquire(lease(m, 'k'));
    expect(await held?.release()).toBe(true);
    expect(await held?.release()).toBe(true);
    expect(held?.signal.aborted).toBe(false);
    const short = await b.acquire(lease(m, 'k', { leaseMs: 60, renew: false }));
    await aborted(short?.signal as AbortSignal);
    await new Promise((r) => setTimeout(r, 30));
    const other = redis({ url, prefix });
    try {
      const next = await other.acquire(lease(m, 'k'));
      expect(await short?.release()).toBe(false);
      // The taker still holds it: its release is true.
      expect(await next?.release()).toBe(true);
    } finally {
      await other.close();
    }
  });

  it('a lease that ends (commit, release) before leaseMs is never aborted', async () => {
    const m = 'ended';
    await b.write([{ kind: 'put', model: m, key: 'k', data: { n: 0 } }]);
    const a = await b.acquire(lease(m, 'k', { leaseMs: 80, renew: false }));
    await a?.commit([
      { kind: 'patch', model: m, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
    ]);
    const c = await b.acquire(lease(m, 'k', { leaseMs: 80, renew: false }));
    await c?.release();
    await new Promise((r) => setTimeout(r, 200));
    expect(a?.signal.aborted).toBe(false);
    expect(c?.signal.aborted).toBe(false);
  });
});

describe('redis write semantics', () => {
  const m = 'sem';
  const put = (key: string, data: Record<string, unknown>): DocWrite =>
    ({ kind: 'put', model: m, key, data }) as DocWrite;
  const patch = (key: string, extra: Partial<DocWrite & { kind: 'patch' }>): DocWrite => ({
    kind: 'patch',
    model: m,
    key,
    ops: [],
    ...extra,
  });

  for (const checked of [false, true]) {
    const check = checked ? { check: () => undefined } : {};
    const how = checked ? ' (schema-checked: predicted in JavaScript)' : '';

    it(`a patch with no ops writes nothing and keeps the version${how}`, async () => {
      const key = `noop${checked}`;
      await b.write([put(key, { n: 1 })]);
      const [before] = await b.read([{ model: m, key }]);
      const r = await b.write([patch(key, { ...check })]);
      expect(r).toMatchObject({ applied: true, results: [[]] });
      expect(r.applied && r.docs[0]?.version).toBe(before?.version);
      const [after] = await b.read([{ model: m, key }]);
      expect(after).toEqual(before);
      // Its guards still decide.
      const refused = await b.write([
        patch(key, { ...check, guards: [{ guard: 'cmp', field: 'n', cmp: 'eq', value: 2 }] }),
      ]);
      expect(refused).toMatchObject({ applied: false, reason: 'guard', index: 0, guard: 0 });
      // And the next write bumps it by one.
      const next = await b.write([
        patch(key, { ...check, ops: [{ op: 'incr', field: 'n', by: 1 }] }),
      ]);
      expect(next.applied && next.docs[0]?.version).toBe((before?.version as number) + 1);
    });

    it(`a guard refusal names the first false guard of its write${how}`, async () => {
      const key = `gi${checked}`;
      await b.write([put('other', { n: 0 }), put(key, { n: 5, tags: ['a'] })]);
      const guards: Guard[] = [
        { guard: 'exists', field: 'n', value: true },
        { guard: 'cmp', field: 'n', cmp: 'lt', value: 3 },
        { guard: 'contains', field: 'tags', value: 'zz' },
      ];
      const r = await b.write([
        patch('other', { ops: [{ op: 'incr', field: 'n', by: 1 }] }),
        patch(key, { ...check, guards, ops: [{ op: 'incr', field: 'n', by: 1 }] }),
      ]);
      expect(r).toMatchObject({ applied: false, reason: 'guard', index: 1, guard: 1 });
      const [o] = await b.read([{ model: m, key: 'other' }]);
      expect(o?.data.n).toBe(0);
    });

    it(`guards compare a field with another field of the document (ref, length)${how}`, async () => {
      const key = `ref${checked}`;
      await b.write([put(key, { taken: 2, max: 3, list: ['x', 'y'], name: 'héllo😀', s: 'abc' })]);
      const cases: Array<[Guard, boolean]> = [
        [{ guard: 'cmp', field: 'taken', cmp: 'lt', ref: { field: 'max' } }, true],
        [{ guard: 'cmp', field: 'max', cmp: 'lte', ref: { field: 'taken' } }, false],
        [{ guard: 'cmp', field: 'list', cmp: 'lt', length: true, ref: { field: 'max' } }, true],
        [{ guard: 'cmp', field: 'list', cmp: 'eq', length: true, ref: { field: 'taken' } }, true],
        // "héllo😀": 7 UTF-16 code units; "abc": 3.
        [
          {
            guard: 'cmp',
            field: 'name',
            cmp: 'gt',
            length: true,
            ref: { field: 's', length: true },
          },
          true,
        ],
        [{ guard: 'cmp', field: 'max', cmp: 'eq', ref: { field: 's', length: true } }, true],
        [{ guard: 'cmp', field: 'taken', cmp: 'eq', ref: { field: 'taken' } }, true],
        // A missing ref field: ne true, every other comparison false.
        [{ guard: 'cmp', field: 'taken', cmp: 'ne', ref: { field: 'nope' } }, true],
        [{ guard: 'cmp', field: 'taken', cmp: 'eq', ref: { field: 'nope' } }, false],
        [{ guard: 'cmp', field: 'taken', cmp: 'lt', ref: { field: 'nope' } }, false],
        // The length of a missing ref field is 0.
        [{ guard: 'cmp', field: 'taken', cmp: 'gt', ref: { field: 'nope', length: true } }, true],
        // The length of a number is no length: like a missing field.
        [{ guard: 'cmp', field: 'taken', cmp: 'eq', ref: { field: 'max', length: true } }, false],
        [{ guard: 'cmp', field: 'taken', cmp: 'ne', ref: { field: 'max', length: true } }, true],
      ];
      for (const [g, holds] of cases) {
        const r = await b.write([
          patch(key, { ...check, guards: [g], ops: [{ op: 'incr', field: 'hits', by: 1 }] }),
        ]);
        expect({ g, applied: r.applied }).toEqual({ g, applied: holds });
      }
    });
  }

  it('a malformed url is a ValidationError (INVALID) at construction', () => {
    let err: unknown;
    try {
      redis({ url: 'not a url' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).code).toBe('INVALID');
  });
});
