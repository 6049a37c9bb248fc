import { describe, expect, it } from 'vitest';
import { LockTimeoutError, ValidationError } from '../../src/errors.js';
import { Semaphore } from '../../src/sync/index.js';

describe('Semaphore', () => {
  it('keeps capacity and available apart', () => {
    const s = new Semaphore(3);
    expect(s.capacity).toBe(3);
    expect(s.available).toBe(3);
    const a = s.tryAcquire(2)!;
    expect(s.available).toBe(1);
    expect(s.capacity).toBe(3);
    expect(s.tryAcquire(2)).toBeUndefined();
    const b = s.tryAcquire()!;
    expect(s.available).toBe(0);
    a.release();
    a.release();
    b.release();
    expect(s.available).toBe(3);
  });

  it('is FIFO for weights: a heavy waiter is not overtaken by light newcomers', async () => {
    const s = new Semaphore(4);
    const held = s.tryAcquire(3)!;
    const order: string[] = [];
    const heavy = s.acquire({ weight: 4 }).then((p) => {
      order.push('heavy');
      p.release();
    });
    // 1 permit is free, but the heavy waiter is first: no barging
    expect(s.tryAcquire(1)).toBeUndefined();
    const light = s.acquire({ weight: 1 }).then((p) => {
      order.push('light');
      p.release();
    });
    held.release();
    await Promise.all([heavy, light]);
    expect(order).toEqual(['heavy', 'light']);
    expect(s.available).toBe(4);
  });

  it('a heavy waiter that times out wakes the light ones behind it', async () => {
    const s = new Semaphore(2, { name: 'pool' });
    const held = s.tryAcquire(1)!;
    const heavy = s.acquire({ weight: 2, timeoutMs: 5 });
    const light = s.acquire({ weight: 1 });
    const err = await heavy.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as Error).message).toContain('Semaphore "pool"');
    const p = await light; // woken although `held` was never released
    expect(s.available).toBe(0);
    p.release();
    held.release();
    expect(s.available).toBe(2);
  });

  it('never exceeds capacity under load', async () => {
    const s = new Semaphore(3);
    let used = 0;
    let max = 0;
    await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const weight = (i % 3) + 1;
        for (let j = 0; j < 20; j++) {
          await s.run(
            async () => {
              used += weight;
              max = Math.max(max, used);
              expect(used).toBeLessThanOrEqual(3);
              await null;
              used -= weight;
            },
            { weight },
          );
        }
      }),
    );
    expect(max).toBe(3);
    expect(s.available).toBe(3);
  });

  it('rejects bad permits and weights with a ValidationError, changing nothing', async () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => new Semaphore(bad)).toThrow(ValidationError);
    }
    expect(() => new Semaphore('2' as unknown as number)).toThrow(/positive integer/);
    const s = new Semaphore(2);
    await expect(s.acquire({ weight: 3 })).rejects.toThrow(/above the capacity/);
    await expect(s.acquire({ weight: 0 })).rejects.toThrow(ValidationError);
    await expect(s.run(() => 1, { weight: 1.5 })).rejects.toThrow(ValidationError);
    expect(() => s.tryAcquire(3)).toThrow(ValidationError);
    expect(() => s.tryAcquire(-1)).toThrow(ValidationError);
    await expect(s.acquire({ timeoutMs: -1 })).rejects.toThrow(ValidationError);
    expect(s.available).toBe(2);
    expect(s.waiting).toBe(0);
  });
});
