/**
 * Migrations: the schema, the fence sequence, the semaphore holders' table and one table per
 * model, created by `migrate()` or on first use (`autoMigrate`).
 */
import { BackendError } from '../../errors.js';
import { checkModelName } from '../../store/keys.js';
import type { PgContext } from './context.js';
import { classify } from './errors.js';
import { isConnectionLoss, lockHash, migrationSql } from './sql.js';

/**
 * Creates the schema, the fence sequence and the tables of `models` if they do not exist
 * (idempotent, safe to run concurrently from many processes).
 *
 * @example
 * ```ts
 * await backend.migrate(['account', 'campaign']);
 * ```
 */
export async function migrate(ctx: PgContext, models: readonly string[] = []): Promise<void> {
  for (const m of models) checkModelName(m);
  // Idempotent DDL in one transaction: a connection lost meanwhile (reset, failover) is simply
  // sent again on another connection, a few times.
  for (let attempt = 1; ; attempt++) {
    const conn = await ctx.connect();
    try {
      await conn.query(
        `BEGIN; SELECT pg_advisory_xact_lock(${lockHash('lockstep-ddl', ctx.schema)}); ${migrationSql(ctx.schema, models)} COMMIT`,
      );
      return;
    } catch (err) {
      if (attempt < 4 && isConnectionLoss(err)) continue;
      throw classify(err, `migrating schema ${JSON.stringify(ctx.schema)}`);
    } finally {
      await conn.done();
    }
  }
}

/** Creates the tables of `models` once per backend instance (concurrent callers share the work). */
export async function ensure(
  ctx: PgContext,
  models: Iterable<string>,
  cause: unknown,
): Promise<void> {
  if (!ctx.autoMigrate) {
    throw new BackendError(
      `a table of schema ${JSON.stringify(ctx.schema)} does not exist and autoMigrate is false; run migrate() first`,
      { cause },
    );
  }
  const todo: Promise<void>[] = [];
  for (const m of models) {
    let p = ctx.ensuring.get(m);
    if (!p) {
      p = migrate(ctx, [m]).finally(() => ctx.ensuring.delete(m));
      ctx.ensuring.set(m, p);
    }
    todo.push(p);
  }
  await Promise.all(todo);
}

/**
 * Creates the schema, its fence sequence and the semaphore holders' table once per backend
 * instance (what named permits need; no model table). Concurrent callers share the work.
 */
export async function ensureSchema(ctx: PgContext, cause: unknown): Promise<void> {
  if (!ctx.autoMigrate) {
    throw new BackendError(
      `schema ${JSON.stringify(ctx.schema)} or its permit table does not exist and autoMigrate is false; run migrate() first`,
      { cause },
    );
  }
  // '' is never a model name: the key of the schema-wide objects.
  let p = ctx.ensuring.get('');
  if (!p) {
    p = migrate(ctx, []).finally(() => ctx.ensuring.delete(''));
    ctx.ensuring.set('', p);
  }
  await p;
}
