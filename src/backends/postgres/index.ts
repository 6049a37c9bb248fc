/**
 * `lockstep/postgres`: the PostgreSQL backend, plus helpers for your own tables.
 *
 * @example
 * ```ts
 * import { createStore } from 'lockstep';
 * import { postgres } from 'lockstep/postgres';
 * const store = createStore(postgres({ url: process.env.DATABASE_URL, schema: 'app' }));
 * ```
 */
import pg from 'pg';
import { ValidationError } from '../../errors.js';
import { PostgresBackend, type PostgresOptions } from './backend.js';

export { classify, DEFAULT_ACTION, PostgresBackend, type PostgresOptions } from './backend.js';
export {
  type LockRowsOptions,
  lockRows,
  type TableName,
  type TransactionOptions,
  transaction,
} from './helpers.js';
export { isConnectionLoss, migrationSql, sqlState } from './sql.js';

const SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;

/**
 * Creates the PostgreSQL backend. Give a connection string (`url`, default `DATABASE_URL`) and
 * Lockstep creates and owns a pool, or give your own `pg.Pool` (never ended by Lockstep). Models
 * live in `schema` (default `lockstep`), one table each, created on first use unless
 * `autoMigrate: false`. `pg` is a peer dependency.
 *
 * @example
 * ```ts
 * const backend = postgres({ pool: myPool }, { schema: 'billing' });
 * const store = createStore(backend);
 * ```
 */
export function postgres(
  connection: PostgresOptions = {},
  more: Pick<
    PostgresOptions,
    'schema' | 'autoMigrate' | 'poolSize' | 'detectDeadlocks' | 'prepare'
  > = {},
): PostgresBackend {
  const o = { ...connection, ...more };
  const schema = o.schema ?? 'lockstep';
  if (typeof schema !== 'string' || !SCHEMA_NAME.test(schema)) {
    throw new ValidationError(`schema name ${JSON.stringify(schema)}`, [
      { message: 'use 1-63 letters, digits, _ or $, starting with a letter or underscore' },
    ]);
  }
  if (o.poolSize !== undefined && !(Number.isInteger(o.poolSize) && o.poolSize > 0)) {
    throw new ValidationError('poolSize', [{ message: 'must be a positive integer' }]);
  }
  const settings = {
    schema,
    autoMigrate: o.autoMigrate ?? true,
    detectDeadlocks: o.detectDeadlocks ?? true,
    prepare: o.prepare ?? true,
  };
  if (o.pool) return new PostgresBackend(o.pool, false, settings);
  const url = o.url ?? process.env.DATABASE_URL;
  if (!url) {
    throw new ValidationError('postgres()', [
      { message: 'give { url } or { pool }, or set DATABASE_URL' },
    ]);
  }
  const bad = urlProblem(url);
  if (bad) {
    // Refused here, not at the first query: the same moment as redis() refuses its url.
    throw new ValidationError('postgres() url', [{ message: bad }]);
  }
  // application_name shows Lockstep's sessions in pg_stat_activity (a URL parameter wins).
  const pool = new pg.Pool({
    connectionString: url,
    max: o.poolSize ?? 10,
    application_name: 'lockstep',
  });
  // An idle client's connection error must not crash the process; the next checkout reconnects.
  pool.on('error', () => {});
  // Nor one that arrives as the client is handed over: pg-pool takes its idle listener off as it
  // hands a new client out, in the parse of the ReadyForQuery that completed the connect, and a
  // FATAL read in the same chunk (pg_terminate_backend of a session just started, a failover) is
  // emitted right there, before whoever asked for the client could listen: an unhandled 'error'
  // event. A listener for the client's whole life; the Conn that takes it still learns of the
  // death from its own listener or its next query.
  pool.on('connect', (client) => client.on('error', () => {}));
  return new PostgresBackend(pool, true, settings);
}

/**
 * Why `url` is not a PostgreSQL connection string, or undefined: a `postgres://` or
 * `postgresql://` URL (or `socket:`), or a Unix socket directory path starting with `/`.
 */
function urlProblem(url: unknown): string | undefined {
  const hint = 'give a connection string such as postgres://user@host:5432/db';
  if (typeof url !== 'string' || url.length === 0) return `the url must be a string; ${hint}`;
  if (url.startsWith('/')) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${JSON.stringify(url)} is not a URL; ${hint}`;
  }
  if (!['postgres:', 'postgresql:', 'socket:'].includes(parsed.protocol)) {
    return `${JSON.stringify(url)} is not a PostgreSQL URL (scheme ${parsed.protocol}); ${hint}`;
  }
  return undefined;
}

/**
 * Creates the schema, the fence sequence and the tables of `models` (idempotent; safe to run
 * concurrently). For users who create tables ahead of time (`autoMigrate: false`); to get the SQL
 * instead, use `migrationSql(schema, models)`.
 *
 * @example
 * ```ts
 * const backend = postgres({ url }, { schema: 'app', autoMigrate: false });
 * await migrate(backend, ['account', 'campaign']);
 * ```
 */
export function migrate(backend: PostgresBackend, models: readonly string[]): Promise<void> {
  return backend.migrate(models);
}
