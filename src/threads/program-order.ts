/**
 * Program order for remote backends: the writes this thread has in flight, per document of a
 * served backend (across every `remoteBackend` of this thread). A lease asked for after a write
 * waits until that write settled, so that it sees it, as in the owner's thread — two clients of
 * one thread have two ports, and a write's schema check is a round trip, so arrival order alone
 * does not promise it. The wait is bounded (a second at most, and the lease request's signal): a
 * write may itself be waiting for a lease, and a lease must not wait on that chain for long.
 *
 * @example
 * ```ts
 * trackWrites(namespace, writes, promise);
 * await waitForWrites(namespace, model, keys, signal); // then send the acquire
 * ```
 */
import type { DocWrite } from '../store/backend.js';

/** How long a lease waits at most for this thread's earlier writes to its keys. */
const MAX_WAIT_MS = 1_000;

const inflight = new Map<string, Set<Promise<void>>>();

function id(namespace: string, model: string, key: string): string {
  return `${namespace}\u0000${model}\u0000${key}`;
}

/** Records `p` (a write of `writes`) as in flight until it settles. */
export function trackWrites(
  namespace: string,
  writes: readonly DocWrite[],
  p: Promise<unknown>,
): void {
  const done = p.then(
    () => undefined,
    () => undefined,
  );
  const ids: string[] = new Array(writes.length);
  for (let i = 0; i < writes.length; i++) {
    const w = writes[i] as DocWrite;
    const k = id(namespace, w.model, w.key);
    ids[i] = k;
    let set = inflight.get(k);
    if (set === undefined) inflight.set(k, (set = new Set()));
    set.add(done);
  }
  void done.then(() => {
    for (const k of ids) {
      const set = inflight.get(k);
      if (set === undefined) continue;
      set.delete(done);
      if (set.size === 0) inflight.delete(k);
    }
  });
}

/**
 * Resolves once every write of this thread in flight on `keys` settled (at once when there is
 * none: undefined is returned so the caller need not await), or after a second, or on `signal`.
 */
export function waitForWrites(
  namespace: string,
  model: string,
  keys: readonly string[],
  signal: AbortSignal | undefined,
): Promise<void> | undefined {
  if (inflight.size === 0) return undefined;
  let pending: Promise<void>[] | undefined;
  for (const key of keys) {
    const set = inflight.get(id(namespace, model, key));
    if (set !== undefined) for (const p of set) (pending ??= []).push(p);
  }
  if (pending === undefined) return undefined;
  const all = Promise.all(pending);
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, MAX_WAIT_MS);
    signal?.addEventListener('abort', done, { once: true });
    all.then(done, done);
  });
}
