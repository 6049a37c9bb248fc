/**
 * The linearizability checker: small histories written out by hand (the textbook cases, and
 * ones in the style of Porcupine's and Knossos's documentation), random histories compared with
 * a brute-force search over every order, histories of real sequential executions spread out in
 * time (always linearizable) with planted bugs (never), the step/time limit, and the witness.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Operation } from '../../src/verify/history.js';
import {
  checkLinearizable,
  counterModel,
  type Model,
  registerModel,
} from '../../src/verify/linearizable.js';
import { type GenStep, op, sequential } from './ops.js';

const reg = (h: readonly Operation[]) => checkLinearizable(h, { model: registerModel(0) }).verdict;
const cnt = (h: readonly Operation[]) => checkLinearizable(h, { model: counterModel(0) }).verdict;

describe('hand-written register histories', () => {
  it('a read concurrent with a write may see either value', () => {
    expect(
      reg([op(0, 'a', 'write', 1, undefined, 0, 10), op(1, 'b', 'read', undefined, 1, 2, 3)]),
    ).toBe('linearizable');
    expect(
      reg([op(0, 'a', 'write', 1, undefined, 0, 10), op(1, 'b', 'read', undefined, 0, 2, 3)]),
    ).toBe('linearizable');
  });

  it('a read after a completed write cannot see the old value (stale read)', () => {
    expect(
      reg([op(0, 'a', 'write', 1, undefined, 0, 1), op(1, 'b', 'read', undefined, 0, 2, 3)]),
    ).toBe('violation');
  });

  it('new then old during one write: reads in real-time order cannot go back', () => {
    // Porcupine's README kind of example: one long write, two reads in sequence during it.
    const h = [
      op(0, 'a', 'write', 1, undefined, 0, 100),
      op(1, 'b', 'read', undefined, 1, 10, 20),
      op(2, 'c', 'read', undefined, 0, 30, 40),
    ];
    expect(reg(h)).toBe('violation');
    // Old then new is fine.
    const ok = [
      h[0] as Operation,
      op(1, 'b', 'read', undefined, 0, 10, 20),
      op(2, 'c', 'read', undefined, 1, 30, 40),
    ];
    expect(reg(ok)).toBe('linearizable');
  });

  it('a value nobody wrote cannot be read', () => {
    expect(reg([op(0, 'b', 'read', undefined, 7, 0, 1)])).toBe('violation');
  });

  it('compare-and-set, as in Knossos cas-register histories', () => {
    // write 1; cas 1->2 ok; read 2: fine. read 1 after the cas completed: not.
    const base = [op(0, 'a', 'write', 1, undefined, 0, 1), op(1, 'b', 'cas', [1, 2], true, 2, 3)];
    expect(reg([...base, op(2, 'c', 'read', undefined, 2, 4, 5)])).toBe('linearizable');
    expect(reg([...base, op(2, 'c', 'read', undefined, 1, 4, 5)])).toBe('violation');
    // A cas that reports it did not apply while the value was its `from`: not.
    expect(
      reg([op(0, 'a', 'write', 1, undefined, 0, 1), op(1, 'b', 'cas', [1, 2], false, 2, 3)]),
    ).toBe('violation');
    // Two concurrent cas 0->1 and 0->2 cannot both apply.
    expect(
      reg([op(0, 'a', 'cas', [0, 1], true, 0, 10), op(1, 'b', 'cas', [0, 2], true, 0, 10)]),
    ).toBe('violation');
    expect(
      reg([op(0, 'a', 'cas', [0, 1], true, 0, 10), op(1, 'b', 'cas', [0, 2], false, 0, 10)]),
    ).toBe('linearizable');
  });

  it('an info write may take effect later than anything, or never, but only once', () => {
    const w = op(0, 'a', 'write', 1, undefined, 0, undefined, 'info');
    expect(
      reg([w, op(1, 'b', 'read', undefined, 0, 5, 6), op(2, 'c', 'read', undefined, 1, 50, 60)]),
    ).toBe('linearizable');
    expect(reg([w, op(1, 'b', 'read', undefined, 0, 5, 6)])).toBe('linearizable');
    expect(
      reg([w, op(1, 'b', 'read', undefined, 1, 5, 6), op(2, 'c', 'read', undefined, 0, 50, 60)]),
    ).toBe('violation');
    // But never before its invocation.
    expect(
      reg([
        op(0, 'b', 'read', undefined, 1, 0, 1),
        op(1, 'a', 'write', 1, undefined, 5, undefined, 'info'),
      ]),
    ).toBe('violation');
  });

  it('a failed write did not happen: its value cannot be read', () => {
    expect(
      reg([
        op(0, 'a', 'write', 1, undefined, 0, 1, 'fail'),
        op(1, 'b', 'read', undefined, 1, 2, 3),
      ]),
    ).toBe('violation');
    expect(
      reg([
        op(0, 'a', 'write', 1, undefined, 0, 1, 'info'),
        op(1, 'b', 'read', undefined, 1, 2, 3),
      ]),
    ).toBe('linearizable');
  });

  it('keys are checked apart, and each verdict names its key', () => {
    const h = [
      op(0, 'a', 'write', 1, undefined, 0, 1, 'ok', 'x'),
      op(1, 'b', 'read', undefined, 1, 2, 3, 'ok', 'x'),
      op(2, 'a', 'write', 5, undefined, 0, 1, 'ok', 'y'),
      op(3, 'b', 'read', undefined, 0, 2, 3, 'ok', 'y'),
    ];
    const r = checkLinearizable(h, { model: registerModel(0) });
    expect(r.verdict).toBe('violation');
    expect(r.anomalies.map((k) => k.key)).toEqual(['y']);
    expect(r.keys.find((k) => k.key === 'x')?.verdict).toBe('linearizable');
  });
});

describe('hand-written counter histories', () => {
  it('two adds cannot both return the same value; concurrent ones may return in any order', () => {
    expect(cnt([op(0, 'a', 'add', 1, 1, 0, 1), op(1, 'b', 'add', 1, 1, 2, 3)])).toBe('violation');
    expect(cnt([op(0, 'a', 'add', 1, 2, 0, 10), op(1, 'b', 'add', 1, 1, 2, 3)])).toBe(
      'linearizable',
    );
    expect(cnt([op(0, 'a', 'add', 1, 2, 0, 1), op(1, 'b', 'add', 1, 1, 2, 3)])).toBe('violation');
  });

  it('an info add counts at most once; reads bound it', () => {
    const h = [op(0, 'a', 'add', 5, undefined, 0, undefined, 'info')];
    expect(cnt([...h, op(1, 'b', 'read', undefined, 5, 1, 2)])).toBe('linearizable');
    expect(cnt([...h, op(1, 'b', 'read', undefined, 0, 1, 2)])).toBe('linearizable');
    expect(cnt([...h, op(1, 'b', 'read', undefined, 10, 1, 2)])).toBe('violation');
  });
});

/** Every order of the operations consistent with real time, info ones optional: the oracle. */
function bruteForce(h: readonly Operation[], model: Model<unknown>): boolean {
  const ops = h
    .filter((o) => o.status !== 'fail')
    .map((o) =>
      o.status === 'ok'
        ? o
        : { ...o, status: 'info' as const, result: undefined, complete: undefined },
    )
    .filter((o) => !(o.status === 'info' && model.readOnly(o)));
  const used = new Array<boolean>(ops.length).fill(false);
  const go = (state: unknown): boolean => {
    if (ops.every((o, i) => used[i] || o.status !== 'ok')) return true;
    for (let i = 0; i < ops.length; i++) {
      if (used[i]) continue;
      const o = ops[i] as Operation;
      const blocked = ops.some(
        (p, j) => !used[j] && p.status === 'ok' && (p.complete as number) < o.invoke,
      );
      if (blocked) continue;
      const next = model.step(state, o);
      if (next === undefined) continue;
      used[i] = true;
      if (go(next)) return true;
      used[i] = false;
    }
    return false;
  };
  return go(model.init());
}

