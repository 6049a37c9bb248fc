/**
 * Runs the conformance suite on the SQLite backend: every `open()` is a new backend with its own
 * better-sqlite3 connection on the same temporary database file (another "process" as far as
 * SQLite can tell: its own locks, its own statements). The directory is removed at the end.
 * test/backends/sqlite/ runs clients in real child processes.
 */
import { sqlite } from '../../src/backends/sqlite/index.js';
import { tempDatabase } from '../support/sqlite.js';
import type { Backend } from './api.js';
import { conformance } from './suite.js';

conformance('sqlite', async () => {
  const db = tempDatabase('lsconf');
  const opened: Backend[] = [];
  return {
    open: async () => {
      const b = sqlite({ path: db.path });
      opened.push(b);
      return b;
    },
    cleanup: async () => {
      for (const b of opened) await b.close();
      db.drop();
    },
  };
});
