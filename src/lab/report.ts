/**
 * The lab's report: turning strategy outcomes into rows, the final table (cli-table3), and the
 * `--json` object.
 */
import Table from 'cli-table3';
import type { LabReport, ScenarioReport, StrategyOutcome, StrategyReport } from './types.js';
import { percentile, round } from './util.js';

/**
 * One report row from a strategy's outcome.
 *
 * @example
 * ```ts
 * const row = toReport('lock', true, outcome); // { name: 'lock', safe: true, held: true, ... }
 * ```
 */
export function toReport(name: string, safe: boolean, o: StrategyOutcome): StrategyReport {
  const seconds = o.elapsedMs / 1000;
  const row: StrategyReport = {
    name,
    safe,
    violations: o.violations,
    deadlocks: o.deadlocks,
    opsPerSec: seconds > 0 ? Math.round(o.completed / seconds) : 0,
    p99Ms: round(percentile(o.latencies, 99), 2),
    completed: o.completed,
    skipped: o.skipped,
    errors: o.errors,
    held: o.violations === 0 && o.errors === 0,
  };
  const note = [o.note, o.firstError ? `error: ${o.firstError}` : undefined]
    .filter((x) => x)
    .join('; ');
  return note ? { ...row, note } : row;
}

/**
 * The one-line summary shown when a strategy finishes.
 *
 * @example
 * ```ts
 * summaryLine(row); // 'held, 2 deadlocks, 1520 ops/s, p99 28.12 ms'
 * ```
 */
export function summaryLine(row: StrategyReport): string {
  const verdict = row.held
    ? 'held'
    : row.violations > 0
      ? `${row.violations} violations${row.safe ? ' (UNEXPECTED)' : ' (expected: unsafe)'}`
      : `${row.errors} errors`;
  const dl = row.deadlocks > 0 ? `, ${row.deadlocks} deadlocks` : '';
  return `${verdict}${dl}, ${row.opsPerSec} ops/s, p99 ${row.p99Ms} ms`;
}

function invariantCell(row: StrategyReport): string {
  if (row.violations > 0) return `VIOLATED x${row.violations}`;
  if (row.errors > 0) return `${row.errors} errors`;
  return 'held';
}

/**
 * The final table: scenario, strategy, safe?, invariant, deadlocks, ops/s, p99, and a note.
 *
 * @example
 * ```ts
 * process.stdout.write(`${renderTable(report)}\n`);
 * ```
 */
export function renderTable(report: LabReport, options: { notes?: boolean } = {}): string {
  const head = ['scenario', 'strategy', 'safe?', 'invariant', 'deadlocks', 'ops/s', 'p99 ms'];
  if (options.notes) head.push('what happened');
  const table = new Table({
    head,
    style: { head: [], border: [], compact: true },
    colAligns: ['left', 'left', 'left', 'left', 'right', 'right', 'right', 'left'],
    ...(options.notes
      ? { colWidths: [null, null, null, null, null, null, null, 56], wordWrap: true }
      : {}),
  });
  for (const scenario of report.scenarios) {
    scenario.strategies.forEach((row, i) => {
      const cells: string[] = [
        i === 0 ? scenario.name : '',
        row.name,
        row.safe ? 'yes' : 'no',
        invariantCell(row),
        String(row.deadlocks),
        String(row.opsPerSec),
        row.p99Ms.toFixed(2),
      ];
      if (options.notes) cells.push(row.note ?? '');
      table.push(cells);
    });
  }
  return table.toString();
}

/**
 * The closing line under the table: the backend and the verdict.
 *
 * @example
 * ```ts
 * verdictLine(report); // 'backend memory: every safe strategy held its invariant (...)'
 * ```
 */
export function verdictLine(report: LabReport): string {
  const failed = report.scenarios.flatMap((s) =>
    s.strategies.filter((r) => r.safe && !r.held).map((r) => `${s.name}/${r.name}`),
  );
  if (failed.length === 0) {
    return `backend ${report.backend}: every safe strategy held its invariant (unsafe ones show the race).`;
  }
  return `backend ${report.backend}: FAILED: ${failed.join(', ')} did not hold the invariant.`;
}

/**
 * The `--json` object on one line: `{ backend, scenarios: [{ name, strategies: [{ name, safe,
 * violations, deadlocks, opsPerSec, p99Ms, ... }] }] }` plus a few extra fields.
 *
 * @example
 * ```ts
 * process.stdout.write(`${toJson(report)}\n`);
 * ```
 */
export function toJson(report: LabReport): string {
  return JSON.stringify(report);
}

/**
 * Whether a run passed: every SAFE strategy held its invariant with no unexpected error. Unsafe
 * strategies are expected to show violations and never fail the run.
 *
 * @example
 * ```ts
 * allSafeHeld(report.scenarios); // true
 * ```
 */
export function allSafeHeld(scenarios: readonly ScenarioReport[]): boolean {
  return scenarios.every((s) => s.strategies.every((r) => !r.safe || r.held));
}

/**
 * The lab's exit code for a finished run: 0 when every safe strategy held, 1 otherwise.
 *
 * @example
 * ```ts
 * process.exitCode = exitCode(report);
 * ```
 */
export function exitCode(report: LabReport): 0 | 1 {
  return allSafeHeld(report.scenarios) ? 0 : 1;
}
