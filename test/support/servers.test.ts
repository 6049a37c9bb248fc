/**
 * The throwaway servers (test/support/servers.ts) and the run-wide ones (test/setup/servers.ts):
 * each serves on its own port, stop() leaves no process and no directory, a process that dies
 * by SIGKILL leaves none either, and every worker's REDIS_URL / DATABASE_URL is the run's own
 * server, never one on 6379 / 5432.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { startPostgres, startRedis } from './servers.js';

const orphanFixture = fileURLToPath(new URL('./fixtures/orphan-servers.ts', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Polls until `cond` holds, for at most `ms` (a bound, not a timing assertion). */
async function eventually(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await sleep(50);
  }
  return cond();
}

describe('startRedis', () => {
  it('serves on its own port as the pid it reports; stop() leaves no process and no directory', async () => {
    const a = await startRedis();
    const b = await startRedis();
    try {
      expect(a.port).not.toBe(b.port);
      expect([a.port, b.port]).not.toContain(6379);
      const c = new Redis(a.url);
      try {
        const info = await c.info('server');
        expect(info).toContain(`process_id:${a.pid}`);
        expect(info).toContain(`tcp_port:${a.port}`);
        expect(await c.config('GET', 'save')).toEqual(['save', '']);
        expect(await c.config('GET', 'appendonly')).toEqual(['appendonly', 'no']);
      } finally {
        c.disconnect();
      }
    } finally {
      await a.stop();
      await b.stop();
    }
    expect(alive(a.pid)).toBe(false);
    expect(fs.existsSync(a.dir)).toBe(false);
    expect(await listening(a.port)).toBe(false);
    await a.stop(); // twice is fine
  });

  it('stops a server a test left frozen with SIGSTOP', async () => {
    const a = await startRedis();
    process.kill(a.pid, 'SIGSTOP');
    await a.stop();
    expect(alive(a.pid)).toBe(false);
    expect(fs.existsSync(a.dir)).toBe(false);
  });
});

describe('startPostgres', () => {
  it('a trust-auth cluster with a test database and fsync off; stop() leaves nothing', async () => {
    const s = await startPostgres({ settings: { max_connections: 20 } });
    try {
      expect(s.port).not.toBe(5432);
      const c = new pg.Client({ connectionString: s.url });
      await c.connect();
      try {
        const r = await c.query<{ db: string; fsync: string; mc: string }>(
          "SELECT current_database() AS db, current_setting('fsync') AS fsync, current_setting('max_connections') AS mc",
        );
        expect(r.rows[0]).toMatchObject({ db: 'test', fsync: 'off', mc: '20' });
      } finally {
        await c.end();
      }
      // The postmaster is the pid reported (pg_backend_pid is a child of it).
      expect(fs.readFileSync(`${s.dir}/data/postmaster.pid`, 'utf8').split('\n')[0]).toBe(
        String(s.pid),
      );
    } finally {
      await s.stop();
    }
    expect(alive(s.pid)).toBe(false);
    expect(fs.existsSync(s.dir)).toBe(false);
    expect(await listening(s.port)).toBe(false);
  });
});

describe('a process that dies without stopping its servers', () => {
  it('SIGKILL: its servers stop and their directories go', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', orphanFixture], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', () => reject(new Error(`fixture exited: ${stderr}`)));
    });
    const got = JSON.parse(line) as Record<'redis' | 'postgres', { pid: number; dir: string }>;
    expect(alive(got.redis.pid) && alive(got.postgres.pid)).toBe(true);
    child.kill('SIGKILL');
    for (const s of [got.redis, got.postgres]) {
      expect(await eventually(() => !alive(s.pid), 15_000), `pid ${s.pid} still running`).toBe(
        true,
      );
      expect(await eventually(() => !fs.existsSync(s.dir), 15_000), `${s.dir} still there`).toBe(
        true,
      );
    }
  });
});

describe('the run-wide servers', () => {
  it("every worker's REDIS_URL and DATABASE_URL are the run's servers (not 6379 / 5432)", async () => {
    expect(process.env.REDIS_URL).toBe(inject('lockstepRedisUrl'));
    expect(process.env.DATABASE_URL).toBe(inject('lockstepDatabaseUrl'));
    const redisUrl = new URL(process.env.REDIS_URL ?? '');
    const databaseUrl = new URL(process.env.DATABASE_URL ?? '');
    if (!process.env.LOCKSTEP_TEST_REDIS_URL) expect(redisUrl.port).not.toBe('6379');
    if (!process.env.LOCKSTEP_TEST_DATABASE_URL) expect(databaseUrl.port).not.toBe('5432');
    const r = new Redis(redisUrl.href);
    try {
      expect(await r.ping()).toBe('PONG');
    } finally {
      r.disconnect();
    }
    const c = new pg.Client({ connectionString: databaseUrl.href });
    await c.connect();
    await c.end();
  });
});
