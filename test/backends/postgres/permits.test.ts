/**
 * Named permits on PostgreSQL (acquirePermit / permitsHeld), through the Backend contract, on
 * the run's shared server (each test in its own schema, nothing server-wide): capacity by weight
 * under 16+ clients on two backend instances, FIFO (a large weight is not starved, rwlocks are
 * write-preferring), timeouts and aborts leaving the queue and waking whoever they blocked,
 * fences, loss by expiry, extend, permits mismatch, and nothing left when idle.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresBackend, postgres } from '../../../src/backends/postgres/index.js';
import {
  type PermitKind,
  type PermitLease,
  type PermitRequest,
  RWLOCK_PERMITS,
} from '../../../src/store/backend.js';
import { type Bounded, bounded } from '../../../src/store/boundary.js';
import { databaseUrl, uniquePrefix } from '../../support/env.js';

const schema = uniquePrefix('lsperm', '_');
let b0: PostgresBackend;
let b1: PostgresBackend;
/** The same instances behind the boundary (what createStore uses): every request goes through it. */
let p0: Bounded;
let p1: Bounded;
let admin: pg.Pool;

beforeAll(async () => {
  b0 = postgres({ url: databaseUrl(), schema, poolSize: 12 });
  b1 = postgres({ url: databaseUrl(), schema, poolSize: 12 });
  p0 = bounded(b0);
  p1 = bounded(b1);
  admin = new pg.Pool({ connectionString: databaseUrl(), max: 2 });
});

afterAll(async () => {
  await b0?.close();
  await b1?.close();
  await admin?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin?.end();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function req(kind: PermitKind, name: string, extra: Partial<PermitRequest> = {}): PermitRequest {
  const permits = kind === 'mutex' ? 1 : kind === 'rwlock' ? RWLOCK_PERMITS : 1;
  return {
    kind,
    name,
    permits,
    weight: 1,
    leaseMs: 30_000,
    renew: true,
    nowait: false,
    ...extra,
  };
}

const sem = (name: string, permits: number, weight: number, extra: Partial<PermitRequest> = {}) =>
  req('semaphore', name, { permits, weight, ...extra });
const reader = (name: string, extra: Partial<PermitRequest> = {}) => req('rwlock', name, extra);
const writer = (name: string, extra: Partial<PermitRequest> = {}) =>
  req('rwlock', name, { weight: RWLOCK_PERMITS, ...extra });

async function take(b: Bounded | PostgresBackend, r: PermitRequest): Promise<PermitLease> {
  const p = await b.acquirePermit(r);
  if (!p) throw new Error('no permit');
  return p;
}

/** Resolves when `p` settled, with whether it did within `ms` (a hang guard, not a duration). */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((res) => (timer = setTimeout(() => res(false), ms))),
  ]);
  clearTimeout(timer);
  return r;
}

/** Polls `fn` until true (a server state the test waits to see; bounded). */
async function until(fn: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await fn()) return;
    await sleep(10);
  }
  throw new Error(`never saw: ${what}`);
}

