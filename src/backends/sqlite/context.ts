/**
 * The shared state of one SQLite backend: the connection and its prepared statements, the
 * settings, the wake-up channel of its file, the waits close() must cancel, and the source of
 * incarnations.
 *
 * @example
 * ```ts
 * const ctx = new SqliteContext(db, true, settings);
 * await ctx.ready(); // pragmas and tables (retried while another process holds the file)
 * ctx.statements.selectDoc.get(model, key);
 * ```
 */
import { randomBytes } from 'node:crypto';
import { realpathSync } from 'node:fs';
import type { Database, Statement } from 'better-sqlite3';
import { type Checkpointer, checkpointerFor } from './checkpoints.js';
import { closedError, toBackendError } from './errors.js';
import { configure, migrate } from './migrations.js';
import type { BackendSettings } from './options.js';
import type { DocRow } from './rows.js';
import { BUSY, immediate, retryBusy } from './transaction.js';
import { type Cancel, channelFor, type WakeChannel } from './wakeups.js';

/** A live lease row as the conflict check reads it. */
export interface LeaseRow {
  readonly exclusive: number;
  readonly expires_at: number;
}

/** Every statement the backend runs, prepared once per connection. */
export interface Statements {
  readonly begin: Statement<[]>;
  readonly commit: Statement<[]>;
  readonly rollback: Statement<[]>;
  readonly beginRead: Statement<[]>;
  readonly selectDoc: Statement<[string, string], DocRow>;
  readonly upsertDoc: Statement<[string, string, number, string, number, string | null, string]>;
  readonly deleteDoc: Statement<[string, string]>;
  /** The latest expiry of a live exclusive default-action lease on a document (or null). */
  readonly gate: Statement<[string, string, number], { until: number | null }>;
  /** Live leases of (model, key, action). */
  readonly liveLeases: Statement<[string, string, string, number], LeaseRow>;
  readonly purgeExpired: Statement<[string, string, string, number]>;
  readonly insertLease: Statement<[string, string, string, string, number, number, number]>;
  readonly nextFence: Statement<[], { value: number }>;
  /** Our lease row's expiry (model, key, action, token). */
  readonly leaseExpiry: Statement<[string, string, string, string], { expires_at: number }>;
  readonly renewLease: Statement<[number, string, string, string, string, number]>;
  readonly deleteLease: Statement<[string, string, string, string]>;
}

function prepare(db: Database): Statements {
  return {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    beginRead: db.prepare('BEGIN DEFERRED'),
    selectDoc: db.prepare(
      'SELECT version, data, data_version, field_versions, incarnation FROM lockstep_docs WHERE model = ? AND key = ?',
    ),
    upsertDoc: db.prepare(
      `INSERT INTO lockstep_docs (model, key, version, data, data_version, field_versions, incarnation)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (model, key) DO UPDATE SET version = excluded.version, data = excluded.data,
         data_version = excluded.data_version, field_versions = excluded.field_versions,
         incarnation = excluded.incarnation`,
    ),
    deleteDoc: db.prepare('DELETE FROM lockstep_docs WHERE model = ? AND key = ?'),
    gate: db.prepare(
      `SELECT MAX(expires_at) AS until FROM lockstep_leases
       WHERE model = ? AND key = ? AND action = 'default' AND exclusive = 1 AND expires_at > ?`,
    ),
    liveLeases: db.prepare(
      'SELECT exclusive, expires_at FROM lockstep_leases WHERE model = ? AND key = ? AND action = ? AND expires_at > ?',
    ),
    purgeExpired: db.prepare(
      'DELETE FROM lockstep_leases WHERE model = ? AND key = ? AND action = ? AND expires_at <= ?',
    ),
    insertLease: db.prepare(
      'INSERT INTO lockstep_leases (model, key, action, token, exclusive, expires_at, fence) VALUES (?, ?, ?, ?, ?, ?, ?)',
    ),
    nextFence: db.prepare(
      "UPDATE lockstep_leases SET fence = fence + 1 WHERE model = '' AND key = '' AND action = '' AND token = '' RETURNING fence AS value",
    ),
    leaseExpiry: db.prepare(
      'SELECT expires_at FROM lockstep_leases WHERE model = ? AND key = ? AND action = ? AND token = ?',
    ),
    renewLease: db.prepare(
      'UPDATE lockstep_leases SET expires_at = ? WHERE model = ? AND key = ? AND action = ? AND token = ? AND expires_at > ?',
    ),
    deleteLease: db.prepare(
      'DELETE FROM lockstep_leases WHERE model = ? AND key = ? AND action = ? AND token = ?',
    ),
  };
}

/**
 * @internal the state every file of the backend shares.
 */
