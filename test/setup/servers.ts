/**
 * Vitest globalSetup: one throwaway Redis and one throwaway PostgreSQL for the whole run
 * (test/support/servers.ts), handed to every test worker as `REDIS_URL` / `DATABASE_URL`, and
 * stopped when the run ends. A `REDIS_URL` / `DATABASE_URL` already in the environment is
 * ignored on purpose: it may well be a server somebody else is using.
 *
 * To run against an existing server on purpose, set `LOCKSTEP_TEST_REDIS_URL` and/or
 * `LOCKSTEP_TEST_DATABASE_URL` (then its binary is not needed). Tests isolate themselves by a
 * unique prefix/schema there; fault tests (CLIENT PAUSE, pg_terminate_backend, SIGSTOP...)
 * always start private servers of their own, so they still need the binaries.
 */
import type { TestProject } from 'vitest/node';
import {
  MissingServerBinaryError,
  type PostgresServer,
  type RedisServer,
  startPostgres,
  startRedis,
} from '../support/servers.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The run-wide Redis (what every worker's REDIS_URL says). */
    lockstepRedisUrl: string;
    /** The run-wide PostgreSQL (what every worker's DATABASE_URL says). */
    lockstepDatabaseUrl: string;
  }
}

function given(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

/** Starts (or adopts) the run's servers, sets the env the workers inherit; returns the teardown. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redisGiven = given('LOCKSTEP_TEST_REDIS_URL');
  const pgGiven = given('LOCKSTEP_TEST_DATABASE_URL');
  const started: Array<RedisServer | PostgresServer> = [];
  const results = await Promise.allSettled([
    redisGiven === undefined ? startRedis() : Promise.resolve(undefined),
    pgGiven === undefined ? startPostgres() : Promise.resolve(undefined),
  ]);
  for (const r of results) if (r.status === 'fulfilled' && r.value) started.push(r.value);
  const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (failed.length > 0) {
    await Promise.all(started.map((s) => s.stop()));
    const missing = failed.filter((e) => e instanceof MissingServerBinaryError);
    if (missing.length > 0) {
      const e = new Error(
        `The tests start their own Redis and PostgreSQL servers (they never use a server on 6379/5432):\n${missing
          .map((e) => `  - ${(e as Error).message}`)
          .join(
            '\n',
          )}\nOr point the run at an existing server on purpose with LOCKSTEP_TEST_REDIS_URL / LOCKSTEP_TEST_DATABASE_URL (fault tests still start their own).`,
      );
      // What to install is the whole message: no stack trace under it.
      e.stack = `${e.name}: ${e.message}`;
      throw e;
    }
    throw failed[0];
  }
  const [redisStarted, pgStarted] = results.map((r) =>
    r.status === 'fulfilled' ? r.value : undefined,
  );
  const redisUrl = redisGiven ?? redisStarted?.url;
  const databaseUrl = pgGiven ?? pgStarted?.url;
  if (redisUrl === undefined || databaseUrl === undefined) throw new Error('unreachable');
  // Workers are forked after this with a copy of process.env: this is how they see the servers.
  process.env.REDIS_URL = redisUrl;
  process.env.DATABASE_URL = databaseUrl;
  project.provide('lockstepRedisUrl', redisUrl);
  project.provide('lockstepDatabaseUrl', databaseUrl);
  return async () => {
    await Promise.all(started.map((s) => s.stop()));
  };
}
