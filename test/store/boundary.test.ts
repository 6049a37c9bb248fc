/**
 * The boundary's own bookkeeping: the wait-for graph is empty once a store is closed, even with a
 * lease its caller never committed or released (the backend ends it at close).
 */
import { describe, expect, it } from 'vitest';
import { memory } from '../../src/backends/memory/index.js';
import { createStore } from '../../src/store/index.js';
import { runAsTask } from '../../src/sync/deadlock.js';
import { trackedLocks } from '../../src/sync/tracked-leases.js';

describe('the boundary', () => {
  it('takes a lease left open out of the wait-for graph when the store closes', async () => {
    const store = createStore(memory());
    await store.backend.write([{ kind: 'create', model: 'c', key: 'k', data: { n: 0 } }]);
    const before = trackedLocks();
    await runAsTask(async () => {
      const lease = await store.backend.acquire({
        model: 'c',
        keys: ['k'],
        action: 'default',
        mode: 'exclusive',
        leaseMs: 30_000,
        renew: true,
        nowait: false,
        skipLocked: false,
      });
      expect(lease).toBeDefined();
    });
    expect(trackedLocks()).toBe(before + 1);
    await store.close();
    expect(trackedLocks()).toBe(before);
  });
});
