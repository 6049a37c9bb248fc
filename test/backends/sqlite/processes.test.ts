/**
 * The SQLite backend across real processes on one database file: clients in child processes
 * (test/backends/sqlite/fixtures/client.ts, run as `node --import tsx`), a holder SIGKILLed or
 * stopped past its lease, a writer SIGKILLed mid-batch, and a raw connection holding the write
 * lock while this process waits without blocking its event loop.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { sqlite } from '../../../src/backends/sqlite/index.js';
import { BackendError, LockTimeoutError } from '../../../src/errors.js';
import { createStore } from '../../../src/index.js';
import type { Backend, DocWrite } from '../../../src/store/backend.js';
import { leaseRequest } from '../../support/lease-request.js';
import { type TempDatabase, tempDatabase } from '../../support/sqlite.js';

const fixture = join(import.meta.dirname, 'fixtures', 'client.ts');
const children: ChildProcessWithoutNullStreams[] = [];
const opened: Backend[] = [];
const dbs: TempDatabase[] = [];

afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
  }
  for (const b of opened.splice(0)) await b.close();
});
afterAll(() => {
  for (const d of dbs) d.drop();
});

function freshDb(): string {
  const d = tempDatabase('proc');
  dbs.push(d);
  return d.path;
}

function open(path: string, more: { busyTimeoutMs?: number } = {}) {
  const b = sqlite({ path, ...more });
  opened.push(b);
  return b;
}

interface Client {
  child: ChildProcessWithoutNullStreams;
  send(cmd: Record<string, unknown>): Promise<Record<string, unknown>>;
  exited: Promise<void>;
}

async function startClient(path: string): Promise<Client> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, path], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
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
        () => reject(new Error(`client said nothing; stderr: ${stderr}`)),
        30_000,
      );
      waiters.push((x) => {
        clearTimeout(timer);
        take(x);
      });
    });
  await next(); // ready
  return {
    child,
    exited,
    send: (cmd) => {
      child.stdin.write(`${JSON.stringify(cmd)}\n`);
      return next();
    },
  };
}

const incr = (model: string, key: string, by = 1): DocWrite => ({
  kind: 'patch',
  model,
  key,
  ops: [{ op: 'incr', field: 'n', by }],
});

describe('sqlite across processes', () => {
  it('4 processes increment one document through lock and apply: every increment lands', async () => {
    const path = freshDb();
    const b = open(path);
    await b.write([{ kind: 'create', model: 'c', key: 'k', data: { n: 0 } }]);
    const clients = await Promise.all([0, 1, 2, 3].map(() => startClient(path)));
    const replies = await Promise.all(
      clients.map((c, i) =>
        c.send({ op: 'count', model: 'c', key: 'k', n: 60, via: i % 2 === 0 ? 'lock' : 'apply' }),
      ),
    );
    for (const r of replies) expect(r).toMatchObject({ done: 60 });
    const [doc] = await b.read([{ model: 'c', key: 'k' }]);
    expect(doc?.data.n).toBe(240);
    expect(doc?.version).toBe(241);
  }, 60_000);

  it('a SIGKILLed holder: its key is taken after its lease lapses, with a higher fence', async () => {
    const path = freshDb();
    const b = open(path);
    await b.write([{ kind: 'create', model: 'c', key: 'k', data: { n: 0 } }]);
    const holder = await startClient(path);
    const held = await holder.send({
      op: 'acquire',
      model: 'c',
      keys: ['k'],
      leaseMs: 300,
      renew: true,
    });
    const fence = (held.fences as number[])[0] as number;
    await expect(b.acquire(leaseRequest('c', ['k'], { nowait: true }))).rejects.toMatchObject({
      code: 'LOCK_BUSY',
    });
    holder.child.kill('SIGKILL');
    await holder.exited;
    const lease = await b.acquire(leaseRequest('c', ['k'], { timeoutMs: 20_000 }));
    expect(lease?.fences[0]).toBeGreaterThan(fence);
    const r = await lease?.commit([incr('c', 'k')]);
    expect(r).toMatchObject({ applied: true });
  }, 60_000);

  it('a holder stopped past its lease cannot commit after it resumes (fence), and the newer write stays', async () => {
    const path = freshDb();
    const b = open(path);
    await b.write([{ kind: 'create', model: 'c', key: 'k', data: { n: 0 } }]);
    const holder = await startClient(path);
    await holder.send({ op: 'acquire', model: 'c', keys: ['k'], leaseMs: 300, renew: true });
    holder.child.kill('SIGSTOP');
    const lease = await b.acquire(leaseRequest('c', ['k'], { timeoutMs: 20_000 }));
    expect(await lease?.commit([incr('c', 'k', 10)])).toMatchObject({ applied: true });
    holder.child.kill('SIGCONT');
    const late = await holder.send({ op: 'commit', writes: [incr('c', 'k', 1000)] });
    expect(late).toMatchObject({ result: { applied: false, reason: 'fence' } });
    const [doc] = await b.read([{ model: 'c', key: 'k' }]);
    expect(doc?.data.n).toBe(10);
  }, 60_000);

  it('a writer SIGKILLed in the middle of its batches leaves no partial batch (3 kills)', async () => {
    const path = freshDb();
    const setup = open(path);
    await setup.write([
      { kind: 'create', model: 't', key: 'a', data: { n: 1000 } },
      { kind: 'create', model: 't', key: 'b', data: { n: 1000 } },
    ]);
    await setup.close();
    for (let round = 0; round < 3; round++) {
      const writer = await startClient(path);
      await writer.send({ op: 'transfers', model: 't' });
      await new Promise((r) => setTimeout(r, 150 + round * 70));
      writer.child.kill('SIGKILL');
      await writer.exited;
      // reopen after the kill: WAL recovery keeps whole transactions only
      const b = open(path);
      const [a, bb] = await b.read([
        { model: 't', key: 'a' },
        { model: 't', key: 'b' },
      ]);
      expect((a?.data.n as number) + (bb?.data.n as number)).toBe(2000);
      expect(a?.version).toBe(bb?.version);
      await b.close();
    }
  }, 60_000);

  it('named locks: a SIGKILLed holder frees its mutex within leaseMs, a SIGKILLed waiter leaves the queue', async () => {
    const path = freshDb();
    const b = open(path);
    const mutex = (timeoutMs?: number) =>
      b.acquirePermit({
        kind: 'mutex',
        name: 'nightly',
        permits: 1,
        weight: 1,
        leaseMs: 30_000,
        renew: true,
        nowait: false,
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
      });
    // a holder in another process, killed: the mutex comes back after its lease
    const holder = await startClient(path);
    const held = await holder.send({ op: 'permit', name: 'nightly', leaseMs: 300 });
    expect(await b.permitsHeld('mutex', 'nightly')).toBe(1);
    holder.child.kill('SIGKILL');
    await holder.exited;
    const mine = await mutex(20_000);
    expect(mine?.fence).toBeGreaterThan(held.fence as number);
    // a waiter in another process, queued behind us, killed: it does not hold the queue forever
    const waiter = await startClient(path);
    const waiting = waiter.send({ op: 'permit', name: 'nightly', leaseMs: 30_000 });
    const raw = new Database(path, { readonly: true });
    const queued = () =>
      (
        raw
          .prepare(
            "SELECT COUNT(*) AS n FROM lockstep_permits WHERE name = 'nightly' AND granted = 0",
          )
          .get() as { n: number }
      ).n;
    for (let i = 0; i < 600 && queued() === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(queued()).toBe(1);
    waiter.child.kill('SIGKILL');
    await waiter.exited;
    void waiting.catch(() => undefined);
    expect(await mine?.release()).toBe(true);
    // FIFO: our next request queues behind the dead waiter's row until that row lapses
    const next = await mutex(20_000);
    expect(next?.fence).toBeGreaterThan(mine?.fence as number);
    await next?.release();
    expect(queued()).toBe(0);
    raw.close();
  }, 60_000);

  it('a process holding the write lock: writes wait without blocking the event loop and time out cleanly', async () => {
    const path = freshDb();
    const b = open(path, { busyTimeoutMs: 400 });
    const store = createStore(b);
    await b.write([{ kind: 'create', model: 'c', key: 'k', data: { n: 0 } }]);
    const other = await startClient(path);
    expect(await other.send({ op: 'holdTx' })).toMatchObject({ holding: true });
    let ticks = 0;
    const ticker = setInterval(() => {
      ticks += 1;
    }, 5);
    try {
      await expect(b.write([incr('c', 'k')], { timeoutMs: 150 })).rejects.toBeInstanceOf(
        LockTimeoutError,
      );
      await expect(b.write([incr('c', 'k')])).rejects.toBeInstanceOf(BackendError);
      await expect(b.acquire(leaseRequest('c', ['k'], { timeoutMs: 100 }))).rejects.toBeInstanceOf(
        LockTimeoutError,
      );
      // reads never wait for the writer (WAL)
      expect((await b.read([{ model: 'c', key: 'k' }]))[0]?.data.n).toBe(0);
      // the event loop kept turning while this process waited for the other one
      expect(ticks).toBeGreaterThan(10);
      const late = b.write([incr('c', 'k', 5)], { timeoutMs: 20_000 });
      expect(await other.send({ op: 'endTx' })).toMatchObject({ ended: true });
      expect(await late).toMatchObject({ applied: true });
    } finally {
      clearInterval(ticker);
    }
    const M = store.model('c', z.object({ n: z.number() }));
    expect((await M.get('k')).data.n).toBe(5);
  }, 60_000);
});