const status = fc.constantFrom('ok', 'ok', 'ok', 'info', 'fail') as fc.Arbitrary<
  Operation['status']
>;
const interval = fc.tuple(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 8 }));
const smallRegisterOp = fc.record({
  kind: fc.constantFrom('read', 'write', 'cas'),
  a: fc.integer({ min: 0, max: 2 }),
  b: fc.integer({ min: 0, max: 2 }),
  ok: fc.boolean(),
  at: interval,
  status,
});

describe('agrees with a brute-force search on small random histories', () => {
  it('registers', () => {
    fc.assert(
      fc.property(fc.array(smallRegisterOp, { minLength: 1, maxLength: 7 }), (specs) => {
        const h = specs.map((s, i) => {
          const [start, len] = s.at;
          const arg = s.kind === 'read' ? undefined : s.kind === 'write' ? s.a : [s.a, s.b];
          const result = s.kind === 'read' ? s.a : s.kind === 'cas' ? s.ok : undefined;
          return op(i, `p${i}`, s.kind, arg, result, start, start + len, s.status);
        });
        const model = registerModel(0);
        const expected = bruteForce(h, model) ? 'linearizable' : 'violation';
        expect(checkLinearizable(h, { model }).verdict).toBe(expected);
      }),
      { numRuns: 3000 },
    );
  });

  it('counters', () => {
    const spec = fc.record({
      read: fc.boolean(),
      by: fc.integer({ min: 1, max: 2 }),
      value: fc.integer({ min: 0, max: 5 }),
      at: interval,
      status,
    });
    fc.assert(
      fc.property(fc.array(spec, { minLength: 1, maxLength: 7 }), (specs) => {
        const h = specs.map((s, i) => {
          const [start, len] = s.at;
          return s.read
            ? op(i, `p${i}`, 'read', undefined, s.value, start, start + len, s.status)
            : op(i, `p${i}`, 'add', s.by, s.value, start, start + len, s.status);
        });
        const model = counterModel(0);
        const expected = bruteForce(h, model) ? 'linearizable' : 'violation';
        expect(checkLinearizable(h, { model }).verdict).toBe(expected);
      }),
      { numRuns: 3000 },
    );
  });
});

