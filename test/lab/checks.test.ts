/**
 * The lab's invariant checkers must catch every kind of violation they claim to (lost update,
 * money created or destroyed, negative balance, overflow, duplicate, lost applicant, task done
 * twice or lost, torn read) and must pass a correct history. Property-based where it fits.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkBank,
  checkCampaign,
  checkCounter,
  checkLearner,
  checkQueue,
  isTorn,
  type Transfer,
} from '../../src/lab/checks.js';

describe('checkCounter', () => {
  it('holds exactly when the final value equals the acknowledged increments', () => {
    fc.assert(
      fc.property(fc.nat(10_000), fc.integer({ min: -50, max: 50 }), (acknowledged, delta) => {
        const v = checkCounter({ acknowledged, final: acknowledged + delta });
        expect(v.violations).toBe(Math.abs(delta));
      }),
    );
  });
  it('names lost updates', () => {
    expect(checkCounter({ acknowledged: 100, final: 73 }).note).toMatch(/27 lost updates/);
  });
});

const accounts = ['a', 'b', 'c', 'd'];
const transferArb = fc
  .record({
    from: fc.constantFrom(...accounts),
    to: fc.constantFrom(...accounts),
    amount: fc.integer({ min: 1, max: 30 }),
  })
  .filter((t) => t.from !== t.to);

/** Replays transfers like a correct bank would: refusing any that would overdraw. */
function replay(opening: Record<string, number>, transfers: Transfer[]) {
  const balances = { ...opening };
  const ledger: Transfer[] = [];
  for (const t of transfers) {
    if ((balances[t.from] ?? 0) < t.amount) continue;
    balances[t.from] = (balances[t.from] ?? 0) - t.amount;
    balances[t.to] = (balances[t.to] ?? 0) + t.amount;
    ledger.push(t);
  }
  return { balances, ledger };
}

describe('checkBank', () => {
  const opening = { a: 50, b: 50, c: 50, d: 50 };

  it('passes every correct history', () => {
    fc.assert(
      fc.property(fc.array(transferArb, { maxLength: 60 }), (transfers) => {
        const { balances, ledger } = replay(opening, transfers);
        expect(checkBank({ opening, transfers: ledger, final: balances }).violations).toBe(0);
      }),
    );
  });

  it('catches a lost write (money created or destroyed) anywhere', () => {
    fc.assert(
      fc.property(
        fc.array(transferArb, { maxLength: 60 }),
        fc.constantFrom(...accounts),
        fc.integer({ min: 1, max: 20 }),
        fc.boolean(),
        (transfers, victim, amount, up) => {
          const { balances, ledger } = replay(opening, transfers);
          const final = {
            ...balances,
            [victim]: (balances[victim] ?? 0) + (up ? amount : -amount),
          };
          expect(checkBank({ opening, transfers: ledger, final }).violations).toBeGreaterThan(0);
        },
      ),
    );
  });

  it('catches a transfer that was acknowledged but never written (the classic overwrite)', () => {
    const t = { from: 'a', to: 'b', amount: 10 };
    // both concurrent transfers read a=50, b=50; the second put overwrote the first
    const final = { a: 40, b: 60, c: 50, d: 50 };
    const v = checkBank({ opening, transfers: [t, t], final });
    expect(v.violations).toBe(2);
  });

  it('catches a negative balance even when the ledger says so (double spend)', () => {
    const ledger = [
      { from: 'a', to: 'b', amount: 40 },
      { from: 'a', to: 'c', amount: 40 },
    ];
    const final = { a: -30, b: 90, c: 90, d: 50 };
    const v = checkBank({ opening, transfers: ledger, final });
    expect(v.violations).toBe(1);
    expect(v.note).toMatch(/1 negative/);
  });

  it('catches a missing account', () => {
    const v = checkBank({ opening, transfers: [], final: { a: 50, b: 50, c: 50 } });
    expect(v.violations).toBe(1);
  });
});

describe('checkCampaign', () => {
  it('passes any set of distinct accepted users within the maximum', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.string({ minLength: 1 }), { maxLength: 20 }), (users) => {
        const v = checkCampaign({ max: 20, accepted: users, final: [...users].reverse() });
        expect(v.violations).toBe(0);
      }),
    );
  });
  it('counts overflow, duplicates and lost applicants', () => {
    expect(checkCampaign({ max: 2, accepted: [], final: ['a', 'b', 'c'] }).violations).toBe(1);
    expect(checkCampaign({ max: 5, accepted: [], final: ['a', 'a'] }).violations).toBe(1);
    expect(checkCampaign({ max: 5, accepted: ['a', 'b'], final: ['a'] }).violations).toBe(1);
    const all = checkCampaign({ max: 2, accepted: ['z'], final: ['a', 'a', 'b'] });
    expect(all.violations).toBe(3);
    expect(all.note).toMatch(/1 over the maximum, 1 duplicates, 1 acknowledged applicants missing/);
  });
  it('any duplicate or overflow is caught', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1 }), { minLength: 1, maxLength: 20 }),
        fc.nat(),
        (users, i) => {
          const dup = users[i % users.length] as string;
          expect(
            checkCampaign({ max: 100, accepted: users, final: [...users, dup] }).violations,
          ).toBeGreaterThan(0);
          expect(
            checkCampaign({ max: users.length - 1, accepted: users, final: users }).violations,
          ).toBeGreaterThan(0);
        },
      ),
    );
  });
});

describe('checkQueue', () => {
  const tasks = Array.from({ length: 20 }, (_, i) => `t${i}`);
  it('passes when each task is processed once or still queued', () => {
    fc.assert(
      fc.property(fc.nat(20), (split) => {
        const v = checkQueue({
          tasks,
          processed: tasks.slice(0, split).reverse(),
          remaining: tasks.slice(split),
        });
        expect(v.violations).toBe(0);
      }),
    );
  });
  it('catches a task processed twice, a task lost, a task processed but still queued', () => {
    expect(checkQueue({ tasks, processed: [...tasks, 't3'], remaining: [] }).violations).toBe(1);
    expect(checkQueue({ tasks, processed: tasks.slice(1), remaining: [] }).violations).toBe(1);
    expect(checkQueue({ tasks, processed: tasks, remaining: ['t0'] }).violations).toBe(1);
    expect(checkQueue({ tasks, processed: [...tasks, 'ghost'], remaining: [] }).violations).toBe(1);
  });
});

describe('learner checks', () => {
  it('isTorn: consistent weights are not torn, any mixed generation is', () => {
    expect(isTorn([])).toBe(false);
    expect(
      isTorn([
        [3, 3],
        [3, 3],
      ]),
    ).toBe(false);
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 2, max: 8 }),
        fc.nat(),
        fc.nat(),
        (layers, width, li, wi) => {
          const w = Array.from({ length: layers }, () => new Array<number>(width).fill(7));
          expect(isTorn(w)).toBe(false);
          (w[li % layers] as number[])[wi % width] = 8;
          expect(isTorn(w)).toBe(true);
        },
      ),
    );
  });
  it('checkLearner counts torn predictions as violations', () => {
    expect(checkLearner({ predictions: 10, torn: 0 }).violations).toBe(0);
    expect(checkLearner({ predictions: 10, torn: 3 }).violations).toBe(3);
  });
});
