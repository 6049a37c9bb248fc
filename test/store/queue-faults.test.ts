/**
 * Job queues under faults, on servers this file starts (test/support/servers.ts): workers in 3
 * processes; one is SIGKILLed mid-job, one SIGSTOPped past its lease and resumed, then every
 * client connection of the server is killed (CLIENT KILL / pg_terminate_backend) while workers
 * claim. Every job's effect (an incr in `complete`'s effects) is applied exactly once, the
 * stopped worker's completion (sent to the server: that worker claims by hand, without renewals)
 * is refused, no job is lost and none stays stuck.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { postgres } from '../../src/backends/postgres/index.js';
import { redis } from '../../src/backends/redis/index.js';
import { createStore } from '../../src/store/index.js';
import { noHang, sleep, until } from '../conformance/harness.js';
import { startPostgres, startRedis } from '../support/servers.js';

const fixture = fileURLToPath(new URL('./fixtures/queue-worker.ts', import.meta.url));
const root = fileURLToPath(new URL('../..', import.meta.url));
const N = 60;
const LEASE_MS = 300;
const HOLD_MS = 100;

interface Proc {
  child: ChildProcess;
  lines: string[];
  on(prefix: string): Promise<string>;
}

function start(args: string[]): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: Array<{ prefix: string; resolve: (l: string) => void }> = [];
  let buf = '';
  child.stdout?.on('data', (c) => {
    buf += String(c);
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      for (const w of [...waiters]) {
        if (line.startsWith(w.prefix)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  child.stderr?.on('data', (c) => lines.push(`stderr ${String(c)}`));
  return {
    child,
    lines,
    on: (prefix) => new Promise((resolve) => waiters.push({ prefix, resolve })),
  };
}

const procs: Proc[] = [];
afterAll(() => {
  for (const p of procs) {
    if (p.child.exitCode === null) {
      p.child.kill('SIGCONT');
      p.child.kill('SIGKILL');
    }
  }
});

async function scenario(
  kind: 'redis' | 'postgres',
  url: string,
  space: string,
  killConnections: () => Promise<void>,
): Promise<void> {
  const store = createStore(
    kind === 'redis' ? redis({ url, prefix: space }) : postgres({ url, schema: space }),
  );
  const Counter = store.model('counter', z.object({ n: z.number().int() }));
  const q = store.queue('faults', z.object({ i: z.number().int() }), { leaseMs: LEASE_MS });
  for (let i = 0; i < N; i++) await Counter.create(`c${i}`, { n: 0 });
  await q.enqueueMany(Array.from({ length: N }, (_, i) => ({ data: { i } })));
  const args = [kind, url, space, 'faults', String(LEASE_MS), String(HOLD_MS)];
  // b claims by hand (no renewal): stalled, it sends its completion to the server, which refuses.
  const [a, b, c] = [
    start([...args, 'work']),
    start([...args, 'claim']),
    start([...args, 'work']),
  ] as [Proc, Proc, Proc];
  procs.push(a, b, c);
  await noHang(Promise.all([a.on('ready'), b.on('ready'), c.on('ready')]), 'workers ready', 30_000);
  // A dies mid-job: its claimed jobs come back after their lease.
  await noHang(a.on('in '), 'a job in worker a');
  a.child.kill('SIGKILL');
  // B stalls past its lease mid-job, then resumes: its completion must be refused.
  await noHang(b.on('in '), 'a job in worker b');
  b.child.kill('SIGSTOP');
  await sleep(LEASE_MS * 4);
  b.child.kill('SIGCONT');
  await noHang(b.on('refused '), 'the stalled worker refused', 30_000);
  // Every connection to the server is cut while the workers claim.
  await killConnections();
  const total = async () => {
    let n = 0;
    for (let i = 0; i < N; i++) n += (await Counter.get(`c${i}`)).data.n;
    return n;
  };
  await until(async () => (await total()) >= N, 'every job done', 60_000);
  await until(
    async () => {
      const s = await q.stats();
      return s.waiting === 0 && s.active === 0 && s.delayed === 0;
    },
    'queue empty',
    30_000,
  );
  const counts = [];
  for (let i = 0; i < N; i++) counts.push((await Counter.get(`c${i}`)).data.n);
  expect(counts).toEqual(Array.from({ length: N }, () => 1));
  expect(await q.stats()).toEqual({ waiting: 0, delayed: 0, active: 0, failed: 0 });
  const done = [a, b, c].flatMap((p) => p.lines.filter((l) => l.startsWith('done ')));
  // A completion of a job whose effect was already applied would show here as a second "done".
  expect(new Set(done).size).toBe(done.length);
  // (A completion whose reply a cut connection lost committed without its worker knowing: fewer
  // "done" lines than jobs is fine; the counters above are the exact check.)
  expect(done.length).toBeLessThanOrEqual(N);
  for (const p of [b, c]) {
    p.child.kill('SIGTERM');
    await noHang(new Promise((r) => p.child.once('exit', r)), 'worker exit', 20_000);
  }
  await store.close();
}

describe('queues under faults (worker processes killed and stalled, connections cut)', () => {
  it('redis: every effect exactly once, the stalled completion refused, nothing lost or stuck', async () => {
    const server = await startRedis();
    try {
      await scenario('redis', server.url, 'qfaults', async () => {
        const admin = new Redis(server.url);
        await admin.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
        await admin.quit();
      });
    } finally {
      await server.stop();
    }
  }, 120_000);

  it('postgres: every effect exactly once, the stalled completion refused, nothing lost or stuck', async () => {
    const server = await startPostgres();
    try {
      await scenario('postgres', server.url, 'qfaults', async () => {
        const admin = new pg.Client({ connectionString: server.url });
        await admin.connect();
        await admin.query(
          'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = $1',
          ['client backend'],
        );
        await admin.end();
      });
    } finally {
      await server.stop();
    }
  }, 120_000);
});
