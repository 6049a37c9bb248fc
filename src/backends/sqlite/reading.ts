/**
 * `read`: fresh snapshots. One document is one SELECT; several are read in one read transaction
 * (`BEGIN DEFERRED`, WAL: one consistent snapshot, never waiting for the writer).
 *
 * @example
 * ```ts
 * const docs = readNow(ctx, [{ model: 'account', key: 'a' }]);
 * ```
 */
import type { DocRef, StoredDoc } from '../../store/backend.js';
import type { SqliteContext } from './context.js';
import { isBusy } from './errors.js';
import { storedDoc } from './rows.js';
import { BUSY, type Busy } from './transaction.js';

/** Reads `refs` synchronously: the snapshots, or BUSY (rare in WAL: the log being reset). */
export function readNow(
  ctx: SqliteContext,
  refs: readonly DocRef[],
): Array<StoredDoc | undefined> | Busy {
  const st = ctx.statements;
  const one = (r: DocRef) => {
    const row = st.selectDoc.get(r.model, r.key);
    return row === undefined ? undefined : storedDoc(r.key, row);
  };
  try {
    if (refs.length === 1) return [one(refs[0] as DocRef)];
    st.beginRead.run();
    try {
      return refs.map(one);
    } finally {
      st.rollback.run();
    }
  } catch (err) {
    if (isBusy(err)) return BUSY;
    throw err;
  }
}
