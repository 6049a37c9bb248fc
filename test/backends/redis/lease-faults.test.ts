/**
 * A lease whose renewals cannot reach Redis is lost at leaseMs after its last renewal (its
 * `signal` aborts then, not when the renewal call finally times out), on a Redis server of this
 * file's own (startRedis: CLIENT PAUSE never touches a shared server).
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { redis } from '../../../src/backends/redis/index.js';
import { LeaseLostError } from '../../../src/errors.js';
import type { Backend } from '../../../src/store/backend.js';
import { type RedisServer, startRedis } from '../../support/servers.js';

let server: RedisServer;
let admin: Redis;
let b: Backend;

beforeAll(async () => {
  server = await startRedis();
  admin = new Redis(server.url);
  // A command timeout far longer than the lease: the renewal hangs, it does not fail fast.
  b = redis({ url: server.url, prefix: 'lf', commandTimeoutMs: 20_000 });
});

afterAll(async () => {
  await admin?.client('UNPAUSE').catch(() => {});
  await b?.close();
  await admin?.quit();
  await server?.stop();
});

it('renewals that hang past leaseMs: the lease is lost, its signal aborted with LeaseLostError', async () => {
  await b.write([{ kind: 'put', model: 'm', key: 'k', data: { n: 0 } }]);
  const lease = await b.acquire({
    model: 'm',
    keys: ['k'],
    action: 'default',
    mode: 'exclusive',
    leaseMs: 300,
    renew: true,
    nowait: false,
    skipLocked: false,
  });
  const signal = lease?.signal as AbortSignal;
  // Every write command (the renewal script) now waits in the server.
  await admin.client('PAUSE', 4_000, 'WRITE');
  const reason = await new Promise<unknown>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the signal never aborted')), 3_500);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve(signal.reason);
    });
  });
  await admin.client('UNPAUSE');
  expect(reason).toBeInstanceOf(LeaseLostError);
  expect((reason as LeaseLostError).message).toMatch(/did not reach Redis/);
  expect(lease?.lost).toBe(true);
  await lease?.release();
});
