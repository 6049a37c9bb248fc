/**
 * Reclaiming expired rows on PostgreSQL: expiring documents (`expires_at` on each model's table)
 * and idle rate-limit keys. Expired rows are invisible to every statement at once (see `LIVE` in
 * sql.ts and the rate-limit function); this sweep only deletes them. Per backend instance, one
 * unref'd timer remembers when the rows this process wrote expire (250 ms buckets), fires at the
 * earliest, deletes every expired row of the tables concerned (1000 at a time, skipping rows a
 * lease holds), and sets itself for the next; it stops once the latest has passed.
 */
import type { DocWrite } from '../../store/backend.js';
import type { PgContext } from './context.js';
import { LIMITS, sweepLimits } from './rate-limits.js';

/**
 * The expiry sweep of one backend instance.
 *
 * @example
 * ```ts
 * const sweep = new ExpirySweep(ctx);
 * sweep.touched('session', 30_000); // a 'session' row written with a 30 s TTL
 * ```
 */
export class ExpirySweep {
  readonly #ctx: PgContext;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Number.POSITIVE_INFINITY;
  /** Expiry bucket (ms, this process's clock: only WHEN to look) -> tables to sweep then. */
  readonly #due = new Map<number, Set<string>>();

  constructor(ctx: PgContext) {
    this.#ctx = ctx;
  }

  /** Sweep timers running (0 or 1). */
  get timers(): number {
    return this.#timer === undefined ? 0 : 1;
  }

  /** Rows of `table` (a model, or {@link LIMITS}) written now expire within `ms`. */
  touched(table: string, ms: number): void {
    const at = Math.ceil((Date.now() + ms + 50) / 250) * 250;
    let tables = this.#due.get(at);
    if (!tables) this.#due.set(at, (tables = new Set()));
    tables.add(table);
    if (at < this.#timerAt) this.#schedule(at);
  }

  #schedule(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    const wait = Math.min(2_147_483_647, Math.max(0, at - Date.now()));
    this.#timer = setTimeout(() => void this.#fire(), wait);
    this.#timer.unref();
  }

  async #fire(): Promise<void> {
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    const tables = new Set<string>();
    for (const [at, ts] of this.#due) {
      if (at > now) continue;
      for (const t of ts) tables.add(t);
      this.#due.delete(at);
    }
    for (const t of tables) await this.sweep(t);
    let next = Number.POSITIVE_INFINITY;
    for (const at of this.#due.keys()) if (at < next) next = at;
    if (next !== Number.POSITIVE_INFINITY && !this.#ctx.closed && this.#timer === undefined) {
      this.#schedule(next);
    }
  }

  /** Deletes every expired row of `table` now; how many. Best effort (errors end it quietly). */
  async sweep(table: string): Promise<number> {
    let total = 0;
    try {
      for (;;) {
        if (this.#ctx.closed) return total;
        const n = table === LIMITS ? await sweepLimits(this.#ctx) : await this.#sweepDocs(table);
        total += n;
        if (n < 1000) return total;
      }
    } catch {
      // The rows stay invisible; the next sweep takes them.
      return total;
    }
  }

  async #sweepDocs(model: string): Promise<number> {
    const t = this.#ctx.table(model);
    const r = await this.#ctx.pool.query(
      `DELETE FROM ${t} WHERE key IN (SELECT key FROM ${t} WHERE expires_at <= clock_timestamp() LIMIT 1000 FOR UPDATE SKIP LOCKED)`,
    );
    return r.rowCount ?? 0;
  }

  close(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#due.clear();
  }
}

/**
 * The TTL a write gives its document (undefined: none given; a delete never has one).
 *
 * @example
 * ```ts
 * ttlOf({ kind: 'put', model: 'session', key: 's1', data: {}, ttlMs: 1000 }); // 1000
 * ```
 */
export function ttlOf(w: DocWrite): number | undefined {
  return w.kind === 'delete' ? undefined : w.ttlMs;
}