/** Sessions of this schema's backends waiting for a lock on the server. */
async function lockWaiters(): Promise<number> {
  const r = await admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`,
    [schema],
  );
  return r.rows[0]!.n;
}

describe('postgres permits: grants and fences', () => {
  it('a mutex: one holder, nowait undefined while held, fences increase across instances, release idempotent', async () => {
    const a = await take(p0, req('mutex', 'm1'));
    expect(await p1.acquirePermit(req('mutex', 'm1', { nowait: true }))).toBeUndefined();
    expect(await p0.permitsHeld('mutex', 'm1')).toBe(1);
    expect(a.lost).toBe(false);
    expect(await a.release()).toBe(true);
    expect(await a.release()).toBe(true);
    expect(await p1.permitsHeld('mutex', 'm1')).toBe(0);
    const b = await take(p1, req('mutex', 'm1', { nowait: true }));
    expect(b.fence).toBeGreaterThan(a.fence);
    const c = p0.acquirePermit(req('mutex', 'm1'));
    await b.release();
    const cp = (await c)!;
    expect(cp.fence).toBeGreaterThan(b.fence);
    await cp.release();
  });

  it('kinds are namespaces: mutex, rwlock and semaphore "x" do not block each other', async () => {
    const m = await take(p0, req('mutex', 'x'));
    const w = await take(p0, writer('x'));
    const s = await take(p0, sem('x', 1, 1));
    expect(await p0.permitsHeld('mutex', 'x')).toBe(1);
    expect(await p0.permitsHeld('rwlock', 'x')).toBe(RWLOCK_PERMITS);
    expect(await p0.permitsHeld('semaphore', 'x')).toBe(1);
    await Promise.all([m.release(), w.release(), s.release()]);
  });

  it('an rwlock: readers share, a writer excludes them, permitsHeld counts readers', async () => {
    const r1 = await take(p0, reader('rw1'));
    const r2 = await take(p1, reader('rw1'));
    expect(await p0.permitsHeld('rwlock', 'rw1')).toBe(2);
    expect(await p0.acquirePermit(writer('rw1', { nowait: true }))).toBeUndefined();
    await r1.release();
    await r2.release();
    const w = await take(p1, writer('rw1', { nowait: true }));
    expect(w.fence).toBeGreaterThan(Math.max(r1.fence, r2.fence));
    expect(await p0.acquirePermit(reader('rw1', { nowait: true }))).toBeUndefined();
    await w.release();
  });

  it('a semaphore: weights add up to permits, nowait undefined beyond, permits mismatch refused at once', async () => {
    const a = await take(p0, sem('s1', 5, 3));
    const b = await take(p1, sem('s1', 5, 2));
    expect(await p0.permitsHeld('semaphore', 's1')).toBe(5);
    expect(await p1.acquirePermit(sem('s1', 5, 1, { nowait: true }))).toBeUndefined();
    await expect(p1.acquirePermit(sem('s1', 4, 1))).rejects.toMatchObject({ code: 'INVALID' });
    await a.release();
    const c = await take(p1, sem('s1', 5, 3, { nowait: true }));
    expect(c.fence).toBeGreaterThan(b.fence);
    await Promise.all([b.release(), c.release()]);
    expect(await p0.permitsHeld('semaphore', 's1')).toBe(0);
    // idle: another permits is fine now
    const d = await take(p0, sem('s1', 4, 4));
    await d.release();
  });

  it('timeoutMs 0 asks once: granted when free, LockTimeoutError when held', async () => {
    for (const r of [req('mutex', 't0'), sem('t0', 1, 1)]) {
      const a = await take(p0, { ...r, timeoutMs: 0 });
      await expect(p1.acquirePermit({ ...r, timeoutMs: 0 })).rejects.toMatchObject({
        code: 'LOCK_TIMEOUT',
      });
      await a.release();
    }
  });

  it('a mutex or rwlock of another shape is refused (the kind fixes permits)', async () => {
    await expect(p0.acquirePermit(req('mutex', 'bad', { permits: 2 }))).rejects.toMatchObject({
      code: 'INVALID',
    });
    await expect(p0.acquirePermit(req('rwlock', 'bad', { weight: 2 }))).rejects.toMatchObject({
      code: 'INVALID',
    });
  });
});

describe('postgres permits: never more than permits, by weight', () => {
  for (const [kind, permits] of [
    ['mutex', 1],
    ['rwlock', RWLOCK_PERMITS],
    ['semaphore', 3],
  ] as const) {
    it(`${kind}: 16 clients on two instances, held units never above ${permits}`, async () => {
      const name = `cap-${kind}`;
      let held = 0;
      let max = 0;
      let writers = 0;
      let grants = 0;
      const fences: number[] = [];
      await Promise.all(
        Array.from({ length: 16 }, async (_, i) => {
          const b = i % 2 ? p1 : p0;
          for (let n = 0; n < 8; n++) {
            const weight =
              kind === 'mutex'
                ? 1
                : kind === 'rwlock'
                  ? (i + n) % 4 === 0
                    ? RWLOCK_PERMITS
                    : 1
                  : 1 + ((i + n) % 2);
            const p = await take(b, { ...req(kind, name), permits, weight, timeoutMs: 60_000 });
            held += weight;
            if (weight === RWLOCK_PERMITS && kind === 'rwlock') writers++;
            max = Math.max(max, held);
            grants++;
            fences.push(p.fence);
            await sleep(i % 3);
            held -= weight;
            expect(await p.release()).toBe(true);
          }
        }),
      );
      expect(grants).toBe(128);
      expect(max).toBeLessThanOrEqual(permits);
      if (kind === 'rwlock') expect(writers).toBeGreaterThan(0);
      expect(new Set(fences).size).toBe(128);
      expect(await p0.permitsHeld(kind, name)).toBe(0);
    });
  }
});

describe('postgres permits: FIFO', () => {
  it('a weight-5 request is not starved by a stream of weight-1s', async () => {
    const a = await take(p0, sem('fifo', 5, 3));
    const order: string[] = [];
    const big = p1.acquirePermit(sem('fifo', 5, 5)).then((p) => {
      order.push('big');
      return p!;
    });
    await until(() => b1.permitResources.listeners === 1, 'big waiting at the head');
    // weight-1 requests that would fit (3 + 1 <= 5) queue behind the big one
    const smalls = Array.from({ length: 4 }, (_, i) =>
      (i % 2 ? b0 : b1).acquirePermit(sem('fifo', 5, 1)).then((p) => {
        order.push('small');
        return p!;
      }),
    );
    await until(async () => (await lockWaiters()) === 4, 'four smalls queued');
    expect(await p0.acquirePermit(sem('fifo', 5, 1, { nowait: true }))).toBeUndefined();
    expect(order).toStrictEqual([]);
    await a.release();
    const bp = await big;
    expect(order).toStrictEqual(['big']);
    await bp.release();
    const sp = await Promise.all(smalls);
    expect(order).toStrictEqual(['big', 'small', 'small', 'small', 'small']);
    await Promise.all(sp.map((p) => p.release()));
  });

  it('an rwlock is write-preferring: readers behind a queued writer wait for it', async () => {
    const r1 = await take(p0, reader('wp'));
    const order: string[] = [];
    const w = p1.acquirePermit(writer('wp')).then((p) => {
      order.push('w');
      return p!;
    });
    await until(async () => (await lockWaiters()) === 1, 'writer queued');
    expect(await p0.acquirePermit(reader('wp', { nowait: true }))).toBeUndefined();
    const r2 = p0.acquirePermit(reader('wp')).then((p) => {
      order.push('r2');
      return p!;
    });
    await until(async () => (await lockWaiters()) === 2, 'reader queued behind the writer');
    await r1.release();
    const wp = await w;
    expect(order).toStrictEqual(['w']);
    await wp.release();
    await (await r2).release();
    expect(order).toStrictEqual(['w', 'r2']);
  });
});

describe('postgres permits: leaving the queue', () => {
  it('semaphore: a head that times out leaves and wakes the request it blocked', async () => {
    const a = await take(p0, sem('leave', 2, 1));
    const head = p1.acquirePermit(sem('leave', 2, 2, { timeoutMs: 300 }));
    await until(() => b1.permitResources.listeners === 1, 'head waiting');
    const next = take(p0, sem('leave', 2, 1, { timeoutMs: 20_000 }));
    await expect(head).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
    const np = await next;
    expect(np.fence).toBeGreaterThan(a.fence);
    expect(await p0.permitsHeld('semaphore', 'leave')).toBe(2);
    await Promise.all([a.release(), np.release()]);
  });

  it('semaphore: an aborted head leaves and wakes the request it blocked', async () => {
    const a = await take(p0, sem('abort', 2, 1));
    const ac = new AbortController();
    const head = p1.acquirePermit(sem('abort', 2, 2, { signal: ac.signal }));
    await until(() => b1.permitResources.listeners === 1, 'head listening');
    const next = take(p0, sem('abort', 2, 1, { timeoutMs: 20_000 }));
    await until(async () => (await lockWaiters()) === 1, 'next queued');
    ac.abort(new Error('stop'));
    await expect(head).rejects.toThrow('stop');
    await (await next).release();
    await a.release();
  });

  it('rwlock: a writer that times out leaves, and the reader queued behind it gets in', async () => {
    const r1 = await take(p0, reader('leave-rw'));
    const w = p1.acquirePermit(writer('leave-rw', { timeoutMs: 300 }));
    await until(async () => (await lockWaiters()) === 1, 'writer queued');
    const r2 = take(p0, reader('leave-rw', { timeoutMs: 20_000 }));
    await expect(w).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
    await (await r2).release();
    await r1.release();
  });

  it('mutex: an aborted waiter leaves (its statement cancelled), the next still gets it', async () => {
    const a = await take(p0, req('mutex', 'abort-m'));
    const ac = new AbortController();
    const w = p1.acquirePermit(req('mutex', 'abort-m', { signal: ac.signal }));
    const w2 = take(p1, req('mutex', 'abort-m', { timeoutMs: 20_000 }));
    await until(async () => (await lockWaiters()) === 2, 'two waiters');
    ac.abort(new Error('enough'));
    await expect(w).rejects.toThrow('enough');
    await until(async () => (await lockWaiters()) === 1, 'one waiter left');
    await a.release();
    await (await w2).release();
  });
});

describe('postgres permits: leases', () => {
  for (const kind of ['mutex', 'semaphore'] as const) {
    it(`${kind}: renew false, lost at leaseMs — signal aborts, release false, the next holder gets it`, async () => {
      const name = `expire-${kind}`;
      const a = await take(p0, req(kind, name, { leaseMs: 200, renew: false }));
      const aborted = new Promise<unknown>((res) =>
        a.signal.addEventListener('abort', () => res(a.signal.reason), { once: true }),
      );
      const b = await take(p1, req(kind, name, { timeoutMs: 20_000 }));
      expect(b.fence).toBeGreaterThan(a.fence);
      expect(await aborted).toMatchObject({ code: 'LEASE_LOST' });
      expect(a.lost).toBe(true);
      expect(await a.release()).toBe(false);
      await expect(a.extend()).rejects.toMatchObject({ code: 'LEASE_LOST' });
      expect(await b.release()).toBe(true);
    });

    it(`${kind}: renewal keeps a short lease held; extend(ms) pushes a non-renewed one`, async () => {
      const name = `renew-${kind}`;
      const a = await take(p0, req(kind, name, { leaseMs: 150, renew: true }));
      await sleep(600);
      expect(a.lost).toBe(false);
      expect(await p1.acquirePermit(req(kind, name, { nowait: true }))).toBeUndefined();
      expect(await a.release()).toBe(true);
      const b = await take(p0, req(kind, name, { leaseMs: 150, renew: false }));
      await b.extend(20_000);
      await sleep(500);
      expect(b.lost).toBe(false);
      expect(await p1.acquirePermit(req(kind, name, { nowait: true }))).toBeUndefined();
      expect(await b.release()).toBe(true);
    });
  }
});

describe('postgres permits: nothing left when idle', () => {
  it('no holder row, no advisory lock, no listener and no open permit once everything ended', async () => {
    // contention on a semaphore makes a head listen; then everyone leaves
    const a = await take(p0, sem('idle', 1, 1));
    const w = take(p1, sem('idle', 1, 1, { timeoutMs: 20_000 }));
    await until(() => b1.permitResources.listeners === 1, 'head listening');
    await a.release();
    await (await w).release();
    const m = await take(p0, req('mutex', 'idle'));
    await m.release();
    const rows = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM "${schema}"."lockstep$permit"`,
    );
    expect(rows.rows[0]!.n).toBe(0);
    const locks = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND a.query LIKE '%' || $1 || '%'`,
      [schema],
    );
    expect(locks.rows[0]!.n).toBe(0);
    expect(b0.permitResources).toStrictEqual({ permits: 0, listeners: 0 });
    expect(b1.permitResources).toStrictEqual({ permits: 0, listeners: 0 });
  });

  it('close() releases open permits', async () => {
    const b = postgres({ url: databaseUrl(), schema, poolSize: 2 });
    const p = await take(b, sem('closing', 2, 2));
    await b.close();
    expect(p.lost).toBe(false);
    expect(await p0.permitsHeld('semaphore', 'closing')).toBe(0);
    expect(await settledWithin(p.release(), 5000)).toBe(true);
  });
});
