/**
 * The Lockstep conformance suite: ONE suite every backend must pass unchanged (like
 * abstract-level's shared tests). It proves SPEC's guarantees through the public store API
 * (`createStore(backend)`, models, `store.apply`) and, where only the contract can show it
 * (fencing tokens, abandoned leases), through the Backend contract itself.
 *
 * ## Contract for runners
 *
 * A runner is a `test/conformance/<backend>.test.ts` file that calls
 * `conformance(name, makeTarget)` once, at top level:
 *
 * ```ts
 * import { conformance } from './suite.js';
 * conformance('redis', async () => {
 *   const prefix = `lsconf:${process.pid}:${Date.now()}:`;
 *   const opened: Backend[] = [];
 *   return {
 *     // A NEW backend instance on the SAME data space each call: another connection or
 *     // "process". The suite calls it twice (client 0 and client 1) and once more in the
 *     // final close test. Memory may return one shared instance.
 *     open: async () => { const b = redis({ url: process.env.REDIS_URL, prefix }); opened.push(b); return b; },
 *     // Drop everything this target created (keys under the prefix / the schema). Called once,
 *     // in afterAll, after the suite closed every store it opened.
 *     cleanup: async () => { ... },
 *     // What the backend can do is read from the backend itself (`backend.supports`), never
 *     // from its name: e.g. nested locks in opposite orders end in DeadlockError when
 *     // `supports.inProcessDeadlocks`, else the suite expects LockTimeoutError.
 *   };
 * });
 * ```
 *
 * What the suite does with a target:
 * - `makeTarget()` runs once, in `beforeAll`; then `open()` twice; each backend is wrapped in
 *   its own store (`createStore(backend)`): client 0 and client 1. Tests spread concurrent
 *   tasks over both clients, so two instances race on the same keys like two processes.
 * - Every test uses its own model names (`<prefix>_<run id>_<n>`, valid model names), so tests
 *   never see each other's data, and two runs on one server do not collide. The target's own
 *   isolation (key prefix, schema) is still required for `cleanup()`.
 * - The last test closes both stores (`store.close()` must resolve; closing a store twice, or
 *   two stores over one shared instance, must resolve too) and opens/closes one more instance.
 *   After the suite nothing may keep the process alive: no timers, sockets or listeners.
 * - Timing: leases of 150-200 ms and lock timeouts of 50-300 ms are used; nothing asserts a
 *   duration, but hang guards fail a test that does not settle within 20-30 s.
 * - The whole suite should run in well under a minute per backend.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Backend } from './api.js';
import { createStore } from './api.js';
import type { ConformanceTarget, Ctx, Store } from './harness.js';
import { deferred, noHang, uniqueName } from './harness.js';
import { batchesSection } from './sections/batches.js';
import { boundarySection } from './sections/boundary.js';
import { contractSection } from './sections/contract.js';
import { dataSection } from './sections/data.js';
import { expiringSection } from './sections/expiring.js';
import { inputSection } from './sections/input.js';
import { lockContextSection } from './sections/lock-context.js';
import { locksSection } from './sections/locks.js';
import { modelSection } from './sections/model.js';
import { namedLocksSection } from './sections/named-locks.js';
import { queuesSection } from './sections/queues.js';
import { racesSection } from './sections/races.js';
import { rateLimitsSection } from './sections/rate-limits.js';
import { refusalsSection } from './sections/refusals.js';

export type { ConformanceTarget } from './harness.js';

/**
 * Registers the conformance suite for one backend: `describe('conformance: <name>')` with every
 * section. Call it once from a runner file.
 *
 * @example
 * ```ts
 * import { memory } from './api.js';
 * import { conformance } from './suite.js';
 * conformance('memory', async () => {
 *   const b = memory();
 *   return { open: async () => b, cleanup: async () => {} };
 * });
 * ```
 */
export function conformance(name: string, makeTarget: () => Promise<ConformanceTarget>): void {
  describe(`conformance: ${name}`, () => {
    let target: ConformanceTarget | undefined;
    const backends: Backend[] = [];
    const stores: Store[] = [];
    let closed = false;

    beforeAll(async () => {
      target = await makeTarget();
      for (let i = 0; i < 2; i++) {
        const b = await target.open();
        backends.push(b);
        stores.push(createStore(b));
      }
    });

    afterAll(async () => {
      try {
        if (!closed) for (const s of stores) await s.close();
      } finally {
        await target?.cleanup();
      }
    });

    const ctx: Ctx = {
      target: () => {
        if (!target) throw new Error('conformance: target not ready (beforeAll failed?)');
        return target;
      },
      client: (i) => {
        const s = stores[i % 2];
        if (!s) throw new Error('conformance: clients not open (beforeAll failed?)');
        return s;
      },
      backend: (i) => {
        const b = backends[i % 2];
        if (!b) throw new Error('conformance: clients not open (beforeAll failed?)');
        return b;
      },
      name: uniqueName,
    };

    dataSection(ctx);
    inputSection(ctx);
    racesSection(ctx);
    locksSection(ctx);
    contractSection(ctx);
    modelSection(ctx);
    lockContextSection(ctx);
    batchesSection(ctx);
    refusalsSection(ctx);
    boundarySection(ctx);
    rateLimitsSection(ctx);
    expiringSection(ctx);
    namedLocksSection(ctx);
    queuesSection(ctx);

    describe('nothing leaks', () => {
      it('close() resolves for every store (twice too), and a fresh instance opens and closes', async () => {
        // a fresh instance used briefly, including a renewing lease and a timed-out waiter
        const extra = createStore(await ctx.target().open());
        const M = extra.model(uniqueName('close'), z.object({ n: z.number() }));
        await M.create('k', { n: 0 });
        const inside = deferred();
        const waited = deferred();
        const holder = M.lock('k', async (d) => {
          inside.resolve();
          await waited.promise;
          d.n = 1;
        });
        await inside.promise;
        // a waiter from another flow times out while the lease renews
        await expect(
          M.lock('k', () => 0, { timeoutMs: 20, action: 'default' }),
        ).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
        waited.resolve();
        await holder;
        expect((await M.get('k')).data.n).toBe(1);
        await noHang(extra.close(), 'extra store close');
        closed = true;
        for (const s of stores) await noHang(s.close(), 'store close');
        for (const s of stores) await noHang(s.close(), 'second store close');
      });
    });
  });
}
