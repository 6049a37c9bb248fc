/**
 * One worker process of `lab verify --processes N`: forked by the CLI, it opens the same
 * backend (same URL, same run id: same key prefix or schema), waits for the word to start,
 * runs its share of the workloads' clients with a clock shared by every process of the run
 * (`performance.timeOrigin + performance.now()`), and closes its connections (the parent owns
 * the run's data and removes it). What it records goes to a journal file as it happens, one
 * JSON line per invocation and per completion, written synchronously before the operation is
 * sent: the nemesis may SIGKILL this process at any moment, and the parent then reads every
 * invocation it made (the ones never completed are checked as unknown).
 *
 * Messages: parent → `{ type: 'open', spec, runId, options, journal, plant? }`,
 * `{ type: 'ping' }` (any number: the worker answers `{ type: 'pong', t }` with its clock, so
 * the parent can measure the skew), then `{ type: 'go' }`; worker → `{ type: 'ready' }`,
 * `{ type: 'section', inside }` as its mutex holders enter and leave, then
 * `{ type: 'done', runMs }` (the journal is complete) or `{ type: 'error', message }`.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { ClientOptions, PlantedBug } from '../verify/index.js';
import { plantBug, runClients } from '../verify/index.js';
import { openBackend } from './backends.js';
import { errorMessage } from './util.js';

/** What the parent sends first. */
export interface WorkerOpen {
  readonly type: 'open';
  readonly spec: string;
  readonly runId: string;
  /** Everything but the functions (the clock is the shared one). */
  readonly options: Omit<
    ClientOptions,
    'now' | 'signal' | 'onOp' | 'onClientsDone' | 'onChange' | 'onSection'
  >;
  /** The file this worker appends its operations to. */
  readonly journal: string;
  /** A planted backend bug (only on a server the run started). */
  readonly plant?: PlantedBug;
}

/** The word to start, with the time left in the run (a replacement starts late). */
export interface WorkerGo {
  readonly type: 'go';
  readonly durationMs?: number;
}

/** What a worker answers. */
export type WorkerReply =
  | { readonly type: 'ready' }
  | { readonly type: 'pong'; readonly t: number }
  | { readonly type: 'section'; readonly inside: boolean }
  | { readonly type: 'done'; readonly runMs: number }
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
        const backend = await openBackend(first.spec, first.runId, {
          workers: 16,
          ...(first.plant === undefined ? {} : { wrap: (b) => plantBug(b, first.plant) }),
        });
        const fd = openSync(first.journal, 'a');
        let sealed = false;
        const go = new Promise<number | undefined>((resolve) => {
          const onMessage = (m: { type: string; durationMs?: number }) => {
            if (m.type === 'ping') {
              process.send?.({ type: 'pong', t: sharedClock() });
              return;
            }
            process.off('message', onMessage);
            resolve(m.durationMs);
          };
          process.on('message', onMessage);
        });
        await send({ type: 'ready' });
        const durationMs = (await go) ?? first.options.durationMs;
        const { runMs } = await runClients(backend.store, {
          ...first.options,
          durationMs,
          now: sharedClock,
          onChange: (op) => {
            if (!sealed) writeSync(fd, `${JSON.stringify(op)}\n`);
          },
          onSection: (inside) => process.send?.({ type: 'section', inside }),
        });
        // What runClients returned is the history: an operation finishing later stays pending.
        sealed = true;
        closeSync(fd);
        await send({ type: 'done', runMs });
        await backend.store.close().catch(() => {});
      } catch (err) {
        await send({ type: 'error', message: errorMessage(err) });
      }
      process.exit(0);
    })();
  });
}
