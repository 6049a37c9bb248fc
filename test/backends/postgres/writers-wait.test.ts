/**
 * Plain writers wait for the default action's exclusive leases on PostgreSQL (the contract's rule):
 * lock holders and plain appliers mixed on one document never meet ConflictError and every
 * increment lands; shared leases do not hold writers back; a waiting write given `timeoutMs` or
 * `signal` gives up with nothing written. Also the lease's own contract: `signal`, `lost`,
 * `release()`.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { type PostgresBackend, postgres } from '../../../src/backends/postgres/index.js';
import { ConflictError, LeaseLostError, LockTimeoutError } from '../../../src/errors.js';
import type { LeaseRequest } from '../../../src/store/backend.js';
import { createStore } from '../../../src/store/index.js';
import { leaseRequest } from '../../support/lease-request.js';
import { type PostgresServer, startPostgres } from '../../support/servers.js';

// A PostgreSQL of this file's own: one test ends a lease's session (pg_terminate_backend).
let server: PostgresServer;
let url: string;
const schema = `lswait_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;

let b0: PostgresBackend;
let b1: PostgresBackend;
let admin: pg.Client;

beforeAll(async () => {
  server = await startPostgres();
  url = server.url;
  b0 = postgres({ url, schema, poolSize: 8 });
  b1 = postgres({ url, schema, poolSize: 8 });
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await b0.migrate(['counter', 'w']);
});

afterAll(async () => {
  await b0.close();
  await b1.close();
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.end();
  await server.stop();
});

const lease = (keys: string[], extra: Partial<LeaseRequest> = {}): LeaseRequest =>
  leaseRequest('w', keys, { leaseMs: 10_000, ...extra });

const incr = (key: string) => [
  { kind: 'patch' as const, model: 'w', key, ops: [{ op: 'incr' as const, field: 'n', by: 1 }] },
];

/** Waits until a session of this schema waits for a lock (a plain write is queued). */
async function someoneWaits(): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const r = await admin.query(
      `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`,
      [schema],
    );
    if ((r.rowCount ?? 0) > 0) return;
    await new Promise((res) => setTimeout(res, 5));
  }
  throw new Error('nobody waited');
}

describe('postgres: plain writers wait for exclusive default-action leases', () => {
  it('800 lock calls mixed with 800 applies on one document: no ConflictError, every increment lands', async () => {
    const doc = z.object({ n: z.number().int(), log: z.array(z.string()) });
    const stores = [createStore(b0), createStore(b1)];
    const M = stores.map((s) => s.model('counter', doc));
    await M[0]?.create('hot', { n: 0, log: [] });
    const workers = 16;
    const rounds = 50; // per worker: one lock call and one apply per round
    const failures: unknown[] = [];
    let conflicts = 0;
    await Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        const m = M[w % 2] as NonNullable<(typeof M)[number]>;
        for (let r = 0; r < rounds; r++) {
          const calls = [
            m.lock('hot', (d) => {
              d.n += 1;
            }),
            m.apply('hot', (d) => d.n.incr(1)),
          ];
          for (const c of await Promise.allSettled(calls)) {
            if (c.status === 'rejected') {
              if (c.reason instanceof ConflictError) conflicts += 1;
              else failures.push(c.reason);
            }
          }
        }
      }),
    );
    expect(failures).toEqual([]);
    expect(conflicts).toBe(0);
    expect((await M[1]?.get('hot'))?.data.n).toBe(workers * rounds * 2);
  }, 120_000);

  it('a plain write waits for the holder and lands after its commit; shared leases do not hold it back', async () => {
    await b0.write([{ kind: 'create', model: 'w', key: 'q', data: { n: 0 } }]);
    const held = await b0.acquire(lease(['q']));
    let done = false;
    const plain = b1.write(incr('q')).then((r) => {
      done = true;
      return r;
    });
    await someoneWaits();
    expect(done).toBe(false);
    const c = await held?.commit([
      { kind: 'patch', model: 'w', key: 'q', ops: [{ op: 'set', field: 'by', value: 'holder' }] },
    ]);
    expect(c?.applied).toBe(true);
    expect((await plain).applied).toBe(true);
    const [after] = await b0.read([{ model: 'w', key: 'q' }]);
    expect(after?.data).toStrictEqual({ n: 1, by: 'holder' });
    // A shared lease: the plain write goes through while it is held (bounded, so a wait fails).
    const shared = await b0.acquire(lease(['q'], { mode: 'shared' }));
    const r = await b1.write(incr('q'), { timeoutMs: 5_000 });
    expect(r.applied).toBe(true);
    // A named action's exclusive lease: the same.
    const named = await b1.acquire(lease(['q'], { action: 'other' }));
    expect((await b0.write(incr('q'), { timeoutMs: 5_000 })).applied).toBe(true);
    expect(await shared?.release()).toBe(true);
    expect(await named?.release()).toBe(true);
    const [end] = await b0.read([{ model: 'w', key: 'q' }]);
    expect(end?.data.n).toBe(3);
  });

  it('a waiting write gives up at timeoutMs (LockTimeoutError) or on its signal (its reason), writing nothing', async () => {
    await b0.write([{ kind: 'create', model: 'w', key: 't', data: { n: 0 } }]);
    const held = await b0.acquire(lease(['t']));
    await expect(b1.write(incr('t'), { timeoutMs: 100 })).rejects.toBeInstanceOf(LockTimeoutError);
    // a general batch (two documents) too
    await b0.write([{ kind: 'create', model: 'w', key: 't2', data: { n: 0 } }]);
    await expect(
      b1.write([...incr('t2'), ...incr('t')], { timeoutMs: 100 }),
    ).rejects.toBeInstanceOf(LockTimeoutError);
    const ac = new AbortController();
    const reason = new Error('caller gave up');
    const p = b1.write(incr('t'), { signal: ac.signal });
    await someoneWaits();
    ac.abort(reason);
    await expect(p).rejects.toBe(reason);
    expect(await held?.release()).toBe(true);
    const docs = await b0.read([
      { model: 'w', key: 't' },
      { model: 'w', key: 't2' },
    ]);
    expect(docs.map((d) => [d?.data.n, d?.version])).toStrictEqual([
      [0, 1],
      [0, 1],
    ]);
    // no bound reached: the write waits and lands
    const again = await b0.acquire(lease(['t']));
    const later = b1.write(incr('t'), { timeoutMs: 10_000 });
    await someoneWaits();
    await again?.release();
    expect((await later).applied).toBe(true);
  });
});

