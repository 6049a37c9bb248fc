import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { type MemoryBackend, memory } from '../../../src/backends/memory/index.js';
import {
  BackendError,
  DeadlockError,
  LeaseLostError,
  LockBusyError,
  LockTimeoutError,
  ValidationError,
} from '../../../src/errors.js';
import type { Lease, LeaseRequest, Op, PatchWrite } from '../../../src/store/backend.js';
import { bounded } from '../../../src/store/boundary.js';
import { runAsTask } from '../../../src/sync/index.js';

const M = 'acct';

function req(keys: string[], extra: Partial<LeaseRequest> = {}): LeaseRequest {
  return {
    model: M,
    keys,
    action: 'default',
    mode: 'exclusive',
    leaseMs: 30_000,
    renew: true,
    nowait: false,
    skipLocked: false,
    ...extra,
  };
}
function patch(key: string, ops: Op[], extra: Partial<PatchWrite> = {}): PatchWrite {
  return { kind: 'patch', model: M, key, ops, ...extra };
}
const set = (field: string, value: number | string): Op => ({ op: 'set', field, value });
const tick = () => new Promise((r) => setImmediate(r));

async function must(p: Promise<Lease | undefined>): Promise<Lease> {
  const l = await p;
  if (!l) throw new Error('expected a lease');
  return l;
}

const backends: MemoryBackend[] = [];
function fresh(): MemoryBackend {
  const b = memory();
  backends.push(b);
  return b;
}
afterEach(async () => {
  // Every test must leave nothing behind: no lease, no lock, no timer, no reservation.
  for (const b of backends.splice(0)) {
    expect(b.stats()).toMatchObject({
      leases: 0,
      locks: 0,
      timers: 0,
      reservations: 0,
      gated: 0,
    });
    await b.close();
  }
});

async function seed(b: MemoryBackend, docs: Record<string, Record<string, number | string>>) {
  const r = await b.write(
    Object.entries(docs).map(([key, data]) => ({ kind: 'create' as const, model: M, key, data })),
  );
  expect(r.applied).toBe(true);
}

