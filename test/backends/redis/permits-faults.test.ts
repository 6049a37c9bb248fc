/**
 * Named permits under faults, with real processes and a Redis of this file's own (startRedis():
 * CLIENT KILL reaches nobody else):
 * - a holder process SIGKILLed: its units come back once its lease runs out, to a waiter woken by
 *   its fallback timer (nobody released);
 * - a holder process SIGSTOPped past its lease while others take the units, then SIGCONTinued:
 *   its signal aborts, release() resolves false, and the holders never exceeded permits;
 * - CLIENT KILL of the waiters' connections (commands and pub/sub) while they wait: every waiter
 *   still gets its permit, in turn, and the pool ends idle.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redis } from '../../../src/backends/redis/index.js';
import { KeyLayout } from '../../../src/backends/redis/keys.js';
import type { PermitKind, PermitLease, PermitRequest } from '../../../src/store/backend.js';
import { bounded } from '../../../src/store/boundary.js';
import { type RedisServer, startRedis } from '../../support/servers.js';

let server: RedisServer;
let admin: Redis;
const prefix = `lspf:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
const layout = new KeyLayout(prefix);
const root = fileURLToPath(new URL('../../..', import.meta.url));
const holderScript = fileURLToPath(new URL('./fixtures/permit-holder.ts', import.meta.url));
const children: ChildProcess[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  server = await startRedis();
  admin = new Redis(server.url);
});

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    }
  }
  await admin?.quit();
  await server?.stop();
});

function req(kind: PermitKind, name: string, extra: Partial<PermitRequest> = {}): PermitRequest {
  return {
    kind,
    name,
    permits: 1,
    weight: 1,
    leaseMs: 10_000,
    renew: true,
    nowait: false,
    ...extra,
  };
}

/** Rejects when `p` has not settled within `ms` (a hang guard, not a duration assertion). */
function guard<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} hung`)), ms)),
  ]);
}

/** Starts a holder child; resolves once it printed HELD, with its fence. */
async function startHolder(kind: PermitKind, name: string, permits: number, leaseMs: number) {
  // `node --import tsx` (not the tsx CLI, which forks a second process): signals reach it.
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', holderScript, prefix, kind, name, String(permits), '1', String(leaseMs)],
    { cwd: root, env: { ...process.env, REDIS_URL: server.url }, stdio: ['pipe', 'pipe', 'pipe'] },
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
  const held = await waitLine((l) => l.startsWith('HELD '), 'HELD');
  return { child, waitLine, lines, fence: Number(held.slice(5)) };
}

describe('crashed and stalled holders', () => {
  it('SIGKILL: the units come back after the lease, to a waiter nobody woke', async () => {
    const b = bounded(redis({ url: server.url, prefix }));
    try {
      const { child, fence } = await startHolder('mutex', 'killed', 1, 1_000);
      expect(await b.acquirePermit(req('mutex', 'killed', { nowait: true }))).toBeUndefined();
      expect(await b.permitsHeld('mutex', 'killed')).toBe(1);
      child.kill('SIGKILL');
      const p = (await guard(
        b.acquirePermit(req('mutex', 'killed', { timeoutMs: 15_000 })),
        20_000,
        'the waiter',
      )) as PermitLease;
      expect(p.fence).toBeGreaterThan(fence);
      expect(await p.release()).toBe(true);
      expect(await b.permitsHeld('mutex', 'killed')).toBe(0);
    } finally {
      await b.close();
    }
  });

  it('SIGSTOP past the lease, others take the units, SIGCONT: its signal aborts, release() is false, never over permits', async () => {
    const permits = 2;
    const backends = [
      bounded(redis({ url: server.url, prefix })),
      bounded(redis({ url: server.url, prefix })),
    ];
    try {
      const stalled = await startHolder('semaphore', 'stopped', permits, 400);
      stalled.child.kill('SIGSTOP');
      let inUse = 0;
      let max = 0;
      let overServer = 0;
      let fencesAbove = 0;
      let grants = 0;
      const worker = async (i: number) => {
        const b = backends[i % 2] as (typeof backends)[number];
        // Until both units were taken at once: the stalled holder's lease has run out.
        for (let k = 0; k < 15 || max < permits; k++) {
          const p = (await b.acquirePermit(
            req('semaphore', 'stopped', { permits, leaseMs: 2_000, timeoutMs: 20_000 }),
          )) as PermitLease;
          inUse++;
          max = Math.max(max, inUse);
          // The server's view (the stalled holder included while its lease ran).
          if ((await b.permitsHeld('semaphore', 'stopped')) > permits) overServer++;
          if (p.fence > stalled.fence) fencesAbove++;
          grants++;
          await sleep(2);
          inUse--;
          await p.release();
        }
      };
      await guard(Promise.all([0, 1, 2, 3].map(worker)), 30_000, 'the workers');
      expect(max).toBeLessThanOrEqual(permits);
      expect(max).toBe(permits);
      expect(overServer).toBe(0);
      expect(fencesAbove).toBe(grants);
      stalled.child.kill('SIGCONT');
      await stalled.waitLine((l) => l === 'LOST', 'LOST');
      stalled.child.stdin?.write('release\n');
      const line = await stalled.waitLine((l) => l.startsWith('RELEASED'), 'RELEASED');
      expect(line).toBe('RELEASED false');
    } finally {
      for (const b of backends) await b.close();
    }
  });
});

/** Kills every connection whose name is `name`; returns how many. */
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

/** FCALL and EVALSHA calls the server ran so far (this file's own server: only ours). */
async function scriptCalls(): Promise<number> {
  const stats = (await admin.info('commandstats')) as string;
  let n = 0;
  for (const m of stats.matchAll(/cmdstat_(?:fcall|evalsha|eval):calls=(\d+)/g)) n += Number(m[1]);
  return n;
}

describe('no polling', () => {
  it('a waiter makes no call while it waits: queued once, then granted by the release', async () => {
    const b = bounded(redis({ url: server.url, prefix }));
    try {
      // A long lease: its first renewal (a third of it) falls far outside the window.
      const holder = (await b.acquirePermit(
        req('mutex', 'quiet', { leaseMs: 60_000 }),
      )) as PermitLease;
      const waiting = b.acquirePermit(req('mutex', 'quiet', { timeoutMs: 20_000 }));
      const queue = layout.permit('mutex', 'quiet').queue;
      for (let i = 0; i < 2_000 && (await admin.llen(queue)) < 1; i++) await sleep(2);
      const before = await scriptCalls();
      // A poller at redis-semaphore's 10 ms would have made ~100 calls by now, redlock's ~4.
      await sleep(1_000);
      expect(await scriptCalls()).toBe(before);
      await holder.release();
      const p = (await guard(waiting, 20_000, 'the waiter')) as PermitLease;
      await p.release();
    } finally {
      await b.close();
    }
  });
});

describe('connection faults', () => {
  it("CLIENT KILL of the waiters' connections while they wait: every waiter gets its permit, the pool ends idle", async () => {
    const holderBackend = bounded(redis({ url: server.url, prefix }));
    const client = new Redis(server.url, {
      connectionName: 'permit-waiters',
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 1,
    });
    client.on('error', () => {});
    const waiters = bounded(redis({ client, prefix, commandTimeoutMs: 5_000 }));
    try {
      const holder = (await holderBackend.acquirePermit(req('mutex', 'ck'))) as PermitLease;
      const got: number[] = [];
      const all = Array.from({ length: 6 }, (_, i) =>
        waiters.acquirePermit(req('mutex', 'ck', { timeoutMs: 30_000 })).then(async (p) => {
          got.push(i);
          await sleep(5);
          await p?.release();
        }),
      );
      const queue = layout.permit('mutex', 'ck').queue;
      for (let i = 0; i < 2_000 && (await admin.llen(queue)) < 6; i++) await sleep(2);
      expect(await admin.llen(queue)).toBe(6);
      // Both of the waiters' connections (commands and pub/sub), twice, while they wait.
      for (let round = 0; round < 2; round++) {
        expect(await killConnections('permit-waiters')).toBeGreaterThanOrEqual(2);
        for (let i = 0; i < 2_000 && client.status !== 'ready'; i++) await sleep(2);
        await sleep(100);
      }
      // Its hand-off is published to a subscriber that reconnected (and may not be back yet).
      expect(await holder.release()).toBe(true);
      await killConnections('permit-waiters');
      await guard(Promise.all(all), 40_000, 'the waiters');
      expect(got.sort()).toEqual([0, 1, 2, 3, 4, 5]);
      expect(await holderBackend.permitsHeld('mutex', 'ck')).toBe(0);
      expect(await admin.exists(queue, layout.permit('mutex', 'ck').queueInfo)).toBe(0);
    } finally {
      await waiters.close();
      await holderBackend.close();
      await client.quit().catch(() => client.disconnect());
    }
  });
});
