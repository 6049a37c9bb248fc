/**
 * The run's servers as the tests see them: the REDIS_URL / DATABASE_URL that the globalSetup
 * (test/setup/servers.ts) sets for every worker. No fallback to 127.0.0.1:6379 / :5432: a test
 * run outside that setup fails here instead of touching somebody's server.
 */

function required(name: 'REDIS_URL' | 'DATABASE_URL'): string {
  const v = process.env[name];
  if (v === undefined || v === '')
    throw new Error(
      `${name} is not set: run the tests with vitest (npx vitest run <file>), whose globalSetup starts the run's servers`,
    );
  return v;
}

/**
 * The run-wide Redis URL.
 *
 * @example
 * const store = createStore(redis({ url: redisUrl(), prefix: uniquePrefix('t') }));
 */
export function redisUrl(): string {
  return required('REDIS_URL');
}

/**
 * The run-wide PostgreSQL URL.
 *
 * @example
 * const store = createStore(postgres({ url: databaseUrl(), schema: uniquePrefix('t', '_') }));
 */
export function databaseUrl(): string {
  return required('DATABASE_URL');
}

/**
 * A name no other test file, worker or run uses: `tag`, this process id and random characters.
 *
 * @example
 * uniquePrefix('lsfault'); // 'lsfault:4242:k3j9x2'
 * uniquePrefix('lsfault', '_'); // 'lsfault_4242_k3j9x2' (a PostgreSQL schema)
 */
export function uniquePrefix(tag: string, sep = ':'): string {
  return [tag, process.pid, Math.random().toString(36).slice(2, 8)].join(sep);
}
