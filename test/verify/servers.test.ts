/**
 * Verify on the real Redis and PostgreSQL backends, each on a throwaway server of its own
 * (test/support/servers.ts), through the lab's backend opener: the workloads pass, and still
 * pass while this run's connections are reset through its fault proxy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newRunId, openBackend } from '../../src/lab/backends.js';
import { resetPeriodically, startFaultProxy } from '../../src/verify/nemesis.js';
import { runVerify } from '../../src/verify/run.js';
import { startPostgres, startRedis } from '../support/servers.js';

const servers: { url: string; stop(): Promise<void> }[] = [];
const urls: Record<'redis' | 'postgres', string> = { redis: '', postgres: '' };
beforeAll(async () => {
  const [r, p] = await Promise.all([startRedis(), startPostgres()]);
  servers.push(r, p);
  urls.redis = r.url;
  urls.postgres = p.url;
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

describe.each(['redis', 'postgres'] as const)('verify on %s', (name) => {
  it('the real store passes every workload', async () => {
    const backend = await openBackend(urls[name], newRunId(), { workers: 16 });
    try {
      const r = await runVerify(backend.store, { durationMs: 1500, clients: 3 });
      expect(r.workloads.map((w) => [w.name, w.verdict, w.anomalies])).toEqual([
        ['register', 'pass', []],
        ['counter', 'pass', []],
        ['bank', 'pass', []],
        ['mutex', 'pass', []],
      ]);
      for (const w of r.workloads) expect(w.ops.ok).toBeGreaterThan(5);
    } finally {
      await backend.cleanup();
    }
  });

  it('passes while its own connections are reset', async () => {
    const url = urls[name];
    const target = new URL(url);
    const proxy = await startFaultProxy({
      host: target.hostname,
      port: Number(target.port || (target.protocol === 'redis:' ? 6379 : 5432)),
    });
    const viaProxy = new URL(url);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    const backend = await openBackend(viaProxy.href, newRunId(), { workers: 16 });
    const nemesis = new AbortController();
    const resets = resetPeriodically(proxy, { minMs: 200, maxMs: 600, signal: nemesis.signal });
    try {
      const r = await runVerify(backend.store, {
        durationMs: 2500,
        clients: 3,
        onClientsDone: () => nemesis.abort(),
      });
      const anomalies = r.workloads.flatMap((w) => w.anomalies);
      expect(anomalies).toEqual([]);
      expect(r.verdict).toBe('pass');
      expect(await resets).toBeGreaterThan(0);
    } finally {
      nemesis.abort();
      await resets;
      await backend.cleanup();
      await proxy.close();
    }
  });
});