describe('postgres leases: signal, lost, release', () => {
  it('renew: false — lost and the signal aborted (LeaseLostError) at leaseMs; release() then false', async () => {
    await b0.write([{ kind: 'create', model: 'w', key: 'e', data: { n: 0 } }]);
    const l = await b0.acquire(lease(['e'], { renew: false, leaseMs: 150 }));
    if (!l) throw new Error('no lease');
    expect(l.lost).toBe(false);
    const reason = await new Promise<unknown>((res) => {
      l.signal.addEventListener('abort', () => res(l.signal.reason), { once: true });
    });
    expect(reason).toBeInstanceOf(LeaseLostError);
    expect(l.lost).toBe(true);
    expect(await l.release()).toBe(false);
    expect(await l.release()).toBe(false);
    const c = await l.commit(incr('e'));
    expect(c.applied ? 'applied' : c.reason).toBe('fence');
  });

  it('release() is true while held, idempotent, and never aborts the signal', async () => {
    await b0.write([{ kind: 'create', model: 'w', key: 'r', data: { n: 0 } }]);
    const l = await b0.acquire(lease(['r']));
    if (!l) throw new Error('no lease');
    const signal = l.signal;
    const first = l.release();
    const second = l.release();
    expect(await first).toBe(true);
    expect(await second).toBe(true);
    expect(signal.aborted).toBe(false);
    // the key is free
    const next = await b1.acquire(lease(['r'], { nowait: true }));
    expect(await next?.release()).toBe(true);
    // after a commit, release() says the lease held until the commit ended it
    const c = await b0.acquire(lease(['r']));
    expect((await c?.commit(incr('r')))?.applied).toBe(true);
    expect(await c?.release()).toBe(true);
  });

  it('its session ended: the signal aborts at once with LeaseLostError, release() is false', async () => {
    await b0.write([{ kind: 'create', model: 'w', key: 's', data: { n: 0 } }]);
    const l = await b0.acquire(lease(['s']));
    if (!l) throw new Error('no lease');
    const aborted = new Promise<unknown>((res) => {
      l.signal.addEventListener('abort', () => res(l.signal.reason), { once: true });
    });
    // Our own lease's session (found by the transaction id the lease holds), not anyone else's.
    const pid = (l as unknown as { pid: number }).pid;
    await admin.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND datname = current_database()',
      [pid],
    );
    expect(await aborted).toBeInstanceOf(LeaseLostError);
    expect(l.lost).toBe(true);
    expect(await l.release()).toBe(false);
  });
});
