/**
 * Model-based property test: rounds of random create/put/delete/apply/update/lock/multi-key
 * lock/store.apply from two clients, interleaved by fast-check's scheduler at the granularity of
 * backend calls (read, write, acquire), checked against a reference model.
 *
 * Every write also appends its unique id to the document's `log` in the same atomic step, and
 * every reset (create/put) starts a new log. After each round the stored state must be explained
 * exactly by the operations that reported success: `n` equals the reset's base plus the deltas
 * of the logged increments; every increment that succeeded in a round after the current
 * generation's reset is in the log (no lost update), nothing that failed is (all-or-nothing), no
 * id twice; a multi-key write is in both logs or neither; refusals (NotFound, AlreadyExists) are
 * only those the round's concurrency can explain.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Backend } from '../api.js';
import { AlreadyExistsError, bounded, ConflictError, createStore, NotFoundError } from '../api.js';
import type { Ctx } from '../harness.js';

/** Runs per property; raise it for a deeper soak: LOCKSTEP_CONFORMANCE_RUNS=500 npx vitest run ... */
const RUNS = Number(process.env.LOCKSTEP_CONFORMANCE_RUNS ?? 40);

const schema = z.object({ n: z.number().int(), log: z.array(z.string()) });
const KEYS = ['m0', 'm1', 'm2'] as const;
type Key = (typeof KEYS)[number];

type Cmd =
  | { kind: 'create' | 'put'; client: number; key: Key; base: number }
  | { kind: 'delete'; client: number; key: Key }
  | { kind: 'apply' | 'update' | 'lock'; client: number; key: Key; by: number }
  | { kind: 'lock2' | 'storeApply'; client: number; keys: [Key, Key]; by: number };

const keyArb = fc.constantFrom(...KEYS);
const pairArb = fc
  .tuple(fc.nat(2), fc.nat(1))
  .map(([a, b]) => [KEYS[a]!, KEYS[b >= a ? b + 1 : b]!] as [Key, Key]);
