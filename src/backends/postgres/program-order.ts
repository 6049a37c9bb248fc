/**
 * Writes in flight in this process, per document (across every backend instance): a lease waits
 * for the writes issued before it on its keys, so that in one process a lock always sees the
 * writes its program issued before asking for it (program order), as it does on a single-threaded
 * server. The wait is bounded (a second at most): a write may itself be waiting for another
 * default-action exclusive lease (plain writers wait for those), and a lease must not wait on
 * that chain for long.
 */
const inflight = new Map<string, Set<Promise<unknown>>>();

export function trackWrites(ids: readonly string[], p: Promise<unknown>): void {
  const done = p.then(
    () => undefined,
    () => undefined,
  );
  for (const id of ids) {
    let set = inflight.get(id);
    if (!set) inflight.set(id, (set = new Set()));
    set.add(done);
  }
  void done.then(() => {
    for (const id of ids) {
      const set = inflight.get(id);
      if (!set) continue;
      set.delete(done);
      if (set.size === 0) inflight.delete(id);
    }
  });
}

export function writesInFlight(ids: readonly string[]): Promise<unknown>[] {
  const out: Promise<unknown>[] = [];
  for (const id of ids) {
    const set = inflight.get(id);
    if (set) for (const p of set) out.push(p);
  }
  return out;
}

/** Waits for `p`, at most `ms`, and no longer than `signal` allows (never rejects). */
export function boundedWait(
  p: Promise<unknown>,
  ms: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    p.then(done, done);
  });
}
