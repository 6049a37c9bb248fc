/**
 * `lab verify`, spawned as a user runs it (`tsx src/lab/cli.ts verify ...`): a clean run exits 0
 * with a PASS line, each planted bug exits 1 and prints its anomalies, `--json` is one object,
 * the refusals (admin faults on a server the run did not start, faults on memory, a backend bug
 * on a server) exit 2 with one line,
 * and a run across processes on a throwaway Redis merges their histories: clean it passes, with
 * the read-then-write increment in every process it fails.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plantedBugs } from '../../src/verify/mutants.js';
import { type RedisServer, startRedis } from '../support/servers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function lab(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'node_modules/.bin/tsx',
      ['src/lab/cli.ts', 'verify', ...args],
      { cwd: ROOT, timeout: 60_000, env: { ...process.env, FORCE_COLOR: '0' } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('lab verify', () => {
  it('a clean run on memory passes and exits 0', async () => {
    const r = await lab(['--seconds', '1', '--seed', '3']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^verify: PASS on memory: \d+ ops \(ok \d+, fail \d+, info 0\)/m);
    expect(r.stdout).toMatch(/^mutex\s+\d+/m);
  });

  it.each(plantedBugs)('a planted %s exits 1 and shows the anomaly', async (bug) => {
    const r = await lab(['--seconds', '1', '--plant', bug]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^anomalies \(\d+/m);
    expect(r.stdout).toMatch(/^verify: FAIL on memory \(planted/m);
  });

  it('--json prints one object with the workloads and their anomalies', async () => {
    const r = await lab(['--seconds', '1', '--json', '--plant', 'read-then-write-increment']);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as {
      verdict: string;
      workloads: { name: string; anomalyCounts: Record<string, number> }[];
    };
    expect(report.verdict).toBe('fail');
    const counter = report.workloads.find((w) => w.name === 'counter');
    expect(Object.keys(counter?.anomalyCounts ?? {})).toContain('counter-range');
  });

  it.each([
    [['--backend', 'redis://127.0.0.1:6379', '--faults', 'admin'], /--i-own-this-server/],
    [['--backend', 'memory', '--faults', 'admin'], /needs a server backend/],
    [['--faults', 'client'], /needs a server backend/],
    [
      ['--backend', 'redis://127.0.0.1:6379', '--plant', 'fail-but-landed'],
      /memory backend or a throwaway server/,
    ],
    [['--processes', '2'], /needs a server backend/],
    [['--fault-kinds', 'client-kill'], /give --faults admin too/],
    [['--faults', 'admin', '--fault-kinds', 'client-nap'], /unknown fault kind client-nap/],
    [
      [
        '--backend',
        'redis',
        '--faults',
        'admin',
        '--processes',
        '1',
        '--fault-kinds',
        'worker-kill',
      ],
      /worker-kill need worker processes/,
    ],
    [['--seconds', '0'], /--seconds must be/],
  ])('%j is refused with one line, exit 2', async (args, message) => {
    const r = await lab(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('lab verify --processes', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server.stop();
  });

  it('merges the histories of several processes and passes', async () => {
    const r = await lab([
      '--backend',
      server.url,
      '--processes',
      '3',
      '--clients',
      '2',
      '--seconds',
      '2',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ops per process: (?=.*p0 \d+)(?=.*p1 \d+)(?=.*p2 \d+)/m);
    expect(r.stdout).toMatch(/^verify: PASS/m);
  });

  it('catches lost updates between processes', async () => {
    const r = await lab([
      '--backend',
      server.url,
      '--processes',
      '2',
      '--clients',
      '1',
      '--seconds',
      '2',
      '--plant',
      'read-then-write-increment',
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/\[counter\] counter-range/);
  });
});
