/**
 * The history recorder: invoke then ok / fail / info with the recorder's clock, `record`
 * classifying thrown errors (a timeout or an unknown outcome is info — maybe —, never fail),
 * one completion per operation, and the one-line format.
 */
import { describe, expect, it } from 'vitest';
import { BackendError, LeaseLostError, LockTimeoutError } from '../../src/errors.js';
import { classifyError, formatOp, History, mergeHistories } from '../../src/verify/history.js';

describe('History', () => {
  it('records invocations and completions with its clock', () => {
    let t = 0;
    const h = new History({ now: () => (t += 1) });
    const a = h.invoke('c1', 'x', 'write', 3);
    const b = h.invoke('c2', 'x', 'read');
    h.ok(b, 0);
    h.info(a, 'socket closed');
    expect(h.operations()).toEqual([
      {
        id: 0,
        process: 'c1',
        key: 'x',
        kind: 'write',
        arg: 3,
        status: 'info',
        error: 'socket closed',
        invoke: 1,
        complete: 4,
      },
      {
        id: 1,
        process: 'c2',
        key: 'x',
        kind: 'read',
        status: 'ok',
        result: 0,
        invoke: 2,
        complete: 3,
      },
    ]);
    expect(h.counts()).toEqual({ pending: 0, ok: 1, fail: 0, info: 1 });
    expect(() => h.ok(a)).toThrow(/not pending/);
  });

  it('record: a result is ok, a definite refusal fail, an unknown outcome info', async () => {
    const h = new History();
    await h.record('c', 'x', 'read', undefined, async () => 5);
    await h.record('c', 'x', 'write', 1, async () => {
      throw new LockTimeoutError('x', 10);
    });
    await h.record('c', 'x', 'write', 2, async () => {
      throw new BackendError('connection reset', { outcomeUnknown: true });
    });
    await h.record('c', 'x', 'write', 3, async () => {
      throw new Error('ETIMEDOUT');
    });
    expect(h.operations().map((o) => o.status)).toEqual(['ok', 'fail', 'info', 'info']);
    expect(h.operations()[0]?.result).toBe(5);
    expect(h.operations()[2]?.error).toMatch(/connection reset/);
  });

  it('classifyError follows the errors contract', () => {
    expect(classifyError(new BackendError('refused before sending'))).toBe('fail');
    expect(classifyError(new BackendError('reply lost', { outcomeUnknown: true }))).toBe('info');
    expect(classifyError(new LeaseLostError('job', 'expired'))).toBe('fail');
    expect(classifyError(new TypeError('socket hang up'))).toBe('info');
    expect(classifyError('a string')).toBe('info');
  });

  it('formats one operation per line', () => {
    let t = 0;
    const h = new History({ now: () => (t += 1.5) });
    h.ok(h.invoke('c1', 'x', 'cas', [1, 2]), true);
    expect(formatOp(h.operations()[0] as never)).toBe('#0 c1 x cas [1,2] ok true  [1.50..3.00 ms]');
  });
});

describe('mergeHistories', () => {
  it('corrects each part by its offset, widens by its margin, narrows critical sections, renumbers', () => {
    let t = 1000;
    const a = new History({ now: () => (t += 10) });
    const b = new History({ now: () => (t += 10) });
    a.ok(a.invoke('a', 'x', 'write', 1)); // 1010..1020
    const id = b.invoke('b', 'm', 'lock'); // 1030
    b.ok(id, undefined, { fence: 1, enter: 1032, exit: 1038 }); // ..1040
    // b's clock is 5 ms ahead, known to within 2 ms; a is the reference.
    const m = mergeHistories([
      { ops: b.operations(), offsetMs: 5, marginMs: 2 },
      { ops: a.operations() },
    ]);
    expect(m.map((o) => [o.id, o.process, o.invoke, o.complete])).toEqual([
      [0, 'a', 0, 10],
      [1, 'b', 13, 27], // 1030 - 5 - 2 and 1040 - 5 + 2, from a's invocation at 1010
    ]);
    expect(m[1]?.detail).toEqual({ fence: 1, enter: 19, exit: 21 }); // 1032 - 5 + 2, 1038 - 5 - 2
  });
});