describe('memory leases: basics', () => {
  it('reads snapshots once held; commit writes and releases', async () => {
    const b = fresh();
    await seed(b, { a: { n: 1 } });
    const lease = await must(b.acquire(req(['a', 'zz'])));
    expect(lease.docs).toEqual([
      { key: 'a', version: 1, incarnation: expect.any(String), data: { n: 1 } },
      undefined,
    ]);
    expect(lease.lost).toBe(false);
    expect(b.stats()).toMatchObject({ leases: 1, locks: 2, timers: 0 });
    const r = await lease.commit([patch('a', [set('n', 2)], { fieldsUnchangedSince: 1 })]);
    expect(r).toEqual({
      applied: true,
      docs: [{ key: 'a', version: 2, incarnation: expect.any(String), data: { n: 2 } }],
      results: [[null]],
    });
    expect(b.stats()).toMatchObject({ leases: 0, locks: 0 });
    // Committing again, or after release, is refused with fence and writes nothing.
    expect(await lease.commit([patch('a', [set('n', 3)])])).toMatchObject({
      applied: false,
      reason: 'fence',
    });
    await lease.release();
    await lease.release();
    const [a] = await b.read([{ model: M, key: 'a' }]);
    expect(a?.data.n).toBe(2);
  });

  it('an empty commit just releases; a refused commit releases too', async () => {
    const b = fresh();
    await seed(b, { a: { n: 1 } });
    const l1 = await must(b.acquire(req(['a'])));
    expect(await l1.commit([])).toEqual({ applied: true, docs: [], results: [] });
    const l2 = await must(b.acquire(req(['a'])));
    expect(
      await l2.commit([
        patch('a', [set('n', 5)], { guards: [{ guard: 'cmp', field: 'n', cmp: 'eq', value: 0 }] }),
      ]),
    ).toMatchObject({ applied: false, reason: 'guard' });
    expect(b.stats()).toMatchObject({ leases: 0, locks: 0 });
  });

  it('behind the boundary, a commit outside the lease is a ValidationError and still releases', async () => {
    const b = fresh();
    const checked = bounded(b); // the boundary refuses it; memory itself assumes it never comes
    await seed(b, { a: { n: 1 }, b: { n: 1 } });
    const lease = await must(checked.acquire(req(['a'])));
    await expect(lease.commit([patch('b', [set('n', 9)])])).rejects.toBeInstanceOf(ValidationError);
    const l2 = await must(checked.acquire(req(['a'])));
    await expect(
      l2.commit([{ kind: 'patch', model: 'other', key: 'a', ops: [set('n', 9)] }]),
    ).rejects.toBeInstanceOf(ValidationError);
    const docs = await b.read([
      { model: M, key: 'a' },
      { model: M, key: 'b' },
    ]);
    expect(docs.map((d) => d?.data.n)).toEqual([1, 1]);
  });

  it('behind the boundary, a malformed request is a ValidationError', async () => {
    const b = bounded(fresh());
    const bad: Array<Partial<LeaseRequest>> = [
      { keys: [] },
      { keys: ['a', 'a'] },
      { keys: [''] },
      { model: 'no spaces' },
      { mode: 'both' as never },
      { leaseMs: 0 },
      { leaseMs: Number.NaN },
    ];
    for (const extra of bad) {
      await expect(b.acquire(req(['a'], extra)), JSON.stringify(extra)).rejects.toBeInstanceOf(
        ValidationError,
      );
    }
  });

  it('fences strictly increase across exclusive holders of a key', async () => {
    const b = fresh();
    const fences: number[] = [];
    for (let i = 0; i < 5; i++) {
      const l = await must(b.acquire(req(['a', 'b'])));
      expect(l.fences.length).toBe(2);
      fences.push(l.fences[0] as number);
      if (i % 2) await l.release();
      else await l.commit([]);
    }
    // Interleaved with other keys and expiries, still increasing.
    const other = await must(b.acquire(req(['c'], { renew: false, leaseMs: 1 })));
    await new Promise((r) => setTimeout(r, 5));
    expect(other.lost).toBe(true);
    const last = await must(b.acquire(req(['a'])));
    fences.push(last.fences[0] as number);
    await last.release();
    for (let i = 1; i < fences.length; i++) {
      expect(fences[i] as number).toBeGreaterThan(fences[i - 1] as number);
    }
  });
});