export class SqliteContext {
  readonly db: Database;
  readonly ownDb: boolean;
  readonly settings: BackendSettings;
  /** The database file's real path (undefined: in memory). */
  readonly file: string | undefined;
  readonly channel: WakeChannel;
  readonly #releaseChannel: () => void;
  /** Runs WAL checkpoints in a worker thread (undefined: in memory). */
  readonly checkpointer: Checkpointer | undefined;
  readonly #releaseCheckpointer: (() => void) | undefined;
  #autoCheckpoints = false;
  /** Waits and pauses in progress: close() rejects each with closedError. */
  readonly cancels = new Set<Cancel>();
  closed = false;
  #statements: Statements | undefined;
  #ready: Promise<void> | undefined;
  /** Prefix of this backend's incarnations (unique per backend instance). */
  readonly #instance = `${randomBytes(6).toString('base64url')}.${process.pid.toString(36)}.`;
  #incarnations = 0;
  #tokens = 0;

  constructor(db: Database, ownDb: boolean, settings: BackendSettings) {
    this.db = db;
    this.ownDb = ownDb;
    this.settings = settings;
    this.file = db.memory ? undefined : realpathSync(db.name);
    const { channel, release } = channelFor(
      this.file === undefined ? undefined : `${this.file}-lockstep-wake`,
    );
    this.channel = channel;
    this.#releaseChannel = release;
    if (this.file !== undefined) {
      const cp = checkpointerFor(this.file);
      this.checkpointer = cp.checkpointer;
      this.#releaseCheckpointer = cp.release;
    }
    // Usually ready at once; another process switching the file to WAL makes it wait (async).
    if (this.#setUp() === BUSY) this.#ready = this.#setUpLater();
  }

  /** Prepared statements (the tables exist once {@link ready} resolved). */
  get statements(): Statements {
    const s = this.#statements;
    if (s === undefined) throw closedError();
    return s;
  }

  /** True once the tables exist and statements are prepared. */
  get isReady(): boolean {
    return this.#statements !== undefined && this.#ready === undefined;
  }

  /** Resolves once the tables exist (at once, usually). */
  ready(): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    return this.#ready ?? Promise.resolve();
  }

  /** Throws BackendError when the backend was closed. */
  checkOpen(): void {
    if (this.closed) throw closedError();
  }

  /** After each committed write transaction: counts it for the checkpoint worker. */
  afterCommit(): void {
    const cp = this.checkpointer;
    if (cp === undefined) return;
    if (!cp.failed) {
      cp.committed();
      return;
    }
    if (!this.#autoCheckpoints) {
      // no worker: SQLite's own checkpoints (inside COMMIT) keep the log from growing
      this.#autoCheckpoints = true;
      this.db.pragma('wal_autocheckpoint = 1000');
    }
  }

  /**
   * A fresh lease token: never returned again by any backend (the instance's random prefix and a
   * counter; `randomBytes` per lease cost 7 µs of a 90 µs lock).
   */
  newToken(): string {
    this.#tokens += 1;
    return `t${this.#instance}${this.#tokens.toString(36)}`;
  }

  /** A fresh incarnation: never returned again by any backend. */
  newIncarnation(): string {
    this.#incarnations += 1;
    return this.#instance + this.#incarnations.toString(36);
  }

  #setUp(): undefined | typeof BUSY {
    try {
      configure(this.db, this.settings);
      if (this.checkpointer !== undefined && !this.checkpointer.failed) {
        this.db.pragma('wal_autocheckpoint = 0');
      }
    } catch (err) {
      if ((err as { code?: string }).code?.startsWith('SQLITE_BUSY')) return BUSY;
      throw toBackendError(err, 'setup');
    }
    this.#statements ??= {
      begin: this.db.prepare('BEGIN IMMEDIATE'),
      commit: this.db.prepare('COMMIT'),
      rollback: this.db.prepare('ROLLBACK'),
    } as Statements;
    const done = immediate(this, () => {
      migrate(this.db);
      return { value: true, write: true };
    });
    if (done === BUSY) return BUSY;
    this.#statements = prepare(this.db);
    return undefined;
  }

  async #setUpLater(): Promise<void> {
    await retryBusy(this, 'setup', () => this.#setUp() ?? true);
    this.#ready = undefined;
  }

  /** Refuses new calls and cancels every wait (with closedError); the connection stays open. */
  beginClose(): void {
    this.closed = true;
    const err = closedError();
    for (const c of [...this.cancels]) c(err);
  }

  /** Releases the wake-up channel and closes our own connection (never the user's). */
  finishClose(): void {
    this.#releaseChannel();
    this.#releaseCheckpointer?.();
    if (this.ownDb && this.db.open) this.db.close();
  }
}
