/**
 * WAL checkpoints off the event loop. A checkpoint copies the write-ahead log back into the
 * database file and syncs it: milliseconds to tens of milliseconds of disk syncs. SQLite runs
 * one automatically inside the COMMIT that grows the log past 1000 pages, which would stall the
 * event loop of whichever process committed then. Lockstep turns that off on its connections
 * (`wal_autocheckpoint = 0`) and instead runs `PRAGMA wal_checkpoint(PASSIVE)` in a worker thread
 * with its own connection, every {@link CHECKPOINT_EVERY} commits of this process (PASSIVE: it
 * never waits for, nor blocks, readers and writers). One worker per database file and process,
 * shared by its backends, unref'd, ended with the last of them.
 *
 * If the worker cannot start, the connection goes back to SQLite's automatic checkpoints.
 *
 * @example
 * ```ts
 * const { checkpointer, release } = checkpointerFor('/data/app.db');
 * checkpointer.committed(); // after each write transaction
 * release();                // when the backend closes
 * ```
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** Commits of this process between two checkpoints. */
export const CHECKPOINT_EVERY = 200;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { timeout: 0 });
parentPort.on('message', (m) => {
  if (m === 'close') { db.close(); parentPort.close(); return; }
  let ok = true;
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch { ok = false; }
  parentPort.postMessage(ok);
});
`;

/**
 * The checkpoint worker of one database file in this process.
 *
 * @example
 * ```ts
 * checkpointer.committed();
 * ```
 */
export class Checkpointer {
  readonly #file: string;
  #worker: Worker | undefined;
  #running = false;
  #commits = 0;
  /** The worker could not start: connections keep SQLite's automatic checkpoints. */
  failed = false;
  /** Checkpoints run so far (for tests and the bench). */
  runs = 0;

  constructor(file: string) {
    this.#file = file;
    try {
      const driver = createRequire(import.meta.url).resolve('better-sqlite3');
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { file, driver } });
      w.unref();
      w.on('message', () => {
        this.#running = false;
        this.runs += 1;
      });
      w.on('error', () => {
        this.failed = true;
        this.#running = false;
        this.#worker = undefined;
      });
      this.#worker = w;
    } catch {
      this.failed = true;
    }
  }

  /** The file this worker checkpoints. */
  get file(): string {
    return this.#file;
  }

  /** Counts one write transaction; starts a checkpoint every {@link CHECKPOINT_EVERY}. */
  committed(): void {
    this.#commits += 1;
    if (this.#commits < CHECKPOINT_EVERY || this.#running || this.#worker === undefined) return;
    this.#commits = 0;
    this.#running = true;
    this.#worker.postMessage('checkpoint');
  }

  /** Ends the worker (its connection closes; a checkpoint in progress finishes first). */
  close(): void {
    const w = this.#worker;
    this.#worker = undefined;
    w?.postMessage('close');
  }
}

const checkpointers = new Map<string, { checkpointer: Checkpointer; users: number }>();

/** The checkpointer of `file`, shared by this process's backends on it; `release` on close. */
export function checkpointerFor(file: string): {
  checkpointer: Checkpointer;
  release: () => void;
} {
  let entry = checkpointers.get(file);
  if (!entry) {
    entry = { checkpointer: new Checkpointer(file), users: 0 };
    checkpointers.set(file, entry);
  }
  entry.users += 1;
  const e = entry;
  let released = false;
  return {
    checkpointer: e.checkpointer,
    release: () => {
      if (released) return;
      released = true;
      e.users -= 1;
      if (e.users === 0) {
        e.checkpointer.close();
        checkpointers.delete(file);
      }
    },
  };
}
