/**
 * Test cleanup: deletes every key a Redis backend with this prefix wrote (SCAN, never KEYS, which
 * blocks the server for everyone while it walks the whole keyspace). The pattern comes from
 * the backend's own key layout, which escapes the prefix (':' becomes '%3A'): matching on the raw
 * prefix silently matched nothing.
 */
import type { Redis } from 'ioredis';
import { KeyLayout } from '../../../src/backends/redis/keys.js';

/** Deletes every key under `prefix` (as `redis({ prefix })` lays them out). */
export async function dropPrefix(admin: Redis, prefix: string): Promise<void> {
  const pattern = new KeyLayout(prefix).pattern;
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await admin.del(...keys);
  } while (cursor !== '0');
}

/**
 * Every key matching a glob `pattern`, found with SCAN.
 *
 * @example
 * expect(await scanKeys(admin, `*lockstep-lab-${runId}*`)).toEqual([]);
 */
export async function scanKeys(admin: Redis, pattern: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    found.push(...keys);
  } while (cursor !== '0');
  return found;
}