const client = fc.nat(1);
const by = fc.integer({ min: -5, max: 9 });
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  {
    arbitrary: fc.record({
      kind: fc.constant('create' as const),
      client,
      key: keyArb,
      base: fc.integer({ min: -50, max: 50 }),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('put' as const),
      client,
      key: keyArb,
      base: fc.integer({ min: -50, max: 50 }),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({ kind: fc.constant('delete' as const), client, key: keyArb }),
    weight: 1,
  },
  {
    arbitrary: fc.record({ kind: fc.constant('apply' as const), client, key: keyArb, by }),
    weight: 3,
  },
  {
    arbitrary: fc.record({ kind: fc.constant('update' as const), client, key: keyArb, by }),
    weight: 3,
  },
  {
    arbitrary: fc.record({ kind: fc.constant('lock' as const), client, key: keyArb, by }),
    weight: 3,
  },
  {
    arbitrary: fc.record({ kind: fc.constant('lock2' as const), client, keys: pairArb, by }),
    weight: 2,
  },
  {
    arbitrary: fc.record({ kind: fc.constant('storeApply' as const), client, keys: pairArb, by }),
    weight: 2,
  },
);
const roundsArb = fc.array(fc.array(cmdArb, { minLength: 1, maxLength: 10 }), {
  minLength: 1,
  maxLength: 4,
});

/** A backend whose calls start in an order chosen by fast-check's scheduler. */
function scheduled(s: fc.Scheduler, inner: Backend, label: string): Backend {
  const gate = (what: string) => s.schedule(Promise.resolve(), `${label}.${what}`);
  return {
    name: inner.name,
    namespace: inner.namespace,
    supports: inner.supports,
    read: (refs) => gate(`read ${refs.map((r) => r.key).join(',')}`).then(() => inner.read(refs)),
    write: (writes, options) =>
      gate(`write ${writes.map((w) => `${w.kind} ${w.key}`).join(',')}`).then(() =>
        inner.write(writes, options),
      ),
    consume: (cs, writes, options) =>
      gate(`consume ${cs.map((c) => c.key).join(',')}`).then(() =>
        bounded(inner).consume(cs, writes, options),
      ),
    resetLimit: (ref) => bounded(inner).resetLimit(ref),
    acquire: (req) => gate(`acquire ${req.keys.join(',')}`).then(() => inner.acquire(req)),
    close: async () => {},
  };
}

interface Outcome {
  id: string;
  round: number;
  cmd: Cmd;
  ok: boolean;
  /** Error name for refusals. */
  refused?: string;
}

function keysOf(c: Cmd): Key[] {
  return 'keys' in c ? c.keys : [c.key];
}
const isReset = (c: Cmd) => c.kind === 'create' || c.kind === 'put';
const isIncrement = (c: Cmd) => 'by' in c;

/** Registers the model-based section. */
export function modelSection(ctx: Ctx): void {
  describe('model-based: random concurrent operations from two clients vs a reference model', () => {
    it(
      'every state is explained exactly by the operations that reported success',
      async () => {
        await fc.assert(
          fc.asyncProperty(fc.scheduler(), roundsArb, async (s, rounds) => {
            const name = ctx.name('mb');
            const stores = [0, 1].map((i) => createStore(scheduled(s, ctx.backend(i), `c${i}`)));
            const models = stores.map((st) => st.model(name, schema));
            const direct = ctx.client(0).model(name, schema);
            await direct.create('m0', { n: 0, log: ['init0'] });
            await direct.create('m1', { n: 0, log: ['init1'] });
            const outcomes = new Map<string, Outcome>([
              [
                'init0',
                {
                  id: 'init0',
                  round: 0,
                  cmd: { kind: 'create', client: 0, key: 'm0', base: 0 },
                  ok: true,
                },
              ],
              [
                'init1',
                {
                  id: 'init1',
                  round: 0,
                  cmd: { kind: 'create', client: 0, key: 'm1', base: 0 },
                  ok: true,
                },
              ],
            ]);
            const existedAtStart = new Map<Key, boolean>([
              ['m0', true],
              ['m1', true],
              ['m2', false],
            ]);

            for (const [r0, round] of rounds.entries()) {
              const r = r0 + 1;
              const tasks = round.map(async (cmd, i) => {
                const id = `r${r}.${i}`;
                const m = models[cmd.client]!;
                const st = stores[cmd.client]!;
                const out: Outcome = { id, round: r, cmd, ok: false };
                outcomes.set(id, out);
                try {
                  switch (cmd.kind) {
                    case 'create':
                      await m.create(cmd.key, { n: cmd.base, log: [id] });
                      break;
                    case 'put':
                      await m.put(cmd.key, { n: cmd.base, log: [id] });
                      break;
                    case 'delete':
                      if (!(await m.delete(cmd.key))) {
                        out.refused = 'absent';
                        return;
                      }
                      break;
                    case 'apply':
                      await m.apply(cmd.key, (d) => {
                        d.n.incr(cmd.by);
                        d.log.append(id);
                      });
                      break;
                    case 'update':
                      await m.update(
                        cmd.key,
                        (d) => {
                          d.n += cmd.by;
                          d.log.push(id);
                        },
                        { retries: 50 },
                      );
                      break;
                    case 'lock':
                      await m.lock(cmd.key, (d) => {
                        d.n += cmd.by;
                        d.log.push(id);
                      });
                      break;
                    case 'lock2':
                      await m.lock(cmd.keys, (ds) => {
                        for (const d of ds) {
                          d.n += cmd.by;
                          d.log.push(id);
                        }
                      });
                      break;
                    case 'storeApply':
                      await st.apply(
                        cmd.keys.map((k) =>
                          m.ops(k, (d) => {
                            d.n.incr(cmd.by);
                            d.log.append(id);
                          }),
                        ),
                      );
                      break;
                  }
                  out.ok = true;
                } catch (e) {
                  const expected =
                    (e instanceof AlreadyExistsError && cmd.kind === 'create') ||
                    (e instanceof NotFoundError && isIncrement(cmd)) ||
                    (e instanceof ConflictError &&
                      (cmd.kind === 'update' || cmd.kind === 'lock' || cmd.kind === 'lock2'));
                  if (!expected) throw e;
                  out.refused = (e as Error).name;
                }
              });
              const settled = await s.waitFor(Promise.allSettled(tasks));
              for (const t of settled) if (t.status === 'rejected') throw t.reason;

              const thisRound = [...outcomes.values()].filter((o) => o.round === r);
              const logs = new Map<Key, string[] | undefined>();
              const alwaysThere = new Map<Key, boolean>();
              for (const key of KEYS) {
                const doc = await direct.find(key);
                logs.set(key, doc?.data.log);
                const mine = thisRound.filter((o) => keysOf(o.cmd).includes(key));
                const deleted = mine.some((o) => o.cmd.kind === 'delete' && o.ok);
                const resets = mine.filter((o) => isReset(o.cmd) && o.ok);
                const existed = existedAtStart.get(key)!;
                alwaysThere.set(key, existed && !deleted);
                // refusals only where the round's concurrency explains them
                for (const o of mine) {
                  if (o.refused === 'AlreadyExistsError' && !existed && resets.length === 0) {
                    throw new Error(
                      `${o.id} create ${key}: AlreadyExists, but nobody else created it`,
                    );
                  }
                  if (o.refused === 'absent' && existed && !deleted) {
                    throw new Error(
                      `${o.id} delete ${key}: returned false, but ${key} existed all round`,
                    );
                  }
                }
                if (existed && !deleted && mine.some((o) => o.cmd.kind === 'create' && o.ok)) {
                  throw new Error(`a create of ${key} succeeded although it existed all round`);
                }
                if (!doc) {
                  if (existed || resets.length > 0) {
                    expect(deleted, `${key} vanished without a successful delete`).toBe(true);
                  }
                  existedAtStart.set(key, false);
                  continue;
                }
                existedAtStart.set(key, true);
                const log = doc.data.log;
                expect(new Set(log).size, `${key}: an id twice in ${log}`).toBe(log.length);
                const head = outcomes.get(log[0]!);
                expect(head?.ok && isReset(head.cmd), `${key}: log starts with ${log[0]}`).toBe(
                  true,
                );
                expect(keysOf(head!.cmd)).toContain(key);
                let n = (head!.cmd as { base: number }).base;
                for (const id of log.slice(1)) {
                  const o = outcomes.get(id);
                  expect(
                    o?.ok && isIncrement(o.cmd),
                    `${key}: ${id} in the log but not a successful increment`,
                  ).toBe(true);
                  expect(keysOf(o!.cmd)).toContain(key);
                  expect(o!.round).toBeGreaterThanOrEqual(head!.round);
                  n += (o!.cmd as { by: number }).by;
                }
                expect(doc.data.n, `${key}: n does not match its log ${log}`).toBe(n);
                // no lost update: every increment that succeeded after this generation began is logged
                for (const o of outcomes.values()) {
                  if (
                    o.ok &&
                    isIncrement(o.cmd) &&
                    o.round > head!.round &&
                    keysOf(o.cmd).includes(key)
                  ) {
                    expect(log, `${key}: successful ${o.cmd.kind} ${o.id} lost`).toContain(o.id);
                  }
                }
                // a generation that began in an earlier round was not deleted since
                if (head!.round < r) {
                  expect(
                    deleted,
                    `${key}: deleted in round ${r} but still holds ${JSON.stringify(doc)}; round: ${JSON.stringify(mine)}`,
                  ).toBe(false);
                }
                expect(doc.version).toBeGreaterThanOrEqual(log.length);
              }
              for (const o of thisRound) {
                // a lock's commit conflicts only with a write that does not take the lock
                // (apply, update, store.apply, create/put/delete) on one of its keys, in this round
                if (
                  o.refused === 'ConflictError' &&
                  (o.cmd.kind === 'lock' || o.cmd.kind === 'lock2')
                ) {
                  const mine = keysOf(o.cmd);
                  const explained = thisRound.some(
                    (x) =>
                      x.ok &&
                      x.cmd.kind !== 'lock' &&
                      x.cmd.kind !== 'lock2' &&
                      keysOf(x.cmd).some((k) => mine.includes(k)),
                  );
                  if (!explained) {
                    throw new Error(
                      `${o.id} ${o.cmd.kind} ${mine}: ConflictError, but no lock-free writer touched it`,
                    );
                  }
                }
                if (
                  o.refused === 'NotFoundError' &&
                  keysOf(o.cmd).every((k) => alwaysThere.get(k))
                ) {
                  throw new Error(
                    `${o.id} ${o.cmd.kind} ${keysOf(o.cmd)}: NotFound, but it existed all round`,
                  );
                }
              }
              // multi-key writes: in both logs, or neither (unless a reset in the same or later round explains it)
              for (const o of thisRound) {
                if (!('keys' in o.cmd)) continue;
                const [k1, k2] = o.cmd.keys;
                const in1 = logs.get(k1)?.includes(o.id) ?? false;
                const in2 = logs.get(k2)?.includes(o.id) ?? false;
                if (in1 !== in2) {
                  const other = in1 ? k2 : k1;
                  const explained = thisRound.some(
                    (x) =>
                      x.ok &&
                      keysOf(x.cmd).includes(other) &&
                      (isReset(x.cmd) || x.cmd.kind === 'delete'),
                  );
                  expect(
                    explained,
                    `${o.id} ${o.cmd.kind} half-applied: ${k1}=${in1} ${k2}=${in2}`,
                  ).toBe(true);
                }
                if (!o.ok) {
                  expect(in1 || in2, `${o.id} failed but is logged`).toBe(false);
                }
              }
            }
            for (const st of stores) await st.close();
          }),
          {
            numRuns: RUNS,
            ...(process.env.LOCKSTEP_CONFORMANCE_SEED
              ? {
                  seed: Number(process.env.LOCKSTEP_CONFORMANCE_SEED),
                  path: process.env.LOCKSTEP_CONFORMANCE_PATH,
                }
              : {}),
          },
        );
      },
      Math.max(60_000, RUNS * 500),
    );
  });
}
