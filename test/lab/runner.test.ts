/**
 * The lab's load driver and helpers: every operation index is handed out exactly once across
 * concurrent workers, failures are counted (not thrown), the time budget stops new operations,
 * and an operation that never settles is abandoned as hung instead of hanging the lab.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { drive } from '../../src/lab/runner.js';
import { createRng, mapConcurrent, percentile } from '../../src/lab/util.js';

describe('drive', () => {
  it('hands out each index exactly once, whatever the interleaving', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 25 }),
        async (s, workers, ops) => {
          const seen: number[] = [];
          const run = drive({ workers, ops, budgetMs: 60_000 }, async (i) => {
            await s.schedule(Promise.resolve(), `op ${i}`);
            seen.push(i);
            return i % 5 === 0 ? 'skipped' : undefined;
          });
          await s.waitFor(run);
          const r = await run;
          expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: ops }, (_, i) => i));
          expect(r.completed + r.skipped).toBe(ops);
          expect(r.latencies).toHaveLength(ops);
          expect(r.errors).toBe(0);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('counts thrown errors and keeps the first message', async () => {
    const r = await drive({ workers: 3, ops: 10, budgetMs: 60_000 }, async (i) => {
      if (i % 2 === 1) throw new Error(`boom ${i}`);
      return undefined;
    });
    expect(r.completed).toBe(5);
    expect(r.errors).toBe(5);
    expect(r.firstError).toMatch(/^boom \d$/);
  });

  it('stops starting operations once the budget is spent, and stops when done() says so', async () => {
    const r = await drive({ workers: 2, ops: 1_000_000, budgetMs: 30 }, async () => {
      await new Promise((resolve) => setTimeout(resolve, 2));
      return undefined;
    });
    expect(r.completed).toBeGreaterThan(0);
    expect(r.completed).toBeLessThan(1_000_000);
    let n = 0;
    const d = await drive(
      { workers: 4, ops: 100, budgetMs: 60_000, done: () => n >= 7 },
      async () => {
        n++;
        await Promise.resolve();
        return undefined;
      },
    );
    expect(d.completed).toBeLessThan(100);
  });

  it('abandons an operation that never settles, as a hung error, instead of hanging', async () => {
    const r = await drive({ workers: 2, ops: 10, budgetMs: 20, hangMs: 200 }, async (i) => {
      if (i === 3) await new Promise(() => {}); // never settles
      return undefined;
    });
    expect(r.errors).toBe(1);
    expect(r.firstError).toMatch(/hung/);
  });
});

describe('helpers', () => {
  it('createRng is deterministic per seed and stays in range', () => {
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: -50, max: 50 }), fc.nat(100), (seed, min, span) => {
        const a = createRng(seed);
        const b = createRng(seed);
        for (let i = 0; i < 20; i++) {
          const x = a.int(min, min + span);
          expect(x).toBe(b.int(min, min + span));
          expect(x).toBeGreaterThanOrEqual(min);
          expect(x).toBeLessThanOrEqual(min + span);
        }
      }),
    );
  });

  it('percentile uses nearest rank', () => {
    expect(percentile([], 99)).toBe(0);
    expect(percentile([5], 99)).toBe(5);
    const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(percentile(hundred, 99)).toBe(99);
    expect(percentile(hundred, 100)).toBe(100);
    expect(percentile([1, 2, 3, 4], 50)).toBe(2);
  });

  it('mapConcurrent keeps input order and never exceeds its concurrency', async () => {
    let running = 0;
    let peak = 0;
    const out = await mapConcurrent([5, 1, 4, 2, 3, 0, 6], 3, async (x) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((resolve) => setTimeout(resolve, x));
      running--;
      return x * 10;
    });
    expect(out).toEqual([50, 10, 40, 20, 30, 0, 60]);
    expect(peak).toBeLessThanOrEqual(3);
  });
});
