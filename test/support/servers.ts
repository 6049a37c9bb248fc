/**
 * Throwaway Redis and PostgreSQL servers for the tests: the launcher lives in
 * src/verify/servers.ts (the verification CLI starts the same servers for `--faults admin`);
 * this file keeps the tests' import path.
 */
export {
  MissingServerBinaryError,
  type PostgresOptions,
  type PostgresServer,
  postgresBinDir,
  type RedisOptions,
  type RedisServer,
  redisServerBinary,
  startPostgres,
  startRedis,
} from '../../src/verify/servers.js';