const genStep: fc.Arbitrary<GenStep> = fc.oneof(
  fc.constant({ kind: 'read' } as const),
  fc.constant({ kind: 'write' } as const),
  fc.boolean().map((hit) => ({ kind: 'cas', hit }) as const),
);
const execution = (n: number) =>
  fc.integer({ min: 2, max: n }).chain((len) =>
    fc.tuple(
      fc.array(genStep, { minLength: len, maxLength: len }),
      fc.array(fc.integer({ min: 0, max: 40 }), { minLength: len, maxLength: len }),
      fc.array(fc.integer({ min: 0, max: 40 }), { minLength: len, maxLength: len }),
      fc.array(
        fc.boolean().map((b) => b && Math.random() < 0.3),
        {
          minLength: len,
          maxLength: len,
        },
      ),
    ),
  );

describe('real sequential executions with random concurrent overlap', () => {
  it('are always accepted (registers, with unknown outcomes)', () => {
    fc.assert(
      fc.property(execution(60), ([steps, before, after, unknown]) => {
        const h = sequential(steps, before, after, unknown);
        expect(checkLinearizable(h, { model: registerModel(0) }).verdict).toBe('linearizable');
      }),
      { numRuns: 300 },
    );
  });

  it('are always accepted (counters)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 2, maxLength: 60 }),
        fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 60, maxLength: 60 }),
        (bys, spread) => {
          const steps: GenStep[] = bys.map((by) => ({ kind: 'add', by }));
          const h = sequential(steps, spread, [...spread].reverse(), []);
          expect(checkLinearizable(h, { model: counterModel(0) }).verdict).toBe('linearizable');
        },
      ),
      { numRuns: 300 },
    );
  });

  it('are rejected with a planted bug: a read of a value never written', () => {
    fc.assert(
      fc.property(execution(60), fc.nat(), ([steps, before, after, unknown], at) => {
        const h = sequential(steps, before, after, unknown);
        const reads = h.filter((o) => o.kind === 'read' && o.status === 'ok');
        fc.pre(reads.length > 0);
        const victim = reads[at % reads.length] as Operation;
        const bad = h.map((o) => (o === victim ? { ...o, result: -5 } : o));
        const r = checkLinearizable(bad, { model: registerModel(0) });
        expect(r.verdict).toBe('violation');
        expect(r.anomalies[0]?.witness?.some((o) => o.id === victim.id)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('are rejected with a planted bug: a write that landed reported as failed', () => {
    fc.assert(
      fc.property(execution(60), ([steps, before, after, unknown]) => {
        const h = sequential(steps, before, after, unknown);
        // A write whose value an ok read returned, then marked as failed.
        const seen = new Set(
          h.filter((o) => o.kind === 'read' && o.status === 'ok').map((o) => o.result),
        );
        const victim = h.find((o) => o.kind === 'write' && seen.has(o.arg as number));
        fc.pre(victim !== undefined);
        const bad = h.map((o) => (o === victim ? { ...o, status: 'fail' as const } : o));
        expect(checkLinearizable(bad, { model: registerModel(0) }).verdict).toBe('violation');
      }),
      { numRuns: 300 },
    );
  });

  it('are rejected with a planted bug: a lost increment (two adds return the same value)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 3, max: 60 }),
        fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 60, maxLength: 60 }),
        fc.nat(),
        (n, spread, at) => {
          const steps: GenStep[] = Array.from({ length: n }, () => ({ kind: 'add', by: 1 }));
          const h = sequential(steps, spread, spread, []);
          const i = 1 + (at % (n - 1));
          // Add i saw the state before add i-1: a read-then-write race lost one.
          const bad = h.map((o) => (o.id >= i ? { ...o, result: (o.result as number) - 1 } : o));
          expect(checkLinearizable(bad, { model: counterModel(0) }).verdict).toBe('violation');
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('limits and witnesses', () => {
  // Many concurrent writes and reads: a large search space.
  const wide = (n: number): Operation[] =>
    Array.from({ length: n }, (_, i) =>
      i % 2 === 0
        ? op(i, `p${i}`, 'write', i, undefined, 0, 1000)
        : op(i, `p${i}`, 'read', undefined, i - 1, 0, 1000),
    ).concat([op(n, 'z', 'read', undefined, -1, 2000, 2001)]);

  it('a step limit answers unknown, never a verdict it did not reach', () => {
    const r = checkLinearizable(wide(40), { model: registerModel(0), maxSteps: 50 });
    expect(r.verdict).toBe('unknown');
    expect(r.keys[0]?.reason).toMatch(/step limit/);
    expect(r.anomalies).toEqual([]);
  });

  it('a time limit answers unknown', () => {
    const r = checkLinearizable(wide(400), { model: registerModel(0), timeLimitMs: 0 });
    expect(r.verdict).toBe('unknown');
    expect(r.keys[0]?.reason).toMatch(/time limit/);
  });

  it('many unknown increments cost little: interchangeable ones are tried in one order', () => {
    // 40 adds whose outcome is unknown, then reads of 20 and 25: which 20, then which 5 more,
    // does not matter; without that reduction it is C(40, 20) bitsets.
    const h = Array.from({ length: 40 }, (_, i) =>
      op(i, `p${i}`, 'add', 1, undefined, i, undefined, 'info'),
    );
    h.push(
      op(40, 'r', 'read', undefined, 20, 100, 101),
      op(41, 'r', 'read', undefined, 25, 102, 103),
    );
    const r = checkLinearizable(h, { model: counterModel(0), maxSteps: 20_000 });
    expect(r.verdict).toBe('linearizable');
    h.push(op(42, 'r', 'read', undefined, 24, 104, 105));
    expect(checkLinearizable(h, { model: counterModel(0), maxSteps: 20_000 }).verdict).toBe(
      'violation',
    );
  });

  it('with enough budget the same history gets its verdict', () => {
    expect(checkLinearizable(wide(12), { model: registerModel(0) }).verdict).toBe('violation');
  });

  it('the witness is a smaller history that is still not linearizable', () => {
    fc.assert(
      fc.property(execution(80), fc.nat(), ([steps, before, after, unknown], at) => {
        const h = sequential(steps, before, after, unknown);
        const reads = h.filter((o) => o.kind === 'read' && o.status === 'ok');
        fc.pre(reads.length > 0);
        const victim = reads[at % reads.length] as Operation;
        const bad = h.map((o) => (o === victim ? { ...o, result: -5 } : o));
        const w = checkLinearizable(bad, { model: registerModel(0) }).anomalies[0]?.witness ?? [];
        expect(w.length).toBeGreaterThan(0);
        expect(w.length).toBeLessThanOrEqual(bad.length);
        expect(checkLinearizable(w, { model: registerModel(0) }).verdict).toBe('violation');
        // No reads but the one that shows the bug: the others were dropped.
        expect(w.filter((o) => o.kind === 'read').map((o) => o.id)).toEqual([victim.id]);
      }),
      { numRuns: 60 },
    );
  });
});
