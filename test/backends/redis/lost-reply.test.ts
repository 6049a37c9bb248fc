/**
 * A commit's reply lost on the way back (the connection drops after Redis ran it), injected with
 * a small TCP proxy in front of a real Redis. The committer gets BackendError with
 * `outcomeUnknown`; a waiter of the same process that the commit handed the lease to (the grant
 * was in that lost reply) still gets it, once the connection is back, well before its fallback
 * timer (5 s; it waits at most 2 s here), with the committed write visible.
 */
import net from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { redis } from '../../../src/backends/redis/index.js';
import { KeyLayout } from '../../../src/backends/redis/keys.js';
import type { Backend, LeaseRequest } from '../../../src/store/backend.js';
import { redisUrl } from '../../support/env.js';
import { dropPrefix } from './drop-prefix.js';

// The run's Redis: the proxy cuts only this file's own connections.
const url = new URL(redisUrl());
const prefix = `lslost:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;

/**
 * Forwards TCP both ways; once armed with a marker, forwards the next client chunk that contains
 * it, then cuts that connection (both sides) as soon as the server starts answering.
 */
class CuttingProxy {
  readonly server: net.Server;
  #marker: string | undefined;
  cuts = 0;

  constructor() {
    this.server = net.createServer((client) => {
      const upstream = net.connect(Number(url.port || 6379), url.hostname);
      let cutting = false;
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('data', (chunk: Buffer) => {
        if (this.#marker !== undefined && chunk.includes(this.#marker)) {
          this.#marker = undefined;
          cutting = true;
        }
        upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => {
        if (cutting) {
          this.cuts += 1;
          close();
          return;
        }
        client.write(chunk);
      });
      client.on('error', close);
      upstream.on('error', close);
      client.on('close', close);
      upstream.on('close', close);
    });
  }

  arm(marker: string): void {
    this.#marker = marker;
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.address() as net.AddressInfo).port;
  }
}

let admin: Redis;
let proxy: CuttingProxy;
let b: Backend;

beforeAll(async () => {
  admin = new Redis(url.href);
  proxy = new CuttingProxy();
  const port = await proxy.listen();
  // A lost reply surfaces only when the command times out (ioredis does not fail the commands in
  // flight when a connection drops): 2.5 s here, after the waiter's own 2 s timeout, so the waiter
  // can only be saved by the re-check that follows the reconnect.
  b = redis({ url: `redis://127.0.0.1:${port}`, prefix, commandTimeoutMs: 2_500 });
});

afterAll(async () => {
  await b.close();
  await new Promise<void>((resolve) => proxy.server.close(() => resolve()));
  await dropPrefix(admin, prefix);
  await admin.quit();
});

const lease = (model: string, extra: Partial<LeaseRequest> = {}): LeaseRequest => ({
  model,
  keys: ['k'],
  action: 'default',
  mode: 'exclusive',
  leaseMs: 60_000,
  renew: true,
  nowait: false,
  skipLocked: false,
  ...extra,
});

it('a waiter granted by a commit whose reply was lost still gets the lease', async () => {
  const m = 'lost';
  await b.write([{ kind: 'create', model: m, key: 'k', data: { n: 0 } }]);
  const holder = await b.acquire(lease(m));
  const waiting = b.acquire(lease(m, { timeoutMs: 2_000 }));
  const layout = new KeyLayout(prefix);
  const queue = layout.lease(layout.doc(m, 'k'), 'default').queue;
  for (let i = 0; i < 500 && (await admin.llen(queue)) < 1; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  expect(await admin.llen(queue)).toBe(1);
  proxy.arm('_commit');
  const committing = holder?.commit([
    { kind: 'patch', model: m, key: 'k', ops: [{ op: 'incr', field: 'n', by: 1 }] },
  ]);
  // It fails as soon as the connection closes, maybe before we look at it below.
  committing?.catch(() => {});
  // The commit ran in Redis and handed the lease to the waiter; its grant was in the lost reply.
  const next = await waiting;
  expect(proxy.cuts).toBe(1);
  await expect(committing).rejects.toMatchObject({ code: 'BACKEND', outcomeUnknown: true });
  expect(next?.docs[0]?.data).toEqual({ n: 1 });
  expect(next?.fences[0]).toBeGreaterThan(holder?.fences[0] as number);
  await next?.release();
  expect(await admin.exists(queue)).toBe(0);
});
