/**
 * Backend selection for the lab: `memory` (default), `redis://...`, `postgres://...`, `sqlite`
 * or `sqlite://path`. Backends other than memory are imported lazily, only when asked for, and
 * every run isolates itself (a random key prefix on Redis, a random schema on PostgreSQL, a
 * temporary file named after the run for `sqlite`) and removes what it created; `sqlite://path`
 * uses that file as it is and keeps it.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Backend, createStore, memory } from '../index.js';
import type { BackendKind, LabStore } from './types.js';
import { errorMessage } from './util.js';

/**
 * A problem with how the lab was invoked or with its backend; printed as one line.
 *
 * @example
 * ```ts
 * throw new LabError('cannot reach Redis at redis://127.0.0.1:1: ECONNREFUSED', 3);
 * ```
 */
export class LabError extends Error {
  /** The process exit code to use (2: usage, 3: backend unreachable or failing). */
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = 'LabError';
    this.exitCode = exitCode;
  }
}

/** An open backend, ready for a run. */
export interface LabBackend {
  readonly kind: BackendKind;
  /** What the report shows: `memory`, or the URL without its password. */
  readonly label: string;
  readonly store: LabStore;
  /** Connections the backend may open at most (PostgreSQL's pool), when bounded. */
  readonly connections?: number;
  /** Closes the store and removes everything the run created on the server. Never throws. */
  cleanup(): Promise<void>;
}

const USAGE =
  'expected memory, redis://host:port, postgres://user@host:port/database, sqlite (a temporary file) or sqlite://path';
const CONNECT_TIMEOUT_MS = 3000;
const PROBE_TIMEOUT_MS = 10_000;
const CLOSE_TIMEOUT_MS = 5000;

/**
 * A fresh, random identifier for this run's key prefix / schema.
 *
 * @example
 * ```ts
 * newRunId(); // '9f3a61c2e0'
 * ```
 */
export function newRunId(): string {
  return randomBytes(5).toString('hex');
}

/**
 * The URL with its password hidden, for messages and the report.
 *
 * @example
 * ```ts
 * redact(new URL('postgres://app:secret@db/prod')); // 'postgres://app:***@db/prod'
 * ```
 */
export function redact(url: URL): string {
  const copy = new URL(url.href);
  if (copy.password) copy.password = '***';
  return copy.href.replace(/\/$/, '');
}

/**
 * Opens the backend named by `--backend` and checks that it answers.
 *
 * @example
 * ```ts
 * const b = await openBackend('redis://127.0.0.1:6379', newRunId());
 * try { ... b.store ... } finally { await b.cleanup(); }
 * ```
 */
export async function openBackend(
  spec: string | undefined,
  runId: string,
  options: { workers: number; wrap?: (backend: Backend) => Backend } = { workers: 8 },
): Promise<LabBackend> {
  const text = (spec ?? 'memory').trim();
  const wrap = options.wrap ?? ((b: Backend) => b);
  if (text === 'memory' || text === 'memory:' || text === 'memory://') {
    const store = createStore(wrap(memory()));
    return { kind: 'memory', label: 'memory', store, cleanup: () => closeQuietly(store) };
  }
  if (text === 'sqlite' || text === 'sqlite:' || text.startsWith('sqlite:')) {
    return openSqlite(text, runId, wrap);
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new LabError(`invalid --backend ${JSON.stringify(text)}: ${USAGE}`);
  }
  const label = redact(url);
  switch (url.protocol) {
    case 'redis:':
    case 'rediss:':
      if (!/^\/?\d*$/.test(url.pathname)) {
        throw new LabError(
          `invalid --backend ${JSON.stringify(label)}: the path must be a database number (redis://host:port/0)`,
        );
      }
      await reachable(url, 6379, 'Redis', label);
      await preflightRedis(url, label);
      return openRedis(url, label, runId, wrap);
    case 'postgres:':
    case 'postgresql:':
      await reachable(url, 5432, 'PostgreSQL', label);
      return openPostgres(url, label, runId, options.workers, wrap);
    default:
      throw new LabError(
        `unsupported --backend ${JSON.stringify(label)} (protocol ${url.protocol}): ${USAGE}`,
      );
  }
}

/** Fails fast with a one-line error when nothing listens at the URL's host and port. */
async function reachable(url: URL, defaultPort: number, what: string, label: string) {
  const host = url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
  const port = url.port ? Number(url.port) : defaultPort;
  await new Promise<void>((resolve, reject) => {
    const socket = connect({ host, port });
    const fail = (reason: string) => {
      socket.destroy();
      reject(new LabError(`cannot reach ${what} at ${label}: ${reason}`, 3));
    };
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => fail(`no answer within ${CONNECT_TIMEOUT_MS} ms`));
    socket.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? errorMessage(err)));
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
  });
}

/**
 * Connects once with a throwaway client (no retries) and pings, so that a wrong password, a
 * database number the server does not have or a TLS mismatch is one clear error before the run.
 */
async function preflightRedis(url: URL, label: string): Promise<void> {
  const { Redis } = await importBackend(() => import('ioredis'), 'Redis');
  let lastError: unknown;
  const client = new Redis(url.href, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    connectTimeout: CONNECT_TIMEOUT_MS,
  });
  client.on('error', (err: unknown) => {
    lastError = err;
  });
  try {
    await client.connect();
    const db = Number(url.pathname.slice(1) || 0);
    if (db > 0) await client.select(db); // ioredis only logs a failed SELECT on connect
    await client.ping();
    if (lastError !== undefined) throw lastError;
  } catch (err) {
    throw new LabError(`Redis at ${label} failed: ${errorMessage(lastError ?? err)}`, 3);
  } finally {
    client.disconnect();
  }
}

