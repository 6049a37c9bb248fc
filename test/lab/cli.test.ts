/**
 * The race lab CLI, spawned the way CI runs it (`tsx src/lab/cli.ts --quick --json`), on the
 * memory backend and on the real Redis and PostgreSQL servers: every safe strategy holds its
 * invariant, the unsafe counter visibly loses updates, the exit codes are right, errors are one
 * line, and a server run leaves nothing behind.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { scanKeys } from '../backends/redis/drop-prefix.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const SCENARIOS = [
  'counter',
  'bank',
  'campaign',
  'learner',
  'queue',
  'queue-crash',
  'payments',
  'ratelimit',
];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function lab(args: string[], timeoutMs = 50_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      'node_modules/.bin/tsx',
      ['src/lab/cli.ts', ...args],
      { cwd: ROOT, timeout: timeoutMs, env: { ...process.env, FORCE_COLOR: '0' } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

interface JsonStrategy {
  name: string;
  safe: boolean;
  violations: number;
  deadlocks: number;
  opsPerSec: number;
  p99Ms: number;
}
interface JsonReport {
  backend: string;
  scenarios: { name: string; strategies: JsonStrategy[] }[];
}

function parseReport(run: Run): JsonReport {
  const lines = run.stdout.trim().split('\n');
  expect(lines, `stdout must be exactly one JSON object; stderr: ${run.stderr}`).toHaveLength(1);
  return JSON.parse(lines[0] as string) as JsonReport;
}

function strategy(report: JsonReport, scenario: string, name: string): JsonStrategy {
  const s = report.scenarios
    .find((x) => x.name === scenario)
    ?.strategies.find((x) => x.name === name);
  if (!s) throw new Error(`no ${scenario}/${name} in the report`);
  return s;
}

/** The checks every backend must pass. */
function expectSound(report: JsonReport): void {
  expect(report.scenarios.map((s) => s.name)).toEqual(SCENARIOS);
  for (const scenario of report.scenarios) {
    expect(scenario.strategies.length).toBeGreaterThanOrEqual(3);
    expect(scenario.strategies.some((s) => !s.safe)).toBe(true);
    for (const s of scenario.strategies) {
      expect(Object.keys(s)).toEqual(
        expect.arrayContaining(['name', 'safe', 'violations', 'deadlocks', 'opsPerSec', 'p99Ms']),
      );
      for (const k of ['violations', 'deadlocks', 'opsPerSec', 'p99Ms'] as const) {
        expect(Number.isFinite(s[k]) && s[k] >= 0, `${scenario.name}/${s.name}.${k}`).toBe(true);
      }
      if (s.safe) {
        expect(s.violations, `${scenario.name}/${s.name} is safe: ${JSON.stringify(s)}`).toBe(0);
        expect(s.opsPerSec, `${scenario.name}/${s.name} made progress`).toBeGreaterThan(0);
      }
    }
  }
  // Deadlocks can only come from the strategy that takes locks in arbitrary nested order.
  for (const scenario of report.scenarios) {
    for (const s of scenario.strategies) {
      if (!(scenario.name === 'bank' && s.name === 'nested-locks')) expect(s.deadlocks).toBe(0);
    }
  }
  // The in-process learner does not depend on the backend: without a lock, predictions tear.
  expect(strategy(report, 'learner', 'no-lock').violations).toBeGreaterThan(0);
}

