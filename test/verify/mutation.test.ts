/**
 * The mutation mode: the workloads run against the real memory store and pass, then against a
 * store with a planted bug (a read-then-write increment, a lease commit that skips the fence
 * check, a write that landed reported as refused) and each bug must be caught.
 */
import { describe, expect, it } from 'vitest';
import { memory } from '../../src/backends/memory/index.js';
import type { Backend } from '../../src/store/backend.js';
import { createStore } from '../../src/store/store.js';
import { type PlantedBug, plantBug } from '../../src/verify/mutants.js';
import { runVerify } from '../../src/verify/run.js';

async function run(bug?: PlantedBug) {
  const store = createStore(plantBug(memory(), bug));
  try {
    return await runVerify(store, { durationMs: 1200, seed: 7, ...(bug ? { bug } : {}) });
  } finally {
    await store.close();
  }
}

const kinds = (r: Awaited<ReturnType<typeof run>>, name: string) =>
  Object.keys(r.workloads.find((w) => w.name === name)?.anomalyCounts ?? {}).sort();

describe('verify on the memory store', () => {
  it('the real store passes every workload', async () => {
    const r = await run();
    expect(r.workloads.map((w) => [w.name, w.verdict, w.anomalies])).toEqual([
      ['register', 'pass', []],
      ['counter', 'pass', []],
      ['bank', 'pass', []],
      ['mutex', 'pass', []],
    ]);
    // Every workload did real work, and the stalled lock holders were refused.
    for (const w of r.workloads) expect(w.ops.ok).toBeGreaterThan(10);
    expect(r.workloads.find((w) => w.name === 'mutex')?.ops.fail).toBeGreaterThan(0);
    expect(r.ops.pending).toBe(0);
  });

  it('catches a read-then-write increment', async () => {
    const r = await run('read-then-write-increment');
    expect(r.verdict).toBe('fail');
    expect(kinds(r, 'counter')).toEqual(['counter-duplicate', 'counter-range', 'linearizability']);
  });

  it('catches a lease commit that skips the fence check', async () => {
    const r = await run('commit-ignores-fence');
    expect(r.verdict).toBe('fail');
    expect(kinds(r, 'mutex')).toContain('mutex-overlap');
  });

  it('catches writes that landed reported as refused', async () => {
    const r = await run('fail-but-landed');
    expect(r.verdict).toBe('fail');
    expect(kinds(r, 'register')).toEqual(['linearizability']);
    expect(kinds(r, 'counter')).toContain('counter-range');
  });
});

describe('an operation that never returns', () => {
  it('is left pending (checked as info) and the run ends', async () => {
    const inner = memory();
    let hung = 0;
    // The 50th counter write never answers (after it landed: the worst case for the checks).
    const backend: Backend = {
      ...inner,
      name: inner.name,
      namespace: inner.namespace,
      supports: inner.supports,
      read: (refs) => inner.read(refs),
      acquire: (r) => inner.acquire(r),
      consume: (cs, writes, o) => inner.consume(cs, writes, o),
      resetLimit: (ref) => inner.resetLimit(ref),
      close: () => inner.close(),
      write: async (writes, o) => {
        const r = await inner.write(writes, o);
        if (writes[0]?.model === 'vcnt' && writes[0].kind === 'patch' && ++hung === 50) {
          return new Promise<never>(() => {});
        }
        return r;
      },
    };
    const store = createStore(backend);
    try {
      const r = await runVerify(store, { durationMs: 600, hangMs: 300, workloads: ['counter'] });
      expect(r.ops.pending).toBe(1);
      expect(r.verdict).toBe('pass');
    } finally {
      await store.close();
    }
  });
});
