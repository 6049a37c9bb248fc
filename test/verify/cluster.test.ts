/**
 * Verify on a real Redis Cluster: three primaries (redis-server with cluster-enabled, loopback
 * ports, this file's own) given the slot ranges 0-5460, 5461-10922 and 10923-16383 and joined with
 * CLUSTER MEET, reached through an ioredis `Cluster` client. The workloads pass, and still pass
 * while the run's connections to every node are killed (CLIENT KILL) and nodes are paused (CLIENT
 * PAUSE); the bank's accounts share a hash tag (`redis({ hashTag })`), since one atomic transfer
 * needs one slot, and without it the transfers are refused with a ValidationError naming the
 * slots, never run half.
 */
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redis } from '../../src/backends/redis/index.js';
import { createStore } from '../../src/store/store.js';
import { connectionTag, serverNemesis } from '../../src/verify/admin-faults.js';
import { runVerify } from '../../src/verify/run.js';
import { type RedisServer, startRedis } from '../support/servers.js';

const RANGES = [
  [0, 5460],
  [5461, 10922],
  [10923, 16383],
] as const;
let nodes: RedisServer[] = [];

beforeAll(async () => {
  nodes = await Promise.all(
    RANGES.map(() =>
      startRedis({
        args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'],
      }),
    ),
  );
  const admins = nodes.map((n) => new Redis(n.url));
  try {
    for (const [i, a] of admins.entries()) {
      const [from, to] = RANGES[i] as readonly [number, number];
      await a.call('CLUSTER', 'ADDSLOTSRANGE', String(from), String(to));
    }
    for (const n of nodes.slice(1)) {
      await admins[0]?.call('CLUSTER', 'MEET', '127.0.0.1', String(n.port));
    }
    // Hang guard: the nodes agree within a few seconds.
    for (let i = 0; i < 300; i++) {
      const states = await Promise.all(admins.map((a) => a.call('CLUSTER', 'INFO')));
      if (states.every((s) => /cluster_state:ok/.test(String(s)))) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    for (const a of admins) a.disconnect();
  }
});
afterAll(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
});

function cluster(tag: string): Cluster {
  const c = new Cluster(
    nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
    { redisOptions: { connectionName: tag } },
  );
  c.on('error', () => {});
  return c;
}

const bankTogether = (model: string, key: string) =>
  model === 'vacct' ? 'bank' : `${model}:${key}`;

describe('verify on a 3-primary Redis Cluster', () => {
  it('passes every workload, the documents spread over the nodes', async () => {
    const client = cluster(connectionTag('c1'));
    const store = createStore(redis({ client, prefix: 'vc1', hashTag: bankTogether }));
    try {
      const r = await runVerify(store, { durationMs: 2000, clients: 3 });
      expect(r.workloads.map((w) => [w.name, w.verdict, w.anomalies])).toEqual([
        ['register', 'pass', []],
        ['counter', 'pass', []],
        ['bank', 'pass', []],
        ['mutex', 'pass', []],
      ]);
      for (const w of r.workloads) expect(w.ops.ok).toBeGreaterThan(5);
      const sizes = await Promise.all(
        nodes.map(async (n) => {
          const a = new Redis(n.url);
          try {
            return Number(await a.dbsize());
          } finally {
            a.disconnect();
          }
        }),
      );
      expect(sizes.filter((s) => s > 0).length).toBeGreaterThan(1);
    } finally {
      await store.close();
      client.disconnect();
    }
  });

  it("passes while the run's connections are killed and nodes paused", async () => {
    const tag = connectionTag('c2');
    const client = cluster(tag);
    const store = createStore(
      redis({ client, prefix: 'vc2', hashTag: bankTogether, commandTimeoutMs: 5000 }),
    );
    const nemeses = await Promise.all(nodes.map((n) => serverNemesis(n.url, tag)));
    const stop = new AbortController();
    const injected: Record<string, number> = {};
    const faults = (async () => {
      for (let i = 0; !stop.signal.aborted; i++) {
        await new Promise((r) => setTimeout(r, 250));
        if (stop.signal.aborted) break;
        const f = await nemeses[i % 3]?.inject(i % 2 ? 'client-pause' : 'client-kill', Math.random);
        if (f?.touched) injected[f.kind] = (injected[f.kind] ?? 0) + 1;
      }
    })();
    try {
      const r = await runVerify(store, {
        durationMs: 2500,
        clients: 3,
        onClientsDone: () => stop.abort(),
      });
      expect(r.workloads.flatMap((w) => w.anomalies)).toEqual([]);
      expect(r.verdict).toBe('pass');
      expect(injected['client-kill']).toBeGreaterThan(0);
      expect(injected['client-pause']).toBeGreaterThan(0);
    } finally {
      stop.abort();
      await faults;
      for (const n of nemeses) await n.close();
      await store.close();
      client.disconnect();
    }
  });

  it('refuses a transfer across slots without a shared hash tag (nothing written)', async () => {
    const client = cluster(connectionTag('c3'));
    const store = createStore(redis({ client, prefix: 'vc3' }));
    try {
      const r = await runVerify(store, { durationMs: 800, clients: 2, workloads: ['bank'] });
      const bank = r.workloads[0];
      expect(bank?.verdict).toBe('pass'); // the invariant holds: nothing moved
      const errors = new Set(r.history.map((o) => o.error?.split(':')[0]));
      expect([...errors].filter((e) => e !== undefined)).toEqual(['ValidationError']);
      expect(r.history.some((o) => /different Redis Cluster slots/.test(o.error ?? ''))).toBe(true);
    } finally {
      await store.close();
      client.disconnect();
    }
  });
});
