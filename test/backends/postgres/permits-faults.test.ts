/**
 * Named permits under faults, with real processes, on a PostgreSQL cluster this file starts
 * (startPostgres(): the sessions it terminates can only be its own). A holder is a child process
 * running fixtures/permit-holder.ts as `node --import tsx` (the loader in the node process itself,
 * so SIGKILL/SIGSTOP reach the process that holds the permit):
 * - a holder SIGKILLed: its units come back (session end for a mutex, row expiry for a
 *   semaphore) and the next holder gets a larger fence;
 * - a holder SIGSTOPped past its lease while clients of this process take the units, then
 *   SIGCONT: its signal aborts with LeaseLostError, release() resolves false, and the units held
 *   (counted here, and by the server at every grant) never exceeded permits;
 * - pg_terminate_backend of every waiting session (and the listening one): the waiters wait
 *   again and all get the permit.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresBackend, postgres } from '../../../src/backends/postgres/index.js';
import type { PermitKind, PermitLease, PermitRequest } from '../../../src/store/backend.js';
import { type Bounded, bounded } from '../../../src/store/boundary.js';
import { type PostgresServer, startPostgres } from '../../support/servers.js';

let server: PostgresServer;
const schema = `lspermfault_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const fixture = fileURLToPath(new URL('./fixtures/permit-holder.ts', import.meta.url));
let b0: PostgresBackend;
let b1: PostgresBackend;
/** The same instances behind the boundary (what createStore uses): every request goes through it. */
let p0: Bounded;
let p1: Bounded;
/** The waiters' backend: its sessions are the ones named `lswaiters`. */
let bw: PostgresBackend;
let pw: Bounded;
let admin: pg.Client;
const children: ChildProcessWithoutNullStreams[] = [];

beforeAll(async () => {
  server = await startPostgres();
  b0 = postgres({ url: server.url, schema, poolSize: 8 });
  b1 = postgres({ url: server.url, schema, poolSize: 8 });
  p0 = bounded(b0);
  p1 = bounded(b1);
  bw = postgres({ url: `${server.url}?application_name=lswaiters`, schema, poolSize: 8 });
  pw = bounded(bw);
  admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
});

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
  }
  await b0?.close();
  await b1?.close();
  await bw?.close();
  await admin?.end();
  await server?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The request of `kind` on `name`: a mutex, or a semaphore of 2 permits. */
function req(kind: PermitKind, name: string, extra: Partial<PermitRequest> = {}): PermitRequest {
  return {
    kind,
    name,
    permits: kind === 'semaphore' ? 2 : 1,
    weight: 1,
    leaseMs: 30_000,
    renew: true,
    nowait: false,
    ...extra,
  };
}

interface Holder {
  child: ChildProcessWithoutNullStreams;
  fence: number;
  next(): Promise<Record<string, unknown>>;
}

async function startHolder(
  kind: PermitKind,
  name: string,
  weight: number,
  leaseMs: number,
): Promise<Holder> {
  const r = req(kind, name);
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      fixture,
      server.url,
      schema,
      kind,
      name,
      String(r.permits),
      String(weight),
      String(leaseMs),
      '1',
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const lines: string[] = [];
  const waiters: Array<(l: string) => void> = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else lines.push(l);
  });
  const next = () =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(JSON.parse(l) as Record<string, unknown>);
      const timer = setTimeout(
        () => reject(new Error(`holder said nothing; stderr: ${stderr}`)),
        30_000,
      );
      waiters.push((x) => {
        clearTimeout(timer);
        resolve(JSON.parse(x) as Record<string, unknown>);
      });
    });
  const ready = await next();
  expect(ready).toMatchObject({ ready: true });
  return { child, fence: ready.fence as number, next };
}

async function take(b: Bounded | PostgresBackend, r: PermitRequest): Promise<PermitLease> {
  const p = await b.acquirePermit(r);
  if (!p) throw new Error('no permit');
  return p;
}

