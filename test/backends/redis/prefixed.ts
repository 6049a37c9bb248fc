/**
 * A Redis test file's own key space: a unique prefix, its key layout, an admin client and backends
 * on it, opened in `beforeAll` and closed (with every key under the prefix dropped) in `afterAll`;
 * and the one-key exclusive lease request those files take.
 *
 * @example
 * ```ts
 * const space = prefixedSpace('lsout', 2);
 * it('...', async () => { await space.backends[0].write(writes); });
 * ```
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll } from 'vitest';
import { redis } from '../../../src/backends/redis/index.js';
import { KeyLayout } from '../../../src/backends/redis/keys.js';
import type { Backend, LeaseRequest } from '../../../src/store/backend.js';
import { leaseRequest } from '../../support/lease-request.js';
import { dropPrefix } from './drop-prefix.js';

/** What {@link prefixedSpace} gives a test file (the clients exist once `beforeAll` ran). */
export interface PrefixedSpace {
  readonly url: string;
  readonly prefix: string;
  readonly layout: KeyLayout;
  /** The admin connection (for looking at keys). */
  readonly admin: Redis;
  /** `count` backends on the prefix: like as many processes. */
  readonly backends: readonly Backend[];
}

/** Registers the hooks that open and clean up a key space named `tag:<pid>:<random>`. */
export function prefixedSpace(tag: string, count: number): PrefixedSpace {
  const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const prefix = `${tag}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  const backends: Backend[] = [];
  let admin: Redis | undefined;
  beforeAll(() => {
    admin = new Redis(url);
    for (let i = 0; i < count; i++) backends.push(redis({ url, prefix }));
  });
  afterAll(async () => {
    for (const b of backends) await b.close();
    if (admin) {
      await dropPrefix(admin, prefix);
      await admin.quit();
    }
  });
  return {
    url,
    prefix,
    layout: new KeyLayout(prefix),
    get admin(): Redis {
      if (!admin) throw new Error('prefixedSpace: not open yet (beforeAll)');
      return admin;
    },
    backends,
  };
}

/** An exclusive, renewing, default-action lease request on one key of model `m`. */
export function oneKeyLease(
  m: string,
  key: string,
  extra: Partial<LeaseRequest> = {},
): LeaseRequest {
  return leaseRequest(m, [key], { leaseMs: 10_000, ...extra });
}
