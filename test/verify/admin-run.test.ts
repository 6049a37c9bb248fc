/**
 * CI's verify with server and process faults: `lab verify --faults admin` with no backend starts
 * a throwaway Redis, then a throwaway PostgreSQL, and runs the workloads across 3 processes
 * while the nemesis kills the run's connections, pauses Redis, terminates the run's PostgreSQL
 * sessions, and SIGSTOPs and SIGKILLs worker processes (lock holders among them). It must
 * exit 0 with no anomaly on either, every fault must be in the history (`--history`) as a
 * nemesis operation, and a killed worker's unfinished operations must be there as pending.
 */
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Operation } from '../../src/verify/history.js';
import { labVerify, reports } from './cli-run.js';

const SERVER = { redis: ['client-kill', 'client-pause'], postgres: ['terminate-backend'] };
const PROCESS = ['worker-stop', 'worker-kill', 'holder-stop', 'holder-kill'];

describe('lab verify --faults admin (no --backend: throwaway Redis and PostgreSQL)', () => {
  it('passes on both with every kind of fault, each recorded in the history', async () => {
    const file = join(tmpdir(), `lockstep-verify-history-${process.pid}`);
    try {
      const r = await labVerify([
        '--faults',
        'admin',
        '--fault-interval',
        '250',
        '--seconds',
        '4',
        '--clients',
        '2',
        '--json',
        '--history',
        file,
      ]);
      const [redis, postgres] = reports(r.stdout);
      expect(r.stderr).not.toMatch(/error/i);
      expect(r.code).toBe(0);
      for (const [name, report] of [
        ['redis', redis],
        ['postgres', postgres],
      ] as const) {
        expect(report?.backend).toMatch(new RegExp(`^${name} \\(throwaway server`));
        expect(report?.verdict).toBe('pass');
        for (const w of report?.workloads ?? [])
          expect([w.name, w.anomalyCounts]).toEqual([w.name, {}]);
        expect(report?.ops.ok).toBeGreaterThan(200);
        // Two rounds of every kind at least were drawn: each server fault landed, and the
        // process faults did (a holder fault finds nobody holding when the lock is idle).
        for (const k of SERVER[name]) expect(report?.faults[k], k).toBeGreaterThan(0);
        expect(PROCESS.reduce((s, k) => s + (report?.faults[k] ?? 0), 0)).toBeGreaterThan(1);
        const history = readFileSync(`${file}.${name}`, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Operation);
        const injected = history.filter((o) => o.process === 'nemesis' && o.status === 'ok');
        const byKind: Record<string, number> = {};
        for (const o of injected) byKind[o.kind] = (byKind[o.kind] ?? 0) + 1;
        expect(byKind).toEqual(report?.faults);
        // A killed worker's last operations never completed: pending in the history.
        const killed = injected.filter((o) => o.kind.endsWith('-kill') && o.key.startsWith('p'));
        if (killed.length > 0) {
          const tags = new Set(killed.map((o) => o.key));
          const pending = history.filter(
            (o) => o.status === 'pending' && tags.has(/-(p\d+)\./.exec(o.process)?.[1] ?? ''),
          );
          expect(pending.length).toBeGreaterThan(0);
        }
      }
    } finally {
      rmSync(`${file}.redis`, { force: true });
      rmSync(`${file}.postgres`, { force: true });
    }
  });
});
