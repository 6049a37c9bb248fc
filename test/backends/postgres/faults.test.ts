/**
 * Faults with real processes against a real PostgreSQL of this file's own (startPostgres(): the
 * sessions it terminates can only be its own): a lock holder whose session is
 * terminated by the server, a holder killed with SIGKILL, and a holder frozen with SIGSTOP past
 * its lease while another process takes the lock and writes. Each holder is a child process
 * running test/backends/postgres/fixtures/holder.ts as `node --import tsx` (the tsx loader in
 * the node process itself: the `tsx` CLI would run the script in a grandchild, out of reach of
 * SIGKILL/SIGSTOP sent to the child).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresBackend, postgres } from '../../../src/backends/postgres/index.js';
import type { DocWrite, LeaseRequest, WriteResult } from '../../../src/store/backend.js';
import { type PostgresServer, startPostgres } from '../../support/servers.js';

let server: PostgresServer;
let url: string;
const schema = `lsfault_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const fixture = fileURLToPath(new URL('./fixtures/holder.ts', import.meta.url));
const workerFixture = fileURLToPath(new URL('./fixtures/worker.ts', import.meta.url));

let backend: PostgresBackend;
let admin: pg.Client;
const children: ChildProcessWithoutNullStreams[] = [];

beforeAll(async () => {
  server = await startPostgres();
  url = server.url;
  backend = postgres({ url, schema, poolSize: 4 });
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
});

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
  }
  await backend?.close();
  await admin?.end();
  // The schema goes with the cluster; a session a failed test left behind cannot block that.
  await server?.stop();
});

interface Holder {
  child: ChildProcessWithoutNullStreams;
  ready: { fences: number[] };
  /** The next JSON line the child prints. */
  next(): Promise<Record<string, unknown>>;
  commit(writes: DocWrite[]): Promise<Record<string, unknown>>;
}

async function startHolder(model: string, keys: string[], leaseMs: number, renew: boolean) {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      fixture,
      url,
      schema,
      model,
      keys.join(','),
      String(leaseMs),
      renew ? '1' : '0',
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
      const take = (l: string) => resolve(JSON.parse(l) as Record<string, unknown>);
      const l = lines.shift();
      if (l !== undefined) return take(l);
      const timer = setTimeout(
        () => reject(new Error(`holder said nothing; stderr: ${stderr}`)),
        30_000,
      );
      waiters.push((x) => {
        clearTimeout(timer);
        take(x);
      });
    });
  const ready = (await next()) as { fences: number[] };
  expect(ready).toMatchObject({ ready: true });
  const h: Holder = {
    child,
    ready,
    next,
    commit: async (writes) => {
      child.stdin.write(`${JSON.stringify(writes)}\n`);
      return next();
    },
  };
  return h;
}

const lease = (model: string, keys: string[], extra: Partial<LeaseRequest> = {}): LeaseRequest => ({
  model,
  keys,
  action: 'default',
  mode: 'exclusive',
  leaseMs: 30_000,
  renew: false,
  nowait: false,
  skipLocked: false,
  ...extra,
});

