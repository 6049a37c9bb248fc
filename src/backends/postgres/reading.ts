/**
 * Reading: fresh snapshots of documents, one round trip (a missing table holds nothing).
 */
import type { DocRef, StoredDoc } from '../../store/backend.js';
import type { PgContext } from './context.js';
import { classify } from './errors.js';
import { docId, parseRow, RAW, type Raw, type Row, storedDoc } from './rows.js';
import { COLUMNS, isConnectionLoss, sqlState } from './sql.js';

/** How many times a read is sent when its connection turns out to be dead. */
const READ_ATTEMPTS = 3;

/** Fresh snapshots, one per ref (undefined where missing). One round trip. */
export async function read(
  ctx: PgContext,
  refs: readonly DocRef[],
): Promise<Array<StoredDoc | undefined>> {
  ctx.checkOpen();
  // Names and keys were checked by the store's boundary (src/store/checks.ts).
  if (refs.length === 0) return [];
  const byModel = new Map<string, string[]>();
  for (const r of refs) {
    const list = byModel.get(r.model) ?? [];
    list.push(r.key);
    byModel.set(r.model, list);
  }
  const found = new Map<string, Row>();
  const models = [...byModel.keys()];
  const readModels = async (ms: string[]) => {
    if (ms.length === 1 && refs.length === 1) {
      const m = ms[0] as string;
      const r = await ctx.pool.query({
        ...ctx.named('read', m),
        text: `SELECT ${COLUMNS} FROM ${ctx.table(m)} WHERE key = $1`,
        values: [refs[0]?.key],
        types: RAW,
      });
      for (const row of r.rows as Raw[]) {
        const p = parseRow(row);
        if (!p.expired) found.set(docId(m, row.key as string), p);
      }
      return;
    }
    const parts = ms.map(
      (m, i) =>
        `SELECT ${i} AS m, ${COLUMNS} FROM ${ctx.table(m)} WHERE key = ANY($${i + 1}::text[])`,
    );
    const r = await ctx.pool.query({
      text: parts.join(' UNION ALL '),
      values: ms.map((m) => byModel.get(m)),
      types: RAW,
    });
    for (const row of r.rows as Raw[]) {
      const m = ms[Number(row.m)] as string;
      const p = parseRow(row);
      if (!p.expired) found.set(docId(m, row.key as string), p);
    }
  };
  try {
    // A read has no effect, so one that met a dead pooled connection (reset while idle: the pool
    // learns it only when it writes to the socket) is simply sent again on another, a few times:
    // after a network blip, several idle connections may be dead.
    for (let attempt = 1; ; attempt++) {
      try {
        await readModels(models);
        break;
      } catch (err) {
        if (!isConnectionLoss(err) || attempt >= READ_ATTEMPTS) throw err;
      }
    }
  } catch (err) {
    if (sqlState(err) !== '42P01' && sqlState(err) !== '3F000') {
      throw classify(err, 'reading');
    }
    // Some table does not exist yet: read model by model, a missing table holds nothing.
    for (const m of models) {
      try {
        await readModels([m]);
      } catch (e) {
        if (sqlState(e) !== '42P01' && sqlState(e) !== '3F000') throw classify(e, 'reading');
      }
    }
  }
  return refs.map((r) => {
    const row = found.get(docId(r.model, r.key));
    return row ? storedDoc(row) : undefined;
  });
}
