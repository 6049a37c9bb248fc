/**
 * The lab's orchestration: run the chosen scenarios' strategies one after the other against one
 * backend, check each invariant, and build the report. The CLI (cli.ts) is a thin shell over
 * {@link runLab}; tests can call it in-process too.
 */
import type { LabBackend } from './backends.js';
import type { Progress } from './progress.js';
import { allSafeHeld, summaryLine, toReport } from './report.js';
import { scenarios as allScenarios } from './scenarios/index.js';
import type { LabContext, LabReport, Scenario, ScenarioReport, StrategyOutcome } from './types.js';
import { createRng, errorMessage } from './util.js';

/** How a lab run is set up. */
export interface LabOptions {
  /** Scenario names to run (all when empty). */
  readonly scenarios: readonly string[];
  readonly workers: number;
  /** Operations per strategy; undefined = each scenario's default (smaller with `quick`). */
  readonly ops?: number;
  readonly seed: number;
  readonly quick: boolean;
  /** Per-strategy time budget, ms. */
  readonly budgetMs: number;
  /** Simulated I/O inside critical sections, ms. */
  readonly ioMs: number;
  /**
   * Operations still running this long after the budget are abandoned and counted as errors, so
   * that a stuck backend fails the run instead of hanging it (default 4 s quick, 30 s otherwise).
   */
  readonly hangMs?: number;
  /** Stops the run before the next strategy (Ctrl-C). */
  readonly signal?: AbortSignal;
}

/** Operations per strategy in `--quick` mode (each strategy also stops at its time budget). */
const QUICK_OPS: Readonly<Record<string, number>> = {
  counter: 400,
  bank: 200,
  campaign: 120,
  learner: 400,
  queue: 200,
};

/**
 * Resolves scenario names, in run order (all when empty); throws on an unknown name.
 *
 * @example
 * ```ts
 * selectScenarios(['queue', 'counter']).map((s) => s.name); // ['counter', 'queue']
 * ```
 */
export function selectScenarios(names: readonly string[]): Scenario[] {
  if (names.length === 0) return [...allScenarios];
  const unknown = names.filter((n) => !allScenarios.some((s) => s.name === n));
  if (unknown.length > 0) {
    throw new Error(
      `unknown scenario ${unknown.map((n) => JSON.stringify(n)).join(', ')}: choose from ${allScenarios.map((s) => s.name).join(', ')}`,
    );
  }
  return allScenarios.filter((s) => names.includes(s.name));
}

function hash(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

/**
 * Runs the lab and returns the report. Each strategy of a scenario gets the same seeded workload.
 *
 * @example
 * ```ts
 * const backend = await openBackend('memory', newRunId());
 * const report = await runLab(backend, { scenarios: ['counter'], workers: 8, seed: 1,
 *   quick: true, budgetMs: 400, ioMs: 1 }, createProgress({ quiet: true }));
 * await backend.cleanup();
 * ```
 */
export async function runLab(
  backend: LabBackend,
  options: LabOptions,
  progress: Progress,
): Promise<LabReport> {
  const chosen = selectScenarios(options.scenarios);
  const reports: ScenarioReport[] = [];
  // A worker may hold two connections (a lease held while it waits, client side, for another
  // lease or a read): never run more workers than the backend's pool can always serve.
  const workers =
    backend.connections === undefined
      ? options.workers
      : Math.max(1, Math.min(options.workers, Math.floor((backend.connections - 2) / 2)));
  const hangMs = options.hangMs ?? (options.quick ? 4000 : 30_000);
  for (const scenario of chosen) {
    const ops =
      options.ops ??
      (options.quick ? (QUICK_OPS[scenario.name] ?? scenario.defaultOps) : scenario.defaultOps);
    const rows = [];
    for (const strategy of scenario.strategies) {
      if (options.signal?.aborted) break;
      const total = ops;
      const task = progress.start(`${scenario.name}/${strategy.name}`, total);
      let last = 0;
      const ctx: LabContext = {
        store: backend.store,
        backend: backend.kind,
        ...(backend.connections === undefined ? {} : { connections: backend.connections }),
        workers,
        ops,
        budgetMs: options.budgetMs,
        ioMs: options.ioMs,
        hangMs,
        rng: createRng((options.seed ^ hash(scenario.name)) >>> 0),
        progress: (done) => {
          if (done - last >= Math.max(1, total / 50) || done >= total) {
            last = done;
            task.update(done);
          }
        },
      };
      let result: StrategyOutcome;
      try {
        result = await withDeadline(
          strategy.run(ctx),
          options.budgetMs + 2 * hangMs + 5000,
          `${scenario.name}/${strategy.name}`,
        );
      } catch (err) {
        result = {
          violations: 0,
          deadlocks: 0,
          completed: 0,
          skipped: 0,
          errors: 1,
          firstError: errorMessage(err),
          elapsedMs: 0,
          latencies: [],
        };
      }
      const row = toReport(strategy.name, strategy.safe, result);
      task.update(result.completed + result.skipped + result.errors);
      task.finish(summaryLine(row));
      rows.push(row);
    }
    reports.push({ name: scenario.name, invariant: scenario.invariant, strategies: rows });
  }
  return {
    backend: backend.label,
    seed: options.seed,
    workers,
    quick: options.quick,
    passed: allSafeHeld(reports),
    scenarios: reports,
  };
}

/** Rejects when `promise` has not settled after `ms` (the promise itself is abandoned). */
function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${what} did not finish within ${Math.round(ms / 1000)} s (hung)`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}
