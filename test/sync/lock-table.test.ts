import { describe, expect, it } from 'vitest';
import {
  DeadlockError,
  LockBusyError,
  LockTimeoutError,
  ValidationError,
} from '../../src/errors.js';
import { LockTable, runAsTask } from '../../src/sync/index.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('LockTable', () => {
  it('locks per key and removes idle entries', async () => {
    const t = new LockTable();
    const a = await t.acquire('a');
    expect(t.size).toBe(1);
    expect(t.tryAcquire('a')).toBeUndefined();
    const b = t.tryAcquire('b')!;
    expect(t.size).toBe(2);
    a.release();
    b.release();
    b.release();
    expect(t.size).toBe(0);
  });

  it('a million distinct keys leave size === 0', async () => {
    const t = new LockTable();
    for (let i = 0; i < 1_000_000; i++) t.tryAcquire(`k${i}`)!.release();
    for (let i = 0; i < 1000; i++) (await t.acquire([`x${i}`, `y${i}`])).release();
    expect(t.size).toBe(0);
  });

  it('shared holders coexist; exclusive waits; writer preference', async () => {
    const t = new LockTable();
    const r1 = t.tryAcquire('k', { mode: 'shared' })!;
    const r2 = t.tryAcquire('k', { mode: 'shared' })!;
    expect(t.tryAcquire('k')).toBeUndefined();
    const order: string[] = [];
    const w = t.acquire('k').then((p) => {
      order.push('writer');
      p.release();
    });
    // a writer is queued: a later reader waits behind it
    expect(t.tryAcquire('k', { mode: 'shared' })).toBeUndefined();
    const r3 = t.acquire('k', { mode: 'shared' }).then((p) => {
      order.push('reader');
      p.release();
    });
    r1.release();
    r2.release();
    await Promise.all([w, r3]);
    expect(order).toEqual(['writer', 'reader']);
    expect(t.size).toBe(0);
  });

  it('different actions on one key never block each other', async () => {
    const t = new LockTable();
    const a = t.tryAcquire('doc', { action: 'edit' })!;
    const b = t.tryAcquire('doc', { action: 'publish' })!;
    const c = t.tryAcquire('doc')!;
    expect(a && b && c).toBeTruthy();
    expect(t.tryAcquire('doc', { action: 'edit' })).toBeUndefined();
    expect(t.size).toBe(3);
    a.release();
    b.release();
    c.release();
    expect(t.size).toBe(0);
  });

  it('takes several keys all or nothing; tryAcquire leaves nothing when one is busy', () => {
    const t = new LockTable();
    const b = t.tryAcquire('b')!;
    expect(t.tryAcquire(['a', 'b', 'c'])).toBeUndefined();
    expect(t.size).toBe(1);
    expect(t.tryAcquire('a')).toBeDefined();
    b.release();
  });

  it('rolls back keys already taken on timeout and on abort', async () => {
    const t = new LockTable();
    const c = t.tryAcquire('c')!;
    const err = await t.acquire(['c', 'a', 'b'], { timeoutMs: 5 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as Error).message).toContain('"c"');
    expect(t.size).toBe(1);
    expect(t.tryAcquire(['a', 'b'])).toBeDefined();
    const ac = new AbortController();
    const t2 = new LockTable();
    const held = t2.tryAcquire('z')!;
    const p = t2.acquire(['x', 'y', 'z'], { signal: ac.signal });
    await sleep(1);
    expect(t2.size).toBe(3);
    ac.abort(new Error('cancelled'));
    await expect(p).rejects.toThrow('cancelled');
    expect(t2.size).toBe(1);
    held.release();
    expect(t2.size).toBe(0);
    c.release();
  });

  it('timeoutMs 0 and an already-aborted signal give up at once, leaving nothing behind', async () => {
    const t = new LockTable({ name: 'accounts' });
    const held = t.tryAcquire('a')!;
    const err = await t.acquire(['b', 'a'], { timeoutMs: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as Error).message).toMatch(/LockTable "accounts" keys \["a", "b"\]/);
    expect(t.size).toBe(1);
    const reason = new Error('shutting down');
    await expect(t.acquire('z', { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    await expect(t.run('z', () => 1, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(t.size).toBe(1);
    held.release();
    expect(t.size).toBe(0);
  });

  it('acquireNowait throws LockBusyError', () => {
    const t = new LockTable();
    const p = t.acquireNowait('a');
    expect(() => t.acquireNowait('a')).toThrow(LockBusyError);
    p.release();
  });

  it('detects the bank-transfer deadlock at once and names the keys', async () => {
    const t = new LockTable({ detectDeadlocks: true });
    let entered = 0;
    const transfer = (from: string, to: string) =>
      t.run(from, async () => {
        entered++;
        while (entered < 2) await sleep(1);
        return t.run(to, () => `${from}->${to}`);
      });
    const results = await Promise.allSettled([transfer('A', 'B'), transfer('B', 'A')]);
    const rejected = results.filter((r) => r.status === 'rejected');
    expect(rejected).toHaveLength(1);
    const err = (rejected[0] as PromiseRejectedResult).reason as DeadlockError;
    expect(err).toBeInstanceOf(DeadlockError);
    expect(err.code).toBe('DEADLOCK');
    expect(err.cycle).toHaveLength(3);
    expect(err.cycle[0]).toBe(err.cycle[2]);
    expect(new Set(err.cycle)).toEqual(new Set(['A', 'B']));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(t.size).toBe(0);
  });

  it('detects a cycle that goes through a queued writer (write preference)', async () => {
    const t = new LockTable({ detectDeadlocks: true });
    const step: Array<() => void> = [];
    const gate = () => new Promise<void>((r) => step.push(r));
    const next = async () => {
      await sleep(1);
      step.shift()?.();
    };
    // T1 holds A shared; W queues for A exclusive; T3 holds B, then asks A shared: behind W.
    const t1 = t.run(
      'A',
      async () => {
        await gate();
        await t.run('B', () => 'T1 got B'); // blocked by T3 -> T3 waits for W -> W waits for T1
      },
      { mode: 'shared' },
    );
    await sleep(1);
    const w = t.run('A', () => 'W got A');
    const t3 = t.run('B', async () => {
      await gate();
      return t.run('A', () => 'T3 got A', { mode: 'shared' });
    });
    await sleep(1);
    await next(); // T1 opens its gate... (order: T1 first)
    await next(); // then T3 asks for A shared, queued behind W
    const results = await Promise.allSettled([t1, w, t3]);
    const errors = results.filter((r) => r.status === 'rejected');
    expect(errors.length).toBeGreaterThanOrEqual(1);
    for (const e of errors)
      expect((e as PromiseRejectedResult).reason).toBeInstanceOf(DeadlockError);
    expect(t.size).toBe(0);
  });

  it('re-acquiring a held exclusive key is a DeadlockError, or succeeds when reentrant', async () => {
    const t = new LockTable({ detectDeadlocks: true });
    await t.run('k', async () => {
      await expect(t.acquire('k')).rejects.toBeInstanceOf(DeadlockError);
      await expect(t.acquire('k', { mode: 'shared' })).rejects.toBeInstanceOf(DeadlockError);
    });
    expect(t.size).toBe(0);
    const r = new LockTable({ reentrant: true });
    const v = await r.run('k', async () => {
      await null;
      return r.run(['j', 'k'], async () => {
        await null;
        return r.run('k', () => 42, { mode: 'shared' });
      });
    });
    expect(v).toBe(42);
    expect(r.size).toBe(0);
  });

  it('sibling runs inside one task (Promise.all) queue for each other, no false deadlock', async () => {
    const t = new LockTable({ detectDeadlocks: true });
    let inside = 0;
    let max = 0;
    await t.run('outer', async () => {
      await Promise.all(
        Array.from({ length: 4 }, () =>
          t.run('shared-key', async () => {
            inside++;
            max = Math.max(max, inside);
            await sleep(1);
            inside--;
          }),
        ),
      );
    });
    expect(max).toBe(1);
    expect(t.size).toBe(0);
  });

  it('re-acquiring a key an ancestor task holds is a DeadlockError (or re-entry when reentrant)', async () => {
    const t = new LockTable({ detectDeadlocks: true });
    await t.run('k', async () => {
      await t.run('j', async () => {
        const err = await t.run('k', () => 1).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DeadlockError);
        expect((err as DeadlockError).cycle).toEqual(['k', 'k']);
      });
    });
    const r = new LockTable({ reentrant: true, detectDeadlocks: true });
    const v = await r.run('k', () => r.run('j', () => r.run('k', async () => 'deep')));
    expect(v).toBe('deep');
    expect(t.size + r.size).toBe(0);
  });

  it('reentrancy stays per task: another task still waits', async () => {
    const r = new LockTable({ reentrant: true });
    const order: string[] = [];
    await Promise.all([
      r.run('k', async () => {
        await sleep(2);
        order.push('first');
      }),
      r.run('k', () => {
        order.push('second');
      }),
    ]);
    expect(order).toEqual(['first', 'second']);
  });

  it('acquire() from a timer callback / outside the task releases fine', async () => {
    const t = new LockTable({ detectDeadlocks: true });
    const p = await t.acquire('lease');
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        p.release();
        resolve();
      }, 1),
    );
    expect(t.size).toBe(0);
    // nested acquire in the holder's task (runAsTask) is checked
    await runAsTask(async () => {
      const a = await t.acquire('x');
      await expect(t.acquire('x', { timeoutMs: 1000 })).rejects.toBeInstanceOf(DeadlockError);
      a.release();
    });
    expect(t.size).toBe(0);
  });

  it('rejects bad input clearly and changes nothing', async () => {
    const t = new LockTable();
    await expect(t.acquire([])).rejects.toThrow(ValidationError);
    await expect(t.acquire([1 as unknown as string])).rejects.toThrow(ValidationError);
    await expect(t.acquire('a', { mode: 'x' as 'shared' })).rejects.toThrow(/mode/);
    await expect(t.acquire('a', { timeoutMs: -5 })).rejects.toThrow(ValidationError);
    expect(() => t.tryAcquire([])).toThrow(ValidationError);
    await expect(t.run('a', 5 as unknown as () => void)).rejects.toThrow(ValidationError);
    expect(() => new LockTable({ detectDeadlocks: 'yes' as unknown as boolean })).toThrow(
      ValidationError,
    );
    expect(t.size).toBe(0);
  });
});
