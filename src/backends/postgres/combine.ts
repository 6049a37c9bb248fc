/**
 * Per-document combining (group commit) of single-document patches (what `apply` sends), and the
 * remembered-row cache: when this process wrote a document last, a group is evaluated on the
 * remembered row and sent as ONE autocommit `UPDATE ... WHERE version = v AND incarnation = i`.
 */
import { BackendError } from '../../errors.js';
import type { PatchWrite, WriteResult } from '../../store/backend.js';
import { toError } from './conn.js';
import type { PgContext } from './context.js';
import { backoff, fromDriver, unknownOutcome } from './errors.js';
import { ensure } from './migrations.js';
import { type DocState, type Plan, planWrites } from './planner.js';
import { docId, parseRow, RAW, type Raw, type Row } from './rows.js';
import { COLUMNS, isConnectionLoss, jsonbProblem, LIVE, lit, sqlState } from './sql.js';

/** Patches of one document waiting to be combined into the next transaction on it. */
interface Group {
  queue: Array<{ w: PatchWrite; resolve(r: WriteResult): void; reject(e: unknown): void }>;
  running: boolean;
}

/**
 * @internal per-document combining (group commit) of single-document patches, and the
 * remembered-row cache that lets a group go as ONE autocommit statement.
 *
 * @example
 * ```ts
 * const combiner = new Combiner(ctx);
 * const result = await combiner.combine(patch);
 * ```
 */
export class Combiner {
  readonly #ctx: PgContext;
  readonly #groups = new Map<string, Group>();
  /** Per document: the row our last combined group left (see {@link #speculate}). */
  readonly #lastRows = new Map<string, { row: Row | undefined; misses: number; skip: number }>();

  constructor(ctx: PgContext) {
    this.#ctx = ctx;
  }

  /** Forgets the row remembered for document `id` (it moved without the combiner). */
  forget(id: string): void {
    this.#lastRows.delete(id);
  }

  /**
   * Single-document patches (what `apply` sends: ops + guards + post-check) are combined per
   * document in this process: while one transaction on a document is in flight, the patches that
   * arrive for it queue, and the next transaction applies all of them in arrival order: one
   * `SELECT ... FOR NO KEY UPDATE`, each patch evaluated (guards, ops, post-check) on the state
   * left by the previous one, refused ones skipped, and ONE `UPDATE` of the final row + `COMMIT`.
   * Each patch gets exactly the result it would get alone in that order; the row lock is held for
   * two round trips per group instead of per patch. An idle document's patch goes at once.
   */
  combine(w: PatchWrite): Promise<WriteResult> {
    const id = docId(w.model, w.key);
    let group = this.#groups.get(id);
    if (!group) this.#groups.set(id, (group = { queue: [], running: false }));
    const g = group;
    const p = new Promise<WriteResult>((resolve, reject) => {
      g.queue.push({ w, resolve, reject });
    });
    if (!g.running) {
      g.running = true;
      void this.#drain(id, g);
    }
    return p;
  }

  async #drain(id: string, g: Group): Promise<void> {
    try {
      while (g.queue.length > 0) {
        const items = g.queue.splice(0, 256);
        try {
          const outcomes = await this.#runGroup(items.map((i) => i.w));
          items.forEach((it, i) => {
            const o = outcomes[i] as WriteResult | { error: unknown };
            if ('error' in o) it.reject(o.error);
            else it.resolve(o);
          });
        } catch (err) {
          for (const it of items) it.reject(err);
        }
      }
    } finally {
      g.running = false;
      if (this.#groups.get(id) === g && g.queue.length === 0) this.#groups.delete(id);
      else if (g.queue.length > 0) {
        g.running = true;
        void this.#drain(id, g);
      }
    }
  }

