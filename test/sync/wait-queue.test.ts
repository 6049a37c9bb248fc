import { describe, expect, it } from 'vitest';
import { Waiter, WaitQueue } from '../../src/sync/wait-queue.js';

class W extends Waiter {
  woken = false;
  wake(): void {
    this.woken = true;
  }
}

describe('WaitQueue', () => {
  it('removes a waiter from the middle in O(1) and keeps order', () => {
    const q = new WaitQueue(1);
    expect(q.tryTake(1)).toBe(true);
    const ws = Array.from({ length: 5 }, () => new W(1));
    for (const w of ws) q.push(w);
    expect(q.remove(ws[2]!)).toBe(true);
    expect(q.remove(ws[2]!)).toBe(false);
    expect(q.length).toBe(4);
    const order: W[] = [];
    for (let i = 0; i < 4; i++) {
      q.give(1);
      const w = ws.find((x) => x.woken && !order.includes(x))!;
      order.push(w);
    }
    expect(order).toEqual([ws[0], ws[1], ws[3], ws[4]]);
    q.give(1);
    expect(q.idle).toBe(true);
  });

  it('removing the head serves the waiters it blocked', () => {
    const q = new WaitQueue(3);
    expect(q.tryTake(2)).toBe(true);
    const big = new W(3);
    const small = new W(1);
    q.push(big);
    q.push(small);
    expect(small.woken).toBe(false);
    q.remove(big);
    expect(small.woken).toBe(true);
    expect(q.available).toBe(0);
  });

  it('a million pushes and removals leave it empty', () => {
    const q = new WaitQueue(1);
    q.tryTake(1);
    const ws: W[] = [];
    for (let i = 0; i < 1_000_000; i++) {
      const w = new W(1);
      q.push(w);
      ws.push(w);
    }
    for (let i = ws.length - 1; i >= 0; i -= 2) q.remove(ws[i]!);
    for (let i = 0; i < ws.length; i += 2) q.remove(ws[i]!);
    expect(q.length).toBe(0);
    expect(q.head).toBeNull();
    expect(q.tail).toBeNull();
  });
});
