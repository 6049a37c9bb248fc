/**
 * The lab's scenarios, run in-process on the memory backend: every safe strategy holds its
 * invariant with no error, and every unsafe strategy really shows its race (the lab's point is
 * that the unsafe ones lose, reliably). Several seeds and worker counts.
 */
import { describe, expect, it } from 'vitest';
import { newRunId, openBackend } from '../../src/lab/backends.js';
import { runLab } from '../../src/lab/lab.js';
import { createProgress } from '../../src/lab/progress.js';
import { scenarioNames } from '../../src/lab/scenarios/index.js';

const quiet = createProgress({ quiet: true, stream: { isTTY: false } as NodeJS.WriteStream });

describe.each([
  { seed: 1, workers: 8 },
  { seed: 2, workers: 3 },
])('memory backend, seed $seed, $workers workers', ({ seed, workers }) => {
  it.each(scenarioNames)('%s: safe strategies hold, unsafe ones lose', async (name) => {
    const backend = await openBackend('memory', newRunId());
    try {
      const report = await runLab(
        backend,
        { scenarios: [name], workers, seed, quick: true, budgetMs: 10_000, ioMs: 1 },
        quiet,
      );
      const scenario = report.scenarios[0];
      expect(scenario?.name).toBe(name);
      for (const s of scenario?.strategies ?? []) {
        if (s.safe) {
          expect(s, `${name}/${s.name}`).toMatchObject({ violations: 0, errors: 0, held: true });
          expect(s.completed).toBeGreaterThan(0);
        } else {
          expect(s.violations, `${name}/${s.name} must show the race`).toBeGreaterThan(0);
        }
      }
      expect(report.passed).toBe(true);
    } finally {
      await backend.cleanup();
    }
  });
});

describe('bank nested-locks on memory', () => {
  it('reports deadlocks instead of hanging, and conserves money', async () => {
    const backend = await openBackend('memory', newRunId());
    try {
      const report = await runLab(
        backend,
        {
          scenarios: ['bank'],
          workers: 8,
          ops: 400,
          seed: 3,
          quick: false,
          budgetMs: 20_000,
          ioMs: 1,
        },
        quiet,
      );
      const nested = report.scenarios[0]?.strategies.find((s) => s.name === 'nested-locks');
      expect(nested?.deadlocks).toBeGreaterThan(0);
      expect(nested?.violations).toBe(0);
      expect(nested?.completed).toBeGreaterThan(0);
    } finally {
      await backend.cleanup();
    }
  });
});