  /** Remembers the row a group left behind, for the next group's speculation. */
  #remember(id: string, row: Row): void {
    const c = this.#lastRows.get(id);
    this.#lastRows.delete(id);
    this.#lastRows.set(id, { row, misses: c?.misses ?? 0, skip: c?.skip ?? 0 });
    if (this.#lastRows.size > 10_000) {
      const oldest = this.#lastRows.keys().next().value;
      if (oldest !== undefined) this.#lastRows.delete(oldest);
    }
  }

  /**
   * One round trip for a group when this process wrote the document last: evaluate the group on
   * the remembered row (guards, ops, post-checks), then ONE autocommit `UPDATE ... WHERE version
   * = v AND incarnation = i`. If the row moved (another writer), nothing was written and the
   * group runs in a transaction instead (its checks run again on the fresh state); refusals are
   * always confirmed in a transaction. Documents that keep moving are not speculated on for a
   * while (exponential backoff), so contention across processes costs little.
   */
  async #speculate(
    id: string,
    ws: readonly PatchWrite[],
  ): Promise<Array<WriteResult | { error: unknown }> | undefined> {
    const c = this.#lastRows.get(id);
    if (!c?.row) return undefined;
    if (c.skip > 0) {
      c.skip -= 1;
      return undefined;
    }
    const base = c.row;
    let row = base;
    const outcomes: WriteResult[] = [];
    for (const w of ws) {
      let plan: Plan;
      try {
        plan = await planWrites(this.#ctx, [w], new Map([[id, row]]), undefined);
      } catch {
        return undefined;
      }
      if (!plan.ok) return undefined;
      outcomes.push(plan.result);
      const st = plan.states.get(id) as DocState;
      row = {
        ...row,
        version: st.version,
        data: st.data,
        fieldVersions: st.fieldVersions,
        dataVersion: st.dataVersion,
      };
    }
    // Nothing to write (patches without ops): confirm the checks in a transaction instead.
    if (row.version === base.version) return undefined;
    const text = JSON.stringify(row.data);
    if (jsonbProblem(text)) return undefined;
    const first = ws[0] as PatchWrite;
    let matched: number;
    try {
      const r = await this.#ctx.pool.query({
        ...this.#ctx.named('speculate', first.model),
        text: `UPDATE ${this.#ctx.table(first.model)} SET version = $1, data = $2::jsonb, field_versions = $3::jsonb, data_version = $4, updated_at = now() WHERE key = $5 AND version = $6 AND incarnation = $7 AND ${LIVE}`,
        values: [
          row.version,
          text,
          JSON.stringify(row.fieldVersions),
          row.dataVersion,
          first.key,
          base.version,
          base.incarnation,
        ],
        types: RAW,
      });
      matched = r.rowCount ?? 0;
    } catch (err) {
      // Outcome: an autocommit statement. The connection dropped after it was sent: it may have
      // committed, and nothing records it, so the callers get outcomeUnknown (never a refusal).
      // Any other error means the statement failed, which wrote nothing: the transaction path
      // runs the group again on the fresh row.
      const unknown = unknownOutcome(err);
      if (unknown) throw unknown;
      this.#lastRows.delete(id);
      return undefined;
    }
    // Zero rows matched (the row moved): nothing was written; the transaction path decides.
    if (matched === 1) {
      c.misses = 0;
      this.#remember(id, row);
      return outcomes;
    }
    c.row = undefined;
    c.misses = Math.min(c.misses + 1, 6);
    c.skip = 2 ** c.misses;
    return undefined;
  }

  /** One transaction for a group of patches of one document (see {@link #combine}). */
  async #runGroup(ws: readonly PatchWrite[]): Promise<Array<WriteResult | { error: unknown }>> {
    const first = ws[0] as PatchWrite;
    const id = docId(first.model, first.key);
    const fast = await this.#speculate(id, ws);
    if (fast) return fast;
    for (let attempt = 0; ; attempt++) {
      const conn = await this.#ctx.connect();
      let committing = false;
      try {
        const res = await conn.query(
          `BEGIN; SELECT ${COLUMNS} FROM ${this.#ctx.table(first.model)} WHERE key = ${lit(first.key)} FOR NO KEY UPDATE`,
        );
        const raw = res[1]?.rows[0] as Raw | undefined;
        let row = raw ? parseRow(raw) : undefined;
        const outcomes: Array<WriteResult | { error: unknown }> = [];
        let sql: string[] | undefined;
        for (const w of ws) {
          let plan: Plan;
          try {
            plan = await planWrites(this.#ctx, [w], new Map([[id, row]]), undefined);
          } catch (error) {
            outcomes.push({ error });
            continue;
          }
          if (!plan.ok) {
            outcomes.push(plan.refusal);
            continue;
          }
          outcomes.push(plan.result);
          // A patch with no ops writes nothing (its plan has no SQL): keep the group's last row.
          if (plan.sql.length > 0) sql = plan.sql;
          const st = plan.states.get(id) as DocState;
          row = {
            key: first.key,
            version: st.version,
            fence: row?.fence ?? 0,
            data: st.data,
            fieldVersions: st.fieldVersions,
            dataVersion: st.dataVersion,
            incarnation: row?.incarnation ?? 0,
            expired: false,
          };
        }
        if (!sql) {
          await conn.query('ROLLBACK');
          if (row) this.#remember(id, row);
          return outcomes;
        }
        // Outcome: until this message, nothing can have committed (a lost connection before it is
        // a plain error: nothing written). From here, a lost reply may hide a COMMIT that ran:
        // outcomeUnknown (the transaction has no id recorded to look up, unlike a lease's).
        // A statement error in this message skipped the COMMIT: nothing written.
        committing = true;
        await conn.query([...sql, 'COMMIT'].join('; '));
        if (row) this.#remember(id, row);
        return outcomes;
      } catch (err) {
        const state = sqlState(err);
        if ((state === '42P01' || state === '3F000') && attempt < 3) {
          await conn.done();
          await ensure(this.#ctx, [first.model], err);
          continue;
        }
        if ((state === '40P01' || state === '40001') && attempt < 8) {
          await conn.done();
          await backoff(attempt);
          continue;
        }
        if (committing && (isConnectionLoss(err) || conn.dead !== undefined)) {
          throw new BackendError(
            `lost the PostgreSQL connection while committing a write; it may or may not have been applied (read before retrying): ${toError(err).message}`,
            { cause: err, outcomeUnknown: true },
          );
        }
        throw fromDriver(err, 'writing');
      } finally {
        await conn.done();
      }
    }
  }
}
