/**
 * Test support for lockstep/threads: starting a worker that runs a TypeScript file of this
 * folder (through tsx's loader, registered inside the worker), waiting for its messages, and a
 * guard against hangs.
 */
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

/** Starts `test/threads/<file>` in a worker with `workerData`. */
export function startWorker(file: string, workerData: unknown): Worker {
  const url = new URL(file, import.meta.url).href;
  const boot = `import { register } from 'tsx/esm/api'; register(); await import(${JSON.stringify(url)});`;
  return new Worker(boot, {
    eval: true,
    workerData,
    // tsx resolves from the repository's node_modules
    env: { ...process.env },
    stdout: false,
    stderr: false,
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
