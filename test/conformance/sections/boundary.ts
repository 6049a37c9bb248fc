/**
 * The unwritten rules of `src/store/backend.ts`, written: plain writers wait for exclusive leases
 * of the default action (bounded by their timeout and signal; shared leases and other actions do
 * not hold them back), a patch with no ops writes nothing, a guard refusal names its guard,
 * guards comparing two fields of one document, a lease's lost signal and what `release()`
 * reports, canonical key order, the default action, and program order. Through the store API
 * where it shows the rule, through the Backend contract (`ctx.backend(i)`) where only it can.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { leaseRequest } from '../../support/lease-request.js';
import type { Backend, DocWrite, Guard, Lease, LeaseRequest, WriteResult } from '../api.js';
import {
  ConflictError,
  DeadlockError,
  LeaseLostError,
  LockBusyError,
  LockTimeoutError,
} from '../api.js';
import type { Ctx } from '../harness.js';
import { deferred, noHang, rejectsWith, sleep, tally, until } from '../harness.js';

const counter = z.object({ n: z.number().int(), l: z.array(z.string()) });
type Counter = z.infer<typeof counter>;
const zero: Counter = { n: 0, l: [] };

function applied(r: WriteResult) {
  if (!r.applied)
    throw new Error(`expected applied, got refused: ${r.reason} at ${r.index} (${r.detail ?? ''})`);
  return r;
}

function refused(r: WriteResult) {
  if (r.applied) throw new Error(`expected a refusal, got applied: ${JSON.stringify(r.docs)}`);
  return r;
}

/** Registers the boundary section: the contract's unwritten rules. */
export function boundarySection(ctx: Ctx): void {
  const both = (prefix: string) => {
    const name = ctx.name(prefix);
    return [ctx.client(0).model(name, counter), ctx.client(1).model(name, counter)] as const;
  };
  const b = (i: number): Backend => ctx.backend(i);
  const request = leaseRequest;
  const acquire = async (i: number, r: LeaseRequest): Promise<Lease> => {
    const lease = await noHang(b(i).acquire(r), 'acquire');
    if (!lease) throw new Error('expected a lease');
    return lease;
  };
  const incr = (model: string, key: string, by = 1): DocWrite => ({
    kind: 'patch',
    model,
    key,
    ops: [{ op: 'incr', field: 'n', by }],
  });
  const version = async (i: number, model: string, key: string) =>
    (await b(i).read([{ model, key }]))[0]?.version;

  describe('boundary: plain writers wait for exclusive leases', () => {
    it('apply, update, put, delete and store.apply issued while a lock holder works land after its commit; the holder meets no ConflictError', async () => {
      const M = both('wait_kinds');
      const keys = ['a', 'b', 'c', 'd', 'e'];
      for (const k of keys) await M[0].create(k, zero);
      const inside = deferred();
      const go = deferred();
      const holder = M[0].lock(keys, async (ds) => {
        inside.resolve();
        await go.promise;
        for (const d of ds) {
          d.n += 10;
          d.l.push('lock');
        }
        return 'committed';
      });
      holder.catch(() => {});
      await noHang(inside.promise, 'holder entering');
      // Writers of every kind, from the other client, on the documents the holder works on.
      const writers = Promise.all([
        M[1].apply('a', (d) => d.n.incr(1)),
        M[1].update('b', (d) => {
          d.n += 1;
        }),
        M[1].put('c', { n: 7, l: ['put'] }),
        M[1].delete('d'),
        ctx.client(1).apply([M[1].ops('e', (d) => d.n.incr(1))]),
      ]);
      writers.catch(() => {});
      await sleep(50); // time for the writers to reach the backend and queue
      for (const k of keys) expect(await version(1, M[1].name, k), `version of ${k}`).toBe(1);
      go.resolve();
      expect(await noHang(holder, 'holder')).toBe('committed');
      await noHang(writers, 'writers');
      const dataOf = async (k: string) => (await M[0].find(k))?.data;
      expect(await dataOf('a')).toStrictEqual({ n: 11, l: ['lock'] });
      expect(await dataOf('b')).toStrictEqual({ n: 11, l: ['lock'] });
      expect(await M[0].get('c')).toStrictEqual({
        key: 'c',
        version: 3,
        data: { n: 7, l: ['put'] },
      });
      expect(await dataOf('d')).toBeUndefined();
      expect(await dataOf('e')).toStrictEqual({ n: 11, l: ['lock'] });
    });

    it('800 lock calls mixed with applies and updates on one document over both clients: 0 ConflictError, every increment lands', async () => {
      const M = both('wait_mix');
      await M[0].create('k', zero);
      const LOCKERS = 8;
      const LOCKS = 100; // per locker: 800 lock calls
      const APPLIERS = 4;
      const APPLIES = 100;
      const UPDATERS = 2;
      const UPDATES = 25;
      // Every call counts: a call that fails is tallied by error name and the loop goes on.
      const calls: Array<Promise<unknown>> = [];
      const loop = (n: number, one: () => Promise<unknown>) =>
        (async () => {
          for (let i = 0; i < n; i++) {
            const p = one();
            calls.push(p);
            await p.catch(() => {});
          }
        })();
      const loops: Promise<void>[] = [];
      for (let w = 0; w < LOCKERS; w++) {
        const m = M[w % 2] as (typeof M)[number];
        // Work between the read and the commit, as a real holder's fn does (I/O): the window
        // in which a writer that did not wait would move the field.
        loops.push(
          loop(LOCKS, () =>
            m.lock('k', async (d) => {
              await sleep(1);
              d.n += 1;
            }),
          ),
        );
      }
      for (let w = 0; w < APPLIERS; w++) {
        const m = M[w % 2] as (typeof M)[number];
        // Paced, so that the applies spread over the locks' whole run.
        loops.push(loop(APPLIES, () => sleep(4).then(() => m.apply('k', (d) => d.n.incr(1)))));
      }
      for (let w = 0; w < UPDATERS; w++) {
        const m = M[w % 2] as (typeof M)[number];
        const bump = (d: Counter) => {
          d.n += 1;
        };
        loops.push(
          loop(UPDATES, () => sleep(4).then(() => m.update('k', bump, { retries: 10_000 }))),
        );
      }
      await noHang(Promise.all(loops), 'lock/apply/update mix', 60_000);
      const outcome = tally(await Promise.allSettled(calls));
      const total = LOCKERS * LOCKS + APPLIERS * APPLIES + UPDATERS * UPDATES;
      expect(outcome.errors[ConflictError.name] ?? 0, 'ConflictError').toBe(0);
      expect(outcome).toStrictEqual({ ok: total, errors: {} });
      expect((await M[1].get('k')).data.n).toBe(total);
    });

    it('a plain write behind a held lease: timeoutMs → LockTimeoutError, an aborted signal → its reason; nothing written, then or later', async () => {
      const model = ctx.name('wait_give_up');
      applied(await b(0).write([{ kind: 'create', model, key: 'k', data: { n: 0 } }]));
      const lease = await acquire(0, request(model, ['k']));
      await rejectsWith(
        b(1).write([incr(model, 'k')], { timeoutMs: 50 }),
        LockTimeoutError,
        'LOCK_TIMEOUT',
      );
      // Aborted while waiting.
      const ac = new AbortController();
      const reason = new Error('stop waiting');
      const aborted = b(1).write([incr(model, 'k')], { signal: ac.signal });
      aborted.catch(() => {});
      await sleep(20);
      ac.abort(reason);
      await expect(noHang(aborted, 'aborted write')).rejects.toBe(reason);
      // Already aborted before it was called.
      const ac2 = new AbortController();
      const reason2 = new Error('aborted before');
      ac2.abort(reason2);
      await expect(
        noHang(b(0).write([incr(model, 'k')], { signal: ac2.signal }), 'pre-aborted write'),
      ).rejects.toBe(reason2);
      // A multi-document batch is all or nothing here too: the free document is not written.
      applied(await b(0).write([{ kind: 'create', model, key: 'free', data: { n: 0 } }]));
      await rejectsWith(
        b(1).write([incr(model, 'free'), incr(model, 'k')], { timeoutMs: 50 }),
        LockTimeoutError,
        'LOCK_TIMEOUT',
      );
      expect(await lease.release()).toBe(true);
      await sleep(20); // a write that gave up must not land once the lease is gone
      const [k, free] = await b(1).read([
        { model, key: 'k' },
        { model, key: 'free' },
      ]);
      expect([k?.version, k?.data]).toStrictEqual([1, { n: 0 }]);
      expect([free?.version, free?.data]).toStrictEqual([1, { n: 0 }]);
      // Free again: the next write applies.
      applied(
        await noHang(b(1).write([incr(model, 'k')], { timeoutMs: 1_000 }), 'write when free'),
      );
    });

    it('a plain write waiting without a timeout runs once the lease is released, and once it expires', async () => {
      const model = ctx.name('wait_end');
      applied(await b(0).write([{ kind: 'create', model, key: 'k', data: { n: 0 } }]));
      const lease = await acquire(0, request(model, ['k']));
      const waiting = b(1).write([incr(model, 'k')]);
      await sleep(20);
      expect(await version(0, model, 'k')).toBe(1);
      await lease.release();
      applied(await noHang(waiting, 'write after release'));
      // A holder that never ends its lease: the write runs at the expiry.
      await acquire(0, request(model, ['k'], { leaseMs: 150, renew: false }));
      const r = applied(await noHang(b(1).write([incr(model, 'k')]), 'write after expiry'));
      expect(r.docs[0]?.data).toStrictEqual({ n: 2 });
    });

    it('shared leases, leases of another action and leases on other documents do not hold a plain write back', async () => {
      const model = ctx.name('wait_not');
      const other = ctx.name('wait_not_other');
      applied(
        await b(0).write([
          { kind: 'create', model, key: 'k', data: { n: 0 } },
          { kind: 'create', model, key: 'j', data: { n: 0 } },
          { kind: 'create', model: other, key: 'k', data: { n: 0 } },
        ]),
      );
      const shared = await acquire(0, request(model, ['k'], { mode: 'shared' }));
      const named = await acquire(0, request(model, ['k'], { action: 'ship' }));
      const exclusiveJ = await acquire(0, request(model, ['j']));
      // Each resolves while the leases are still held (a hang guard, not a timing assertion).
      applied(
        await noHang(
          b(1).write([incr(model, 'k')], { timeoutMs: 10_000 }),
          'write under shared + named',
        ),
      );
      applied(
        await noHang(
          b(1).write([incr(other, 'k')], { timeoutMs: 10_000 }),
          'write to another model',
        ),
      );
      expect(shared.lost || named.lost || exclusiveJ.lost).toBe(false);
      expect(await version(1, model, 'k')).toBe(2);
      await shared.release();
      await named.release();
      await exclusiveJ.release();
    });

    it('a plain write inside a lock to the document it holds: DeadlockError at once where in-process deadlocks are tracked', async () => {
      if (!b(0).supports.inProcessDeadlocks) return; // it would wait for its own lease
      const M = both('wait_self');
      await M[0].create('k', zero);
      await rejectsWith(
        noHang(
          M[0].lock('k', async (d) => {
            d.n = 5;
            await M[0].apply('k', (o) => o.n.incr(1));
          }),
          'self-wait',
        ),
        DeadlockError,
        'DEADLOCK',
      );
      expect(await M[1].get('k')).toStrictEqual({ key: 'k', version: 1, data: zero });
      expect(await M[1].lock('k', () => 'free', { nowait: true })).toBe('free');
    });
  });

  describe('boundary: writes and guards', () => {
    it('a patch with no ops writes nothing: the version stays; its guards still decide', async () => {
      const M = both('noop');
      await M[0].create('k', zero);
      const r = await M[1].apply('k', () => {});
      expect(r.applied).toBe(true);
      expect((await M[0].get('k')).version).toBe(1);
      const model = M[0].name;
      const none = (guards: Guard[]): DocWrite => ({
        kind: 'patch',
        model,
        key: 'k',
        ops: [],
        guards,
      });
      const yes = applied(
        await b(0).write([none([{ guard: 'cmp', field: 'n', cmp: 'eq', value: 0 }])]),
      );
      expect(yes.docs[0]).toMatchObject({ key: 'k', version: 1, data: zero });
      expect(yes.results).toStrictEqual([[]]);
      const no = refused(
        await b(1).write([none([{ guard: 'cmp', field: 'n', cmp: 'eq', value: 1 }])]),
      );
      expect([no.reason, no.index, no.guard]).toStrictEqual(['guard', 0, 0]);
      // Beside a real write in the same batch: only the real one bumps its document.
      applied(await M[0].create('j', zero).then(() => b(0).write([none([]), incr(model, 'j')])));
      expect(await version(1, model, 'k')).toBe(1);
      expect(await version(1, model, 'j')).toBe(2);
      expect((await M[1].get('k')).data).toStrictEqual(zero);
    });

    it('a guard refusal reports the index of the first false guard of the refused write', async () => {
      const model = ctx.name('guard_index');
      applied(
        await b(0).write([
          { kind: 'create', model, key: 'a', data: { n: 1, l: ['x'] } },
          { kind: 'create', model, key: 'b', data: { n: 1, l: ['x'] } },
        ]),
      );
      const three: Guard[] = [
        { guard: 'exists', field: 'n', value: true },
        { guard: 'cmp', field: 'n', cmp: 'gt', value: 5 }, // false
        { guard: 'contains', field: 'l', value: 'nope' }, // false too: the first one counts
      ];
      const r = refused(
        await b(1).write([
          incr(model, 'a'),
          {
            kind: 'patch',
            model,
            key: 'b',
            ops: [{ op: 'incr', field: 'n', by: 1 }],
            guards: three,
          },
        ]),
      );
      expect([r.reason, r.index, r.guard]).toStrictEqual(['guard', 1, 1]);
      const first = refused(
        await b(0).write([
          {
            kind: 'patch',
            model,
            key: 'a',
            ops: [{ op: 'incr', field: 'n', by: 1 }],
            guards: [{ guard: 'exists', field: 'gone', value: true }, ...three],
          },
        ]),
      );
      expect([first.reason, first.index, first.guard]).toStrictEqual(['guard', 0, 0]);
      const [a, bb] = await b(1).read([
        { model, key: 'a' },
        { model, key: 'b' },
      ]);
      expect([a?.version, bb?.version]).toStrictEqual([1, 1]);
    });

    it('guards comparing a field with another field of the same document (ref), its length, and a missing ref', async () => {
      const model = ctx.name('guard_ref');
      const data = { count: 2, max: 3, list: ['a', 'b'], copy: ['a', 'b'], s: 'abc', z: 0 };
      applied(await b(0).write([{ kind: 'create', model, key: 'k', data }]));
      const cases: Array<[string, Guard, boolean]> = [
        ['count lt max', { guard: 'cmp', field: 'count', cmp: 'lt', ref: { field: 'max' } }, true],
        [
          'count gte max',
          { guard: 'cmp', field: 'count', cmp: 'gte', ref: { field: 'max' } },
          false,
        ],
        ['max gt count', { guard: 'cmp', field: 'max', cmp: 'gt', ref: { field: 'count' } }, true],
        [
          'count eq list length',
          { guard: 'cmp', field: 'count', cmp: 'eq', ref: { field: 'list', length: true } },
          true,
        ],
        [
          'count lt s length',
          { guard: 'cmp', field: 'count', cmp: 'lt', ref: { field: 's', length: true } },
          true,
        ],
        [
          'list length lt max',
          { guard: 'cmp', field: 'list', cmp: 'lt', length: true, ref: { field: 'max' } },
          true,
        ],
        [
          'list length eq s length',
          {
            guard: 'cmp',
            field: 'list',
            cmp: 'eq',
            length: true,
            ref: { field: 's', length: true },
          },
          false,
        ],
        [
          'list eq copy (deep)',
          { guard: 'cmp', field: 'list', cmp: 'eq', ref: { field: 'copy' } },
          true,
        ],
        [
          'count lt s (not a number)',
          { guard: 'cmp', field: 'count', cmp: 'lt', ref: { field: 's' } },
          false,
        ],
        [
          'count ne missing',
          { guard: 'cmp', field: 'count', cmp: 'ne', ref: { field: 'gone' } },
          true,
        ],
        [
          'count eq missing',
          { guard: 'cmp', field: 'count', cmp: 'eq', ref: { field: 'gone' } },
          false,
        ],
        [
          'count lt missing',
          { guard: 'cmp', field: 'count', cmp: 'lt', ref: { field: 'gone' } },
          false,
        ],
        [
          'count gte missing',
          { guard: 'cmp', field: 'count', cmp: 'gte', ref: { field: 'gone' } },
          false,
        ],
        [
          'z eq missing length (0)',
          { guard: 'cmp', field: 'z', cmp: 'eq', ref: { field: 'gone', length: true } },
          true,
        ],
        [
          'missing ne count',
          { guard: 'cmp', field: 'gone', cmp: 'ne', ref: { field: 'count' } },
          true,
        ],
        [
          'missing eq missing',
          { guard: 'cmp', field: 'gone', cmp: 'eq', ref: { field: 'gone2' } },
          false,
        ],
      ];
      let expected = 1;
      for (const [what, guard, holds] of cases) {
        const r = await b(1).write([
          {
            kind: 'patch',
            model,
            key: 'k',
            ops: [{ op: 'incr', field: 'z', by: 0 }],
            guards: [guard],
          },
        ]);
        if (holds) expected += 1;
        expect(r.applied ? 'holds' : `${r.reason} #${r.guard}`, what).toBe(
          holds ? 'holds' : 'guard #0',
        );
      }
      expect(await version(0, model, 'k')).toBe(expected);
      // Evaluated on the pre-image, like every guard: the campaign limit in one write.
      const campaign = ctx.name('guard_ref_campaign');
      applied(
        await b(0).write([
          { kind: 'create', model: campaign, key: 'c', data: { max: 3, applicants: [] } },
        ]),
      );
      const join = (user: string): DocWrite => ({
        kind: 'patch',
        model: campaign,
        key: 'c',
        ops: [{ op: 'append', field: 'applicants', value: user }],
        guards: [
          { guard: 'cmp', field: 'applicants', cmp: 'lt', length: true, ref: { field: 'max' } },
          { guard: 'notContains', field: 'applicants', value: user },
        ],
      });
      const joined = await Promise.all(
        ['u1', 'u2', 'u3', 'u4', 'u5', 'u1'].map((u, i) => b(i % 2).write([join(u)])),
      );
      expect(joined.filter((r) => r.applied)).toHaveLength(3);
      const [c] = await b(0).read([{ model: campaign, key: 'c' }]);
      expect((c?.data.applicants as string[]).length).toBe(3);
    });
  });

  describe('boundary: leases', () => {
    it('renew: false: the lease signal aborts with LeaseLostError at expiry and lost turns true; release() then resolves false', async () => {
      const model = ctx.name('lease_signal');
      applied(await b(0).write([{ kind: 'create', model, key: 'k', data: { n: 0 } }]));
      const lease = await acquire(0, request(model, ['k'], { leaseMs: 150, renew: false }));
      expect(lease.signal.aborted).toBe(false);
      expect(lease.lost).toBe(false);
      await until(() => lease.signal.aborted, 'the lease signal aborts after leaseMs');
      const reason: unknown = lease.signal.reason;
      expect(reason).toBeInstanceOf(LeaseLostError);
      expect((reason as LeaseLostError).code).toBe('LEASE_LOST');
      expect(lease.lost).toBe(true);
      expect(await lease.release()).toBe(false);
      expect(await lease.release()).toBe(false); // a second call resolves what the first did
      // Its commit is fenced: nothing written.
      const next = await acquire(1, request(model, ['k']));
      expect(await next.release()).toBe(true);
    });

    it('release() resolves true for a held lease (twice too); neither release nor commit aborts the signal', async () => {
      const model = ctx.name('lease_release');
      applied(await b(0).write([{ kind: 'create', model, key: 'k', data: { n: 0 } }]));
      const lease = await acquire(0, request(model, ['k'], { leaseMs: 200, renew: false }));
      expect(await lease.release()).toBe(true);
      expect(await lease.release()).toBe(true);
      expect(lease.signal.aborted).toBe(false);
      const committed = await acquire(1, request(model, ['k'], { leaseMs: 200, renew: false }));
      applied(await committed.commit([incr(model, 'k')]));
      expect(committed.signal.aborted).toBe(false);
      // Past their leaseMs nothing turns them lost: they ended before.
      await sleep(300);
      expect(lease.signal.aborted || committed.signal.aborted).toBe(false);
      expect(lease.lost || committed.lost).toBe(false);
      expect(await committed.release()).toBe(true);
    });
  });

  describe('boundary: key order, the default action, program order', () => {
    it('canonical key order: keys sorted by UTF-16 code units; docs and fences come per key in that order', async () => {
      const model = ctx.name('key_order');
      // UTF-16 order differs from code-point (and UTF-8 byte) order: '\u{1F600}' is stored as the
      // surrogates '\uD83D\uDE00', which sort before '\uFFFF'.
      const keys = ['B', 'a', 'é', '\uFFFF', '\u{1F600}', 'a b', '10', '9'];
      const sorted = [...keys].sort();
      expect(sorted.indexOf('\u{1F600}')).toBeLessThan(sorted.indexOf('\uFFFF'));
      applied(
        await b(0).write(
          keys.map((key, i) => ({ kind: 'create' as const, model, key, data: { i } })),
        ),
      );
      const lease = await acquire(1, request(model, sorted));
      expect(lease.docs.map((d) => d?.key)).toStrictEqual(sorted);
      expect(lease.docs.map((d) => d?.data.i)).toStrictEqual(sorted.map((k) => keys.indexOf(k)));
      expect(lease.fences).toHaveLength(sorted.length);
      await lease.release();
      // Overlapping multi-key locks from both clients, in any order given: never a deadlock.
      const M = [
        ctx.client(0).model(model, z.object({ i: z.number(), n: z.number().optional() })),
        ctx.client(1).model(model, z.object({ i: z.number(), n: z.number().optional() })),
      ] as const;
      const picks = [
        ['\uFFFF', '\u{1F600}', 'a'],
        ['a', '\uFFFF'],
        ['\u{1F600}', 'é', 'B'],
        ['B', '\uFFFF', '\u{1F600}'],
        ['é', 'a', '9', '10'],
      ];
      const tasks: Promise<unknown>[] = [];
      for (let r = 0; r < 8; r++) {
        for (const [p, pick] of picks.entries()) {
          const ks = r % 2 === 0 ? pick : [...pick].reverse();
          tasks.push(
            (M[(r + p) % 2] as (typeof M)[number]).lock(ks, async (ds) => {
              await sleep(1);
              for (const d of ds) d.n = (d.n ?? 0) + 1;
            }),
          );
        }
      }
      expect(
        tally(await noHang(Promise.allSettled(tasks), 'overlapping multi-key locks')),
      ).toStrictEqual({
        ok: tasks.length,
        errors: {},
      });
      for (const k of keys) {
        const times = picks.filter((p) => p.includes(k)).length * 8;
        expect((await M[0].get(k)).data.n ?? 0, k).toBe(times);
      }
    });

    it("the default action is 'default': Model.lock without an action and a raw 'default' lease exclude each other", async () => {
      const M = both('default_action');
      await M[0].create('k', zero);
      const model = M[0].name;
      const raw = await acquire(0, request(model, ['k']));
      await rejectsWith(
        M[1].lock('k', () => 1, { nowait: true }),
        LockBusyError,
        'LOCK_BUSY',
      );
      expect(await M[1].lock('k', () => 2, { action: 'other', nowait: true })).toBe(2);
      await raw.release();
      const inside = deferred();
      const go = deferred();
      const holder = M[1].lock('k', async () => {
        inside.resolve();
        await go.promise;
      });
      await noHang(inside.promise, 'holder entering');
      expect(await b(0).acquire(request(model, ['k'], { skipLocked: true }))).toBeUndefined();
      const other = await acquire(0, request(model, ['k'], { action: 'other', nowait: true }));
      await other.release();
      go.resolve();
      await noHang(holder, 'holder');
    });

    it('program order: a lease sees every write this process issued before asking for it', async () => {
      const model = ctx.name('program_order');
      applied(await b(0).write([{ kind: 'create', model, key: 'k', data: { n: 0 } }]));
      for (let round = 1; round <= 20; round++) {
        const w = b(0).write([incr(model, 'k')]); // not awaited before the lease is asked for
        const lease = await acquire(0, request(model, ['k']));
        expect(lease.docs[0]?.data.n, `round ${round}`).toBe(round);
        await lease.release();
        applied(await w);
      }
    });
  });
}
