/**
 * The classic races, each run with dozens of concurrent tasks spread over two clients (two
 * backend instances from `open()`, i.e. two "processes"): lost updates through every write path,
 * all-or-nothing batches, bank transfers, the campaign limit and create races.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AlreadyExistsError, ConflictError, NotFoundError, ValidationError } from '../api.js';
import type { Ctx } from '../harness.js';
import { noHang, rejectsWith, rng, tally } from '../harness.js';

const counter = z.object({ n: z.number().int(), log: z.array(z.string()) });
const account = z.object({ owner: z.string(), balance: z.number().int().min(0) });
const campaign = z.object({ max: z.number().int(), applicants: z.array(z.string()) });

const TASKS = 24;
const INCREMENTS = 8;

/** Registers the race sections. */
export function racesSection(ctx: Ctx): void {
  const both = <S extends Parameters<ReturnType<Ctx['client']>['model']>[1]>(
    prefix: string,
    schema: S,
  ) => {
    const name = ctx.name(prefix);
    return [ctx.client(0).model(name, schema), ctx.client(1).model(name, schema)] as const;
  };

  describe(`no lost update (${TASKS} tasks × ${INCREMENTS} increments, two clients)`, () => {
    it('through lock', async () => {
      const M = both('lu_lock', counter);
      await M[0].create('c', { n: 0, log: [] });
      await noHang(
        Promise.all(
          Array.from({ length: TASKS }, async (_, t) => {
            for (let i = 0; i < INCREMENTS; i++) {
              await M[t % 2]!.lock('c', (d) => {
                d.n += 1;
              });
            }
          }),
        ),
        'lock increments',
      );
      const doc = await M[1].get('c');
      expect(doc.data.n).toBe(TASKS * INCREMENTS);
      expect(doc.version).toBe(1 + TASKS * INCREMENTS);
    });

    it('through update (every successful update counted exactly once)', async () => {
      const M = both('lu_upd', counter);
      await M[0].create('c', { n: 0, log: [] });
      let ok = 0;
      const results = await noHang(
        Promise.allSettled(
          Array.from({ length: TASKS }, async (_, t) => {
            for (let i = 0; i < INCREMENTS; i++) {
              await M[t % 2]!.update(
                'c',
                (d) => {
                  d.n += 1;
                },
                { retries: 1000 },
              );
              ok += 1;
            }
          }),
        ),
        'update increments',
      );
      const t = tally(results);
      // Only ConflictError (retries exhausted) is an acceptable failure; it must have written nothing.
      expect(Object.keys(t.errors).filter((e) => e !== 'ConflictError')).toStrictEqual([]);
      expect(ok).toBeGreaterThan(0);
      const doc = await M[1].get('c');
      expect(doc.data.n).toBe(ok);
      expect(doc.version).toBe(1 + ok);
    });

    it('through apply (incr)', async () => {
      const M = both('lu_apply', counter);
      await M[0].create('c', { n: 0, log: [] });
      const seen = new Set<number>();
      await noHang(
        Promise.all(
          Array.from({ length: TASKS }, async (_, t) => {
            for (let i = 0; i < INCREMENTS; i++) {
              const r = await M[t % 2]!.apply('c', (d) => d.n.incr(1));
              expect(r.applied).toBe(true);
              seen.add(r.results[0] as number);
            }
          }),
        ),
        'apply increments',
      );
      expect((await M[1].get('c')).data.n).toBe(TASKS * INCREMENTS);
      // every incr saw a distinct new value: 1..N, each exactly once
      expect([...seen].sort((a, b) => a - b)).toStrictEqual(
        Array.from({ length: TASKS * INCREMENTS }, (_, i) => i + 1),
      );
    });

    it('through store.apply across two documents and two models', async () => {
      const C = both('lu_sa_c', counter);
      const D = both('lu_sa_d', counter);
      await C[0].create('c', { n: 0, log: [] });
      await D[0].create('d', { n: 0, log: [] });
      await noHang(
        Promise.all(
          Array.from({ length: TASKS }, async (_, t) => {
            const s = ctx.client(t % 2);
            for (let i = 0; i < INCREMENTS; i++) {
              const r = await s.apply([
                C[t % 2]!.ops('c', (d) => d.n.incr(1)),
                D[t % 2]!.ops('d', (d) => {
                  d.n.incr(-1);
                  d.log.append(`${t}.${i}`);
                }),
              ]);
              expect(r.applied).toBe(true);
            }
          }),
        ),
        'store.apply increments',
      );
      expect((await C[1].get('c')).data.n).toBe(TASKS * INCREMENTS);
      const d = await D[1].get('d');
      expect(d.data.n).toBe(-TASKS * INCREMENTS);
      expect(new Set(d.data.log).size).toBe(TASKS * INCREMENTS);
    });

    it('through all four paths at once on one document', async () => {
      const M = both('lu_mix', counter);
      await M[0].create('c', { n: 0, log: [] });
      let ok = 0;
      const results = await noHang(
        Promise.allSettled(
          Array.from({ length: TASKS }, async (_, t) => {
            const m = M[t % 2]!;
            const s = ctx.client(t % 2);
            for (let i = 0; i < INCREMENTS; i++) {
              const tag = `${t}.${i}`;
              switch ((t + i) % 4) {
                case 0:
                  await m.lock('c', (d) => {
                    d.n += 1;
                    d.log.push(tag);
                  });
                  break;
                case 1:
                  await m.update(
                    'c',
                    (d) => {
                      d.n += 1;
                      d.log.push(tag);
                    },
                    { retries: 1000 },
                  );
                  break;
                case 2:
                  await m.apply('c', (d) => {
                    d.n.incr(1);
                    d.log.append(tag);
                  });
                  break;
                default:
                  await s.apply([
                    m.ops('c', (d) => {
                      d.n.incr(1);
                      d.log.append(tag);
                    }),
                  ]);
              }
              ok += 1;
            }
          }),
        ),
        'mixed increments',
      );
      const t = tally(results);
      expect(Object.keys(t.errors).filter((e) => e !== 'ConflictError')).toStrictEqual([]);
      const doc = await M[1].get('c');
      expect(doc.data.n).toBe(ok);
      expect(doc.data.log.length).toBe(ok);
      expect(new Set(doc.data.log).size).toBe(ok);
    });
  });

  describe('every field op is atomic under concurrency (40 tasks, two clients)', () => {
    const bag = z.object({
      q: z.array(z.number()),
      rec: z.record(z.string(), z.number()),
      l: z.array(z.string()),
      n: z.number(),
    });

    it('pop(0) as a queue: each element taken exactly once, then null', async () => {
      const M = both('atom_pop', bag);
      const items = Array.from({ length: 30 }, (_, i) => i);
      await M[0].create('b', { q: items, rec: {}, l: [], n: 0 });
      const got = await noHang(
        Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            M[i % 2]!.apply('b', (d) => d.q.pop(i % 3 === 0 ? -1 : 0)),
          ),
        ),
        'concurrent pops',
      );
      const popped = got.map((r) => r.results[0]);
      expect(popped.filter((x) => x === null).length).toBe(10);
      expect(
        popped.filter((x): x is number => typeof x === 'number').sort((a, b) => a - b),
      ).toStrictEqual(items);
      expect((await M[1].get('b')).data.q).toStrictEqual([]);
    });

    it('setItem/deleteItem on one record, append/remove on one array, incr: all kept', async () => {
      const M = both('atom_rec', bag);
      const pre = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`old${i}`, i]));
      await M[0].create('b', { q: [], rec: pre, l: ['x', 'x', 'x', 'x'], n: 0 });
      const deleted: boolean[] = [];
      const removed: number[] = [];
      await noHang(
        Promise.all(
          Array.from({ length: 40 }, async (_, i) => {
            const m = M[i % 2]!;
            const r = await m.apply('b', (d) => {
              d.rec.setItem(`new${i}`, i);
              d.l.append(`t${i}`);
              d.n.incr(0.5);
              if (i < 20) d.rec.deleteItem(`old${i % 25}`);
              if (i % 4 === 0) d.l.remove('x');
            });
            if (i < 20) deleted.push(r.results[3] as boolean);
            if (i % 4 === 0) removed.push(r.results[i < 20 ? 4 : 3] as number);
          }),
        ),
        'concurrent record/array ops',
      );
      const doc = (await M[1].get('b')).data;
      expect(doc.rec).toStrictEqual(
        Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`new${i}`, i])),
      );
      expect(deleted.every((x) => x === true)).toBe(true);
      expect(removed.reduce((a, b) => a + b, 0)).toBe(4);
      expect([...doc.l].sort()).toStrictEqual(Array.from({ length: 40 }, (_, i) => `t${i}`).sort());
      expect(doc.n).toBe(20);
    });
  });

  describe('every write is all-or-nothing', () => {
    it('store.apply with one guard false across two documents: neither changes', async () => {
      const A = both('aon', account);
      await A[0].create('x', { owner: 'x', balance: 5 });
      await A[0].create('y', { owner: 'y', balance: 5 });
      const r = await ctx.client(0).apply([
        A[0].ops(
          'x',
          (a) => a.balance.incr(1),
          (a) => a.balance.eq(5),
        ),
        A[0].ops(
          'y',
          (a) => a.balance.incr(1),
          (a) => a.balance.eq(6),
        ),
      ]);
      expect(r.applied).toBe(false);
      const r2 = await ctx.client(1).apply([
        A[1].ops(
          'x',
          (a) => a.balance.incr(1),
          (a) => a.balance.eq(4),
        ),
        A[1].ops(
          'y',
          (a) => a.balance.incr(1),
          (a) => a.balance.eq(5),
        ),
      ]);
      expect(r2.applied).toBe(false);
      expect((await A[1].get('x')).data.balance).toBe(5);
      expect((await A[1].get('y')).data.balance).toBe(5);
      expect((await A[1].get('x')).version).toBe(1);
      expect((await A[1].get('y')).version).toBe(1);
    });

    it('store.apply with an invalid post-state in the second document: nothing changes', async () => {
      const A = both('aon_inv', account);
      await A[0].create('x', { owner: 'x', balance: 5 });
      await A[0].create('y', { owner: 'y', balance: 5 });
      await rejectsWith(
        ctx
          .client(0)
          .apply([
            A[0].ops('x', (a) => a.balance.incr(10)),
            A[0].ops('y', (a) => a.balance.incr(-10)),
          ]),
        ValidationError,
        'INVALID',
      );
      await rejectsWith(
        ctx
          .client(0)
          .apply([
            A[0].ops('y', (a) => a.balance.incr(-10)),
            A[0].ops('x', (a) => a.balance.incr(10)),
          ]),
        ValidationError,
        'INVALID',
      );
      expect(await A[1].get('x')).toStrictEqual({
        key: 'x',
        version: 1,
        data: { owner: 'x', balance: 5 },
      });
      expect(await A[1].get('y')).toStrictEqual({
        key: 'y',
        version: 1,
        data: { owner: 'y', balance: 5 },
      });
    });

    it('store.apply refuses the same document twice (ValidationError) and writes nothing', async () => {
      const A = both('aon_dup', account);
      await A[0].create('x', { owner: 'x', balance: 5 });
      await rejectsWith(
        ctx
          .client(0)
          .apply([
            A[0].ops('x', (a) => a.balance.incr(1)),
            A[1].ops('x', (a) => a.balance.incr(1)),
          ]),
        ValidationError,
        'INVALID',
      );
      expect(await A[1].get('x')).toStrictEqual({
        key: 'x',
        version: 1,
        data: { owner: 'x', balance: 5 },
      });
    });

    it('store.apply with a missing document: nothing changes', async () => {
      const A = both('aon_miss', account);
      await A[0].create('x', { owner: 'x', balance: 5 });
      await expect(
        ctx
          .client(0)
          .apply([
            A[0].ops('x', (a) => a.balance.incr(1)),
            A[0].ops('ghost', (a) => a.balance.incr(1)),
          ]),
      ).rejects.toThrow();
      expect((await A[1].get('x')).data.balance).toBe(5);
      expect(await A[1].find('ghost')).toBeUndefined();
    });

    it('a schema limit holds under 40 concurrent applies (post-check is atomic with the write)', async () => {
      const capped = z.object({ n: z.number().int().max(10), log: z.array(z.string()) });
      const name = ctx.name('aon_cap');
      const M = [ctx.client(0).model(name, capped), ctx.client(1).model(name, capped)] as const;
      await M[0].create('c', { n: 0, log: [] });
      const results = await noHang(
        Promise.allSettled(
          Array.from({ length: 40 }, (_, i) =>
            M[i % 2]!.apply('c', (d) => {
              d.n.incr(1);
              d.log.append(`t${i}`);
            }),
          ),
        ),
        'capped applies',
      );
      const t = tally(results);
      expect(t.ok).toBe(10);
      expect(t.errors).toStrictEqual({ ValidationError: 30 });
      const doc = await M[1].get('c');
      expect(doc.data.n).toBe(10);
      expect(doc.data.log.length).toBe(10);
      expect(doc.version).toBe(11);
    });

    it('concurrent guarded multi-document batches never half-apply', async () => {
      // Two documents always moved together: their sum is invariant, checked by a guard.
      const A = both('aon_conc', account);
      await A[0].create('p', { owner: 'p', balance: 50 });
      await A[0].create('q', { owner: 'q', balance: 50 });
      const rand = rng(7);
      let applied = 0;
      await noHang(
        Promise.all(
          Array.from({ length: TASKS * 2 }, async (_, t) => {
            const amt = 1 + Math.floor(rand() * 20);
            const [from, to] = t % 2 ? ['p', 'q'] : ['q', 'p'];
            const m = A[t % 2]!;
            const r = await ctx.client(t % 2).apply([
              m.ops(
                from,
                (a) => a.balance.incr(-amt),
                (a) => a.balance.gte(amt),
              ),
              m.ops(to, (a) => a.balance.incr(amt)),
            ]);
            if (r.applied) applied += 1;
          }),
        ),
        'guarded batches',
      );
      const p = await A[1].get('p');
      const q = await A[1].get('q');
      expect(p.data.balance + q.data.balance).toBe(100);
      expect(p.data.balance).toBeGreaterThanOrEqual(0);
      expect(q.data.balance).toBeGreaterThanOrEqual(0);
      expect(p.version).toBe(1 + applied);
      expect(q.version).toBe(1 + applied);
    });
  });

  describe('bank transfers among 5 accounts, both key orders (total conserved, exact, never negative, no hang)', () => {
    const N = 5;
    const START = 100;
    const TRANSFERS = 60;

    /** Random transfers; returns them so the exact final balances can be recomputed from those that succeeded. */
    function plan(seed: number) {
      const rand = rng(seed);
      return Array.from({ length: TRANSFERS }, (_, i) => {
        const from = Math.floor(rand() * N);
        let to = Math.floor(rand() * (N - 1));
        if (to >= from) to += 1;
        return { i, from: `acc${from}`, to: `acc${to}`, amt: 1 + Math.floor(rand() * 60) };
      });
    }

    async function setup(prefix: string) {
      const A = both(prefix, account);
      for (let i = 0; i < N; i++) await A[0].create(`acc${i}`, { owner: `o${i}`, balance: START });
      return A;
    }

    async function check(
      A: Awaited<ReturnType<typeof setup>>,
      moved: ReadonlyArray<{ from: string; to: string; amt: number }>,
    ) {
      const expected = new Map<string, number>();
      for (let i = 0; i < N; i++) expected.set(`acc${i}`, START);
      for (const m of moved) {
        expected.set(m.from, expected.get(m.from)! - m.amt);
        expected.set(m.to, expected.get(m.to)! + m.amt);
      }
      let total = 0;
      for (let i = 0; i < N; i++) {
        const d = await A[1].get(`acc${i}`);
        total += d.data.balance;
        expect(d.data.balance).toBeGreaterThanOrEqual(0);
        expect(d.data.balance, `acc${i}`).toBe(expected.get(`acc${i}`));
      }
      expect(total).toBe(N * START);
    }

    it('with a multi-key lock, keys given in both orders', async () => {
      const A = await setup('bank_lock');
      const transfers = plan(11);
      const moved: typeof transfers = [];
      await noHang(
        Promise.all(
          transfers.map(async (tr) => {
            const keys = tr.i % 2 ? [tr.from, tr.to] : [tr.to, tr.from];
            const ok = await A[tr.i % 2]!.lock(keys, (drafts) => {
              const [a, b] = drafts;
              const from = tr.i % 2 ? a! : b!;
              const to = tr.i % 2 ? b! : a!;
              if (from.balance < tr.amt) return false;
              from.balance -= tr.amt;
              to.balance += tr.amt;
              return true;
            });
            if (ok) moved.push(tr);
          }),
        ),
        'locked transfers',
      );
      expect(moved.length).toBeGreaterThan(0);
      await check(A, moved);
    });

    it('with store.apply guarded by balance.gte(amount)', async () => {
      const A = await setup('bank_apply');
      const transfers = plan(12);
      const moved: typeof transfers = [];
      await noHang(
        Promise.all(
          transfers.map(async (tr) => {
            const m = A[tr.i % 2]!;
            const withdraw = m.ops(
              tr.from,
              (a) => a.balance.incr(-tr.amt),
              (a) => a.balance.gte(tr.amt),
            );
            const deposit = m.ops(tr.to, (a) => a.balance.incr(tr.amt));
            const r = await ctx
              .client(tr.i % 2)
              .apply(tr.i % 2 ? [withdraw, deposit] : [deposit, withdraw]);
            if (r.applied) moved.push(tr);
          }),
        ),
        'guarded transfers',
      );
      expect(moved.length).toBeGreaterThan(0);
      await check(A, moved);
    });

    it('with update (withdraw, then deposit)', async () => {
      const A = await setup('bank_upd');
      const transfers = plan(13);
      const moved: typeof transfers = [];
      await noHang(
        Promise.all(
          transfers.map(async (tr) => {
            const m = A[tr.i % 2]!;
            const ok = await m.update(
              tr.from,
              (a) => {
                if (a.balance < tr.amt) return false;
                a.balance -= tr.amt;
                return true;
              },
              { retries: 1000 },
            );
            if (!ok) return;
            await m.update(
              tr.to,
              (a) => {
                a.balance += tr.amt;
              },
              { retries: 1000 },
            );
            moved.push(tr);
          }),
        ),
        'optimistic transfers',
      );
      expect(moved.length).toBeGreaterThan(0);
      await check(A, moved);
    });
  });

  describe('campaign limit with a guarded append', () => {
    it('never over the limit, no duplicate, exactly min(max, distinct) admitted', async () => {
      const C = both('campaign', campaign);
      const max = 7;
      await C[0].create('spring', { max, applicants: [] });
      const rand = rng(21);
      const users = Array.from({ length: 15 }, (_, i) => `user${i}`);
      // every user at least once, plus 45 repeats
      const attempts = [
        ...users,
        ...Array.from({ length: 45 }, () => users[Math.floor(rand() * 15)]!),
      ];
      const admitted: string[] = [];
      await noHang(
        Promise.all(
          attempts.map(async (user, i) => {
            const r = await C[i % 2]!.apply('spring', (c) => c.applicants.append(user), {
              when: (c) => [c.applicants.length.lt(max), c.applicants.notContains(user)],
            });
            if (r.applied) {
              admitted.push(user);
              expect(r.results).toStrictEqual([(r.doc?.data.applicants ?? []).length]);
            }
          }),
        ),
        'campaign applications',
      );
      const doc = await C[1].get('spring');
      expect(doc.data.applicants.length).toBe(max);
      expect(new Set(doc.data.applicants).size).toBe(max);
      expect([...admitted].sort()).toStrictEqual([...doc.data.applicants].sort());
      expect(doc.version).toBe(1 + max);
    });

    it('the same user applying 30 times concurrently is admitted once', async () => {
      const C = both('campaign1', campaign);
      await C[0].create('c', { max: 100, applicants: [] });
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          C[i % 2]!.apply('c', (c) => c.applicants.append('ann'), {
            when: (c) => [c.applicants.length.lt(100), c.applicants.notContains('ann')],
          }),
        ),
      );
      expect(results.filter((r) => r.applied).length).toBe(1);
      expect((await C[1].get('c')).data.applicants).toStrictEqual(['ann']);
    });
  });

  describe('create races', () => {
    it('exactly one of 40 concurrent creates of one key succeeds; the rest get AlreadyExistsError', async () => {
      const M = both('create_race', account);
      for (const key of ['k1', 'k2', 'k3']) {
        const results = await noHang(
          Promise.allSettled(
            Array.from({ length: 40 }, (_, i) =>
              M[i % 2]!.create(key, { owner: `w${i}`, balance: i }),
            ),
          ),
          'creates',
        );
        const t = tally(results);
        expect(t.ok).toBe(1);
        expect(t.errors).toStrictEqual({ AlreadyExistsError: 39 });
        for (const r of results) {
          if (r.status === 'rejected') {
            expect(r.reason).toBeInstanceOf(AlreadyExistsError);
            expect((r.reason as AlreadyExistsError).code).toBe('ALREADY_EXISTS');
          }
        }
        const winner = results.findIndex((r) => r.status === 'fulfilled');
        const doc = await M[1].get(key);
        expect(doc).toStrictEqual({
          key,
          version: 1,
          data: { owner: `w${winner}`, balance: winner },
        });
      }
    });

    it('create races with delete: at most one live document, every create accounted for', async () => {
      const M = both('create_del', account);
      let creates = 0;
      let deletes = 0;
      await noHang(
        Promise.all(
          Array.from({ length: 40 }, async (_, i) => {
            const m = M[i % 2]!;
            if (i % 3 === 0) {
              if (await m.delete('k')) deletes += 1;
            } else {
              try {
                await m.create('k', { owner: `w${i}`, balance: 0 });
                creates += 1;
              } catch (e) {
                expect(e).toBeInstanceOf(AlreadyExistsError);
              }
            }
          }),
        ),
        'create/delete',
      );
      const live = (await M[1].find('k')) ? 1 : 0;
      expect(creates - deletes).toBe(live);
    });
  });

  describe('optimistic update', () => {
    it('ConflictError when retries run out, and the losing draft is not written', async () => {
      const M = both('upd_conflict', counter);
      await M[0].create('c', { n: 0, log: [] });
      let calls = 0;
      await rejectsWith(
        M[0].update(
          'c',
          async (d) => {
            calls += 1;
            // someone else writes between our read and our compare-and-set, every time
            await M[1].apply('c', (o) => o.n.incr(1));
            d.n += 1000;
          },
          { retries: 3 },
        ),
        ConflictError,
        'CONFLICT',
      );
      expect(calls).toBe(4);
      const doc = await M[1].get('c');
      expect(doc.data.n).toBe(4);
    });

    it('no ABA: a document deleted and created again between read and write is not overwritten from the stale read', async () => {
      const M = both('upd_aba', counter);
      await M[0].create('c', { n: 0, log: ['old'] });
      let calls = 0;
      const outcome = await M[0]
        .update(
          'c',
          async (d) => {
            calls += 1;
            if (calls === 1) {
              // between our read (version 1) and our compare-and-set, the document is replaced by
              // a new one that also has version 1
              expect(await M[1].delete('c')).toBe(true);
              await M[1].create('c', { n: 100, log: ['new'] });
            }
            d.n += 1;
            d.log.push(`u${calls}`);
          },
          { retries: 5 },
        )
        .then(
          () => 'resolved',
          (e: unknown) => e,
        );
      const doc = await M[1].get('c');
      if (outcome === 'resolved') {
        // retried on the new document
        expect(doc.data).toStrictEqual({ n: 101, log: ['new', `u${calls}`] });
      } else {
        expect(outcome instanceof ConflictError || outcome instanceof NotFoundError).toBe(true);
        expect(doc.data).toStrictEqual({ n: 100, log: ['new'] });
      }
    });

    it('a draft left unchanged writes nothing (version unchanged)', async () => {
      const M = both('upd_noop', counter);
      await M[0].create('c', { n: 1, log: [] });
      expect(await M[0].update('c', (d) => d.n * 2)).toBe(2);
      expect((await M[1].get('c')).version).toBe(1);
    });
  });
}