function expectOneLineError(run: Run, pattern: RegExp): void {
  expect(run.code).not.toBe(0);
  expect(run.stdout).toBe('');
  const lines = run.stderr.trim().split('\n');
  expect(lines, run.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(run.stderr).not.toMatch(/\n\s+at /);
}

describe('lab --quick --json on the memory backend', () => {
  it('holds every safe invariant, shows the unsafe counter losing updates, exits 0', async () => {
    const run = await lab(['--quick', '--json', '--seed', '7']);
    expect(run.code, run.stderr).toBe(0);
    const report = parseReport(run);
    expect(report.backend).toBe('memory');
    expectSound(report);
    expect(strategy(report, 'counter', 'unsafe').violations).toBeGreaterThan(0);
    expect(strategy(report, 'bank', 'nested-locks').deadlocks).toBeGreaterThan(0);
  });

  it('runs only the scenarios named, and prints a table when not --json', async () => {
    const run = await lab(['counter', 'learner', '--quick', '--workers', '4']);
    expect(run.code, run.stderr).toBe(0);
    for (const word of [
      'strategy',
      'safe?',
      'invariant',
      'deadlocks',
      'ops/s',
      'p99',
      'counter',
      'learner',
    ]) {
      expect(run.stdout).toContain(word);
    }
    expect(run.stdout).not.toContain('campaign');
    // not a TTY: progress is plain lines on stderr, one per strategy
    expect(run.stderr).toMatch(/counter\/unsafe .*violations/);
    expect(run.stderr).toMatch(/learner\/rwlock .*held/);
  });
});

describe('lab --quick --json on Redis', () => {
  it('holds every safe invariant and removes its keys', async () => {
    const runId = `t${Date.now().toString(36)}`;
    const run = await lab(['--quick', '--json', '--backend', REDIS_URL, '--run-id', runId]);
    expect(run.code, run.stderr).toBe(0);
    const report = parseReport(run);
    expect(report.backend).toMatch(/^redis:/);
    expectSound(report);
    const client = new Redis(REDIS_URL);
    try {
      expect(await scanKeys(client, `*lockstep-lab-${runId}*`)).toEqual([]);
    } finally {
      client.disconnect();
    }
  });
});

describe('lab --quick --json on PostgreSQL', () => {
  it('holds every safe invariant and drops its schema', async () => {
    const runId = `t${Date.now().toString(36)}`;
    const run = await lab(['--quick', '--json', '--backend', DATABASE_URL, '--run-id', runId]);
    expect(run.code, run.stderr).toBe(0);
    const report = parseReport(run);
    expect(report.backend).toMatch(/^postgres:/);
    expectSound(report);
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    try {
      const r = await client.query(
        'SELECT 1 FROM information_schema.schemata WHERE schema_name = $1',
        [`lockstep_lab_${runId}`],
      );
      expect(r.rowCount).toBe(0);
    } finally {
      await client.end();
    }
  });
});

describe('lab errors: one line on stderr, non-zero exit, never a stack trace', () => {
  it('an unknown scenario', async () => {
    const run = await lab(['counter', 'nope', '--json']);
    expectOneLineError(run, /unknown scenario "nope".*counter, bank, campaign, learner, queue/);
    expect(run.code).toBe(2);
  });
  it('a malformed backend URL', async () => {
    const run = await lab(['--backend', 'not a url', '--json']);
    expectOneLineError(run, /invalid --backend/);
    expect(run.code).toBe(2);
  });
  it('an unsupported backend', async () => {
    const run = await lab(['--backend', 'mysql://127.0.0.1/x']);
    expectOneLineError(run, /unsupported --backend/);
  });
  it('an unreachable Redis', async () => {
    const run = await lab(['--backend', 'redis://127.0.0.1:1', '--quick']);
    expectOneLineError(run, /cannot reach Redis at redis:\/\/127\.0\.0\.1:1/);
    expect(run.code).toBe(3);
  });
  it('a Redis database the server does not have, or a path that is not a number', async () => {
    const db = new URL(REDIS_URL);
    db.pathname = '/9999';
    const run = await lab(['--backend', db.href, '--quick', 'counter']);
    expectOneLineError(run, /Redis at .* failed: .*DB index/);
    expect(run.code).toBe(3);
    db.pathname = '/nope';
    const bad = await lab(['--backend', db.href, '--quick', 'counter']);
    expectOneLineError(bad, /invalid --backend .*database number/);
    expect(bad.code).toBe(2);
  });
  it('an unreachable PostgreSQL', async () => {
    const run = await lab(['--backend', 'postgres://root@127.0.0.1:1/test', '--quick']);
    expectOneLineError(run, /cannot reach PostgreSQL/);
    expect(run.code).toBe(3);
  });
  it('a PostgreSQL database that does not exist', async () => {
    const url = new URL(DATABASE_URL);
    url.pathname = '/lockstep_no_such_database';
    const run = await lab(['--backend', url.href, '--quick', 'counter']);
    expectOneLineError(run, /PostgreSQL at .* failed/);
    expect(run.code).toBe(3);
  });
  it('a bad option value', async () => {
    const run = await lab(['--workers', '0']);
    expectOneLineError(run, /--workers must be an integer/);
    expect(run.code).toBe(2);
  });
});