describe('memory leases: waiting', () => {
  it('nowait → LockBusyError naming the model and key; skipLocked → undefined', async () => {
    const b = fresh();
    const held = await must(b.acquire(req(['k:1'])));
    const err = await b.acquire(req(['k:1'], { nowait: true })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockBusyError);
    expect((err as LockBusyError).code).toBe('LOCK_BUSY');
    expect((err as LockBusyError).message).toContain('acct "k:1"');
    expect(await b.acquire(req(['k:1'], { skipLocked: true }))).toBeUndefined();
    expect(await b.acquire(req(['other', 'k:1'], { skipLocked: true }))).toBeUndefined();
    expect(b.stats()).toMatchObject({ leases: 1, locks: 1 }); // nothing queued, nothing taken
    await held.release();
    const got = await must(b.acquire(req(['k:1'], { nowait: true })));
    await got.release();
  });

  it('different actions do not block each other; shared blocks exclusive only', async () => {
    const b = fresh();
    const a = await must(b.acquire(req(['k'], { action: 'withdraw' })));
    const c = await must(b.acquire(req(['k'], { action: 'profile', nowait: true })));
    const s1 = await must(b.acquire(req(['s'], { mode: 'shared' })));
    const s2 = await must(b.acquire(req(['s'], { mode: 'shared', nowait: true })));
    await expect(b.acquire(req(['s'], { nowait: true }))).rejects.toBeInstanceOf(LockBusyError);
    await expect(
      b.acquire(req(['k'], { action: 'withdraw', nowait: true })),
    ).rejects.toBeInstanceOf(LockBusyError);
    for (const l of [a, c, s1, s2]) await l.release();
  });

  it('timeout → LockTimeoutError; abort → signal.reason; neither leaves anything queued', async () => {
    const b = fresh();
    const held = await must(b.acquire(req(['k'])));
    await expect(b.acquire(req(['k'], { timeoutMs: 5 }))).rejects.toBeInstanceOf(LockTimeoutError);
    const ac = new AbortController();
    const reason = new Error('stop waiting');
    const waiting = b.acquire(req(['k'], { signal: ac.signal }));
    await tick();
    ac.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    const pre = new AbortController();
    pre.abort(reason);
    await expect(b.acquire(req(['x'], { signal: pre.signal }))).rejects.toBe(reason);
    expect(b.stats()).toMatchObject({ leases: 1, locks: 1 });
    // The next waiter still gets the key when the holder lets go.
    const next = b.acquire(req(['k']));
    await held.release();
    await (await must(next)).release();
  });

  it('waiters are served FIFO', async () => {
    const b = fresh();
    const first = await must(b.acquire(req(['k'])));
    const order: number[] = [];
    const waiters = [1, 2, 3, 4].map(async (i) => {
      const l = await must(b.acquire(req(['k'])));
      order.push(i);
      await tick();
      await l.release();
    });
    await tick();
    await first.release();
    await Promise.all(waiters);
    expect(order).toEqual([1, 2, 3, 4]);
  });

  it('nested acquires in opposite orders → DeadlockError for the task closing the cycle (behind the boundary)', async () => {
    // The boundary tracks in-process waits (the memory lock table no longer does).
    const b = bounded(fresh());
    let release!: () => void;
    const bothHold = new Promise<void>((r) => {
      release = r;
    });
    let holding = 0;
    const nested = (outer: string, inner: string) =>
      runAsTask(async () => {
        const l1 = await must(b.acquire(req([outer])));
        try {
          if (++holding === 2) release();
          await bothHold;
          const l2 = await must(b.acquire(req([inner])));
          await l2.release();
          return 'ok';
        } finally {
          await l1.release();
        }
      });
    const results = await Promise.allSettled([nested('a', 'b'), nested('b', 'a')]);
    const rejected = results.filter((r) => r.status === 'rejected');
    expect(rejected.length).toBe(1);
    expect((rejected[0] as PromiseRejectedResult).reason).toBeInstanceOf(DeadlockError);
    expect(results.filter((r) => r.status === 'fulfilled').length).toBe(1);
  });
});

