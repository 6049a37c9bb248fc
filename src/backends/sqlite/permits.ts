/**
 * Named permit pools (mutexes, rwlocks, semaphores) of the SQLite backend: rows of
 * `lockstep_permits`, one per holder (`granted = 1`, expiring `leaseMs` after its grant or last
 * renewal) and one per waiter (`granted = 0`, queued in `seq` order), and one `lockstep_pools` row
 * per pool with its fence and queue counters (what keeps fences increasing; nothing else stays
 * for an idle pool).
 *
 * Every step is one `BEGIN IMMEDIATE` transaction: expired rows of the pool are removed; a request
 * naming other `permits` than the pool's rows is refused (ValidationError); a request is granted
 * when no waiter queued before it remains and the live holders' weight plus its own fits in
 * `permits` (FIFO by weight: a heavy head is never overtaken; an rwlock writer, weight = all
 * units, is never passed by later readers). Otherwise it queues (once) and waits for a wake-up
 * (`wakeups.ts`: a holder released, a waiter left) or for the moment the blocking rows expire.
 * A waiter refreshes its row at each attempt and at least every {@link WAITER_TTL_MS}/3, so a
 * waiter whose process died leaves the queue within {@link WAITER_TTL_MS}; one that times out,
 * is aborted or fails deletes its row at once and wakes the others.
 *
 * @example
 * ```ts
 * const permits = new Permits(ctx);
 * const lease = await permits.acquire({ kind: 'mutex', name: 'x', permits: 1, weight: 1,
 *   leaseMs: 30_000, renew: true, nowait: false });
 * await lease?.release();
 * ```
 */
import type { Statement } from 'better-sqlite3';
import { LeaseLostError, LockTimeoutError, ValidationError } from '../../errors.js';
import type { PermitKind, PermitLease, PermitRequest } from '../../store/backend.js';
import { permitName } from '../../store/names.js';
import type { SqliteContext } from './context.js';
import { closedError } from './errors.js';
import { WAITER_TTL_MS } from './migrations.js';
import { BUSY, immediate, retryBusy } from './transaction.js';

/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2_147_483_647;
/** A renewal that met the write lock tries again this soon. */
const RENEW_RETRY_MS = 5;

interface PermitRow {
  readonly seq: number;
  readonly token: string;
  readonly weight: number;
  readonly permits: number;
  readonly granted: number;
  readonly expires_at: number;
}

/** What one attempt decided. */
type Attempt =
  | {
      readonly granted: true;
      readonly fence: number;
      readonly expiresAt: number;
      readonly seq: number;
    }
  | {
      readonly granted: false;
      readonly seq: number | undefined;
      readonly dueAt: number | undefined;
    };

/** The statements of the permit tables. */
interface Statements {
  readonly purge: Statement<[string, string, number]>;
  readonly rows: Statement<[string, string], PermitRow>;
  readonly pool: Statement<[string, string], { fence: number; seq: number }>;
  readonly savePool: Statement<[string, string, number, number]>;
  readonly insert: Statement<
    [string, string, number, string, number, number, number, number, number]
  >;
  readonly grant: Statement<[number, number, string, string, number]>;
  readonly refresh: Statement<[number, string, string, number]>;
  readonly remove: Statement<[string, string, number, string]>;
  readonly lookup: Statement<
    [string, string, number, string],
    { expires_at: number; granted: number }
  >;
  readonly renew: Statement<[number, string, string, number, string, number]>;
  readonly held: Statement<[string, string, number], { units: number | null }>;
}

