/**
 * An isolated SQLite namespace for tests, the lab and the bench: a fresh temporary directory
 * holding one database file (with its -wal, -shm and -lockstep-wake files), removed by `drop()`.
 *
 * @example
 * ```ts
 * const db = tempDatabase('conf');
 * const backend = sqlite({ path: db.path });
 * // ...
 * await backend.close();
 * db.drop();
 * ```
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A temporary database file and its removal. */
export interface TempDatabase {
  readonly path: string;
  drop(): void;
}

/** Creates a fresh directory for one database file; `drop()` removes it with everything in it. */
export function tempDatabase(prefix: string): TempDatabase {
  const dir = mkdtempSync(join(tmpdir(), `lockstep-${prefix}-`));
  return {
    path: join(dir, 'lockstep.db'),
    drop: () => rmSync(dir, { recursive: true, force: true }),
  };
}
