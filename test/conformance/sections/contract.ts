/**
 * The Backend contract itself (src/store/backend.ts), for what the store API cannot show:
 * refusal reasons and indexes, per-write results, post-checks, field-level conflicts, lease
 * commits and lease waiting options.
 */
import { describe, expect, it } from 'vitest';
import type { Backend, DocWrite, LeaseRequest, StoredDoc, WriteResult } from '../api.js';
import { LockBusyError, LockTimeoutError } from '../api.js';
import type { Ctx } from '../harness.js';
import { noHang, rejectsWith } from '../harness.js';

/**
 * A stored document as the assertions compare it: every backend must return an opaque,
 * non-empty string `incarnation` (checked here), whose value differs per backend.
 */
function view(d: StoredDoc | undefined): Omit<StoredDoc, 'incarnation'> | undefined {
  if (d === undefined) return undefined;
  expect(typeof d.incarnation, `incarnation of ${d.key}`).toBe('string');
  expect(d.incarnation).not.toBe('');
  return { key: d.key, version: d.version, data: d.data };
}
const views = (ds: ReadonlyArray<StoredDoc | undefined>) => ds.map(view);

function refused(r: WriteResult): { reason: string; index: number } {
  if (r.applied)
    throw new Error(`expected a refusal, got applied with docs ${JSON.stringify(r.docs)}`);
  return { reason: r.reason, index: r.index };
}

function applied(r: WriteResult) {
  if (!r.applied)
    throw new Error(`expected applied, got refused: ${r.reason} at ${r.index} (${r.detail ?? ''})`);
  return r;
}

