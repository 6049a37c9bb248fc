/**
 * The tables of the SQLite backend and the connection settings it needs, applied when a backend
 * opens (idempotent, safe from many processes at once):
 * - `journal_mode = WAL`: readers never wait for the writer, and the writer never waits for
 *   readers; `busy_timeout = 0`: a statement that meets another connection's write lock fails at
 *   once with SQLITE_BUSY and Lockstep retries it asynchronously, so the event loop never waits
 *   for another process; `synchronous` as configured (see `options.ts`).
 * - `lockstep_docs`: one row per document (JSON data, version, per-field versions, incarnation);
 * - `lockstep_leases`: one row per held lease and key, expiring on the machine's clock, and the
 *   fence counter of document leases in the row keyed by empty strings (no model is named '':
 *   it sorts first, so taking a fence writes the same page as the lease rows);
 * - `lockstep_permits`: named pools' holders (`granted = 1`) and FIFO waiters (`granted = 0`,
 *   in `seq` order), each expiring on the machine's clock (a waiter refreshes its row while it
 *   waits, so a dead waiter leaves the queue within {@link WAITER_TTL_MS});
 * - `lockstep_pools`: one row per pool ever used, its fence and queue counters;
 * - `lockstep_meta`: the schema version.
 *
 * @example
 * ```ts
 * configure(db, settings); // pragmas
 * migrate(db);             // tables, inside BEGIN IMMEDIATE
 * ```
 */
import type { Database } from 'better-sqlite3';
import type { BackendSettings } from './options.js';

/** A waiting permit request's row expires this long after its waiter last refreshed it. */
export const WAITER_TTL_MS = 3000;

/** The fence row's expiry: never (the largest integer SQLite stores exactly as a double). */
const FENCE_ROW_EXPIRY = Number.MAX_SAFE_INTEGER;

/** The schema version this code writes; stored in `lockstep_meta`. */
export const SCHEMA_VERSION = 1;

/** The statements creating every table (each IF NOT EXISTS). */
export const MIGRATION_SQL = `
CREATE TABLE IF NOT EXISTS lockstep_docs (
  model TEXT NOT NULL,
  key TEXT NOT NULL,
  version INTEGER NOT NULL,
  data TEXT NOT NULL,
  data_version INTEGER NOT NULL,
  field_versions TEXT,
  incarnation TEXT NOT NULL,
  PRIMARY KEY (model, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lockstep_leases (
  model TEXT NOT NULL,
  key TEXT NOT NULL,
  action TEXT NOT NULL,
  token TEXT NOT NULL,
  exclusive INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  fence INTEGER NOT NULL,
  PRIMARY KEY (model, key, action, token)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lockstep_permits (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  seq INTEGER NOT NULL,
  token TEXT NOT NULL,
  weight INTEGER NOT NULL,
  permits INTEGER NOT NULL,
  granted INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  fence INTEGER NOT NULL,
  PRIMARY KEY (kind, name, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lockstep_pools (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  fence INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lockstep_meta (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO lockstep_meta (name, value) VALUES ('schema', ${SCHEMA_VERSION});
INSERT OR IGNORE INTO lockstep_leases (model, key, action, token, exclusive, expires_at, fence)
  VALUES ('', '', '', '', 0, ${FENCE_ROW_EXPIRY}, 0);
`;

/**
 * The connection settings, applied to every connection (ours or the user's). Throws SQLITE_BUSY
 * when another connection is switching the file to WAL at the same moment (the caller retries).
 */
export function configure(db: Database, settings: BackendSettings): void {
  db.pragma('busy_timeout = 0');
  if (!db.memory) {
    const mode = db.pragma('journal_mode', { simple: true });
    if (String(mode).toLowerCase() !== 'wal') db.pragma('journal_mode = WAL');
  }
  db.pragma(`synchronous = ${settings.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
}

/** Creates the tables (run inside BEGIN IMMEDIATE). */
export function migrate(db: Database): void {
  db.exec(MIGRATION_SQL);
}
