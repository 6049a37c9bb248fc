/**
 * Runs `lab verify` as a user does (`tsx src/lab/cli.ts verify ...`) from the tests, and reads
 * what it printed with `--json`.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** What a run printed and its exit code. */
export interface LabRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Spawns `lab verify args` (a hang guard of `timeoutMs`). */
export function labVerify(args: readonly string[], timeoutMs = 90_000): Promise<LabRun> {
  return new Promise((resolve) => {
    execFile(
      'node_modules/.bin/tsx',
      ['src/lab/cli.ts', 'verify', ...args],
      { cwd: ROOT, timeout: timeoutMs, env: { ...process.env, FORCE_COLOR: '0' } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The `--json` report of one run (one line per backend run). */
export interface JsonReport {
  readonly backend: string;
  readonly verdict: 'pass' | 'fail' | 'unknown';
  readonly ops: Record<'ok' | 'fail' | 'info' | 'pending', number>;
  readonly faults: Record<string, number>;
  readonly workloads: ReadonlyArray<{
    readonly name: string;
    readonly verdict: string;
    readonly ops: Record<'ok' | 'fail' | 'info' | 'pending', number>;
    readonly anomalyCounts: Record<string, number>;
  }>;
}

/** Every JSON line of `stdout`. */
export function reports(stdout: string): JsonReport[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as JsonReport);
}
