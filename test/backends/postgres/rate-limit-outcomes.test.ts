/**
 * A consumption whose reply is lost (the connection drops after PostgreSQL ran the statement),
 * injected with the TCP proxy in front of the run's server (only this file's connections go
 * through it): alone, and with a batch in its transaction (the reply to the final COMMIT lost).
 * `consume` / `store.apply` reject with BackendError `outcomeUnknown` — never a refusal, never
 * a retry — and what the lost call took stays taken: the limit is never exceeded because of it.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { z } from 'zod';
import { postgres } from '../../../src/backends/postgres/index.js';
import { createStore, type Store } from '../../../src/index.js';
import { databaseUrl, uniquePrefix } from '../../support/env.js';
import { startProxy, type TcpProxy } from '../../support/tcp-proxy.js';

const url = databaseUrl();
const schema = uniquePrefix('lsrlout', '_');
let proxy: TcpProxy;
let store: Store;

beforeAll(async () => {
  const u = new URL(url);
  proxy = await startProxy({ host: u.hostname, port: Number(u.port || 5432) });
  u.hostname = '127.0.0.1';
  u.port = String(proxy.port);
  // Unprepared statements: every call carries its SQL, which is what the proxy's rule matches.
  store = createStore(postgres({ url: u.toString(), schema, poolSize: 4, prepare: false }));
});

afterAll(async () => {
  await store.close();
  await proxy.close();
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.end();
});

it('a lost reply to a lone consume is outcomeUnknown, and the unit it took stays taken', async () => {
  const rl = store.rateLimiter('lone', { limit: 3, windowMs: 60_000 });
  expect((await rl.consume('k')).remaining).toBe(2);
  const cut = proxy.dropReplyTo(/lockstep\$consume/, 1);
  await expect(rl.consume('k')).rejects.toMatchObject({ code: 'BACKEND', outcomeUnknown: true });
  await cut.dropped;
  expect((await rl.peek('k')).remaining).toBe(1);
  expect((await rl.consume('k')).allowed).toBe(true);
  expect((await rl.consume('k')).allowed).toBe(false);
});

it('a lost reply to the COMMIT of consumeOp + a write is outcomeUnknown; both landed', async () => {
  const M = store.model('acct', z.object({ n: z.number().int() }));
  const rl = store.rateLimiter('withbatch', { limit: 2, windowMs: 60_000 });
  await M.create('a', { n: 0 });
  const cut = proxy.dropReplyTo(/COMMIT/, 1);
  await expect(
    store.apply([rl.consumeOp('k'), M.ops('a', (d) => d.n.incr(1))]),
  ).rejects.toMatchObject({ code: 'BACKEND', outcomeUnknown: true });
  await cut.dropped;
  // Both or neither: here both (the COMMIT ran), and nothing was sent twice.
  expect((await M.get('a')).data.n).toBe(1);
  expect((await rl.peek('k')).remaining).toBe(1);
});