/** Prepares the statements of the permit tables (on first use). */
function statements(ctx: SqliteContext): Statements {
  const db = ctx.db;
  return {
    purge: db.prepare<[string, string, number]>(
      'DELETE FROM lockstep_permits WHERE kind = ? AND name = ? AND expires_at <= ?',
    ),
    rows: db.prepare<[string, string], PermitRow>(
      'SELECT seq, token, weight, permits, granted, expires_at FROM lockstep_permits WHERE kind = ? AND name = ? ORDER BY seq',
    ),
    pool: db.prepare<[string, string], { fence: number; seq: number }>(
      'SELECT fence, seq FROM lockstep_pools WHERE kind = ? AND name = ?',
    ),
    savePool: db.prepare<[string, string, number, number]>(
      `INSERT INTO lockstep_pools (kind, name, fence, seq) VALUES (?, ?, ?, ?)
       ON CONFLICT (kind, name) DO UPDATE SET fence = excluded.fence, seq = excluded.seq`,
    ),
    insert: db.prepare<[string, string, number, string, number, number, number, number, number]>(
      'INSERT INTO lockstep_permits (kind, name, seq, token, weight, permits, granted, expires_at, fence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    grant: db.prepare<[number, number, string, string, number]>(
      'UPDATE lockstep_permits SET granted = 1, expires_at = ?, fence = ? WHERE kind = ? AND name = ? AND seq = ?',
    ),
    refresh: db.prepare<[number, string, string, number]>(
      'UPDATE lockstep_permits SET expires_at = ? WHERE kind = ? AND name = ? AND seq = ? AND granted = 0',
    ),
    remove: db.prepare<[string, string, number, string]>(
      'DELETE FROM lockstep_permits WHERE kind = ? AND name = ? AND seq = ? AND token = ?',
    ),
    lookup: db.prepare<[string, string, number, string], { expires_at: number; granted: number }>(
      'SELECT expires_at, granted FROM lockstep_permits WHERE kind = ? AND name = ? AND seq = ? AND token = ?',
    ),
    renew: db.prepare<[number, string, string, number, string, number]>(
      'UPDATE lockstep_permits SET expires_at = ? WHERE kind = ? AND name = ? AND seq = ? AND token = ? AND granted = 1 AND expires_at > ?',
    ),
    held: db.prepare<[string, string, number], { units: number | null }>(
      'SELECT SUM(weight) AS units FROM lockstep_permits WHERE kind = ? AND name = ? AND granted = 1 AND expires_at > ?',
    ),
  };
}

/**
 * @internal the named pools of one backend: acquiring, and the open leases (released on close).
 */
export class Permits {
  readonly #ctx: SqliteContext;
  #st: Statements | undefined;
  readonly #open = new Set<SqlitePermit>();
  /** Acquires in progress (close waits for them to leave their queues). */
  readonly #pending = new Set<Promise<unknown>>();

  constructor(ctx: SqliteContext) {
    this.#ctx = ctx;
  }

  /** @internal prepared statements. */
  get st(): Statements {
    this.#st ??= statements(this.#ctx);
    return this.#st;
  }

  /** Open permit leases (0 when idle). */
  get size(): number {
    return this.#open.size;
  }

  /** Units of `(kind, name)` held by live leases now. */
  async held(kind: PermitKind, name: string): Promise<number> {
    await this.#ctx.ready();
    this.#ctx.checkOpen();
    return this.st.held.get(kind, name, Date.now())?.units ?? 0;
  }

