/**
 * Runs the conformance suite on the Redis backend against the run's Redis (REDIS_URL, set by
 * test/setup/servers.ts). Each `open()` is a new backend with its own connections on the same
 * key prefix (another "process"); cleanup deletes every key under the run's prefix.
 *
 * Deadlock detection: Redis cannot see a cycle of nested `lock()` calls (the outer lease sits idle
 * while its inner lock waits in JavaScript). Within one process the store's boundary tracks every
 * lease in the same wait-for graph as the in-process LockTable (the backend declares
 * `supports.inProcessDeadlocks`), so those cycles
 * end in DeadlockError at once; cycles through other processes end at `timeoutMs`.
 */

import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { type RedisBackendOptions, redis } from '../../src/backends/redis/index.js';
import { KeyLayout } from '../../src/backends/redis/keys.js';
import { dropPrefix, scanKeys } from '../backends/redis/drop-prefix.js';
import { redisUrl } from '../support/env.js';
import type { Backend } from './api.js';
import { conformance } from './suite.js';

const url = redisUrl();

/** Runs the suite on Redis with these backend options (scripts run as functions or by EVALSHA). */
export function redisConformance(name: string, options: RedisBackendOptions): void {
  conformance(name, async () => {
    const prefix = `lsconf:${process.pid}:${Date.now().toString(36)}`;
    const opened: Backend[] = [];
    return {
      open: async () => {
        const b = redis({ ...options, url, prefix });
        opened.push(b);
        return b;
      },
      // The keys of the pools named `name` (every kind) that exist, but their fence counters.
      namedLockResidue: async (name) => {
        const layout = new KeyLayout(prefix);
        const admin = new Redis(url);
        try {
          const left: string[] = [];
          for (const kind of ['mutex', 'rwlock', 'semaphore'] as const) {
            const k = layout.permit(kind, name);
            for (const key of [k.holders, k.queue, k.queueInfo]) {
              if ((await admin.exists(key)) === 1) left.push(key);
            }
          }
          return left;
        } finally {
          await admin.quit();
        }
      },
      cleanup: async () => {
        const admin = new Redis(url);
        try {
          await dropPrefix(admin, prefix);
        } finally {
          await admin.quit();
        }
      },
      limitState: async (name) => {
        const admin = new Redis(url);
        try {
          // A limit key is "<prefix>:{rl:<sw|tb>:<name>:<key>}..." (see KeyLayout.limit).
          const keys = (await scanKeys(admin, new KeyLayout(prefix).pattern)).filter((k) =>
            new RegExp(`\\{rl:(sw|tb):${name}:`).test(k),
          );
          // EXISTS expires a key whose time has come (SCAN may still list it).
          return keys.length === 0 ? 0 : await admin.exists(...keys);
        } finally {
          await admin.quit();
        }
      },
      child: {
        module: fileURLToPath(new URL('../../src/backends/redis/index.ts', import.meta.url)),
        factory: 'redis',
        options: { ...options, url, prefix },
      },
    };
  });
}
