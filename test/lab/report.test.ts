/**
 * The lab's verdict: a safe strategy that shows a violation or an unexpected error fails the run
 * (exit 1) and is flagged in the table; unsafe strategies showing violations are expected and
 * never fail it.
 */
import { describe, expect, it } from 'vitest';
import {
  allSafeHeld,
  exitCode,
  renderTable,
  summaryLine,
  toReport,
  verdictLine,
} from '../../src/lab/report.js';
import type { LabReport, StrategyOutcome } from '../../src/lab/types.js';

function outcome(over: Partial<StrategyOutcome> = {}): StrategyOutcome {
  return {
    violations: 0,
    deadlocks: 0,
    completed: 100,
    skipped: 0,
    errors: 0,
    elapsedMs: 500,
    latencies: Array.from({ length: 100 }, (_, i) => i + 1),
    ...over,
  };
}

function report(rows: ReturnType<typeof toReport>[]): LabReport {
  return {
    backend: 'memory',
    seed: 1,
    workers: 8,
    quick: true,
    passed: allSafeHeld([{ name: 'counter', invariant: 'x', strategies: rows }]),
    scenarios: [{ name: 'counter', invariant: 'x', strategies: rows }],
  };
}

describe('toReport', () => {
  it('computes ops/s from completed operations and p99 by nearest rank', () => {
    const row = toReport('lock', true, outcome());
    expect(row).toMatchObject({ opsPerSec: 200, p99Ms: 99, held: true, violations: 0 });
  });
  it('a violation or an unexpected error means the invariant did not hold', () => {
    expect(toReport('lock', true, outcome({ violations: 1 })).held).toBe(false);
    expect(toReport('lock', true, outcome({ errors: 1, firstError: 'boom' })).held).toBe(false);
    expect(toReport('lock', true, outcome({ errors: 1, firstError: 'boom' })).note).toMatch(/boom/);
  });
});

describe('verdict and exit code', () => {
  const unsafeLosing = toReport('unsafe', false, outcome({ violations: 37 }));
  const safeHolding = toReport('lock', true, outcome());

  it('passes (exit 0) when every safe strategy held, even with unsafe violations', () => {
    const r = report([unsafeLosing, safeHolding]);
    expect(exitCode(r)).toBe(0);
    expect(verdictLine(r)).toMatch(/every safe strategy held/);
    expect(summaryLine(unsafeLosing)).toMatch(/37 violations \(expected: unsafe\)/);
  });

  it('fails (exit 1) and names the strategy when a safe one shows a violation', () => {
    const broken = toReport('atomic', true, outcome({ violations: 2 }));
    const r = report([unsafeLosing, safeHolding, broken]);
    expect(exitCode(r)).toBe(1);
    expect(verdictLine(r)).toMatch(/FAILED: counter\/atomic/);
    expect(summaryLine(broken)).toMatch(/UNEXPECTED/);
    expect(renderTable(r)).toMatch(/atomic\s*│ yes\s*│ VIOLATED x2/);
  });

  it('fails (exit 1) when a safe strategy had unexpected errors, even with 0 violations', () => {
    const erring = toReport('optimistic', true, outcome({ errors: 3, firstError: 'hung' }));
    const r = report([safeHolding, erring]);
    expect(exitCode(r)).toBe(1);
    expect(renderTable(r)).toMatch(/optimistic\s*│ yes\s*│ 3 errors/);
  });

  it('the table has the documented columns and an optional notes column', () => {
    const r = report([unsafeLosing, safeHolding]);
    const text = renderTable(r);
    for (const h of [
      'scenario',
      'strategy',
      'safe?',
      'invariant',
      'deadlocks',
      'ops/s',
      'p99 ms',
    ]) {
      expect(text).toContain(h);
    }
    expect(text).not.toContain('what happened');
    expect(renderTable(r, { notes: true })).toContain('what happened');
  });
});
