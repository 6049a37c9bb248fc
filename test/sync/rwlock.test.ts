import { describe, expect, it } from 'vitest';
import { LockTimeoutError, ValidationError } from '../../src/errors.js';
import { RWLock } from '../../src/sync/index.js';

describe('RWLock', () => {
  it('readers share, a writer excludes everyone', () => {
    const l = new RWLock();
    const r1 = l.tryAcquireRead()!;
    const r2 = l.tryAcquireRead()!;
    expect(l.readers).toBe(2);
    expect(l.tryAcquireWrite()).toBeUndefined();
    r1.release();
    r2.release();
    r2.release();
    expect(l.readers).toBe(0);
    const w = l.tryAcquireWrite()!;
    expect(l.isWriteLocked).toBe(true);
    expect(l.readers).toBe(0);
    expect(l.tryAcquireRead()).toBeUndefined();
    expect(l.tryAcquireWrite()).toBeUndefined();
    w.release();
    expect(l.isLocked).toBe(false);
  });

  it('is write-preferring: once a writer is queued, later readers wait behind it', async () => {
    const l = new RWLock();
    const r1 = await l.acquireRead();
    const order: string[] = [];
    const w = l.acquireWrite().then((p) => {
      order.push('w');
      p.release();
    });
    expect(l.tryAcquireRead()).toBeUndefined();
    const r2 = l.acquireRead().then((p) => {
      order.push('r2');
      p.release();
    });
    r1.release();
    await Promise.all([w, r2]);
    expect(order).toEqual(['w', 'r2']);
  });

  it('a writer that times out or is aborted wakes the readers it was blocking', async () => {
    const l = new RWLock({ name: 'model' });
    const r1 = await l.acquireRead();
    const ac = new AbortController();
    const w = l.acquireWrite({ signal: ac.signal });
    const readers = [l.acquireRead(), l.acquireRead()];
    expect(l.waiting).toBe(3);
    ac.abort(new Error('gave up'));
    await expect(w).rejects.toThrow('gave up');
    const got = await Promise.all(readers); // woken while r1 still holds
    expect(l.readers).toBe(3);
    for (const p of got) p.release();

    const w2 = l.acquireWrite({ timeoutMs: 5 });
    const r3 = l.acquireRead();
    const err = await w2.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as Error).message).toContain('RWLock "model" (write)');
    (await r3).release();
    r1.release();
    expect(l.isLocked).toBe(false);
    expect(l.waiting).toBe(0);
  });

  it('readers queued together behind a writer are released together', async () => {
    const l = new RWLock();
    const w = l.tryAcquireWrite()!;
    let inside = 0;
    let max = 0;
    const rs = Array.from({ length: 5 }, () =>
      l.read(async () => {
        inside++;
        max = Math.max(max, inside);
        await new Promise((r) => setTimeout(r, 2));
        inside--;
      }),
    );
    w.release();
    await Promise.all(rs);
    expect(max).toBe(5);
  });

  it('read()/write() release on throw and run a sync body inline when free', async () => {
    const l = new RWLock();
    let ran = false;
    const p = l.write(() => {
      ran = true;
    });
    expect(ran).toBe(true);
    await p;
    await expect(
      l.read(() => {
        throw new Error('x');
      }),
    ).rejects.toThrow('x');
    await expect(l.write(async () => Promise.reject(new Error('y')))).rejects.toThrow('y');
    expect(l.isLocked).toBe(false);
  });

  it('keeps exclusion under load (16 tasks, mixed)', async () => {
    const l = new RWLock();
    let readers = 0;
    let writers = 0;
    await Promise.all(
      Array.from({ length: 16 }, async (_, i) => {
        for (let j = 0; j < 30; j++) {
          if ((i + j) % 4 === 0) {
            await l.write(async () => {
              expect(readers + writers).toBe(0);
              writers++;
              await null;
              writers--;
            });
          } else {
            await l.read(async () => {
              expect(writers).toBe(0);
              readers++;
              await null;
              readers--;
            });
          }
        }
      }),
    );
    expect(l.isLocked).toBe(false);
  });

  it('rejects bad input', async () => {
    const l = new RWLock();
    await expect(l.acquireRead({ timeoutMs: -1 })).rejects.toThrow(ValidationError);
    await expect(l.acquireWrite({ timeoutMs: Number.NaN })).rejects.toThrow(ValidationError);
    await expect(l.read(null as unknown as () => void)).rejects.toThrow(ValidationError);
    expect(l.isLocked).toBe(false);
  });
});