/** Registers the raw contract section. */
export function contractSection(ctx: Ctx): void {
  describe('Backend contract (raw)', () => {
    const b = (i: number): Backend => ctx.backend(i);

    it('write: results and docs per write, versions, in batch order', async () => {
      const model = ctx.name('raw');
      const r = applied(
        await b(0).write([
          { kind: 'create', model, key: 'a', data: { n: 1, l: [] } },
          { kind: 'put', model, key: 'b', data: { s: 'x' } },
        ]),
      );
      expect(views(r.docs)).toStrictEqual([
        { key: 'a', version: 1, data: { n: 1, l: [] } },
        { key: 'b', version: 1, data: { s: 'x' } },
      ]);
      expect(r.results).toStrictEqual([[], []]);
      const r2 = applied(
        await b(1).write([
          {
            kind: 'patch',
            model,
            key: 'a',
            ops: [
              { op: 'incr', field: 'n', by: 2 },
              { op: 'append', field: 'l', value: 'x' },
              { op: 'set', field: 'm', value: { k: [] } },
            ],
          },
          { kind: 'delete', model, key: 'b' },
          { kind: 'put', model, key: 'c', data: {} },
        ]),
      );
      expect(views(r2.docs)).toStrictEqual([
        { key: 'a', version: 2, data: { n: 3, l: ['x'], m: { k: [] } } },
        undefined,
        { key: 'c', version: 1, data: {} },
      ]);
      expect(r2.results).toStrictEqual([[3, 1, null], [true], []]);
      expect(
        views(
          await b(0).read([
            { model, key: 'b' },
            { model, key: 'a' },
            { model, key: 'zz' },
            { model, key: 'c' },
          ]),
        ),
      ).toStrictEqual([
        undefined,
        { key: 'a', version: 2, data: { n: 3, l: ['x'], m: { k: [] } } },
        undefined,
        { key: 'c', version: 1, data: {} },
      ]);
      const r3 = applied(await b(0).write([{ kind: 'put', model, key: 'a', data: { z: 1 } }]));
      expect(view(r3.docs[0])).toStrictEqual({ key: 'a', version: 3, data: { z: 1 } });
    });

    it('a batch that writes one document several times reports each write its own document', async () => {
      const model = ctx.name('again');
      await b(0).write([{ kind: 'create', model, key: 'a', data: { n: 0 } }]);
      const r = applied(
        await b(1).write([
          { kind: 'patch', model, key: 'a', ops: [{ op: 'incr', field: 'n', by: 1 }] },
          { kind: 'put', model, key: 'a', data: { n: 10, s: 'x' } },
          {
            kind: 'patch',
            model,
            key: 'a',
            ops: [{ op: 'incr', field: 'n', by: 1 }],
            expectVersion: 3,
          },
          { kind: 'delete', model, key: 'a' },
          { kind: 'create', model, key: 'a', data: { n: 7 } },
        ]),
      );
      expect(views(r.docs)).toStrictEqual([
        { key: 'a', version: 2, data: { n: 1 } },
        { key: 'a', version: 3, data: { n: 10, s: 'x' } },
        { key: 'a', version: 4, data: { n: 11, s: 'x' } },
        undefined,
        { key: 'a', version: 1, data: { n: 7 } },
      ]);
      expect(r.results).toStrictEqual([[1], [], [11], [true], []]);
      expect(views(await b(0).read([{ model, key: 'a' }]))).toStrictEqual([
        { key: 'a', version: 1, data: { n: 7 } },
      ]);
    });

    it('fieldsUnchangedSince sees the writes earlier in the same batch', async () => {
      const model = ctx.name('fsbatch');
      await b(0).write([{ kind: 'create', model, key: 'k', data: { a: 0, b: 0 } }]);
      const set = (field: string, value: number, since?: number): DocWrite => ({
        kind: 'patch',
        model,
        key: 'k',
        ops: [{ op: 'set', field, value }],
        ...(since === undefined ? {} : { fieldsUnchangedSince: since }),
      });
      // a was written by write 0 (version 2), after version 1: conflict, nothing written.
      expect(refused(await b(1).write([set('a', 1), set('a', 2, 1)]))).toStrictEqual({
        reason: 'conflict',
        index: 1,
      });
      // b was not: applied.
      applied(await b(1).write([set('a', 1), set('b', 2, 1)]));
      expect(views(await b(0).read([{ model, key: 'k' }]))).toStrictEqual([
        { key: 'k', version: 3, data: { a: 1, b: 2 } },
      ]);
      // Since version 4 (after write 0 of this batch): applied.
      applied(await b(1).write([set('a', 5), set('a', 6, 4)]));
      expect(views(await b(0).read([{ model, key: 'k' }]))).toStrictEqual([
        { key: 'k', version: 5, data: { a: 6, b: 2 } },
      ]);
    });

    it('refusals: exactly one reason, the index of the first failing write, nothing written', async () => {
      const model = ctx.name('rawref');
      applied(
        await b(0).write([
          { kind: 'create', model, key: 'a', data: { n: 1, s: 'x' } },
          { kind: 'create', model, key: 'b', data: { n: 1 } },
        ]),
      );
      const untouched = async () => {
        expect(
          views(
            await b(1).read([
              { model, key: 'a' },
              { model, key: 'b' },
              { model, key: 'new' },
            ]),
          ),
        ).toStrictEqual([
          { key: 'a', version: 1, data: { n: 1, s: 'x' } },
          { key: 'b', version: 1, data: { n: 1 } },
          undefined,
        ]);
      };
      const incrA: DocWrite = {
        kind: 'patch',
        model,
        key: 'a',
        ops: [{ op: 'incr', field: 'n', by: 1 }],
      };
      const cases: Array<[string, DocWrite[], string, number]> = [
        [
          'exists',
          [
            { kind: 'create', model, key: 'new', data: {} },
            { kind: 'create', model, key: 'b', data: {} },
          ],
          'exists',
          1,
        ],
        ['missing patch', [incrA, { kind: 'patch', model, key: 'ghost', ops: [] }], 'missing', 1],
        [
          'missing delete with expectVersion',
          [incrA, { kind: 'delete', model, key: 'ghost', expectVersion: 1 }],
          'missing',
          1,
        ],
        ['version', [{ ...incrA, expectVersion: 2 }], 'version', 0],
        [
          'delete version',
          [incrA, { kind: 'delete', model, key: 'b', expectVersion: 7 }],
          'version',
          1,
        ],
        [
          'guard',
          [
            incrA,
            {
              kind: 'patch',
              model,
              key: 'b',
              ops: [],
              guards: [{ guard: 'cmp', field: 'n', cmp: 'gt', value: 1 }],
            },
          ],
          'guard',
          1,
        ],
        [
          'invalid op',
          [incrA, { kind: 'patch', model, key: 'a', ops: [{ op: 'incr', field: 's', by: 1 }] }],
          'invalid',
          1,
        ],
        [
          'invalid op first',
          [
            { kind: 'patch', model, key: 'a', ops: [{ op: 'append', field: 'n', value: 1 }] },
            { kind: 'put', model, key: 'new', data: {} },
          ],
          'invalid',
          0,
        ],
        [
          'post-check',
          [
            { kind: 'put', model, key: 'new', data: {} },
            {
              ...incrA,
              key: 'b',
              check: (d) =>
                (d.n as number) > 1 ? [{ message: 'n too big', path: ['n'] }] : undefined,
            },
          ],
          'invalid',
          1,
        ],
        [
          'async post-check',
          [
            {
              ...incrA,
              check: async (d) => ((d.n as number) > 1 ? [{ message: 'no' }] : undefined),
            },
          ],
          'invalid',
          0,
        ],
      ];
      for (const [what, writes, reason, index] of cases) {
        const r = await b(0).write(writes);
        expect(refused(r), what).toStrictEqual({ reason, index });
        await untouched();
      }
      // a delete of a missing document (no expectVersion): refused as 'missing', or applied
      // with result [false] and nothing changed
      const del = await b(0).write([{ kind: 'delete', model, key: 'ghost' }]);
      if (del.applied) expect(del.results).toStrictEqual([[false]]);
      else expect(del).toMatchObject({ reason: 'missing', index: 0 });
      await untouched();
      const r = await b(1).write([
        { ...incrA, check: () => [{ message: 'n too big', path: ['n'] }] },
      ]);
      expect(r.applied).toBe(false);
      if (!r.applied) expect(r.issues).toStrictEqual([{ message: 'n too big', path: ['n'] }]);
      await untouched();
    });

    it('post-check sees the post-image; concurrent writes never slip past it', async () => {
      const model = ctx.name('rawcheck');
      applied(await b(0).write([{ kind: 'create', model, key: 'c', data: { n: 0 } }]));
      const seen: unknown[] = [];
      const check = async (d: Record<string, unknown>) => {
        seen.push(d.n);
        await new Promise((r) => setTimeout(r, 1));
        return (d.n as number) > 10 ? [{ message: 'n above 10' }] : undefined;
      };
      const results = await noHang(
        Promise.all(
          Array.from({ length: 30 }, (_, i) =>
            b(i % 2).write([
              { kind: 'patch', model, key: 'c', ops: [{ op: 'incr', field: 'n', by: 1 }], check },
            ]),
          ),
        ),
        'checked writes',
      );
      expect(results.filter((r) => r.applied).length).toBe(10);
      for (const r of results) if (!r.applied) expect(r.reason).toBe('invalid');
      const [doc] = await b(1).read([{ model, key: 'c' }]);
      expect(view(doc)).toStrictEqual({ key: 'c', version: 11, data: { n: 10 } });
      expect(seen.every((n) => typeof n === 'number' && n >= 1 && n <= 30)).toBe(true);
    });

    it('fieldsUnchangedSince: conflict only on fields written after that version', async () => {
      const model = ctx.name('rawfields');
      applied(await b(0).write([{ kind: 'create', model, key: 'k', data: { a: 0, b: 0, c: 0 } }]));
      applied(
        await b(1).write([
          { kind: 'patch', model, key: 'k', ops: [{ op: 'set', field: 'a', value: 1 }] },
        ]),
      );
      applied(
        await b(1).write([{ kind: 'patch', model, key: 'k', ops: [{ op: 'unset', field: 'c' }] }]),
      );
      // since v1: a and c were written (v2, v3), b was not
      const touch = (field: string) => ({
        kind: 'patch' as const,
        model,
        key: 'k',
        ops: [{ op: 'set' as const, field, value: 9 }],
        fieldsUnchangedSince: 1,
      });
      expect(refused(await b(0).write([touch('a')]))).toStrictEqual({
        reason: 'conflict',
        index: 0,
      });
      expect(refused(await b(0).write([touch('c')]))).toStrictEqual({
        reason: 'conflict',
        index: 0,
      });
      expect(
        refused(
          await b(0).write([
            {
              ...touch('zz'),
              ops: [
                { op: 'set', field: 'b', value: 9 },
                { op: 'set', field: 'a', value: 9 },
              ],
            },
          ]),
        ),
      ).toStrictEqual({ reason: 'conflict', index: 0 });
      const ok = applied(await b(0).write([touch('b')]));
      expect(view(ok.docs[0])).toStrictEqual({ key: 'k', version: 4, data: { a: 1, b: 9 } });
      // since v4 nothing changed
      applied(await b(0).write([{ ...touch('a'), fieldsUnchangedSince: 4 }]));
      // a put rewrites every field: since v4, b is now "changed"
      applied(await b(1).write([{ kind: 'put', model, key: 'k', data: { a: 2, b: 2 } }]));
      expect(refused(await b(0).write([{ ...touch('b'), fieldsUnchangedSince: 5 }])).reason).toBe(
        'conflict',
      );
    });

    it('leases: nowait, skipLocked, timeoutMs, keys in canonical order, commit releases', async () => {
      const model = ctx.name('rawlease');
      applied(
        await b(0).write([
          { kind: 'create', model, key: 'x', data: { n: 0 } },
          { kind: 'create', model, key: 'y', data: { n: 0 } },
        ]),
      );
      const req: LeaseRequest = {
        model,
        keys: ['x', 'y'],
        action: 'default',
        mode: 'exclusive',
        leaseMs: 30_000,
        renew: true,
        nowait: false,
        skipLocked: false,
      };
      const lease = await b(0).acquire(req);
      expect(views(lease!.docs)).toStrictEqual([
        { key: 'x', version: 1, data: { n: 0 } },
        { key: 'y', version: 1, data: { n: 0 } },
      ]);
      expect(lease!.fences.length).toBe(2);
      expect(lease!.lost).toBe(false);
      await rejectsWith(
        b(1).acquire({ ...req, keys: ['y'], nowait: true }),
        LockBusyError,
        'LOCK_BUSY',
      );
      expect(await b(1).acquire({ ...req, keys: ['y'], skipLocked: true })).toBeUndefined();
      await rejectsWith(
        b(1).acquire({ ...req, keys: ['x'], timeoutMs: 30 }),
        LockTimeoutError,
        'LOCK_TIMEOUT',
      );
      const other = await b(1).acquire({ ...req, keys: ['x'], action: 'other', nowait: true });
      await other!.release();
      const waiting = b(1).acquire({ ...req, keys: ['y'] });
      const r = applied(
        await lease!.commit([
          { kind: 'patch', model, key: 'x', ops: [{ op: 'incr', field: 'n', by: 1 }] },
          { kind: 'patch', model, key: 'y', ops: [{ op: 'incr', field: 'n', by: 2 }] },
        ]),
      );
      expect(r.results).toStrictEqual([[1], [2]]);
      const next = await noHang(waiting, 'waiter after commit');
      expect(views(next!.docs)).toStrictEqual([{ key: 'y', version: 2, data: { n: 2 } }]);
      expect(next?.fences[0]).toBeGreaterThan(lease?.fences[1] ?? Number.POSITIVE_INFINITY);
      await next!.release();
      await next!.release(); // idempotent
      await lease!.release(); // after commit: idempotent, no throw
      const free = await b(0).acquire({ ...req, nowait: true });
      await free!.release();
    });

    it('a refused lease commit (guard) still releases the lease and writes nothing', async () => {
      const model = ctx.name('rawlease2');
      applied(await b(0).write([{ kind: 'create', model, key: 'x', data: { n: 0 } }]));
      const req: LeaseRequest = {
        model,
        keys: ['x'],
        action: 'default',
        mode: 'exclusive',
        leaseMs: 30_000,
        renew: true,
        nowait: false,
        skipLocked: false,
      };
      const lease = await b(0).acquire(req);
      const r = await lease!.commit([
        {
          kind: 'patch',
          model,
          key: 'x',
          ops: [{ op: 'incr', field: 'n', by: 1 }],
          guards: [{ guard: 'cmp', field: 'n', cmp: 'eq', value: 5 }],
        },
      ]);
      expect(refused(r)).toStrictEqual({ reason: 'guard', index: 0 });
      const again = await b(1).acquire({ ...req, nowait: true });
      await again!.release();
      expect((await b(1).read([{ model, key: 'x' }]))[0]!.version).toBe(1);
    });
  });
}
