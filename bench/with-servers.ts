/**
 * Runs bench suites on throwaway servers (test/support/servers.ts: a redis-server and a
 * PostgreSQL cluster on free ports, gone afterwards): `npx tsx bench/with-servers.ts queues`.
 */
import { spawnSync } from 'node:child_process';
import { startPostgres, startRedis } from '../test/support/servers.js';

const [r, p] = await Promise.all([startRedis(), startPostgres()]);
const res = spawnSync('npx', ['tsx', 'bench/run.ts', ...process.argv.slice(2)], {
  stdio: 'inherit',
  env: { ...process.env, REDIS_URL: r.url, DATABASE_URL: p.url },
});
await r.stop();
await p.stop();
process.exit(res.status ?? 1);
