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
  constructor(client: PoolClient) {
    this.client = client;
    this.#onError = (err: unknown) => {
      this.dead ??= err ?? new Error('connection lost');
    };
    client.on('error', this.#onError);
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
      if (isConnectionLoss(err)) this.dead ??= err;
      throw err;
    }
  }

  async queryParams(text: string, values: unknown[], name?: string): Promise<QueryResult> {
    try {
      return await this.client.query({ text, values, types: RAW, ...(name ? { name } : {}) });
    } catch (err) {
      if (isConnectionLoss(err)) this.dead ??= err;
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
    this.client.removeListener('error', this.#onError);
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
