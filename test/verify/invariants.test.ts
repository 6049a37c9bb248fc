/**
 * The invariant checkers on histories written out by hand: each invariant holding, and each
 * way it can break (one test per anomaly kind).
 */
import { describe, expect, it } from 'vitest';
import { checkBank, checkCounter, checkMutex } from '../../src/verify/invariants.js';
import { op } from './ops.js';

const add = (id: number, status: 'ok' | 'fail' | 'info', result?: number) =>
  op(
    id,
    `p${id}`,
    'add',
    1,
    result,
    id * 10,
    status === 'info' ? undefined : id * 10 + 5,
    status,
    'n',
  );

describe('checkCounter', () => {
  const h = [add(0, 'ok', 1), add(1, 'ok', 2), add(2, 'info'), add(3, 'fail')];
  it('the final value may be anywhere in [acked, acked + info]', () => {
    expect(checkCounter(h, { key: 'n', final: 2 })).toEqual([]);
    expect(checkCounter(h, { key: 'n', final: 3 })).toEqual([]);
  });
  it('below: acknowledged adds were lost', () => {
    const [a] = checkCounter(h, { key: 'n', final: 1 });
    expect(a?.kind).toBe('counter-range');
    expect(a?.message).toMatch(/outside \[2, 3\].*lost/);
  });
  it('above: a failed add landed', () => {
    expect(checkCounter(h, { key: 'n', final: 4 })[0]?.kind).toBe('counter-range');
  });
  it('two acknowledged adds with one result: a lost update', () => {
    const dup = [add(0, 'ok', 1), add(1, 'ok', 1)];
    const kinds = checkCounter(dup, { key: 'n', final: 2 }).map((a) => a.kind);
    expect(kinds).toEqual(['counter-duplicate']);
  });
  it('ignores other keys', () => {
    expect(checkCounter(h, { key: 'other', final: 0 })).toEqual([]);
  });
});

describe('checkBank', () => {
  const snap = (id: number, b: Record<string, number>) =>
    op(id, 'p', 'snapshot', undefined, b, id, id + 1, 'ok', 'bank');
  it('snapshots and the final balances that sum right pass', () => {
    const h = [snap(0, { a: 50, b: 50 }), snap(1, { a: 10, b: 90 })];
    expect(checkBank(h, { key: 'bank', total: 100, final: { a: 0, b: 100 } })).toEqual([]);
  });
  it('a snapshot that does not sum right: money created or lost', () => {
    const [a] = checkBank([snap(0, { a: 60, b: 50 })], {
      key: 'bank',
      total: 100,
      final: { a: 50, b: 50 },
    });
    expect(a?.kind).toBe('bank-total');
    expect(a?.message).toMatch(/110.*created/);
    expect(a?.ops.map((o) => o.id)).toEqual([0]);
  });
  it('a negative balance, in a snapshot or at the end', () => {
    const kinds = checkBank([snap(0, { a: -10, b: 110 })], {
      key: 'bank',
      total: 100,
      final: { a: 120, b: -20 },
    }).map((a) => a.kind);
    expect(kinds).toEqual(['bank-negative', 'bank-negative']);
  });
  it('final balances that lost money', () => {
    expect(checkBank([], { key: 'bank', total: 100, final: { a: 40, b: 50 } })[0]?.message).toMatch(
      /lost/,
    );
  });
});

describe('checkMutex', () => {
  const lock = (
    id: number,
    fence: number,
    enter: number,
    exit: number,
    status: 'ok' | 'fail' | 'info' = 'ok',
  ) => ({
    ...op(id, `p${id}`, 'lock', undefined, undefined, enter - 1, exit + 1, status, 'm'),
    detail: { fence, enter, exit },
  });
  it('sections one after another with rising fences, all in the log, pass', () => {
    const h = [
      lock(0, 1, 0, 10),
      lock(1, 2, 12, 20),
      lock(2, 3, 15, 40, 'fail'),
      lock(3, 4, 41, 50),
    ];
    expect(checkMutex(h, { logs: { m: [1, 2, 4] } })).toEqual([]);
  });
  it('two acknowledged sections that overlap', () => {
    const h = [lock(0, 1, 0, 10), lock(1, 2, 5, 20)];
    expect(checkMutex(h, { logs: { m: [1, 2] } }).map((a) => a.kind)).toEqual(['mutex-overlap']);
  });
  it('an overlap hidden behind a short section in between is still found', () => {
    const h = [lock(0, 1, 0, 100), lock(1, 2, 10, 20), lock(2, 3, 30, 40)];
    expect(checkMutex(h).filter((a) => a.kind === 'mutex-overlap')).toHaveLength(2);
  });
  it('fences that do not rise with time', () => {
    const h = [lock(0, 5, 0, 10), lock(1, 3, 12, 20)];
    expect(checkMutex(h).map((a) => a.kind)).toEqual(['fence-order']);
  });
  it('a stale holder that committed after a newer one', () => {
    const h = [lock(0, 1, 0, 10), lock(1, 2, 12, 20)];
    expect(checkMutex(h, { logs: { m: [2, 1] } }).map((a) => a.kind)).toEqual(['stale-commit']);
  });
  it('a commit reported as refused that is in the document', () => {
    const h = [lock(0, 1, 0, 10, 'fail'), lock(1, 2, 12, 20)];
    expect(checkMutex(h, { logs: { m: [1, 2] } }).map((a) => a.kind)).toEqual(['stale-commit']);
  });
  it('an acknowledged commit missing from the document', () => {
    const h = [lock(0, 1, 0, 10), lock(1, 2, 12, 20)];
    expect(checkMutex(h, { logs: { m: [2] } }).map((a) => a.kind)).toEqual(['lost-commit']);
  });
});
