/**
 * Test support for lockstep/threads: the worker scripts of this folder bundled to plain
 * JavaScript once per process (esbuild, which tsx ships: a worker starts in milliseconds, and
 * no loader thread keeps it alive, so a keep-alive bug shows), starting workers, waiting for
 * their messages, and a guard against hangs.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type TransferListItem, Worker } from 'node:worker_threads';
import { build } from 'esbuild';

const outDir = mkdtempSync(join(tmpdir(), 'lockstep-threads-'));
const bundles = new Map<string, Promise<string>>();

/** `test/threads/<file>` (TypeScript) bundled with what it imports into one .mjs file. */
export function bundled(file: string): Promise<string> {
  let done = bundles.get(file);
  if (done === undefined) {
    done = bundle(file);
    bundles.set(file, done);
  }
  return done;
}

async function bundle(file: string): Promise<string> {
  const entry = fileURLToPath(new URL(file, import.meta.url));
  const out = join(outDir, file.replace(/^\.\//, '').replace(/\.ts$/, '.mjs'));
  await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile: out,
    logLevel: 'error',
  });
  return out;
}

/** Starts `test/threads/<file>` in a worker with `workerData` (and the ports it carries). */
export async function startWorker(
  file: string,
  workerData: unknown,
  transferList?: TransferListItem[],
): Promise<Worker> {
  return new Worker(await bundled(file), {
    workerData,
    stdout: false,
    stderr: false,
    ...(transferList ? { transferList } : {}),
  });
}

/** The repository root (for child processes). */
export const root = fileURLToPath(new URL('../..', import.meta.url));

/** Resolves with the first message of `worker` that satisfies `pred`. */
export function message<T = unknown>(
  worker: Worker,
  pred: (m: T) => boolean = () => true,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onMessage = (m: T) => {
      if (!pred(m)) return;
      off();
      resolve(m);
    };
    const onError = (err: unknown) => {
      off();
      reject(err);
    };
    const onExit = (code: number) => {
      off();
      reject(new Error(`worker exited (code ${code}) before the expected message`));
    };
    const off = () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

/** Resolves with the worker's exit code (rejects on an error event). */
export function exited(worker: Worker): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', resolve);
  });
}

/** Rejects if `p` does not settle within `ms` (a hang is a failure, never a wait forever). */
export function noHang<T>(p: Promise<T>, what: string, ms = 30_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`hang: ${what} did not settle in ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
