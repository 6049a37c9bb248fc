/**
 * `lockstep/sqlite`: the SQLite backend on better-sqlite3 12 (a peer dependency): durable, and
 * correct across the processes of one machine sharing one database file. It never blocks the
 * event loop waiting for another process (see `backend.ts` for the design, and `options.ts` for
 * what `synchronous` means after a power loss).
 *
 * @example
 * ```ts
 * import { createStore } from 'lockstep';
 * import { sqlite } from 'lockstep/sqlite';
 * const store = createStore(sqlite({ path: './state.db' }));
 * ```
 */
import Database from 'better-sqlite3';
import { ValidationError } from '../../errors.js';
import { SqliteBackend } from './backend.js';
import type { SqliteOptions } from './options.js';

export { SqliteBackend } from './backend.js';
export { MIGRATION_SQL } from './migrations.js';
export type { SqliteCommonOptions, SqliteOptions, SqliteSynchronous } from './options.js';

/**
 * Creates the SQLite backend on a database file (`path`: opened, created if missing, and closed
 * by Lockstep) or on your own better-sqlite3 `database` (never closed by Lockstep). Every process
 * that opens the same file shares documents and locks.
 *
 * @example
 * ```ts
 * const store = createStore(sqlite({ path: '/var/lib/app/state.db' }));
 * const other = createStore(sqlite({ database: new Database('state.db'), synchronous: 'normal' }));
 * ```
 */
export function sqlite(options: SqliteOptions): SqliteBackend {
  const o = options as Partial<SqliteOptions> | undefined;
  if (typeof o !== 'object' || o === null) {
    throw new ValidationError('sqlite()', [{ message: 'give { path } or { database }' }]);
  }
  const hasPath = o.path !== undefined;
  const hasDb = o.database !== undefined;
  if (hasPath === hasDb) {
    throw new ValidationError('sqlite()', [
      {
        message:
          'give exactly one of { path } (a file name) or { database } (a better-sqlite3 Database)',
      },
    ]);
  }
  if (hasPath && (typeof o.path !== 'string' || o.path.length === 0 || o.path === ':memory:')) {
    throw new ValidationError('sqlite() path', [
      {
        message:
          'must be a file name (an in-memory database is not shared; pass { database: new Database(":memory:") } for one process)',
      },
    ]);
  }
  const synchronous = o.synchronous ?? 'full';
  if (synchronous !== 'full' && synchronous !== 'normal') {
    throw new ValidationError('sqlite() synchronous', [{ message: "must be 'full' or 'normal'" }]);
  }
  const busyTimeoutMs = o.busyTimeoutMs ?? 5000;
  if (!(Number.isFinite(busyTimeoutMs) && busyTimeoutMs >= 0)) {
    throw new ValidationError('sqlite() busyTimeoutMs', [
      { message: 'must be a finite number of milliseconds >= 0' },
    ]);
  }
  const settings = { synchronous, busyTimeoutMs, detectDeadlocks: o.detectDeadlocks ?? true };
  if (hasDb) {
    const db = o.database as Database.Database;
    if (typeof db.prepare !== 'function' || !db.open) {
      throw new ValidationError('sqlite() database', [
        { message: 'must be an open better-sqlite3 Database' },
      ]);
    }
    return new SqliteBackend(db, false, settings);
  }
  // timeout 0: a lock held by another connection fails at once, and Lockstep retries it
  // asynchronously (better-sqlite3's default 5 s busy wait would block the event loop).
  const db = new Database(o.path as string, { timeout: 0 });
  try {
    return new SqliteBackend(db, true, settings);
  } catch (err) {
    db.close();
    throw err;
  }
}
