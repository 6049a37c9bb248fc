/**
 * Planted bugs for the mutation mode: a verification that cannot fail proves nothing, so the
 * tests (and `lab verify --plant`) run the workloads against a broken store and expect the
 * checker to catch each bug. Two are backend wrappers (a commit that ignores the fence, an
 * outcome reported as refused when it landed); the third, a read-then-write increment, is a
 * client bug and lives in the counter workload.
 */
import type { Backend, DocWrite, Lease, LeaseRequest, WriteResult } from '../store/backend.js';

/** The bugs the mutation mode can plant. */
export type PlantedBug = 'read-then-write-increment' | 'commit-ignores-fence' | 'fail-but-landed';

/** Every planted bug, for help texts and loops. */
export const plantedBugs: readonly PlantedBug[] = [
  'read-then-write-increment',
  'commit-ignores-fence',
  'fail-but-landed',
];

/**
 * A lease commit that skips the fence check: a holder whose lease expired (and was taken by
 * someone else) still writes, as a plain write, once the new holder is done, and is told it
 * committed; the lease never reports itself lost.
 *
 * @example
 * ```ts
 * const store = createStore(ignoreFences(memory()));
 * ```
 */
export function ignoreFences(inner: Backend): Backend {
  const never = new AbortController().signal;
  const wrap = (lease: Lease): Lease => ({
    docs: lease.docs,
    fences: lease.fences,
    lost: false,
    signal: never,
    async commit(writes: readonly DocWrite[]): Promise<WriteResult> {
      const r = await lease.commit(writes);
      if (r.applied || r.reason !== 'fence') return r;
      return inner.write(
        writes.map((w) => {
          if (w.kind !== 'patch') return w;
          const { fieldsUnchangedSince: _since, ...rest } = w;
          return rest;
        }),
      );
    },
    async release(): Promise<boolean> {
      await lease.release();
      return true;
    },
  });
  return {
    name: inner.name,
    namespace: inner.namespace,
    supports: inner.supports,
    read: (refs) => inner.read(refs),
    write: (writes, options) => inner.write(writes, options),
    consume: inner.consume?.bind(inner),
    resetLimit: inner.resetLimit?.bind(inner),
    acquire: async (request: LeaseRequest) => {
      const lease = await inner.acquire(request);
      return lease && wrap(lease);
    },
    close: () => inner.close(),
  };
}

/**
 * Plain patch batches (field operations) that landed but are reported as refused by a guard,
 * a `rate` share of them (`random` in [0, 1) decides; default Math.random). Whole-document
 * writes (create, put, delete) are left alone, so a run's setup still works.
 *
 * @example
 * ```ts
 * const store = createStore(reportLandedAsFailed(memory(), 0.2));
 * ```
 */
export function reportLandedAsFailed(
  inner: Backend,
  rate = 0.2,
  random: () => number = Math.random,
): Backend {
  return {
    name: inner.name,
    namespace: inner.namespace,
    supports: inner.supports,
    read: (refs) => inner.read(refs),
    write: async (writes, options) => {
      const r = await inner.write(writes, options);
      if (!r.applied || writes.some((w) => w.kind !== 'patch') || random() >= rate) return r;
      return { applied: false, reason: 'guard', index: 0, guard: 0 };
    },
    consume: inner.consume?.bind(inner),
    resetLimit: inner.resetLimit?.bind(inner),
    acquire: (request) => inner.acquire(request),
    close: () => inner.close(),
  };
}

/**
 * The backend with `bug` planted (unchanged for the client-side bug).
 *
 * @example
 * ```ts
 * const store = createStore(plantBug(memory(), 'commit-ignores-fence'));
 * ```
 */
export function plantBug(inner: Backend, bug: PlantedBug | undefined): Backend {
  switch (bug) {
    case 'commit-ignores-fence':
      return ignoreFences(inner);
    case 'fail-but-landed':
      return reportLandedAsFailed(inner);
    default:
      return inner;
  }
}
