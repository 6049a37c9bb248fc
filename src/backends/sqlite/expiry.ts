/**
 * Expiring documents on SQLite: not implemented yet (see "Rate limits and expiring documents" in
 * src/store/backend.ts: a backend without `consume` has neither). A write with `ttlMs` is refused
 * before anything is written, rather than stored without its expiry.
 *
 * @example
 * ```ts
 * const err = ttlRefusal(writes); // a BackendError when a write carries ttlMs, else undefined
 * ```
 */
import { BackendError } from '../../errors.js';
import type { DocWrite } from '../../store/backend.js';

/** A BackendError when one of `writes` carries `ttlMs` (nothing is written), else undefined. */
export function ttlRefusal(writes: readonly DocWrite[]): BackendError | undefined {
  for (const w of writes) {
    if (w.kind !== 'delete' && w.ttlMs !== undefined) {
      return new BackendError(
        'the sqlite backend does not implement expiring documents (ttlMs) yet: nothing was written; use the memory, Redis or PostgreSQL backend for documents with a TTL',
      );
    }
  }
  return undefined;
}