  acquire(req: PermitRequest): Promise<PermitLease | undefined> {
    const p = this.#acquire(req);
    const tracked = p.then(
      () => undefined,
      () => undefined,
    );
    this.#pending.add(tracked);
    void tracked.then(() => this.#pending.delete(tracked));
    return p;
  }

  /** One attempt: grant, queue (once), or report what blocks. */
  #attempt(req: PermitRequest, token: string, seq: number | undefined): Attempt | typeof BUSY {
    const st = this.st;
    return immediate<Attempt>(this.#ctx, () => {
      const now = Date.now();
      st.purge.run(req.kind, req.name, now);
      const rows = st.rows.all(req.kind, req.name);
      const other = rows.find((r) => r.permits !== req.permits);
      if (other !== undefined) {
        throw new ValidationError(permitName(req.kind, req.name), [
          {
            message: `it is in use with ${other.permits} permits, not ${req.permits}: every client must give the same permits for one name`,
          },
        ]);
      }
      let held = 0;
      let ahead = false;
      let dueAt: number | undefined;
      let mine: PermitRow | undefined;
      for (const r of rows) {
        if (r.granted === 1) held += r.weight;
        if (seq !== undefined && r.seq === seq && r.token === token) mine = r;
        else if (r.granted === 0 && (seq === undefined || r.seq < seq)) ahead = true;
        if (r.granted === 1 || seq === undefined || r.seq < seq) {
          if (dueAt === undefined || r.expires_at < dueAt) dueAt = r.expires_at;
        }
      }
      if (seq !== undefined && mine === undefined) seq = undefined; // presumed dead: queue again
      const pool = st.pool.get(req.kind, req.name) ?? { fence: 0, seq: 0 };
      if (!ahead && held + req.weight <= req.permits) {
        const fence = pool.fence + 1;
        const expiresAt = now + req.leaseMs;
        let mySeq = seq;
        if (mySeq === undefined) {
          mySeq = pool.seq + 1;
          st.insert.run(
            req.kind,
            req.name,
            mySeq,
            token,
            req.weight,
            req.permits,
            1,
            expiresAt,
            fence,
          );
          st.savePool.run(req.kind, req.name, fence, mySeq);
        } else {
          st.grant.run(expiresAt, fence, req.kind, req.name, mySeq);
          st.savePool.run(req.kind, req.name, fence, pool.seq);
        }
        return { value: { granted: true, fence, expiresAt, seq: mySeq }, write: true };
      }
      if (req.nowait) return { value: { granted: false, seq: undefined, dueAt }, write: true };
      if (seq === undefined) {
        seq = pool.seq + 1;
        st.insert.run(
          req.kind,
          req.name,
          seq,
          token,
          req.weight,
          req.permits,
          0,
          now + WAITER_TTL_MS,
          0,
        );
        st.savePool.run(req.kind, req.name, pool.fence, seq);
      } else {
        st.refresh.run(now + WAITER_TTL_MS, req.kind, req.name, seq);
      }
      return { value: { granted: false, seq, dueAt }, write: true };
    });
  }

  async #acquire(req: PermitRequest): Promise<PermitLease | undefined> {
    const ctx = this.#ctx;
    await ctx.ready();
    ctx.checkOpen();
    const signal = req.signal;
    if (signal?.aborted) throw signal.reason;
    const started = Date.now();
    const deadline = req.timeoutMs === undefined ? undefined : started + req.timeoutMs;
    const label = permitName(req.kind, req.name);
    const token = ctx.newToken();
    let seq: number | undefined;
    let unwatch: (() => void) | undefined;
    try {
      for (;;) {
        ctx.checkOpen();
        if (signal?.aborted) throw signal.reason;
        const gen = ctx.channel.generation;
        const s = seq;
        const out = await retryBusy(ctx, 'acquirePermit', () => this.#attempt(req, token, s), {
          deadline,
          started,
          lock: label,
          signal,
        });
        if (out.granted) {
          const lease = new SqlitePermit(ctx, this, req, label, token, out.seq, out);
          seq = undefined; // granted: nothing to leave
          this.#open.add(lease);
          return lease;
        }
        if (req.nowait) return undefined;
        seq = out.seq;
        if (unwatch === undefined) {
          // Watch first, then try again at once: a release in between is not missed.
          unwatch = ctx.channel.watch();
          continue;
        }
        if (deadline !== undefined && Date.now() >= deadline) {
          throw new LockTimeoutError(label, Date.now() - started);
        }
        const refreshAt = Date.now() + WAITER_TTL_MS / 3;
        await ctx.channel.changed(gen, Math.min(out.dueAt ?? refreshAt, refreshAt), {
          deadline,
          started,
          lock: label,
          signal,
          cancels: ctx.cancels,
        });
      }
    } finally {
      unwatch?.();
      if (seq !== undefined) this.#leave(req, seq, token);
    }
  }

  /** Takes a waiter out of its queue and wakes the others (best effort: else its row lapses). */
  #leave(req: PermitRequest, seq: number, token: string): void {
    if (!this.#ctx.db.open) return;
    try {
      const out = immediate(this.#ctx, () => {
        this.st.remove.run(req.kind, req.name, seq, token);
        return { value: true, write: true };
      });
      if (out !== BUSY) this.#ctx.channel.notify();
    } catch {
      // the row expires within WAITER_TTL_MS
    }
  }

  /** Releases every open lease and waits for acquires in progress to leave (backend close). */
  async releaseAll(): Promise<void> {
    await Promise.all([...this.#open].map((l) => l.release()));
    await Promise.all([...this.#pending]);
  }

  /** @internal */
  forget(lease: SqlitePermit): void {
    this.#open.delete(lease);
  }
}

/** One held permit lease; see `PermitLease` in src/store/backend.ts. */
class SqlitePermit implements PermitLease {
  readonly fence: number;
  readonly #ctx: SqliteContext;
  readonly #host: Permits;
  readonly #req: PermitRequest;
  readonly #label: string;
  readonly #token: string;
  readonly #seq: number;
  #expiresAt: number;
  #timer: NodeJS.Timeout | undefined;
  #lost = false;
  #lostWhy = '';
  #ended = false;
  #lostSignal: AbortController | undefined;
  #released: Promise<boolean> | undefined;

  constructor(
    ctx: SqliteContext,
    host: Permits,
    req: PermitRequest,
    label: string,
    token: string,
    seq: number,
    grant: { fence: number; expiresAt: number },
  ) {
    this.#ctx = ctx;
    this.#host = host;
    this.#req = req;
    this.#label = label;
    this.#token = token;
    this.#seq = seq;
    this.fence = grant.fence;
    this.#expiresAt = grant.expiresAt;
    this.#schedule();
  }

  get lost(): boolean {
    return this.#lost;
  }

  get signal(): AbortSignal {
    this.#lostSignal ??= new AbortController();
    if (this.#lost && !this.#lostSignal.signal.aborted) this.#abortLost();
    return this.#lostSignal.signal;
  }

  #abortLost(): void {
    this.#lostSignal?.abort(new LeaseLostError(this.#label, this.#lostWhy));
  }

  #markLost(why: string): void {
    if (this.#lost || this.#ended) return;
    this.#lost = true;
    this.#lostWhy = why;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#lostSignal) this.#abortLost();
  }

  #schedule(): void {
    if (this.#ended || this.#lost) return;
    const now = Date.now();
    const renew = this.#req.renew;
    const at = renew
      ? Math.min(now + Math.max(1, Math.floor(this.#req.leaseMs / 3)), this.#expiresAt)
      : this.#expiresAt;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        if (renew) this.#renewNow(this.#req.leaseMs, true);
        else this.#markLost(`it expired after ${this.#req.leaseMs} ms without renewal`);
      },
      Math.min(MAX_TIMER_MS, Math.max(0, at - now)),
    );
    this.#timer.unref();
  }

  /** Moves the expiry to `ms` from now if the lease still holds; true when it did. */
  #renewNow(ms: number, retry: boolean): boolean | typeof BUSY {
    if (this.#ended || this.#lost || !this.#ctx.db.open) return false;
    const next = Date.now() + ms;
    let out: boolean | typeof BUSY;
    try {
      out = immediate(this.#ctx, () => {
        const r = this.#host.st.renew.run(
          next,
          this.#req.kind,
          this.#req.name,
          this.#seq,
          this.#token,
          Date.now(),
        );
        return { value: r.changes === 1, write: r.changes === 1 };
      });
    } catch (err) {
      this.#markLost(`its renewal failed: ${err instanceof Error ? err.message : String(err)}`);
      return false;
    }
    if (out === BUSY) {
      if (retry) {
        if (Date.now() >= this.#expiresAt) {
          this.#markLost('it could not be renewed before it expired (the database stayed locked)');
        } else {
          clearTimeout(this.#timer);
          this.#timer = setTimeout(() => this.#renewNow(ms, true), RENEW_RETRY_MS);
          this.#timer.unref();
        }
      }
      return BUSY;
    }
    if (!out) {
      this.#markLost('it expired or was taken over before it was renewed');
      return false;
    }
    this.#expiresAt = next;
    this.#schedule();
    return true;
  }

  async extend(ms?: number): Promise<void> {
    if (this.#ended && !this.#lost) {
      throw new LeaseLostError(this.#label, 'it was already released');
    }
    if (this.#lost) throw new LeaseLostError(this.#label, this.#lostWhy);
    const span = ms ?? this.#req.leaseMs;
    const ok = await retryBusy(this.#ctx, 'extend', () => this.#renewNow(span, false));
    if (!ok) throw new LeaseLostError(this.#label, this.#lostWhy || 'it expired');
  }

  release(): Promise<boolean> {
    this.#released ??= this.#release();
    return this.#released;
  }

  async #release(): Promise<boolean> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const wasLost = this.#lost;
    this.#ended = true;
    try {
      if (!this.#ctx.db.open) throw closedError();
      const held = await retryBusy(this.#ctx, 'release', () =>
        immediate(this.#ctx, () => {
          const st = this.#host.st;
          const row = st.lookup.get(this.#req.kind, this.#req.name, this.#seq, this.#token);
          st.remove.run(this.#req.kind, this.#req.name, this.#seq, this.#token);
          const live = row !== undefined && row.granted === 1 && row.expires_at > Date.now();
          return { value: live, write: row !== undefined };
        }),
      );
      this.#ctx.channel.notify();
      return held && !wasLost;
    } catch {
      return false;
    } finally {
      this.#host.forget(this);
    }
  }
}
