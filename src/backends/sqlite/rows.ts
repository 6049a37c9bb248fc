/**
 * Rows of `lockstep_docs` and what they become: the memory evaluator's entries (so a batch is
 * evaluated with the reference semantics), callers' snapshots, and the values written back.
 *
 * @example
 * ```ts
 * const entry = entryOf(row);            // for the evaluator
 * const doc = storedDoc('k', row);       // for the caller
 * const [data, fv] = encodeEntry(entry); // for the upsert
 * ```
 */

import type { Data, StoredDoc } from '../../store/backend.js';
import type { Entry } from '../memory/documents.js';

/** One row of `lockstep_docs` as the statements return it (without model and key). */
export interface DocRow {
  readonly version: number;
  readonly data: string;
  readonly data_version: number;
  readonly field_versions: string | null;
  readonly incarnation: string;
}

/** The evaluator's entry of a stored row (a fresh object: the evaluator may change it). */
export function entryOf(row: DocRow): Entry {
  return {
    version: row.version,
    data: JSON.parse(row.data) as Data,
    replacedAt: row.data_version,
    fieldVersions:
      row.field_versions === null
        ? undefined
        : (JSON.parse(row.field_versions) as { [field: string]: number }),
    lastField: undefined,
    lastAt: 0,
    incarnation: row.incarnation,
  };
}

/** The caller's snapshot of a stored row. */
export function storedDoc(key: string, row: DocRow): StoredDoc {
  return {
    key,
    version: row.version,
    data: JSON.parse(row.data) as Data,
    incarnation: row.incarnation,
  };
}

/** The `data` and `field_versions` texts of an entry (its last-field shortcut folded in). */
export function encodeEntry(e: Entry): [data: string, fieldVersions: string | null] {
  let fv = e.fieldVersions;
  if (e.lastField !== undefined) {
    fv = { ...fv };
    Object.defineProperty(fv, e.lastField, {
      value: e.lastAt,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  }
  return [JSON.stringify(e.data), fv === undefined ? null : JSON.stringify(fv)];
}
