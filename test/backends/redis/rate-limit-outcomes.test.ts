/**
 * A consumption whose reply is lost (the connection drops after Redis ran the script), injected
 * with the TCP proxy in front of the run's Redis (only this file's own connections go through
 * it): `consume` rejects with BackendError `outcomeUnknown` — never a refusal, never a retry —
 * and the units it took stay taken, so the limit is never exceeded because of a lost reply.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { redis } from '../../../src/backends/redis/index.js';
import { createStore, type Store } from '../../../src/index.js';
import { redisUrl } from '../../support/env.js';
import { startProxy, type TcpProxy } from '../../support/tcp-proxy.js';
import { dropPrefix } from './drop-prefix.js';

const url = new URL(redisUrl());
const prefix = `lsrlout:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
let proxy: TcpProxy;
let store: Store;

beforeAll(async () => {
  proxy = await startProxy({ host: url.hostname, port: Number(url.port || 6379) });
  store = createStore(
    redis({ url: `redis://127.0.0.1:${proxy.port}`, prefix, commandTimeoutMs: 2_000 }),
  );
});

afterAll(async () => {
  await store.close();
  await proxy.close();
  const { Redis } = await import('ioredis');
  const admin = new Redis(url.href);
  await dropPrefix(admin, prefix);
  await admin.quit();
});

it('a lost reply to consume is outcomeUnknown, and the units it took stay taken', async () => {
  const rl = store.rateLimiter('lostreply', { limit: 3, windowMs: 60_000 });
  expect((await rl.consume('k')).remaining).toBe(2);
  // The next call naming this limiter reaches Redis; its reply never comes back.
  const marked = new Set<number>();
  const remove = proxy.addRule((conn, chunk, direction) => {
    if (direction === 'toServer' && chunk.includes('lostreply')) marked.add(conn.id);
    if (direction === 'toClient' && marked.has(conn.id)) {
      marked.clear();
      remove();
      return 'reset';
    }
    return 'forward';
  });
  await expect(rl.consume('k')).rejects.toMatchObject({
    code: 'BACKEND',
    outcomeUnknown: true,
  });
  // Nothing retried it: exactly the one unit the lost call took is gone.
  const after = await rl.peek('k');
  expect(after.remaining).toBe(1);
  expect((await rl.consume('k')).allowed).toBe(true);
  expect((await rl.consume('k')).allowed).toBe(false);
});
