/**
 * The options of `sqlite()` and the settings a backend resolves from them.
 */
import type { Database } from 'better-sqlite3';

/** Durability of a commit: SQLite's `synchronous` pragma in WAL mode. */
export type SqliteSynchronous = 'full' | 'normal';

/** What every form of {@link SqliteOptions} accepts. */
export interface SqliteCommonOptions {
  /**
   * `'full'` (default): every commit syncs the write-ahead log to disk before it is
   * acknowledged, so an acknowledged write survives a power loss or an OS crash. `'normal'`: the
   * log is synced only at checkpoints; a process crash loses nothing, but a power loss or OS
   * crash may roll back the last transactions acknowledged before it (the file stays
   * consistent, never corrupt). About 20x more commits per second on a disk that syncs slowly.
   */
  synchronous?: SqliteSynchronous;
  /**
   * How long an operation keeps retrying (asynchronously, never blocking the event loop) while
   * another connection holds the database's write lock before it fails with BackendError
   * (default 5000 ms). Waits for leases are bounded by `timeoutMs` instead.
   */
  busyTimeoutMs?: number;
  /**
   * Detect nested locks taken in opposite orders within this process (default true); see
   * `BackendCapabilities.inProcessDeadlocks`. Cycles across processes end at `timeoutMs`.
   */
  detectDeadlocks?: boolean;
}

/** Options of {@link sqlite}: a file `path` (Lockstep opens and closes it) or your own `database`. */
export type SqliteOptions =
  | (SqliteCommonOptions & {
      /** The database file, created if missing (with its `-wal`, `-shm` and `-lockstep-wake` files). */
      path: string;
      database?: undefined;
    })
  | (SqliteCommonOptions & {
      /**
       * Your own better-sqlite3 connection: Lockstep switches it to WAL, sets its busy timeout
       * to 0 and `synchronous` as configured, and never closes it.
       */
      database: Database;
      path?: undefined;
    });

/** @internal the resolved settings of a backend. */
export interface BackendSettings {
  readonly synchronous: SqliteSynchronous;
  readonly busyTimeoutMs: number;
  readonly detectDeadlocks: boolean;
}