describe('memory leases: expiry and fencing', () => {
  it('lease.signal read for the first time after the expiry is already aborted (LeaseLostError); release() resolves false', async () => {
    const b = fresh();
    await seed(b, { k: { n: 0 } });
    const l = await must(b.acquire(req(['k'], { renew: false, leaseMs: 20 })));
    while (!l.lost) await new Promise((r) => setTimeout(r, 5));
    // Nobody looked at the signal while the lease held: it is made now, and must say so.
    expect(l.signal.aborted).toBe(true);
    expect(l.signal.reason).toBeInstanceOf(LeaseLostError);
    expect(await l.release()).toBe(false);
    expect(await l.release()).toBe(false);
    const held = await must(b.acquire(req(['k'])));
    expect(held.signal.aborted).toBe(false);
    expect(await held.release()).toBe(true);
    expect(held.signal.aborted).toBe(false); // release never aborts it
  });

  it('renew:false expires after leaseMs; the expired holder is fenced and the later write stays', async () => {
    const b = fresh();
    await seed(b, { k: { owner: 'nobody', n: 0 } });
    const a = await must(b.acquire(req(['k'], { renew: false, leaseMs: 20 })));
    expect(b.stats().timers).toBe(1);
    // B waits (no polling) and gets the key once A's lease expires.
    const lb = await must(b.acquire(req(['k'])));
    expect(a.lost).toBe(true);
    expect(lb.fences[0]).toBeGreaterThan(a.fences[0] as number);
    expect(b.stats().timers).toBe(0);
    expect(
      await lb.commit([patch('k', [set('owner', 'B')], { fieldsUnchangedSince: 1 })]),
    ).toMatchObject({
      applied: true,
    });
    const r = await a.commit([patch('k', [set('owner', 'A'), set('n', 1)])]);
    expect(r).toMatchObject({ applied: false, reason: 'fence', index: 0 });
    expect(!r.applied && r.detail).toMatch(/expired after leaseMs/);
    const [k] = await b.read([{ model: M, key: 'k' }]);
    expect(k).toEqual({
      key: 'k',
      version: 2,
      incarnation: expect.any(String),
      data: { owner: 'B', n: 0 },
    });
    await a.release(); // never throws for a lost lease
  });

  it('a lease expiring while its async post-check runs is fenced, nothing written', async () => {
    const b = fresh();
    await seed(b, { k: { n: 0 } });
    const a = await must(b.acquire(req(['k'], { renew: false, leaseMs: 10 })));
    const r = await a.commit([
      patch('k', [set('n', 1)], {
        check: async () => {
          await new Promise((res) => setTimeout(res, 40));
          return undefined;
        },
      }),
    ]);
    expect(r).toMatchObject({ applied: false, reason: 'fence' });
    const [k] = await b.read([{ model: M, key: 'k' }]);
    expect(k?.data.n).toBe(0);
  });

  it('a commit with an async post-check applies, then releases (waiters get the new state)', async () => {
    const b = fresh();
    await seed(b, { k: { n: 0 } });
    const a = await must(b.acquire(req(['k'])));
    const next = b.acquire(req(['k']));
    const r = await a.commit([
      patch('k', [set('n', 1)], {
        fieldsUnchangedSince: 1,
        check: async (d) => {
          await tick();
          return d.n === 1 ? undefined : [{ message: 'expected n = 1' }];
        },
      }),
    ]);
    expect(r).toMatchObject({ applied: true, docs: [{ version: 2, data: { n: 1 } }] });
    const l = await must(next);
    expect(l.docs[0]).toMatchObject({ version: 2, data: { n: 1 } });
    await l.release();
  });

  it('renew:true never expires on its own, and keeps no timer', async () => {
    const b = fresh();
    const l = await must(b.acquire(req(['k'], { leaseMs: 1 })));
    await new Promise((r) => setTimeout(r, 10));
    expect(l.lost).toBe(false);
    expect(b.stats().timers).toBe(0);
    expect(await b.acquire(req(['k'], { skipLocked: true }))).toBeUndefined();
    await l.release();
  });

  it('a commit is refused with conflict when a written field changed since the read', async () => {
    const b = fresh();
    await seed(b, { k: { a: 0, b: 0 } });
    // A named action: plain writers are not held back by it (they wait for the default action's
    // exclusive leases only), so its commit is field-checked against them.
    const edit = { action: 'edit' };
    const l = await must(b.acquire(req(['k'], edit)));
    // A writer that does not take the lease (apply/update) changes field a.
    await b.write([patch('k', [{ op: 'incr', field: 'a', by: 1 }])]);
    const since = l.docs[0]?.version as number;
    expect(
      await l.commit([patch('k', [set('a', 10)], { fieldsUnchangedSince: since })]),
    ).toMatchObject({ applied: false, reason: 'conflict' });
    const l2 = await must(b.acquire(req(['k'], edit)));
    await b.write([patch('k', [{ op: 'incr', field: 'a', by: 1 }])]);
    expect(
      await l2.commit([patch('k', [set('b', 10)], { fieldsUnchangedSince: l2.docs[0]?.version })]),
    ).toMatchObject({ applied: true });
    // Deleted and created again under a lease holder: conflict, even at the same version.
    const l3 = await must(b.acquire(req(['k'], edit)));
    await b.write([{ kind: 'delete', model: M, key: 'k' }]);
    await b.write([{ kind: 'create', model: M, key: 'k', data: { a: 0, b: 0 } }]);
    expect(await l3.commit([patch('k', [set('b', 1)], { fieldsUnchangedSince: 1 })])).toMatchObject(
      { applied: false, reason: 'conflict' },
    );
  });

  it('close() ends live leases (lost), wakes waiters with BackendError, clears timers', async () => {
    const b = memory();
    const l = await must(b.acquire(req(['k'], { renew: false, leaseMs: 60_000 })));
    const waiter = b.acquire(req(['k']));
    await tick();
    await b.close();
    expect(l.lost).toBe(true);
    await expect(waiter).rejects.toBeInstanceOf(BackendError);
    expect(await l.commit([])).toMatchObject({ applied: false, reason: 'fence' });
    await expect(b.acquire(req(['k']))).rejects.toBeInstanceOf(BackendError);
    expect(b.stats()).toMatchObject({ leases: 0, locks: 0, timers: 0 });
  });
});