/** Runs a first read so that authentication or database errors surface before the run. */
async function probe(store: LabStore, what: string, label: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const Probe = store.model('lab_probe', {
      '~standard': {
        version: 1,
        vendor: 'lockstep-lab',
        validate: (value: unknown) => ({ value }),
      },
    });
    await Promise.race([
      Probe.find('probe'),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)),
          PROBE_TIMEOUT_MS,
        );
      }),
    ]);
  } catch (err) {
    const cause =
      err instanceof Error && err.cause !== undefined ? `: ${errorMessage(err.cause)}` : '';
    throw new LabError(`${what} at ${label} failed: ${errorMessage(err)}${cause}`, 3);
  } finally {
    clearTimeout(timer);
  }
}

async function importBackend<T>(load: () => Promise<T>, what: string): Promise<T> {
  try {
    return await load();
  } catch (err) {
    throw new LabError(`the ${what} backend could not be loaded: ${errorMessage(err)}`, 3);
  }
}

async function openRedis(
  url: URL,
  label: string,
  runId: string,
  wrap: (backend: Backend) => Backend,
): Promise<LabBackend> {
  const { redis } = await importBackend(() => import('../backends/redis/index.js'), 'Redis');
  const marker = `lockstep-lab-${runId}`;
  const store = createStore(wrap(redis({ url: url.href, prefix: marker })));
  const cleanup = async (warn = true) => {
    await closeQuietly(store);
    await dropRedisKeys(url, marker, warn);
  };
  try {
    await probe(store, 'Redis', label);
  } catch (err) {
    await cleanup(false);
    throw err;
  }
  return { kind: 'redis', label, store, cleanup };
}

/** Deletes every key whose name contains this run's marker (whatever the backend's layout). */
async function dropRedisKeys(url: URL, marker: string, warn: boolean): Promise<void> {
  try {
    const { Redis } = await import('ioredis');
    const client = new Redis(url.href, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await client.connect();
      let cursor = '0';
      do {
        const [next, keys] = await client.scan(cursor, 'MATCH', `*${marker}*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await client.del(...keys);
      } while (cursor !== '0');
    } finally {
      client.disconnect();
    }
  } catch (err) {
    if (warn) {
      process.stderr.write(
        `lab: warning: could not remove keys *${marker}*: ${errorMessage(err)}\n`,
      );
    }
  }
}

async function openPostgres(
  url: URL,
  label: string,
  runId: string,
  workers: number,
  wrap: (backend: Backend) => Backend,
): Promise<LabBackend> {
  const { postgres } = await importBackend(
    () => import('../backends/postgres/index.js'),
    'PostgreSQL',
  );
  const schema = `lockstep_lab_${runId}`;
  // Nested locks hold two connections per worker: size the pool so that they always can.
  const poolSize = Math.min(64, Math.max(10, 2 * workers + 4));
  const store = createStore(wrap(postgres({ url: url.href, schema, poolSize })));
  const cleanup = async (warn = true) => {
    await closeQuietly(store);
    await dropSchema(url, schema, warn);
  };
  try {
    await probe(store, 'PostgreSQL', label);
  } catch (err) {
    await cleanup(false);
    throw err;
  }
  return { kind: 'postgres', label, store, connections: poolSize, cleanup };
}

/**
 * `sqlite` (a file in the temporary directory named after the run, so that verify's worker
 * processes open the same one; removed by cleanup) or `sqlite://path` (that file, kept).
 */
async function openSqlite(
  text: string,
  runId: string,
  wrap: (backend: Backend) => Backend,
): Promise<LabBackend> {
  const { sqlite } = await importBackend(() => import('../backends/sqlite/index.js'), 'SQLite');
  const given = text === 'sqlite' ? '' : text.replace(/^sqlite:(\/\/)?/, '');
  const temporary = given === '';
  const path = temporary ? join(tmpdir(), `lockstep-lab-${runId}.db`) : given;
  let store: LabStore;
  try {
    store = createStore(wrap(sqlite({ path })));
  } catch (err) {
    throw new LabError(`cannot open SQLite database ${path}: ${errorMessage(err)}`, 3);
  }
  const label = temporary ? `sqlite (temporary file ${path})` : `sqlite://${path}`;
  const cleanup = async () => {
    await closeQuietly(store);
    if (temporary) {
      for (const suffix of ['', '-wal', '-shm', '-lockstep-wake']) {
        rmSync(`${path}${suffix}`, { force: true });
      }
    }
  };
  try {
    await probe(store, 'SQLite', label);
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { kind: 'sqlite', label, store, cleanup };
}

async function dropSchema(url: URL, schema: string, warn: boolean): Promise<void> {
  try {
    const pg = await import('pg');
    const client = new pg.default.Client({ connectionString: url.href });
    try {
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema.replace(/"/g, '""')}" CASCADE`);
    } finally {
      await client.end();
    }
  } catch (err) {
    if (warn) {
      process.stderr.write(`lab: warning: could not drop schema ${schema}: ${errorMessage(err)}\n`);
    }
  }
}

/** Closes the store, giving up after a few seconds (a stuck connection must not hang cleanup). */
async function closeQuietly(store: LabStore): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      store.close(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_TIMEOUT_MS);
      }),
    ]);
  } catch {
    // closing is best effort: the run's result is already known
  } finally {
    clearTimeout(timer);
  }
}