/** The server pid of the child's lease session: idle in a transaction that mentions our schema. */
async function holderPid(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const r = await admin.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`,
      [schema],
    );
    if (r.rows.length === 1) return r.rows[0]!.pid;
    await new Promise((res) => setTimeout(res, 25));
  }
  throw new Error('could not find the holder session');
}

function refusedReason(r: unknown): string | undefined {
  const w = (r as { result?: WriteResult }).result;
  return w && !w.applied ? w.reason : undefined;
}

describe('postgres faults (real processes)', () => {
  it('four processes increment one document through lock, update and apply: no lost update', async () => {
    await backend.write([
      { kind: 'create', model: 'counter', key: 'c', data: { locked: 0, applied: 0, updated: 0 } },
    ]);
    const n = 25;
    const outputs = await Promise.all(
      Array.from({ length: 4 }, () => {
        const child = spawn(
          process.execPath,
          ['--import', 'tsx', workerFixture, url, schema, String(n)],
          {
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        children.push(child as unknown as ChildProcessWithoutNullStreams);
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
        });
        child.stderr.on('data', (d: Buffer) => {
          err += d.toString();
        });
        return new Promise<{ done: boolean; conflicts: number }>((resolve, reject) => {
          child.on('exit', (code) => {
            if (code === 0) resolve(JSON.parse(out) as { done: boolean; conflicts: number });
            else reject(new Error(`worker exited with ${code}: ${err}`));
          });
        });
      }),
    );
    expect(outputs.every((o) => o.done)).toBe(true);
    // lock commits touch only `locked`, which no other path writes: never a conflict
    expect(outputs.reduce((a, o) => a + o.conflicts, 0)).toBe(0);
    const [doc] = await backend.read([{ model: 'counter', key: 'c' }]);
    expect(doc?.data).toStrictEqual({ locked: 4 * n, applied: 4 * n, updated: 4 * n });
    expect(doc?.version).toBe(1 + 3 * 4 * n);
  });

  it('pg_terminate_backend on a holder: its locks are free at once and its commit writes nothing', async () => {
    const model = 'term';
    await backend.write([
      { kind: 'create', model, key: 'a', data: { n: 0 } },
      { kind: 'create', model, key: 'b', data: { n: 0 } },
    ]);
    const h = await startHolder(model, ['a', 'b'], 60_000, true);
    // held: nowait is busy
    await expect(backend.acquire(lease(model, ['a'], { nowait: true }))).rejects.toMatchObject({
      code: 'LOCK_BUSY',
    });
    const pid = await holderPid();
    const t = await admin.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [pid]);
    expect(t.rows[0]!.ok).toBe(true);
    // free: a waiter (bounded, so a regression fails instead of hanging) gets both keys
    const mine = await backend.acquire(lease(model, ['a', 'b'], { timeoutMs: 10_000 }));
    expect(mine).toBeDefined();
    await mine!.release();
    // the holder's multi-key commit is refused as a whole: nothing partial
    const r = await h.commit([
      { kind: 'patch', model, key: 'a', ops: [{ op: 'set', field: 'n', value: 1 }] },
      { kind: 'patch', model, key: 'b', ops: [{ op: 'set', field: 'n', value: 1 }] },
    ]);
    expect(refusedReason(r)).toBe('fence');
    const docs = await backend.read([
      { model, key: 'a' },
      { model, key: 'b' },
    ]);
    expect(docs.map((d) => d?.data.n)).toStrictEqual([0, 0]);
  });

  it('a holder killed with SIGKILL frees its key', async () => {
    const model = 'killed';
    await backend.write([{ kind: 'create', model, key: 'k', data: { n: 0 } }]);
    const h = await startHolder(model, ['k'], 60_000, true);
    await expect(backend.acquire(lease(model, ['k'], { nowait: true }))).rejects.toMatchObject({
      code: 'LOCK_BUSY',
    });
    h.child.kill('SIGKILL');
    const mine = await backend.acquire(lease(model, ['k'], { timeoutMs: 20_000 }));
    expect(mine).toBeDefined();
    expect(mine!.fences[0]).toBeGreaterThan(h.ready.fences[0]!);
    const r = await mine!.commit([
      { kind: 'patch', model, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
    ]);
    expect(r.applied).toBe(true);
  });

  it('a holder frozen (SIGSTOP) past leaseMs loses the lease: its commit after SIGCONT is refused, the newer write stays', async () => {
    const model = 'stopped';
    await backend.write([{ kind: 'create', model, key: 'k', data: { owner: 'none', n: 0 } }]);
    // renew: true — a renewing lease must die too when its process stops running
    const h = await startHolder(model, ['k'], 300, true);
    h.child.kill('SIGSTOP');
    // another process (this one) takes the lock once the server ended the frozen session
    const mine = await backend.acquire(lease(model, ['k'], { timeoutMs: 20_000 }));
    expect(mine).toBeDefined();
    expect(mine!.fences[0]).toBeGreaterThan(h.ready.fences[0]!);
    const w = await mine!.commit([
      {
        kind: 'patch',
        model,
        key: 'k',
        ops: [
          { op: 'set', field: 'owner', value: 'newer' },
          { op: 'incr', field: 'n', by: 1 },
        ],
      },
    ]);
    expect(w.applied).toBe(true);
    h.child.kill('SIGCONT');
    const r = await h.commit([
      { kind: 'patch', model, key: 'k', ops: [{ op: 'set', field: 'owner', value: 'stale' }] },
    ]);
    expect(refusedReason(r)).toBe('fence');
    const [doc] = await backend.read([{ model, key: 'k' }]);
    expect(doc?.data).toStrictEqual({ owner: 'newer', n: 1 });
  });
});
