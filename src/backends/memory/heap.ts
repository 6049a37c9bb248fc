/**
 * Min-queues with a comparator: a binary heap, and a FIFO-plus-heap for entries that mostly
 * arrive in order. The memory backend's job queues keep their claimable, delayed and active jobs
 * in them (entries made stale by a state change are skipped by the caller when they surface:
 * lazy deletion).
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

/**
 * A min-queue for entries that mostly arrive in order (jobs enqueued one after another): an
 * entry not smaller than the last appended goes to a FIFO array (O(1) both ways), any other to
 * a {@link Heap}; `pop` takes the smaller of the two fronts.
 *
 * @example
 * ```ts
 * const q = new MostlySorted<number>((a, b) => a - b);
 * q.push(1); q.push(2); q.push(0);
 * q.pop(); // 0
 * ```
 */
export class MostlySorted<T> {
  readonly #compare: (a: T, b: T) => number;
  readonly #heap: Heap<T>;
  #fifo: T[] = [];
  #head = 0;

  constructor(compare: (a: T, b: T) => number) {
    this.#compare = compare;
    this.#heap = new Heap(compare);
  }

  /** Entries held (stale ones included). */
  get size(): number {
    return this.#fifo.length - this.#head + this.#heap.size;
  }

  push(item: T): void {
    const n = this.#fifo.length;
    if (n === this.#head || this.#compare(item, this.#fifo[n - 1] as T) >= 0) this.#fifo.push(item);
    else this.#heap.push(item);
  }

  peek(): T | undefined {
    const f = this.#head < this.#fifo.length ? this.#fifo[this.#head] : undefined;
    const h = this.#heap.peek();
    if (f === undefined) return h;
    if (h === undefined) return f;
    return this.#compare(h, f) < 0 ? h : f;
  }

  pop(): T | undefined {
    const f = this.#head < this.#fifo.length ? this.#fifo[this.#head] : undefined;
    const h = this.#heap.peek();
    if (f !== undefined && (h === undefined || this.#compare(h, f) >= 0)) {
      this.#fifo[this.#head] = undefined as T;
      this.#head += 1;
      if (this.#head === this.#fifo.length) {
        this.#fifo = [];
        this.#head = 0;
      } else if (this.#head > 1024 && this.#head * 2 > this.#fifo.length) {
        this.#fifo = this.#fifo.slice(this.#head);
        this.#head = 0;
      }
      return f;
    }
    return this.#heap.pop();
  }
}
