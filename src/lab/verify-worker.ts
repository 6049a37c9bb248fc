/**
 * One worker process of `lab verify --processes N`: forked by the CLI, it opens the same
 * backend (same URL, same run id: same key prefix or schema), waits for the word to start,
 * runs its share of the workloads' clients with a clock shared by every process of the run
 * (`performance.timeOrigin + performance.now()`), sends back what it recorded, and closes its
 * connections (the parent owns the run's data and removes it).
 *
 * Messages: parent → `{ type: 'open', spec, runId, options }`, `{ type: 'ping' }` (any number:
 * the worker answers `{ type: 'pong', t }` with its clock, so the parent can measure the skew),
 * then `{ type: 'go' }`; worker → `{ type: 'ready' }`, then `{ type: 'done', ops, runMs }` or
 * `{ type: 'error', message }`.
 */
import type { ClientOptions, Operation } from '../verify/index.js';
import { runClients } from '../verify/index.js';
import { openBackend } from './backends.js';
import { errorMessage } from './util.js';

/** What the parent sends first. */
export interface WorkerOpen {
  readonly type: 'open';
  readonly spec: string;
  readonly runId: string;
  /** Everything but the functions (the clock is the shared one). */
  readonly options: Omit<ClientOptions, 'now' | 'signal' | 'onOp' | 'onClientsDone'>;
}

/** What a worker answers. */
export type WorkerReply =
  | { readonly type: 'ready' }
  | { readonly type: 'pong'; readonly t: number }
  | { readonly type: 'done'; readonly ops: readonly Operation[]; readonly runMs: number }
  | { readonly type: 'error'; readonly message: string };

/** The clock every process of a run shares: ms since the epoch, monotonic within a process. */
export const sharedClock = (): number => performance.timeOrigin + performance.now();

const send = (m: WorkerReply) =>
  new Promise<void>((resolve) => {
    process.send?.(m, undefined, {}, () => resolve());
  });

if (process.send !== undefined && process.argv.includes('--lockstep-verify-worker')) {
  process.once('message', (first: WorkerOpen) => {
    void (async () => {
      try {
        const backend = await openBackend(first.spec, first.runId, { workers: 16 });
        const go = new Promise<void>((resolve) => {
          const onMessage = (m: { type: string }) => {
            if (m.type === 'ping') {
              process.send?.({ type: 'pong', t: sharedClock() });
              return;
            }
            process.off('message', onMessage);
            resolve();
          };
          process.on('message', onMessage);
        });
        await send({ type: 'ready' });
        await go;
        const { ops, runMs } = await runClients(backend.store, {
          ...first.options,
          now: sharedClock,
        });
        await send({ type: 'done', ops, runMs });
        await backend.store.close().catch(() => {});
      } catch (err) {
        await send({ type: 'error', message: errorMessage(err) });
      }
      process.exit(0);
    })();
  });
}
