/**
 * Faults with real processes and a real Redis of this file's own (startRedis(): CLIENT PAUSE ALL,
 * CLIENT KILL and UNPAUSE reach nobody else, not even the other test files of the run):
 * - a lock holder killed with SIGKILL: the key is free again within its lease;
 * - a holder frozen with SIGSTOP past its lease while another process takes the lock and writes,
 *   then resumed with SIGCONT: its commit is refused (LeaseLostError) and the newer write stays;
 * - CLIENT KILL of our connections mid-run, and CLIENT PAUSE: clear BackendErrors, no partial
 *   write (bank total conserved, campaign never over its limit), recovery afterwards;
 * - a process that used leases, waits and aborts exits by itself after close().
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { redis } from '../../../src/backends/redis/index.js';
import { BackendError, createStore, LockstepError } from '../../../src/index.js';
import { type RedisServer, startRedis } from '../../support/servers.js';

let server: RedisServer;
let url: string;
const prefix = `lsfault:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
const root = fileURLToPath(new URL('../../..', import.meta.url));
const holderScript = fileURLToPath(new URL('./fixtures/holder.ts', import.meta.url));
let admin: Redis;
const children: ChildProcess[] = [];

beforeAll(async () => {
  server = await startRedis();
  url = server.url;
  admin = new Redis(url);
});

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
  }
  await admin?.quit();
  // Its keys go with it.
  await server?.stop();
});

const schema = z.object({ n: z.number() });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts a holder child; resolves once it printed LOCKED. */
async function startHolder(model: string, key: string, leaseMs: number) {
  // `node --import tsx` (not the tsx CLI, which forks a second process): signals reach the holder.
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', holderScript, prefix, model, key, String(leaseMs)],
    {
      cwd: root,
      env: { ...process.env, REDIS_URL: url },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  children.push(child);
  let out = '';
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  child.stdout.on('data', (c) => {
    out += String(c);
    const parts = out.split('\n');
    out = parts.pop() ?? '';
    lines.push(...parts);
    for (const w of waiters.splice(0)) w();
  });
  let err = '';
  child.stderr.on('data', (c) => (err += String(c)));
  const waitLine = async (pred: (l: string) => boolean, what: string) => {
    for (let i = 0; i < 600; i++) {
      const hit = lines.find(pred);
      if (hit) return hit;
      if (child.exitCode !== null) break;
      await Promise.race([new Promise<void>((r) => waiters.push(r)), sleep(100)]);
    }
    throw new Error(`holder never printed ${what}; stderr: ${err.slice(0, 2000)}`);
  };
  await waitLine((l) => l === 'LOCKED', 'LOCKED');
  return { child, waitLine };
}

describe('crashed and stalled holders', () => {
  it('SIGKILL: the key is free again within leaseMs, and nothing was written', async () => {
    const store = createStore(redis({ url, prefix }));
    const M = store.model('killed', schema);
    await M.create('k', { n: 1 });
    const { child } = await startHolder('killed', 'k', 1_000);
    // While the holder lives, the key is busy.
    await expect(M.lock('k', () => 0, { nowait: true })).rejects.toMatchObject({
      code: 'LOCK_BUSY',
    });
    child.kill('SIGKILL');
    // A waiter with a generous timeout gets the key once the lease runs out (about 1 s), woken by
    // its fallback timer since nobody released.
    const got = await M.lock('k', (d) => d.n, { timeoutMs: 15_000 });
    expect(got).toBe(1);
    expect((await M.get('k')).data.n).toBe(1);
    await store.close();
  });

  it('SIGSTOP past the lease, another process writes, SIGCONT: LeaseLostError, newer write stays', async () => {
    const store = createStore(redis({ url, prefix }));
    const M = store.model('stopped', schema);
    await M.create('k', { n: 1 });
    const { child, waitLine } = await startHolder('stopped', 'k', 400);
    child.kill('SIGSTOP');
    // The frozen holder cannot renew: we get the lock once its lease expires.
    await M.lock(
      'k',
      (d) => {
        d.n = 2;
      },
      { timeoutMs: 15_000 },
    );
    child.kill('SIGCONT');
    child.stdin?.write('commit\n');
    const line = await waitLine((l) => l.startsWith('OK') || l.startsWith('ERR'), 'a result');
    expect(line).toBe('ERR LEASE_LOST');
    expect((await M.get('k')).data.n).toBe(2);
    await store.close();
  });
});

/** Kills every connection whose name is `name`. Returns how many. */
async function killConnections(name: string): Promise<number> {
  const list = (await admin.client('LIST')) as string;
  const ids = list
    .split('\n')
    .filter((l) => l.includes(` name=${name} `))
    .map((l) => /id=(\d+)/.exec(l)?.[1])
    .filter((x): x is string => x !== undefined);
  for (const id of ids) await admin.client('KILL', 'ID', id);
  return ids.length;
}

const account = z.object({ balance: z.number().int().min(0) });
const campaign = z.object({ applicants: z.array(z.string()) });

async function bankAndCampaign(
  name: string,
  fault: () => Promise<void>,
  options: { commandTimeoutMs?: number } = {},
) {
  const client = new Redis(url, {
    connectionName: name,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 1,
    commandTimeout: options.commandTimeoutMs ?? 2_000,
  });
  client.on('error', () => {});
  const store = createStore(redis({ client, prefix }));
  const A = store.model(`${name}_acc`, account);
  const C = store.model(`${name}_camp`, campaign);
  const N = 5;
  const MAX = 25;
  for (let i = 0; i < N; i++) await A.create(`a${i}`, { balance: 100 });
  await C.create('c', { applicants: [] });

  const errors: unknown[] = [];
  let stop = false;
  const worker = async (w: number) => {
    for (let i = 0; !stop; i++) {
      const from = `a${(w + i) % N}`;
      const to = `a${(w + i + 1 + (i % 3)) % N}`;
      const amt = 1 + ((w * 7 + i) % 30);
      try {
        if (i % 3 === 0) {
          await store.apply([
            A.ops(
              from,
              (a) => a.balance.incr(-amt),
              (a) => a.balance.gte(amt),
            ),
            A.ops(to, (a) => a.balance.incr(amt)),
          ]);
        } else if (i % 3 === 1) {
          await A.lock(
            [from, to].sort(),
            (ds) => {
              const [x, y] = from < to ? ds : [ds[1], ds[0]];
              if (x && y && from !== to && x.balance >= amt) {
                x.balance -= amt;
                y.balance += amt;
              }
            },
            { leaseMs: 2_000, timeoutMs: 5_000 },
          );
        } else {
          const user = `u${(w * 13 + i) % 40}`;
          await C.apply('c', (c) => c.applicants.append(user), {
            when: (c) => [c.applicants.length.lt(MAX), c.applicants.notContains(user)],
          });
        }
      } catch (err) {
        errors.push(err);
        await sleep(10);
      }
    }
  };
  const workers = Array.from({ length: 8 }, (_, w) => worker(w));
  await sleep(150);
  await fault();
  await sleep(400);
  stop = true;
  await Promise.all(workers);

  // Recovery: the same store works again.
  const r = await A.apply('a0', (a) => a.balance.incr(0));
  expect(r.applied).toBe(true);

  // Invariants: every transfer was all-or-nothing; the campaign never overflowed.
  let total = 0;
  for (let i = 0; i < N; i++) {
    const d = await A.get(`a${i}`);
    expect(d.data.balance).toBeGreaterThanOrEqual(0);
    total += d.data.balance;
  }
  expect(total).toBe(N * 100);
  const c = (await C.get('c')).data.applicants;
  expect(c.length).toBeLessThanOrEqual(MAX);
  expect(new Set(c).size).toBe(c.length);
  // Every failure is a LockstepError; driver failures are BackendErrors with their cause.
  for (const e of errors) {
    expect(e).toBeInstanceOf(LockstepError);
    if (e instanceof BackendError) expect(e.cause).toBeDefined();
  }
  await store.close();
  expect(await client.ping()).toBe('PONG');
  await client.quit();
  return errors;
}

describe('connection faults', () => {
  it('CLIENT KILL mid-run: clear errors, no partial write, recovery', async () => {
    const name = `kill${process.pid}`;
    const errors = await bankAndCampaign(name, async () => {
      for (let i = 0; i < 3; i++) {
        await killConnections(name);
        await sleep(50);
      }
    });
    const backend = errors.filter((e) => e instanceof BackendError);
    expect(backend.length).toBeGreaterThan(0);
    expect(backend.some((e) => /redis .* failed/.test((e as Error).message))).toBe(true);
  });

  it('a script in flight when its connection closes fails then, not at the command timeout', async () => {
    // The client has no command timeout, and ioredis does not resend (nor fail) what was in
    // flight: without the backend's 'close' handling, the calls below would wait forever.
    const name = `inflight${process.pid}`;
    const client = new Redis(url, { connectionName: name, autoResendUnfulfilledCommands: false });
    client.on('error', () => {});
    const store = createStore(redis({ client, prefix }));
    const M = store.model(`${name}_m`, schema);
    await M.create('k', { n: 0 });
    // The apply below then goes out as its write at once (its document is known: no read first).
    await M.apply('k', (d) => d.n.incr(0));
    try {
      // Held by the server: the scripts are on the wire, not run.
      await admin.client('PAUSE', 3_000, 'WRITE');
      const settled = Promise.allSettled([
        M.apply('k', (d) => d.n.incr(1)),
        M.lock('k', (d) => void (d.n += 10), { leaseMs: 5_000 }),
      ]);
      await sleep(100);
      // Ours and its pub/sub duplicate (same name).
      expect(await killConnections(name)).toBeGreaterThanOrEqual(1);
      const [w, l] = await settled;
      for (const r of [w, l]) {
        expect(r.status).toBe('rejected');
        const err = (r as PromiseRejectedResult).reason as BackendError;
        expect(err).toBeInstanceOf(BackendError);
        expect(err.outcomeUnknown).toBe(true);
        expect(err.message).toMatch(/closed before the reply arrived/);
      }
    } finally {
      await admin.client('UNPAUSE');
    }
    // Killed before they ran: nothing was written, and the store works again.
    expect((await M.get('k')).data.n).toBe(0);
    expect((await M.apply('k', (d) => d.n.incr(1))).applied).toBe(true);
    expect((await M.get('k')).data.n).toBe(1);
    await store.close();
    await client.quit();
  });

  it('commandTimeoutMs of the client we open: a paused write fails with outcomeUnknown, then runs or not, never half', async () => {
    expect(() => redis({ url, prefix, commandTimeoutMs: 0 })).toThrow(/commandTimeoutMs/);
    const store = createStore(redis({ url, prefix, commandTimeoutMs: 200 }));
    const M = store.model(`timeout${process.pid}`, z.object({ n: z.number(), m: z.number() }));
    await M.create('k', { n: 0, m: 0 });
    await M.apply('k', (d) => d.n.incr(0));
    try {
      await admin.client('PAUSE', 800, 'WRITE');
      const settled = Promise.allSettled([
        M.apply('k', (d) => {
          d.n.incr(1);
          d.m.incr(1);
        }),
      ]);
      const [r] = await settled;
      expect(r?.status).toBe('rejected');
      const err = (r as PromiseRejectedResult).reason as BackendError;
      expect(err).toBeInstanceOf(BackendError);
      expect(err.outcomeUnknown).toBe(true);
      expect(err.message).toMatch(/timed out/);
    } finally {
      await admin.client('UNPAUSE');
    }
    // The script was queued in Redis: it ran after the pause, whole (both fields) or not at all.
    const d = (await M.get('k')).data;
    expect(d.n).toBe(d.m);
    expect((await M.apply('k', (x) => x.n.incr(1))).applied).toBe(true);
    await store.close();
  });

  it('CLIENT PAUSE past the command timeout: BackendError with outcomeUnknown, then recovery', async () => {
    const name = `pause${process.pid}`;
    const errors = await bankAndCampaign(
      name,
      async () => {
        await admin.client('PAUSE', 600, 'ALL');
        await sleep(650);
      },
      { commandTimeoutMs: 200 },
    );
    const unknown = errors.filter((e) => e instanceof BackendError && e.outcomeUnknown);
    expect(unknown.length).toBeGreaterThan(0);
  });
});

describe('nothing leaks', () => {
  it('a process that used leases, waits, timeouts and aborts exits by itself after close()', async () => {
    const entry = fileURLToPath(new URL('../../../src/index.ts', import.meta.url));
    const redisEntry = fileURLToPath(
      new URL('../../../src/backends/redis/index.ts', import.meta.url),
    );
    const script = `
      const { createStore } = await import(${JSON.stringify(entry)});
      const { redis } = await import(${JSON.stringify(redisEntry)});
      const store = createStore(redis({ url: ${JSON.stringify(url)}, prefix: ${JSON.stringify(prefix)} }));
      const schema = { '~standard': { version: 1, vendor: 't', validate: (v) => ({ value: v }) } };
      const M = store.model('exit', schema);
      await M.create('k', { n: 0 });
      const hold = M.lock('k', async (d) => { await new Promise((r) => setTimeout(r, 80)); d.n = 1; }, { leaseMs: 200 });
      await new Promise((r) => setTimeout(r, 20));
      await M.lock('k', () => 0, { timeoutMs: 5 }).catch(() => {});
      const ac = new AbortController();
      const aborted = M.lock('k', () => 0, { signal: ac.signal }).catch(() => {});
      ac.abort(new Error('bye'));
      await aborted;
      await hold;
      await M.apply('k', (d) => d.n.incr(1));
      M.lock('k', () => new Promise(() => {}), { leaseMs: 10_000 }).catch(() => {});
      await new Promise((r) => setTimeout(r, 50));
      await store.close();
      console.log('closed');
    `;
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    children.push(child);
    let out = '';
    child.stdout.on('data', (c) => (out += String(c)));
    child.stderr.on('data', (c) => (out += String(c)));
    const code = await Promise.race([
      new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c))),
      sleep(30_000).then(() => 'hung' as const),
    ]);
    expect(out).toContain('closed');
    expect(code).toBe(0);
  });
});
