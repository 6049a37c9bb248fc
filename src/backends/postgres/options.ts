/**
 * The options of `postgres()` and the settings a backend resolves from them.
 */
import type { Pool } from 'pg';

/** Options of {@link postgres}. */
export interface PostgresOptions {
  /** A connection string (default: the DATABASE_URL environment variable). Ignored with `pool`. */
  url?: string;
  /** Your own `pg.Pool`: used as is and never ended by Lockstep. */
  pool?: Pool;
  /** The schema holding one table per model (default `lockstep`). Created on first use. */
  schema?: string;
  /** Size of the pool Lockstep creates from `url` (default 10). */
  poolSize?: number;
  /**
   * Create the schema and a model's table on first use (default true). With false, call
   * `migrate()` (or run `migrationSql()`) first; a missing table is then a BackendError.
   */
  autoMigrate?: boolean;
  /**
   * Detect nested locks taken in opposite orders within this process (default true): the store
   * then runs each lock as a task (AsyncLocalStorage), and a wait that would close a cycle fails
   * at once with DeadlockError instead of waiting until `timeoutMs`. Costs a few percent per
   * operation on Node 20 (async context tracking); cycles across processes are never seen here
   * (they end at `timeoutMs`).
   */
  detectDeadlocks?: boolean;
  /**
   * Send the single-statement reads and writes (read, create, put, delete, the combined `apply`
   * UPDATE) as named, server-side prepared statements, parsed and planned once per connection
   * (default true). Safe with direct connections and with pgbouncer >= 1.21 in transaction mode
   * when its `max_prepared_statements` is above 0 (it tracks protocol-level prepared statements
   * per server connection). Set false behind a pooler that does not (pgbouncer < 1.21, or
   * `max_prepared_statements = 0`): a statement prepared on one server connection would be
   * missing on the next ("prepared statement ... does not exist").
   */
  prepare?: boolean;
}

/** @internal the resolved settings of a backend. */
export interface BackendSettings {
  readonly schema: string;
  readonly detectDeadlocks: boolean;
  readonly autoMigrate: boolean;
  readonly prepare: boolean;
}