describe('memory leases: no lost update under contention', () => {
  it('many tasks doing lease read-modify-write on a hot key and on several keys', async () => {
    const b = fresh();
    await seed(b, { hot: { n: 0 }, x: { v: 1000 }, y: { v: 1000 }, z: { v: 1000 } });
    const tasks = 16;
    const rounds = 20;
    await Promise.all(
      Array.from({ length: tasks }, async (_, t) => {
        for (let r = 0; r < rounds; r++) {
          const l = await must(b.acquire(req(['hot'])));
          const n = l.docs[0]?.data.n as number;
          await tick();
          const w = await l.commit([
            patch('hot', [set('n', n + 1)], { fieldsUnchangedSince: l.docs[0]?.version }),
          ]);
          expect(w.applied).toBe(true);
          // Transfers among x, y, z: keys in canonical order.
          const keys = ['x', 'y', 'z'];
          const from = keys[(t + r) % 3] as string;
          const to = keys[(t + r + 1) % 3] as string;
          const pair = [from, to].sort();
          const l2 = await must(b.acquire(req(pair)));
          const val = (k: string) => l2.docs[pair.indexOf(k)]?.data.v as number;
          await tick();
          const w2 = await l2.commit([
            patch(from, [set('v', val(from) - 1)]),
            patch(to, [set('v', val(to) + 1)]),
          ]);
          expect(w2.applied).toBe(true);
        }
      }),
    );
    const docs = await b.read(['hot', 'x', 'y', 'z'].map((key) => ({ model: M, key })));
    expect(docs[0]?.data.n).toBe(tasks * rounds);
    expect(docs.slice(1).reduce((s, d) => s + (d?.data.v as number), 0)).toBe(3000);
  });

  it('fc.scheduler: lease holders and short expiring leases never lose an increment', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.array(fc.boolean(), { minLength: 2, maxLength: 6 }),
        async (s, expiring) => {
          const b = memory();
          await seed(b, { k: { n: 0 } });
          let committed = 0;
          const worker = async (short: boolean) => {
            for (let attempt = 0; ; attempt++) {
              const expires = short && attempt === 0;
              // Scheduling points go BEFORE each call: a scheduled acquire that has to wait for a
              // holder whose commit is not scheduled yet would block the scheduler.
              await s.schedule(Promise.resolve('acquire'));
              const l = await must(
                b.acquire(req(['k'], expires ? { renew: false, leaseMs: 1 } : {})),
              );
              const n = l.docs[0]?.data.n as number;
              // A short lease expires while "working" on its first attempt.
              if (expires) await new Promise((r) => setTimeout(r, 3));
              await s.schedule(Promise.resolve('commit'));
              const w = await l.commit([
                patch('k', [set('n', n + 1)], { fieldsUnchangedSince: l.docs[0]?.version }),
              ]);
              if (w.applied) {
                committed++;
                return;
              }
              expect(['fence', 'conflict']).toContain(w.reason);
            }
          };
          await s.waitFor(Promise.all(expiring.map(worker)));
          const [k] = await b.read([{ model: M, key: 'k' }]);
          expect(k?.data.n).toBe(committed);
          expect(committed).toBe(expiring.length);
          expect(b.stats()).toMatchObject({ leases: 0, locks: 0, timers: 0 });
          await b.close();
        },
      ),
      { numRuns: 40 },
    );
  });
});
