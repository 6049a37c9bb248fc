/**
 * A session terminated the moment it is ready (an administrator's pg_terminate_backend, a
 * failover) must not crash the process. The server's FATAL "terminating connection due to
 * administrator command" can arrive in the same TCP read as the ReadyForQuery that completes
 * the pool's connect: pg-pool then hands the client over and the error is emitted in that same
 * read, before whoever asked for the client could listen, which was an unhandled 'error' event
 * that killed the process (found by `lab verify --faults admin` on PostgreSQL, 3 runs in 4).
 * Here the proxy appends that FATAL to the first ReadyForQuery of every connection; the write
 * is refused or retried on another connection, and the process lives.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgres } from '../../../src/backends/postgres/index.js';
import type { StandardSchemaV1 } from '../../../src/store/schema.js';
import { createStore } from '../../../src/store/store.js';
import { type PostgresServer, startPostgres } from '../../support/servers.js';
import { startProxy, type TcpProxy } from '../../support/tcp-proxy.js';

/** An ErrorResponse: FATAL 57P01, as the server sends it to a terminated session. */
function terminated(): Buffer {
  const fields = Buffer.concat([
    ...[
      ['S', 'FATAL'],
      ['V', 'FATAL'],
      ['C', '57P01'],
      ['M', 'terminating connection due to administrator command'],
    ].map(([k, v]) => Buffer.from(`${k}${v}\0`)),
    Buffer.from([0]),
  ]);
  const head = Buffer.alloc(5);
  head.write('E', 0);
  head.writeInt32BE(fields.length + 4, 1);
  return Buffer.concat([head, fields]);
}

/** The chunk ends with ReadyForQuery ('Z', length 5, status). */
const endsReady = (b: Buffer) =>
  b.length >= 6 && b[b.length - 6] === 0x5a && b.readInt32BE(b.length - 5) === 5;

let server: PostgresServer;
let proxy: TcpProxy;
beforeAll(async () => {
  server = await startPostgres();
  proxy = await startProxy({ port: server.port });
});
afterAll(async () => {
  await proxy?.close();
  await server?.stop();
});

describe('a session terminated as it becomes ready', () => {
  it('does not crash the process; the store answers on the next connection', async () => {
    const hit = new Set<number>();
    let armed = false;
    let injected = 0;
    const removeRule = proxy.addRule((conn, chunk, direction) => {
      if (!armed || direction !== 'toClient' || hit.has(conn.id) || !endsReady(chunk)) {
        return 'forward';
      }
      hit.add(conn.id);
      if (injected >= 3) return 'forward';
      injected++;
      // ReadyForQuery and the FATAL in one write, as the server's two messages can arrive.
      conn.client.write(Buffer.concat([chunk, terminated()]));
      setImmediate(() => conn.reset());
      return 'drop';
    });
    const url = `postgres://postgres@127.0.0.1:${proxy.port}/test`;
    const store = createStore(postgres({ url, schema: `term_${process.pid}`, poolSize: 2 }));
    try {
      const schema: StandardSchemaV1<{ n: number }, { n: number }> = {
        '~standard': {
          version: 1,
          vendor: 't',
          validate: (v: unknown) => ({ value: v as { n: number } }),
        },
      };
      const M = store.model('doc', schema);
      await M.put('a', { n: -1 }); // migrations and the document, on connections that live
      await proxy.resetAll(); // the pool's next connections are new ones
      armed = true;
      // Locks check a connection out (pool.connect): the first ones die as they become ready.
      let answered = false;
      for (let i = 0; i < 10 && !answered; i++) {
        answered = await M.lock('a', (d) => {
          d.n = i;
        }).then(
          () => true,
          (err: unknown) => {
            expect((err as Error).name).toMatch(/BackendError/);
            return false;
          },
        );
      }
      expect(injected).toBe(3);
      removeRule();
      expect(answered).toBe(true);
      expect((await M.get('a')).data.n).toBeGreaterThanOrEqual(0);
    } finally {
      removeRule();
      await store.close();
    }
  });
});
