/**
 * Runs the conformance suite on the PostgreSQL backend against the run's server (DATABASE_URL,
 * set by test/setup/servers.ts). Every `open()` is a new backend with its own
 * pool on the same schema (another "process"); the schema is random and dropped at the end.
 *
 * Deadlock detection: PostgreSQL finds cycles between sessions that wait for each other (40P01 →
 * DeadlockError), but nested `lock()` calls in opposite orders wait through JavaScript (the outer
 * holder's session is idle while its inner lock waits), which no server can see. Within one
 * process the store's boundary tracks every lease in the same wait-for graph as the in-process
 * LockTable (the backend declares `supports.inProcessDeadlocks`), so those cycles end in
 * DeadlockError at once; cycles through other
 * processes end at `timeoutMs`.
 */
import pg from 'pg';
import { postgres } from '../../src/backends/postgres/index.js';
import { databaseUrl } from '../support/env.js';
import type { Backend } from './api.js';
import { conformance } from './suite.js';

const url = databaseUrl();

conformance('postgres', async () => {
  const schema = `lsconf_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const opened: Backend[] = [];
  return {
    open: async () => {
      const b = postgres({ url, schema, poolSize: 10 });
      opened.push(b);
      return b;
    },
    cleanup: async () => {
      for (const b of opened) await b.close();
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
});
