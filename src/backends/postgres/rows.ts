/** Rows as they come back from PostgreSQL (raw text), parsed; document ids and lock names. */
import type { CustomTypesConfig, QueryResult } from 'pg';
import type { Data, StoredDoc } from '../../store/backend.js';

// The default action and lock names are the store's, the same on every backend.
export { DEFAULT_ACTION, lockName } from '../../store/names.js';

/** Every column comes back as raw text; we parse it ourselves (immune to custom type parsers). */
export const RAW = { getTypeParser: () => (v: string) => v } as unknown as CustomTypesConfig;

export type Raw = Record<string, string | null>;

/** One stored row, parsed. */
export interface Row {
  readonly key: string;
  readonly version: number;
  readonly fence: number;
  readonly data: Data;
  readonly fieldVersions: Record<string, number>;
  readonly dataVersion: number;
  /** Unique per creation of the key (from the fence sequence). */
  readonly incarnation: number;
  /**
   * Its TTL passed (server clock, when it was read): the document is gone for every path; the
   * row is only still there until a write replaces it or the sweep deletes it.
   */
  readonly expired: boolean;
}

export function parseRow(r: Raw): Row {
  return {
    key: r.key as string,
    version: Number(r.version),
    fence: Number(r.fence),
    data: JSON.parse(r.data as string) as Data,
    fieldVersions: JSON.parse(r.field_versions as string) as Record<string, number>,
    dataVersion: Number(r.data_version),
    incarnation: Number(r.incarnation),
    expired: r.expired === 't' || r.expired === 'true',
  };
}

export function storedDoc(row: Row): StoredDoc {
  return {
    key: row.key,
    version: row.version,
    data: row.data,
    incarnation: String(row.incarnation),
  };
}

export function resultsOf(r: QueryResult | QueryResult[]): QueryResult[] {
  return Array.isArray(r) ? r : [r];
}

export function docId(model: string, key: string): string {
  return `${model}\u0000${key}`;
}

/** Code-point order of strings (the "C" collation), so JS and SQL agree on the lock order. */
export function compareC(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
