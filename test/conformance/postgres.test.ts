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
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { type PostgresBackend, postgres } from '../../src/backends/postgres/index.js';
import { databaseUrl } from '../support/env.js';
import { conformance } from './suite.js';

const url = databaseUrl();

conformance('postgres', async () => {
  const schema = `lsconf_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const opened: PostgresBackend[] = [];
  return {
    open: async () => {
      const b = postgres({ url, schema, poolSize: 10 });
      opened.push(b);
      return b;
    },
    // What named locks leave: holder rows (semaphores), advisory locks held (mutexes and rwlocks,
    // the server's lock table), and per backend instance open permits and listening connections.
    namedLockResidue: async (name: string) => {
      const left: string[] = [];
      const first = opened[0];
      if (first) {
        for (const kind of ['mutex', 'rwlock', 'semaphore'] as const) {
          const n = await first.permitsHeld(kind, name);
          if (n !== 0) left.push(`${kind} units held: ${n}`);
        }
        const rows = await first.pool
          .query<{ n: string }>(
            `SELECT count(*) AS n FROM "${schema}"."lockstep$permit" WHERE name = $1`,
            [name],
          )
          .then((r) => Number(r.rows[0]?.n ?? 0))
          .catch(() => 0);
        if (rows !== 0) left.push(`holder rows: ${rows}`);
      }
      opened.forEach((b, i) => {
        const { permits, listeners } = b.permitResources;
        if (permits !== 0) left.push(`backend ${i}: ${permits} open permits`);
        if (listeners !== 0) left.push(`backend ${i}: ${listeners} listening connections`);
      });
      return left;
    },
    limitState: async (name) => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        const r = await c.query(
          `SELECT (SELECT count(*) FROM "${schema}"."lockstep$limits" WHERE name = $1) + (SELECT count(*) FROM "${schema}"."lockstep$limit_entries" e JOIN "${schema}"."lockstep$limits" l ON l.id = e.limit_id WHERE l.name = $1) AS n`,
          [name],
        );
        return Number(r.rows[0].n);
      } finally {
        await c.end();
      }
    },
    child: {
      module: fileURLToPath(new URL('../../src/backends/postgres/index.ts', import.meta.url)),
      factory: 'postgres',
      options: { url, schema, poolSize: 2 },
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
