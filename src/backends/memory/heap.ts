/**
 * A binary min-heap with a comparator: the memory backend's job queues keep their claimable,
 * delayed and active jobs in three of them (entries made stale by a state change are skipped by
 * the caller when they surface: lazy deletion).
 *
 * @example
 * ```ts
 * const h = new Heap<number>((a, b) => a - b);
 * h.push(3); h.push(1);
 * h.pop(); // 1
 * ```
 */
export class Heap<T> {
  readonly #items: T[] = [];
  readonly #less: (a: T, b: T) => number;

  constructor(compare: (a: T, b: T) => number) {
    this.#less = compare;
  }

  /** Entries held (stale ones included). */
  get size(): number {
    return this.#items.length;
  }

  /** The smallest entry, or undefined. */
  peek(): T | undefined {
    return this.#items[0];
  }

  /** Adds an entry: O(log n). */
  push(item: T): void {
    const a = this.#items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.#less(a[i] as T, a[p] as T) >= 0) break;
      [a[i], a[p]] = [a[p] as T, a[i] as T];
      i = p;
    }
  }

  /** Removes and returns the smallest entry: O(log n). */
  pop(): T | undefined {
    const a = this.#items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop() as T;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.#less(a[l] as T, a[m] as T) < 0) m = l;
        if (r < a.length && this.#less(a[r] as T, a[m] as T) < 0) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m] as T, a[i] as T];
        i = m;
      }
    }
    return top;
  }

  /** Drops every entry. */
  clear(): void {
    this.#items.length = 0;
  }
}
