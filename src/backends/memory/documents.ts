/**
 * Document storage of the memory backend: the stored entries (data, versions, per-field versions,
 * incarnations), one table per model, and the copies that keep callers and storage apart.
 *
 * @example
 * ```ts
 * const docs = new Documents();
 * docs.table('counter').get('c1'); // the stored Entry, or undefined
 * ```
 */
import { copyJson, NotJsonError } from '../../store/apply-ops.js';
import type { Data, Op, StoredDoc } from '../../store/backend.js';
import { cloneJson } from '../../store/json.js';
import { now, Sweeper } from './expiry.js';

/** One stored document. `data` is never mutated in place: every write installs a new image. */
export interface Entry {
  version: number;
  data: Data;
  /** Version of the last create/put: every field counts as written then. */
  replacedAt: number;
  /** Per field, the version of the last patch that wrote it (when later than `replacedAt`). */
  fieldVersions: FieldVersions | undefined;
  /**
   * The field written by the latest patch when that patch wrote one field only (then `lastAt` is
   * its version, and it wins over `fieldVersions`). A field rewritten patch after patch (a hot
   * counter) thus never touches the `fieldVersions` object: no extra cache miss per write.
   */
  lastField: string | undefined;
  lastAt: number;
  /** Unique per creation, never reused: a key deleted and created again is another document. */
  readonly incarnation: string;
  /** When the document expires (see `expiry.ts`'s clock); undefined: never. */
  expiresAt?: number | undefined;
}

/**
 * Per field, the version of the last patch that wrote it. A plain object, not a Map: documents of
 * one model share their field names, so V8 shares the shape and each document pays a few words.
 */
export type FieldVersions = { [field: string]: number };

/** The version of the last patch that wrote `field` (0: none since the last create/put). */
export function fieldVersion(e: Entry, field: string): number {
  if (e.lastField === field) return e.lastAt;
  const fv = e.fieldVersions;
  return fv !== undefined && Object.hasOwn(fv, field) ? (fv[field] as number) : 0;
}

function setFieldVersion(e: Entry, field: string, version: number): void {
  const fv = (e.fieldVersions ??= {});
  if (field === '__proto__') {
    Object.defineProperty(fv, field, {
      value: version,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  } else fv[field] = version;
}

/** The one field every op of `ops` writes, or undefined when they write several. */
function singleField(ops: readonly Op[]): string | undefined {
  const f = (ops[0] as Op).field;
  for (let i = 1; i < ops.length; i++) if ((ops[i] as Op).field !== f) return undefined;
  return f;
}

/**
 * Records, per field, the version of the last patch that wrote it. `patches` holds flat pairs
 * (a non-empty op list, then the version it wrote), oldest first.
 */
export function recordPatches(e: Entry, patches: ReadonlyArray<readonly Op[] | number>): void {
  for (let j = 0; j < patches.length; j += 2) {
    const ops = patches[j] as readonly Op[];
    const version = patches[j + 1] as number;
    const f = singleField(ops);
    const last = e.lastField;
    if (f !== undefined) {
      if (last !== undefined && last !== f) setFieldVersion(e, last, e.lastAt);
      e.lastField = f;
      e.lastAt = version;
    } else {
      if (last !== undefined) {
        setFieldVersion(e, last, e.lastAt);
        e.lastField = undefined;
      }
      for (const op of ops) setFieldVersion(e, op.field, version);
    }
  }
}

/** A validated, isolated copy of a whole document's data, or why it is not one. */
export function copyData(data: unknown, at: string): Data | string {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    return `${at} must be an object of fields`;
  }
  try {
    return copyJson(data, at) as Data;
  } catch (err) {
    if (err instanceof NotJsonError) return err.message;
    throw err;
  }
}

/** A caller's copy of a stored document (stored data is JSON already: the unchecked copy). */
export function snapshot(key: string, version: number, data: Data, incarnation: string): StoredDoc {
  return { key, version, data: cloneJson(data), incarnation };
}

/**
 * Every stored document, one table per model, and the source of incarnations.
 *
 * @example
 * ```ts
 * const docs = new Documents();
 * const inc = docs.newIncarnation(); // never returned again, by this or any other instance
 * ```
 */
export class Documents {
  readonly #tables = new Map<string, Map<string, Entry>>();
  #incarnations = 0;
  /** Prefix of this backend's incarnations, so that they are never reused by another instance. */
  readonly #instance = `${Date.now().toString(36)}.${Math.random().toString(36).slice(2, 8)}.`;
  /** Expiring documents by `model NUL key`: the sweeper reclaims them once expired. */
  readonly #expiring = new Sweeper<string>((id) => {
    const at = id.indexOf('\u0000');
    const table = this.#tables.get(id.slice(0, at));
    if (table) this.live(table, id.slice(at + 1));
  });

  /**
   * The entry of `key` in `table` unless it expired: an expired entry is removed (a lazy check:
   * no path sees an expired document, whether or not the sweeper reclaimed it yet).
   */
  live(table: Map<string, Entry>, key: string): Entry | undefined {
    const e = table.get(key);
    if (e === undefined || e.expiresAt === undefined || e.expiresAt > now()) return e;
    table.delete(key);
    return undefined;
  }

  /** The entry of (model, key) was installed with this expiry (undefined: none). */
  expiring(model: string, key: string, at: number | undefined): void {
    const id = `${model}\u0000${key}`;
    if (at === undefined) {
      if (this.#expiring.size > 0) this.#expiring.delete(id);
    } else this.#expiring.set(id, at);
  }

  /** Documents waiting to expire, and sweep timers running. */
  expiryStats(): { expiring: number; timers: number } {
    return { expiring: this.#expiring.size, timers: this.#expiring.timers };
  }

  /** Stops the sweeper (the backend closed). */
  close(): void {
    this.#expiring.close();
  }

  /** The table of `model`, created on first use. */
  table(model: string): Map<string, Entry> {
    let t = this.#tables.get(model);
    if (!t) this.#tables.set(model, (t = new Map()));
    return t;
  }

  /** The stored entry of (model, key), if any (creates no table). */
  get(model: string, key: string): Entry | undefined {
    const t = this.#tables.get(model);
    return t && this.live(t, key);
  }

  /** The table of `model` if it exists (creates none). */
  existingTable(model: string): Map<string, Entry> | undefined {
    return this.#tables.get(model);
  }

  /** A fresh incarnation, unique per creation. */
  newIncarnation(): string {
    return this.#instance + (++this.#incarnations).toString(36);
  }

  /** Stored documents, all models together. */
  count(): number {
    let documents = 0;
    for (const t of this.#tables.values()) documents += t.size;
    return documents;
  }
}