/** Polls `fn` until true (bounded). */
async function until(fn: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (await fn()) return;
    await sleep(10);
  }
  throw new Error(`never saw: ${what}`);
}

describe('postgres permits under faults (real processes, a cluster of our own)', () => {
  for (const kind of ['mutex', 'semaphore'] as const) {
    it(`${kind}: a holder SIGKILLed — its units come back, the next fence is larger`, async () => {
      const name = `killed-${kind}`;
      const weight = kind === 'semaphore' ? 2 : 1;
      const h = await startHolder(kind, name, weight, 1500);
      expect(await p0.acquirePermit(req(kind, name, { nowait: true }))).toBeUndefined();
      h.child.kill('SIGKILL');
      const mine = await take(p0, req(kind, name, { timeoutMs: 20_000 }));
      expect(mine.fence).toBeGreaterThan(h.fence);
      expect(await mine.release()).toBe(true);
      expect(await p0.permitsHeld(kind, name)).toBe(0);
    });

    it(`${kind}: a holder SIGSTOPped past its lease, then SIGCONT — signal aborted, release false, never above permits`, async () => {
      const name = `stopped-${kind}`;
      const permits = kind === 'semaphore' ? 2 : 1;
      const h = await startHolder(kind, name, permits, 400);
      h.child.kill('SIGSTOP');
      let held = 0;
      let max = 0;
      let overServer = 0;
      let grants = 0;
      const fences: number[] = [];
      // 6 clients on two instances take one unit each, 5 times, while the holder is frozen
      await Promise.all(
        Array.from({ length: 6 }, async (_, i) => {
          const b = i % 2 ? p1 : p0;
          for (let n = 0; n < 5; n++) {
            const p = await take(b, req(kind, name, { timeoutMs: 30_000 }));
            held += 1;
            max = Math.max(max, held);
            grants++;
            fences.push(p.fence);
            if ((await b.permitsHeld(kind, name)) > permits) overServer++;
            await sleep(2);
            held -= 1;
            await p.release();
          }
        }),
      );
      expect(grants).toBe(30);
      expect(max).toBeLessThanOrEqual(permits);
      expect(overServer).toBe(0);
      expect(Math.min(...fences)).toBeGreaterThan(h.fence);
      h.child.kill('SIGCONT');
      expect(await h.next()).toStrictEqual({ aborted: 'LEASE_LOST' });
      h.child.stdin.write('release\n');
      expect(await h.next()).toStrictEqual({ released: false, lost: true });
      expect(await p0.permitsHeld(kind, name)).toBe(0);
    });

    it(`${kind}: the waiters' sessions terminated — they wait again and all get the permit`, async () => {
      const name = `terminated-${kind}`;
      const permits = kind === 'semaphore' ? 2 : 1;
      const holder = await take(p0, req(kind, name, { weight: permits }));
      const got: number[] = [];
      const waiters = Array.from({ length: 4 }, (_, i) =>
        take(pw, req(kind, name, { timeoutMs: 60_000 })).then(async (p) => {
          got.push(i);
          await sleep(1);
          await p.release();
        }),
      );
      // every session of the waiters' backend that waits: in the lock manager, and (semaphore)
      // the head idle in its transaction and the listening connection
      const expected = kind === 'semaphore' ? 5 : 4;
      const waiting = async () => {
        const r = await admin.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE application_name = 'lswaiters' AND (wait_event_type = 'Lock' OR state = 'idle in transaction' OR query LIKE 'LISTEN%')`,
        );
        return r.rows.map((x) => x.pid);
      };
      await until(async () => (await waiting()).length >= expected, 'the waiters waiting');
      const pids = await waiting();
      for (const pid of pids) {
        await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      }
      // they come back and wait again
      await until(async () => (await waiting()).length >= expected, 'the waiters waiting again');
      expect(got).toStrictEqual([]);
      expect(await holder.release()).toBe(true);
      await Promise.all(waiters);
      expect(got.sort()).toStrictEqual([0, 1, 2, 3]);
      expect(await p0.permitsHeld(kind, name)).toBe(0);
    });
  }
});
