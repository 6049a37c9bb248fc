/**
 * The shapes the race lab is made of: a scenario (one classic race), its strategies (unsafe and
 * safe ways to do the same work), and what running a strategy reports.
 */
import type { createStore } from '../index.js';
import type { Rng } from './util.js';

/** The store the lab runs against (memory, Redis or PostgreSQL behind it). */
export type LabStore = ReturnType<typeof createStore>;

/** Which kind of backend the run uses; some strategies adapt (Redis has no deadlock detector). */
export type BackendKind = 'memory' | 'redis' | 'postgres' | 'sqlite';

/** Everything a strategy needs to run. One context per strategy run. */
export interface LabContext {
  /** The store, shared by the whole run; each strategy uses its own model names. */
  readonly store: LabStore;
  readonly backend: BackendKind;
  /** Connections the backend may open at most (PostgreSQL's pool), when bounded. */
  readonly connections?: number;
  /** Concurrent tasks. */
  readonly workers: number;
  /** Operations to attempt (the strategy may stop earlier when `budgetMs` runs out). */
  readonly ops: number;
  /** Time budget for the measured phase, in ms; no new operation starts after it. */
  readonly budgetMs: number;
  /** Simulated I/O inside critical sections, in ms. */
  readonly ioMs: number;
  /** Operations still running this long after the budget are abandoned as hung. */
  readonly hangMs: number;
  /** Seeded randomness for the workload (which accounts, which users). */
  readonly rng: Rng;
  /** Reports operations completed so far (drives the progress bar). */
  readonly progress: (done: number) => void;
}

/** What a strategy run found. */
export interface StrategyOutcome {
  /** Invariant violations found by the checker (0 = the invariant held). */
  readonly violations: number;
  /** Deadlocks detected (or, on a backend without a detector, lock waits that timed out). */
  readonly deadlocks: number;
  /** Operations that completed (whether they changed anything or were refused by a guard). */
  readonly completed: number;
  /** Operations that gave up in an expected, harmless way (optimistic retries ran out, ...). */
  readonly skipped: number;
  /** Operations that failed with an unexpected error. */
  readonly errors: number;
  /** First unexpected error, for the report. */
  readonly firstError?: string;
  /** Measured phase duration, ms. */
  readonly elapsedMs: number;
  /** Per-operation latencies, ms. */
  readonly latencies: readonly number[];
  /** A short human note: what was violated, or what the numbers mean. */
  readonly note?: string;
}

/** One way of doing a scenario's work. */
export interface Strategy {
  /** Short name used in the table and in JSON (`unsafe`, `lock`, `atomic`, ...). */
  readonly name: string;
  /** Whether the strategy is supposed to hold the invariant. Unsafe ones exist to lose. */
  readonly safe: boolean;
  /** One line: what the strategy does. */
  readonly description: string;
  run(ctx: LabContext): Promise<StrategyOutcome>;
}

/** One classic race. */
export interface Scenario {
  readonly name: string;
  /** One line: the race. */
  readonly description: string;
  /** One line: what is checked at the end. */
  readonly invariant: string;
  /** Strategies in table order (unsafe first). */
  readonly strategies: readonly Strategy[];
  /** Default operations per strategy (the run's `--ops` overrides it). */
  readonly defaultOps: number;
}

/** One row of the report (the JSON shape, plus a few extra fields). */
export interface StrategyReport {
  readonly name: string;
  readonly safe: boolean;
  readonly violations: number;
  readonly deadlocks: number;
  readonly opsPerSec: number;
  readonly p99Ms: number;
  readonly completed: number;
  readonly skipped: number;
  readonly errors: number;
  /** True when the invariant held (0 violations) and no operation failed unexpectedly. */
  readonly held: boolean;
  readonly note?: string;
}

/** One scenario of the report. */
export interface ScenarioReport {
  readonly name: string;
  readonly invariant: string;
  readonly strategies: StrategyReport[];
}

/** The whole report (what `--json` prints). */
export interface LabReport {
  readonly backend: string;
  readonly seed: number;
  readonly workers: number;
  readonly quick: boolean;
  /** True when every safe strategy held its invariant (exit code 0). */
  readonly passed: boolean;
  readonly scenarios: ScenarioReport[];
}
