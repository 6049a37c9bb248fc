/**
 * The server nemesis on servers of this file's own (startRedis / startPostgres): `client-kill`
 * ends exactly the connections named with the run's tag (another client of the same server
 * keeps its connection), `client-pause` pauses the server, `terminate-backend` ends the run's
 * sessions and no one else's, and a run with nothing of its own connected touches nothing.
 */
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectionTag, serverNemesis, tagServerUrl } from '../../src/verify/admin-faults.js';
import {
  type PostgresServer,
  type RedisServer,
  startPostgres,
  startRedis,
} from '../support/servers.js';

let redisServer: RedisServer;
let pgServer: PostgresServer;
beforeAll(async () => {
  [redisServer, pgServer] = await Promise.all([startRedis(), startPostgres()]);
});
afterAll(async () => {
  await Promise.all([redisServer?.stop(), pgServer?.stop()]);
});

const clientId = async (c: Redis) => Number(await c.call('CLIENT', 'ID'));

describe('the Redis nemesis', () => {
  it("kills the run's connections only, and pauses the server", async () => {
    const tag = connectionTag('t1');
    const url = tagServerUrl(redisServer.url, tag);
    const ours = [new Redis(url), new Redis(url)];
    const other = new Redis(redisServer.url, { connectionName: 'someone-else' });
    for (const c of [...ours, other]) c.on('error', () => {});
    const nemesis = await serverNemesis(redisServer.url, tag);
    try {
      const before = await Promise.all([...ours, other].map(clientId));
      const kill = await nemesis.inject('client-kill', () => 0.5);
      expect(kill).toEqual({ kind: 'client-kill', detail: { killed: 2 }, touched: true });
      // Ours reconnect (new client ids); the other one was never touched (same id).
      const after = await Promise.all([...ours, other].map(clientId));
      expect(after[0]).not.toBe(before[0]);
      expect(after[1]).not.toBe(before[1]);
      expect(after[2]).toBe(before[2]);
      const pause = await nemesis.inject('client-pause', () => 0);
      expect(pause).toEqual({ kind: 'client-pause', detail: { ms: 200 }, touched: true });
      expect(await other.ping()).toBe('PONG'); // answered once the pause is over
    } finally {
      await nemesis.close();
      for (const c of [...ours, other]) c.disconnect();
    }
  });

  it('touches nothing when none of the run’s connections is open', async () => {
    const other = new Redis(redisServer.url, { connectionName: 'someone-else' });
    const nemesis = await serverNemesis(redisServer.url, connectionTag('t2'));
    try {
      const id = await clientId(other);
      expect(await nemesis.inject('client-kill', Math.random)).toEqual({
        kind: 'client-kill',
        detail: { killed: 0 },
        touched: false,
      });
      expect(await clientId(other)).toBe(id);
    } finally {
      await nemesis.close();
      other.disconnect();
    }
  });
});

describe('the PostgreSQL nemesis', () => {
  it("terminates the run's sessions only", async () => {
    const tag = connectionTag('t3');
    const url = tagServerUrl(pgServer.url, tag);
    const ours = [
      new pg.Client({ connectionString: url }),
      new pg.Client({ connectionString: url }),
    ];
    const other = new pg.Client({ connectionString: pgServer.url, application_name: 'someone' });
    for (const c of [...ours, other]) {
      c.on('error', () => {});
      await c.connect();
    }
    const nemesis = await serverNemesis(pgServer.url, tag);
    try {
      // random() < 0.5: every session of the run.
      const r = await nemesis.inject('terminate-backend', () => 0.1);
      expect(r).toEqual({
        kind: 'terminate-backend',
        detail: { terminated: 2, all: true },
        touched: true,
      });
      for (const c of ours) await expect(c.query('SELECT 1')).rejects.toThrow();
      expect((await other.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      // Nothing of the run is left to terminate.
      expect((await nemesis.inject('terminate-backend', () => 0.9)).touched).toBe(false);
    } finally {
      await nemesis.close();
      for (const c of [...ours, other]) await c.end().catch(() => {});
    }
  });

  it('has no Redis faults', async () => {
    const nemesis = await serverNemesis(pgServer.url, connectionTag('t4'));
    try {
      expect(nemesis.kinds).toEqual(['terminate-backend']);
      await expect(nemesis.inject('client-pause', Math.random)).rejects.toThrow(/no client-pause/);
    } finally {
      await nemesis.close();
    }
  });
});
