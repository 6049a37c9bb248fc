/**
 * Runs the conformance suite on the SQLite backend: every `open()` is a new backend with its own
 * better-sqlite3 connection on the same temporary database file (another "process" as far as
 * SQLite can tell: its own locks, its own statements). The directory is removed at the end.
 * test/backends/sqlite/ runs clients in real child processes.
 */
import Database from 'better-sqlite3';
import { type SqliteBackend, sqlite } from '../../src/backends/sqlite/index.js';
import { tempDatabase } from '../support/sqlite.js';
import { conformance } from './suite.js';

conformance('sqlite', async () => {
  const db = tempDatabase('lsconf');
  const opened: SqliteBackend[] = [];
  return {
    open: async () => {
      const b = sqlite({ path: db.path });
      opened.push(b);
      return b;
    },
    // What named locks leave stored: holder and waiter rows of the pool (its one pool row, which
    // keeps fences increasing, may stay), and open permit leases of any instance.
    namedLockResidue: async (name: string) => {
      const raw = new Database(db.path, { readonly: true });
      try {
        const rows = raw
          .prepare('SELECT kind, seq, granted FROM lockstep_permits WHERE name = ?')
          .all(name) as Array<{ kind: string; seq: number; granted: number }>;
        const out = rows.map((r) => `${r.kind} row ${r.seq} (${r.granted ? 'holder' : 'waiter'})`);
        const open = opened.reduce((n, b) => n + b.openPermits, 0);
        if (open > 0) out.push(`open permit leases: ${open}`);
        return out;
      } finally {
        raw.close();
      }
    },
    cleanup: async () => {
      for (const b of opened) await b.close();
      db.drop();
    },
  };
});
