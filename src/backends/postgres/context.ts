/**
 * The state every part of the PostgreSQL backend shares: the pool, the settings, the table names,
 * and checking a connection out. One per backend instance; made by {@link PostgresBackend}.
 */
import type { Pool } from 'pg';
import { BackendError } from '../../errors.js';
import { Conn, toError } from './conn.js';
import type { BackendSettings } from './options.js';
import { ident, lockHash } from './sql.js';

/**
 * @internal the shared state of one backend instance.
 *
 * @example
 * ```ts
 * const ctx = new PgContext(pool, true, settings);
 * const conn = await ctx.connect();
 * ```
 */
export class PgContext {
  readonly pool: Pool;
  readonly ownPool: boolean;
  readonly schema: string;
  readonly autoMigrate: boolean;
  /** Name the single-statement writes and reads (server-side prepared statements). */
  readonly prepare: boolean;
  readonly #names = new Map<string, string>();
  /** Which database this is, as far as the pool says: scopes the in-process lock graph. */
  readonly dbId: string;
  /** Tables being created, per model (concurrent callers share the work). */
  readonly ensuring = new Map<string, Promise<void>>();
  closed = false;

  constructor(pool: Pool, ownPool: boolean, settings: BackendSettings) {
    this.pool = pool;
    this.ownPool = ownPool;
    this.schema = settings.schema;
    this.autoMigrate = settings.autoMigrate;
    this.prepare = settings.prepare;
    const o = (pool as unknown as { options?: Record<string, unknown> }).options ?? {};
    this.dbId = JSON.stringify([o.connectionString, o.host, o.port, o.database]);
  }

  /** The quoted, schema-qualified table of `model`. */
  table(model: string): string {
    return `${ident(this.schema)}.${ident(model)}`;
  }

  /**
   * The name of the prepared statement `kind` on `model`'s table (`{ name }` to spread into a pg
   * query config), or nothing when `prepare` is off: then every statement is parsed and planned
   * anew (what a pooler without prepared-statement support needs).
   */
  named(kind: string, model: string): { name?: string } {
    if (!this.prepare) return {};
    const k = `${kind}\u0000${model}`;
    let name = this.#names.get(k);
    if (name === undefined) {
      name = `ls_${kind}_${lockHash(this.schema, model)}`;
      this.#names.set(k, name);
    }
    return { name };
  }

  checkOpen(): void {
    if (this.closed) throw new BackendError('this postgres backend is closed; create a new one');
  }

  async connect(): Promise<Conn> {
    this.checkOpen();
    try {
      return new Conn(await this.pool.connect());
    } catch (err) {
      throw new BackendError(`could not connect to PostgreSQL: ${toError(err).message}`, {
        cause: err,
      });
    }
  }
}
