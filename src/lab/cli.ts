#!/usr/bin/env node
/**
 * `npm run lab [-- scenarios...] [--backend URL] [--workers N] [--ops N] [--seed N] [--quick] [--json]`
 * `npm run lab -- verify [--backend URL] [--seconds N] [--faults none|client] [--json]` (see verify-cli.ts)
 *
 * The race lab: each classic race happening (unsafe strategies) and each Lockstep strategy
 * preventing it, measured, on the embedded backend or on a real Redis / PostgreSQL.
 * Exit code: 0 when every safe strategy held its invariant, 1 when one did not, 2 for a usage
 * error, 3 when the backend cannot be reached. Errors are one line on stderr.
 *
 * @example
 * ```sh
 * npm run lab
 * npm run lab -- counter bank --backend redis://127.0.0.1:6379 --quick
 * npm run lab -- --backend postgres://root@127.0.0.1:5432/test --json > lab.json
 * ```
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { type LabBackend, LabError, newRunId, openBackend } from './backends.js';
import { runLab, selectScenarios } from './lab.js';
import { createProgress } from './progress.js';
import { exitCode, renderTable, toJson, verdictLine } from './report.js';
import { scenarioNames } from './scenarios/index.js';
import { errorMessage } from './util.js';
import { verifyMain } from './verify-cli.js';

function integer(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}.`);
    }
    return n;
  };
}

interface CliOptions {
  backend?: string;
  workers: number;
  ops?: number;
  seed?: number;
  quick: boolean;
  json: boolean;
  budgetMs?: number;
  ioMs: number;
  notes: boolean;
  runId?: string;
}

function program(): Command {
  return new Command('lab')
    .description(
      'The race lab: classic races (lost update, double spend, deadlock, oversold campaign, torn read, double processing), unsafe vs each Lockstep strategy, measured. `lab verify --help`: record and check a history of concurrent operations.',
    )
    .argument('[scenarios...]', `scenarios to run (default: all): ${scenarioNames.join(', ')}`)
    .option(
      '--backend <url>',
      'memory, redis://host:port or postgres://user@host:port/db',
      'memory',
    )
    .option('--workers <n>', 'concurrent tasks', integer('--workers', 1, 1024), 8)
    .option(
      '--ops <n>',
      'operations per strategy (default: per scenario)',
      integer('--ops', 1, 10_000_000),
    )
    .option(
      '--seed <n>',
      'workload seed (default: random, printed)',
      integer('--seed', 0, 2 ** 32 - 1),
    )
    .option('--quick', 'small runs: the whole lab in under 15 s per backend', false)
    .option('--json', 'print one JSON object on stdout instead of the table', false)
    .addOption(
      new Option(
        '--budget-ms <n>',
        'time budget per strategy (default: 300 quick, 30000 otherwise)',
      ).argParser(integer('--budget-ms', 1, 3_600_000)),
    )
    .addOption(
      new Option('--io-ms <n>', 'simulated I/O inside critical sections, ms')
        .argParser(integer('--io-ms', 0, 1000))
        .default(1),
    )
    .option('--notes', 'add a column explaining each row', false)
    .addOption(
      new Option('--run-id <id>', 'key prefix / schema suffix of this run (default: random)')
        .argParser((v: string) => {
          if (!/^[a-z0-9]{1,20}$/.test(v)) {
            throw new InvalidArgumentError('--run-id must be 1 to 20 of [a-z0-9].');
          }
          return v;
        })
        .hideHelp(),
    )
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => process.stdout.write(s),
      writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `lab: ${s}` : s),
    });
}

function fail(message: string, code: number): never {
  process.stderr.write(`lab: error: ${message.replace(/\s+/g, ' ').trim()}\n`);
  process.exit(code);
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'verify') return verifyMain(argv.slice(1));
  const cmd = program();
  try {
    cmd.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    throw err;
  }
  const opts = cmd.opts<CliOptions>();
  const names = cmd.processedArgs[0] as string[] | undefined;
  try {
    selectScenarios(names ?? []);
  } catch (err) {
    fail(errorMessage(err), 2);
  }
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
  const budgetMs = opts.budgetMs ?? (opts.quick ? 300 : 30_000);

  let backend: LabBackend | undefined;
  let interrupted = false;
  const stop = new AbortController();
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    stop.abort();
    process.stderr.write('lab: interrupted, cleaning up\n');
    void (backend?.cleanup() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    backend = await openBackend(opts.backend, opts.runId ?? newRunId(), { workers: opts.workers });
  } catch (err) {
    if (err instanceof LabError) fail(err.message, err.exitCode);
    fail(errorMessage(err), 3);
  }

  const progress = createProgress({ quiet: opts.json });
  if (!opts.json) {
    process.stderr.write(
      `lab: backend ${backend.label}, ${opts.workers} workers, seed ${seed}${opts.quick ? ', quick' : ''}\n`,
    );
  }
  let report: Awaited<ReturnType<typeof runLab>>;
  try {
    report = await runLab(
      backend,
      {
        scenarios: names ?? [],
        workers: opts.workers,
        ...(opts.ops === undefined ? {} : { ops: opts.ops }),
        seed,
        quick: opts.quick,
        budgetMs,
        ioMs: opts.ioMs,
        signal: stop.signal,
      },
      progress,
    );
  } finally {
    progress.stop();
    await backend.cleanup();
  }
  if (stop.signal.aborted) return 130;
  if (opts.json) {
    process.stdout.write(`${toJson(report)}\n`);
  } else {
    process.stdout.write(`${renderTable(report, { notes: opts.notes })}\n`);
    process.stdout.write(`${verdictLine(report)}  (seed ${seed}; replay with --seed ${seed})\n`);
  }
  return exitCode(report);
}

// Whatever a driver throws outside a promise chain is still one line, never a stack trace.
process.on('uncaughtException', (err) => fail(errorMessage(err), 1));
process.on('unhandledRejection', (err) => fail(errorMessage(err), 1));

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Lingering driver handles (sockets, timers) must not keep the lab alive.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (err: unknown) => fail(errorMessage(err), 1),
);
