/**
 * SQL text helpers of the PostgreSQL backend: identifier and literal quoting, the DDL of a
 * model's table, advisory-lock hashes and SQLSTATE classification. Every identifier that reaches
 * SQL goes through {@link ident}; every value sent inside a multi-statement (simple protocol)
 * query goes through {@link lit}.
 */
import { createHash } from 'node:crypto';
import { rateLimitDdl } from './rate-limits.js';

/**
 * Quotes an identifier (schema, table, column) for SQL: always double-quoted, embedded quotes
 * doubled, so no name is ever interpolated unescaped.
 *
 * @example
 * ```ts
 * ident('account'); // '"account"'
 * ident('we"ird'); // '"we""ird"'
 * ```
 */
export function ident(name: string): string {
  if (name.includes('\u0000')) throw new TypeError('an SQL identifier cannot contain NUL');
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Quotes a string literal for SQL text (the same algorithm as `pg.escapeLiteral`): quotes
 * doubled, and backslashes doubled under an `E'...'` prefix, so the result means the same
 * whatever `standard_conforming_strings` says.
 *
 * @example
 * ```ts
 * lit("it's"); // "'it''s'"
 * ```
 */
export function lit(s: string): string {
  if (s.includes('\u0000')) throw new TypeError('an SQL literal cannot contain NUL');
  let out = s.replace(/'/g, "''");
  if (out.includes('\\')) return ` E'${out.replace(/\\/g, '\\\\')}'`;
  out = `'${out}'`;
  return out;
}

/** The sequence that hands out fencing tokens; `$` keeps it apart from every model table name. */
export const FENCE_SEQUENCE = 'lockstep$fence';

/**
 * The table of semaphore holders (see `permit-rows.ts`): one row per held permit, with its expiry
 * on the server's clock. `$` keeps it apart from every model table name.
 */
export const PERMIT_TABLE = 'lockstep$permit';

/**
 * The DDL of the semaphore holders' table (idempotent). A row is a granted permit; nothing else
 * is stored (waiters queue in the server's lock manager), so an idle pool has no row.
 */
export function permitTableDdl(schema: string): string {
  return `CREATE TABLE IF NOT EXISTS ${ident(schema)}.${ident(PERMIT_TABLE)} (
  kind text NOT NULL,
  name text COLLATE "C" NOT NULL,
  token text COLLATE "C" NOT NULL,
  permits bigint NOT NULL,
  weight bigint NOT NULL,
  fence bigint NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (kind, name, token)
)`;
}

/** The columns every read selects, in this order (see {@link parseRow}). */
export const COLUMNS =
  'key, version, fence, data, field_versions, data_version, incarnation, (expires_at IS NOT NULL AND expires_at <= clock_timestamp()) AS expired';

/**
 * The condition of a row whose document has not expired (server clock, now): every statement
 * that matches a document by key alone includes it (see "Expiring documents" in backend.ts).
 */
export const LIVE = '(expires_at IS NULL OR expires_at > clock_timestamp())';

/** The `expires_at` of a write with `ttlMs` (SQL; NULL without one). */
export function expiresAtSql(ttlMs: number | null): string {
  return ttlMs === null ? 'NULL' : `clock_timestamp() + interval '1 millisecond' * ${ttlMs}`;
}

/**
 * The DDL of one model's table (idempotent). `incarnation` is unique per creation of a key (a
 * document deleted and created again is another incarnation). `key` uses the "C" collation so that the primary key
 * index orders keys by code point, the order every lock takes rows in.
 */
export function tableDdl(schema: string, model: string): string {
  return `CREATE TABLE IF NOT EXISTS ${ident(schema)}.${ident(model)} (
  key text COLLATE "C" PRIMARY KEY,
  version bigint NOT NULL,
  fence bigint NOT NULL DEFAULT 0,
  data jsonb NOT NULL,
  field_versions jsonb NOT NULL DEFAULT '{}'::jsonb,
  data_version bigint NOT NULL DEFAULT 1,
  incarnation bigint NOT NULL DEFAULT nextval('${ident(schema)}.${ident(FENCE_SEQUENCE)}'::regclass),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz
);
ALTER TABLE ${ident(schema)}.${ident(model)} ADD COLUMN IF NOT EXISTS expires_at timestamptz;
CREATE INDEX IF NOT EXISTS ${ident(`${model}$expiry`)} ON ${ident(schema)}.${ident(model)} (expires_at) WHERE expires_at IS NOT NULL`;
}

/**
 * The full, idempotent DDL for a schema (its fence sequence and the semaphore holders' table) and its models: what `migrate()` runs, for users who
 * manage DDL themselves (paste it into a migration).
 *
 * @example
 * ```ts
 * console.log(migrationSql('lockstep', ['account', 'campaign']));
 * ```
 */
export function migrationSql(schema: string, models: readonly string[]): string {
  const parts = [
    `CREATE SCHEMA IF NOT EXISTS ${ident(schema)}`,
    `CREATE SEQUENCE IF NOT EXISTS ${ident(schema)}.${ident(FENCE_SEQUENCE)}`,
    permitTableDdl(schema),
    rateLimitDdl(schema),
    ...models.map((m) => tableDdl(schema, m)),
  ];
  return `${parts.join(';\n')};\n`;
}

/**
 * A stable signed 64-bit hash (as decimal text) for `pg_advisory_xact_lock`: the same parts give
 * the same lock in every process and every version.
 *
 * @example
 * ```ts
 * await client.query(`SELECT pg_advisory_xact_lock(${lockHash('app', 'invoice', id)})`);
 * ```
 */
export function lockHash(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) {
    h.update(p);
    h.update('\u0000');
  }
  return h.digest().readBigInt64BE(0).toString();
}

/**
 * The SQLSTATE of an error (walking `.cause`), or undefined for non-PostgreSQL errors. Branch on
 * this, never on messages.
 *
 * @example
 * ```ts
 * if (sqlState(err) === '40001') retry();
 * ```
 */
export function sqlState(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 8 && e !== null && typeof e === 'object'; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * True when `err` means the session is gone (the server ended it, or the socket dropped): any
 * later query on that connection fails, and its open transaction was rolled back by the server.
 *
 * @example
 * ```ts
 * if (isConnectionLoss(err)) client.release(err); // never reuse that connection
 * ```
 */
export function isConnectionLoss(err: unknown): boolean {
  const state = sqlState(err);
  if (state !== undefined) {
    return (
      state.startsWith('08') ||
      state === '57P01' ||
      state === '57P02' ||
      state === '57P03' ||
      state === '25P03' ||
      state === '57P05'
    );
  }
  if (err === null || typeof err !== 'object') return false;
  const severity = (err as { severity?: unknown }).severity;
  if (severity === 'FATAL' || severity === 'PANIC') return true;
  const msg = err instanceof Error ? err.message : '';
  const code = (err as { code?: unknown }).code;
  return (
    (typeof code === 'string' && /^E[A-Z]+$/.test(code)) ||
    /Connection terminated|not queryable|connection error|socket|ECONNRESET|EPIPE/i.test(msg)
  );
}

/**
 * Why jsonb would refuse this JSON text, or undefined: a `\u0000` escape, or a lone surrogate
 * (which `JSON.stringify` writes as a `\udXXX` escape). Only escapes preceded by an odd number of
 * backslashes count.
 *
 * @example
 * ```ts
 * jsonbProblem(JSON.stringify({ s: 'a\u0000b' })); // 'PostgreSQL jsonb cannot store the NUL ...'
 * ```
 */
export function jsonbProblem(text: string): string | undefined {
  const m = /(?<!\\)(?:\\\\)*\\u(0000|d[89a-f][0-9a-f]{2})/i.exec(text);
  if (!m) return undefined;
  return m[1] === '0000'
    ? 'PostgreSQL jsonb cannot store the NUL character (\\u0000) in a string'
    : 'PostgreSQL jsonb cannot store a lone UTF-16 surrogate in a string';
}
