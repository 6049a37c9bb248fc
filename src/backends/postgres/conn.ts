/** A checked-out connection that tracks its own transaction state and death. */
import type { PoolClient, QueryResult } from 'pg';
import { RAW, resultsOf } from './rows.js';
import { isConnectionLoss } from './sql.js';

/** A checked-out connection that notices when the server or the network ends it. */
export class Conn {
  readonly client: PoolClient;
  dead: unknown;
  /** A transaction may be open on this connection (BEGIN sent, no COMMIT/ROLLBACK since). */
  open = false;
  #released = false;
  readonly #onError: (err: unknown) => void;
  readonly #onEnd: () => void;
  /** Called once, the first time the connection is known dead (see {@link onDeath}). */
  #deathWatch: ((err: unknown) => void) | undefined;
  constructor(client: PoolClient) {
    this.client = client;
    this.#onError = (err: unknown) => this.#died(err ?? new Error('connection lost'));
    this.#onEnd = () => this.#died(new Error('the PostgreSQL connection ended'));
    client.on('error', this.#onError);
    client.on('end', this.#onEnd);
  }

  /** The server's process id of this session (BackendKeyData), if the driver knows it. */
  get pid(): number | undefined {
    return (this.client as unknown as { processID?: number }).processID;
  }

  /**
   * Calls `watch` the moment the session is known gone: the driver's 'error' or 'end' event, or
   * a query failing with a connection loss. Never called after {@link done}.
   */
  onDeath(watch: (err: unknown) => void): void {
    this.#deathWatch = watch;
  }

  #died(err: unknown): void {
    if (this.dead !== undefined) return;
    this.dead = err;
    const watch = this.#deathWatch;
    this.#deathWatch = undefined;
    watch?.(err);
  }

  /** Runs SQL text; marks the connection dead when the failure says the session is gone. */
  async query(text: string): Promise<QueryResult[]> {
    // Our own bookkeeping of the transaction: pg reports a failed query before the server's
    // ReadyForQuery, so the driver's transaction status can lag behind.
    if (text.startsWith('BEGIN')) this.open = true;
    try {
      const r = resultsOf(
        (await this.client.query({ text, types: RAW })) as unknown as QueryResult | QueryResult[],
      );
      if (/(?:^|;\s*)(?:COMMIT|ROLLBACK)$/.test(text)) this.open = false;
      return r;
    } catch (err) {
      if (isConnectionLoss(err)) this.#died(err);
      throw err;
    }
  }

  async queryParams(text: string, values: unknown[], name?: string): Promise<QueryResult> {
    try {
      return await this.client.query({ text, values, types: RAW, ...(name ? { name } : {}) });
    } catch (err) {
      if (isConnectionLoss(err)) this.#died(err);
      throw err;
    }
  }

  /** Rolls back whatever is open (if the session lives) and returns the connection to the pool. */
  async done(destroy = false): Promise<void> {
    if (this.#released) return;
    if (!destroy && this.dead === undefined) {
      if (this.open) {
        try {
          await this.query('ROLLBACK');
        } catch {
          destroy = true;
        }
      }
    }
    if (this.#released) return;
    this.#released = true;
    this.#deathWatch = undefined;
    this.client.removeListener('error', this.#onError);
    this.client.removeListener('end', this.#onEnd);
    // A dead or suspicious connection is destroyed rather than reused.
    const bad = destroy || this.dead !== undefined;
    // Keep a no-op listener: a late socket error on a client being torn down must not crash.
    if (bad) this.client.on('error', () => {});
    this.client.release(bad ? toError(this.dead ?? 'destroyed by lockstep') : undefined);
  }
}

export function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}
