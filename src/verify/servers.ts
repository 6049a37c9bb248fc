/**
 * Throwaway Redis and PostgreSQL servers, for the tests and for verification runs that disturb
 * the server (`lab verify --faults admin`): each one listens on a free loopback port,
 * keeps everything in its own temporary directory, and is gone (process and directory) after
 * `stop()`. Nothing here touches a server somebody else runs.
 *
 * Leaving nothing behind: `stop()` shuts the server down cleanly; a process `exit` hook asks any
 * server still running to shut down; and each server has a small watchdog (`sh`) holding a pipe
 * from this process, which stops the server (SIGKILL after 5 s) and removes its directory when
 * that pipe closes, i.e. when this process dies in any way, SIGKILL included.
 *
 * Fast: a PostgreSQL cluster is a copy of a template cluster (initdb'd once per machine, version
 * and user, `test` database included, kept in the OS temp dir) booted with fsync off; server
 * directories go to /dev/shm when it is a roomy tmpfs.
 *
 * PostgreSQL refuses to run as root: as root, initdb and postgres run as the `postgres` user
 * (which must exist) and the directory is handed to it. Binaries are found on
 * `LOCKSTEP_PG_BIN`, `pg_config --bindir`, `/usr/lib/postgresql/<newest>/bin`, then PATH;
 * redis-server on `LOCKSTEP_REDIS_SERVER`, then PATH.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** A running throwaway `redis-server`. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  /** The redis-server process id (for SIGSTOP/SIGCONT in fault tests). */
  readonly pid: number;
  /** Its own directory (working dir and log). */
  readonly dir: string;
  /** Shuts it down and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

/** Options for {@link startRedis}. */
export interface RedisOptions {
  /** Extra `redis-server` arguments, e.g. `['--enable-debug-command', 'yes']`. */
  args?: string[];
  /** How long to wait for it to accept connections (default 20 s). */
  timeoutMs?: number;
}

/** A running throwaway PostgreSQL cluster. */
export interface PostgresServer {
  /** `postgres://postgres@127.0.0.1:<port>/test` (trust auth; the `test` database exists). */
  readonly url: string;
  readonly port: number;
  /** The postmaster's process id. */
  readonly pid: number;
  /** Its own directory (data directory, unix socket, log). */
  readonly dir: string;
  /** Shuts it down (fast shutdown) and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

/** Options for {@link startPostgres}. */
export interface PostgresOptions {
  /** Extra server settings (`-c name=value`), e.g. `{ max_connections: 50 }`. */
  settings?: Record<string, string | number>;
  /** How long to wait for it to accept connections (default 30 s). */
  timeoutMs?: number;
}

/** Thrown when a binary the servers need is not installed. */
export class MissingServerBinaryError extends Error {
  override name = 'MissingServerBinaryError';
}

const PG_USER = 'postgres';
/** Servers started by this process and not stopped yet: pid -> the signal that shuts it down. */
const live = new Map<number, NodeJS.Signals>();
let exitHookInstalled = false;

/**
 * On exit, asks every server still running to shut down (an exit hook cannot wait); its
 * watchdog, armed still, sees this process gone, escalates to SIGKILL if needed and removes
 * the directory.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [pid, signal] of live) {
      try {
        process.kill(pid, 'SIGCONT');
        process.kill(pid, signal);
      } catch {}
    }
  });
}

function executable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Finds `name` on PATH; undefined when absent. */
function which(name: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(path.delimiter)) {
    if (d !== '' && executable(path.join(d, name))) return path.join(d, name);
  }
  return undefined;
}

let pgBinDir: string | undefined;

/**
 * The directory holding initdb and postgres; throws MissingServerBinaryError when none does.
 *
 * @example
 * ```ts
 * postgresBinDir(); // '/usr/lib/postgresql/16/bin'
 * ```
 */
export function postgresBinDir(): string {
  if (pgBinDir !== undefined) return pgBinDir;
  const has = (d: string) =>
    executable(path.join(d, 'initdb')) && executable(path.join(d, 'postgres'));
  const chosen = process.env.LOCKSTEP_PG_BIN;
  if (chosen) {
    if (!has(chosen))
      throw new MissingServerBinaryError(
        `LOCKSTEP_PG_BIN=${chosen} holds no initdb and postgres: point it at PostgreSQL's bin directory`,
      );
    pgBinDir = chosen;
    return chosen;
  }
  const candidates: string[] = [];
  const pgConfig = which('pg_config');
  if (pgConfig) {
    const r = spawnSync(pgConfig, ['--bindir'], { encoding: 'utf8' });
    if (r.status === 0) candidates.push(r.stdout.trim());
  }
  try {
    const versions = fs
      .readdirSync('/usr/lib/postgresql')
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) candidates.push(`/usr/lib/postgresql/${v}/bin`);
  } catch {}
  // Last, wherever initdb on PATH really lives (Debian puts symlinks in /usr/local/bin or none).
  const initdb = which('initdb');
  if (initdb) candidates.push(path.dirname(fs.realpathSync(initdb)));
  const found = candidates.find(has);
  if (found === undefined)
    throw new MissingServerBinaryError(
      "the tests start their own PostgreSQL and need its server binaries (initdb, postgres): install them (Debian/Ubuntu: 'apt-get install postgresql'; macOS: 'brew install postgresql'), or set LOCKSTEP_PG_BIN to the directory holding them",
    );
  pgBinDir = found;
  return found;
}

/**
 * The redis-server binary; throws MissingServerBinaryError when absent.
 *
 * @example
 * ```ts
 * redisServerBinary(); // '/usr/bin/redis-server'
 * ```
 */
export function redisServerBinary(): string {
  const chosen = process.env.LOCKSTEP_REDIS_SERVER;
  if (chosen) {
    if (!executable(chosen))
      throw new MissingServerBinaryError(
        `LOCKSTEP_REDIS_SERVER=${chosen} is not an executable: point it at a redis-server binary`,
      );
    return chosen;
  }
  const p = which('redis-server');
  if (p === undefined)
    throw new MissingServerBinaryError(
      "the tests start their own Redis and need the 'redis-server' binary: install it (Debian/Ubuntu: 'apt-get install redis-server'; macOS: 'brew install redis'), or set LOCKSTEP_REDIS_SERVER to its path",
    );
  return p;
}

/** A loopback port nobody listened on a moment ago (the caller retries if it is taken since). */
async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function readLog(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Starts a watchdog that, when this process dies (its stdin pipe closes), stops `pid` with
 * `signal`, then SIGKILL after 5 s, and removes `dir`. Returns a function that disarms it.
 */
function watchdog(pid: number, dir: string, signal: 'TERM' | 'INT'): () => void {
  const script = [
    'trap "" INT TERM HUP',
    'read _ignored',
    `kill -CONT "$1" 2>/dev/null; kill -${signal} "$1" 2>/dev/null`,
    'i=0; while kill -0 "$1" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
    'kill -KILL "$1" 2>/dev/null',
    'rm -rf "$2"',
  ].join('\n');
  const w = spawn('sh', ['-c', script, 'watchdog', String(pid), dir], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  });
  w.unref();
  (w.stdin as unknown as net.Socket).unref?.();
  w.stdin?.on('error', () => {});
  return () => {
    try {
      w.kill('SIGKILL');
    } catch {}
  };
}

interface Launched {
  child: ChildProcess;
  exited: Promise<void>;
}

function launch(
  cmd: string,
  args: string[],
  log: string,
  extra: { uid?: number; gid?: number; cwd?: string },
): Launched {
  const fd = fs.openSync(log, 'a');
  try {
    const child = spawn(cmd, args, {
      stdio: ['ignore', fd, fd],
      cwd: extra.cwd,
      ...(extra.uid !== undefined ? { uid: extra.uid, gid: extra.gid } : {}),
    });
    child.unref();
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    });
    return { child, exited };
  } finally {
    fs.closeSync(fd);
  }
}

/** Waits for `ready` in the log; rejects with the log if the process exits or time runs out. */
async function waitReady(
  l: Launched,
  log: string,
  ready: RegExp,
  timeoutMs: number,
  what: string,
): Promise<void> {
  let gone = false;
  void l.exited.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  for (let wait = 5; ; wait = Math.min(wait * 2, 50)) {
    if (ready.test(readLog(log))) return;
    if (gone) throw new StartError(`${what} exited before it was ready`, readLog(log));
    if (Date.now() > deadline)
      throw new StartError(`${what} not ready in ${timeoutMs} ms`, readLog(log));
    await sleep(wait);
  }
}

class StartError extends Error {
  constructor(
    message: string,
    readonly log: string,
  ) {
    super(`${message}; its log:\n${log.slice(-3000)}`);
  }
  get portTaken(): boolean {
    return /address already in use/i.test(this.log);
  }
}

async function stopProcess(l: Launched, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  const c = l.child;
  if (c.exitCode !== null || c.signalCode !== null) return;
  try {
    c.kill('SIGCONT');
    c.kill(signal);
  } catch {}
  let timer: NodeJS.Timeout | undefined;
  const done = await Promise.race([
    l.exited.then(() => true),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs))),
  ]);
  clearTimeout(timer);
  if (!done) {
    try {
      c.kill('SIGKILL');
    } catch {}
    await l.exited;
  }
}

let scratch: string | undefined;

/**
 * Where servers keep their directories: LOCKSTEP_TEST_TMPDIR if set; else /dev/shm when it is a
 * tmpfs with 1 GB free (copying the PostgreSQL template there took 0.08-0.2 s against 1.4-2.2 s
 * on the ext4 /tmp of a busy machine); else the OS temp dir.
 */
function scratchBase(): string {
  if (scratch !== undefined) return scratch;
  scratch = process.env.LOCKSTEP_TEST_TMPDIR || os.tmpdir();
  if (!process.env.LOCKSTEP_TEST_TMPDIR) {
    try {
      const st = fs.statfsSync('/dev/shm');
      const TMPFS_MAGIC = 0x01021994;
      fs.accessSync('/dev/shm', fs.constants.W_OK);
      if (st.type === TMPFS_MAGIC && st.bavail * st.bsize >= 2 ** 30) scratch = '/dev/shm';
    } catch {}
  }
  return scratch;
}

function makeTempDir(tag: string, base = scratchBase()): string {
  return fs.mkdtempSync(path.join(base, `lockstep-${tag}-`));
}

/**
 * Starts a throwaway `redis-server` on a free loopback port (`--save '' --appendonly no`, its own
 * temp directory). Stop it with `stop()`.
 *
 * @example
 * const server = await startRedis();
 * const store = createStore(redis({ url: server.url, prefix: 'x' }));
 * // ... CLIENT PAUSE, SIGSTOP server.pid, anything: nobody else uses it
 * await store.close();
 * await server.stop();
 */
export async function startRedis(opts: RedisOptions = {}): Promise<RedisServer> {
  const bin = redisServerBinary();
  installExitHook();
  const timeoutMs = opts.timeoutMs ?? 20_000;
  for (let attempt = 1; ; attempt++) {
    const dir = makeTempDir('redis');
    const log = path.join(dir, 'redis.log');
    const port = await freePort();
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--daemonize',
      'no',
      '--logfile',
      '',
      '--protected-mode',
      'yes',
      ...(opts.args ?? []),
    ];
    const l = launch(bin, args, log, { cwd: dir });
    const pid = l.child.pid;
    if (pid === undefined) {
      await l.exited;
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`could not run ${bin}`);
    }
    const disarm = watchdog(pid, dir, 'TERM');
    live.set(pid, 'SIGTERM');
    void l.exited.then(() => {
      disarm();
      live.delete(pid);
    });
    try {
      await waitReady(l, log, /Ready to accept connections/, timeoutMs, 'redis-server');
    } catch (e) {
      await stopProcess(l, 'SIGKILL', 1_000);
      fs.rmSync(dir, { recursive: true, force: true });
      if (e instanceof StartError && e.portTaken && attempt < 5) continue;
      throw e;
    }
    let stopping: Promise<void> | undefined;
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      pid,
      dir,
      stop: () =>
        (stopping ??= (async () => {
          // The watchdog stays armed until the server has exited (then it is disarmed, so that
          // it can never signal a reused pid).
          await stopProcess(l, 'SIGTERM', 5_000);
          fs.rmSync(dir, { recursive: true, force: true });
        })()),
    };
  }
}

/** uid/gid to run PostgreSQL as: ourselves, or the `postgres` user when we are root. */
function pgIdentity(): { uid?: number; gid?: number } {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return {};
  let out: string;
  try {
    out = execFileSync('id', [PG_USER], { encoding: 'utf8' });
  } catch {
    throw new MissingServerBinaryError(
      `PostgreSQL refuses to run as root and there is no '${PG_USER}' user to run it as: create one ('useradd --system ${PG_USER}') or run the tests as another user`,
    );
  }
  const uid = /uid=(\d+)/.exec(out)?.[1];
  const gid = /gid=(\d+)/.exec(out)?.[1];
  if (uid === undefined || gid === undefined)
    throw new Error(`cannot parse 'id ${PG_USER}': ${out}`);
  return { uid: Number(uid), gid: Number(gid) };
}

function run(cmd: string, args: string[], who: { uid?: number; gid?: number }): void {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    ...(who.uid !== undefined ? { uid: who.uid, gid: who.gid } : {}),
  });
  if (r.status !== 0)
    throw new Error(
      `${path.basename(cmd)} failed (${r.status ?? r.signal ?? r.error?.message}): ${r.stderr || r.stdout}`,
    );
}

function chownTree(p: string, who: { uid?: number; gid?: number }): void {
  if (who.uid === undefined || who.gid === undefined) return;
  fs.chownSync(p, who.uid, who.gid);
  for (const e of fs.readdirSync(p, { withFileTypes: true, recursive: true })) {
    fs.lchownSync(path.join(e.parentPath, e.name), who.uid, who.gid);
  }
}

const INITDB_ARGS = [
  '-U',
  'postgres',
  '-A',
  'trust',
  '-E',
  'UTF8',
  '--locale=C',
  '--no-sync',
  '--no-instructions',
  // 1 MB WAL segments instead of 16: a fresh cluster's WAL is one segment, and the template is
  // copied for every cluster.
  '--wal-segsize=1',
];

interface Booted {
  l: Launched;
  pid: number;
}

/** Runs `postgres` on `data` and waits until it accepts connections; the caller stops it. */
async function boot(
  bin: string,
  who: { uid?: number; gid?: number },
  dir: string,
  data: string,
  port: number,
  settings: Record<string, string | number>,
  timeoutMs: number,
): Promise<Booted> {
  const log = path.join(dir, 'postgres.log');
  fs.writeFileSync(log, '');
  if (who.uid !== undefined && who.gid !== undefined) fs.chownSync(log, who.uid, who.gid);
  const args = ['-D', data, '-p', String(port)];
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);
  const l = launch(path.join(bin, 'postgres'), args, log, { ...who, cwd: dir });
  const pid = l.child.pid;
  if (pid === undefined) {
    await l.exited;
    throw new Error(`could not run ${path.join(bin, 'postgres')}`);
  }
  const disarm = watchdog(pid, dir, 'INT');
  live.set(pid, 'SIGINT');
  void l.exited.then(() => {
    disarm();
    live.delete(pid);
  });
  try {
    await waitReady(l, log, /ready to accept connections/, timeoutMs, 'postgres');
  } catch (e) {
    await stopProcess(l, 'SIGKILL', 1_000);
    throw e;
  }
  return { l, pid };
}

const FAST: Record<string, string | number> = {
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  logging_collector: 'off',
};

/**
 * A pristine cluster with the `test` database, made once per machine, PostgreSQL version and
 * user (initdb, then one boot to create the database, then a clean shutdown) and copied for each
 * cluster: a copy boots without recovery and takes a fraction of initdb's time. Built beside
 * its final name and renamed into place, so a half-made template is never used.
 */
async function template(
  bin: string,
  who: { uid?: number; gid?: number },
  timeoutMs: number,
): Promise<string> {
  const r = spawnSync(path.join(bin, 'postgres'), ['--version'], { encoding: 'utf8' });
  const version = /(\d+(?:\.\d+)*)/.exec(r.stdout ?? '')?.[1];
  if (version === undefined) throw new Error(`cannot read the PostgreSQL version: ${r.stderr}`);
  const name = `lockstep-pg-template-v2-${version}-${who.uid ?? process.getuid?.() ?? 'u'}`;
  const final = path.join(os.tmpdir(), name);
  if (fs.existsSync(path.join(final, 'PG_VERSION'))) return final;
  // The template stays between runs: on disk (the OS temp dir), not in memory.
  const building = makeTempDir('pg-template', os.tmpdir());
  try {
    chownTree(building, who);
    const data = path.join(building, 'data');
    run(path.join(bin, 'initdb'), ['-D', data, ...INITDB_ARGS], who);
    // Unix socket only (no TCP port to collide on): the port only names the socket file.
    const port = 5432;
    const b = await boot(
      bin,
      who,
      building,
      data,
      port,
      { ...FAST, listen_addresses: '', unix_socket_directories: building },
      timeoutMs,
    );
    try {
      await createTestDatabase(port, building, timeoutMs);
    } finally {
      await stopProcess(b.l, 'SIGINT', 10_000);
    }
    if (b.l.child.exitCode !== 0)
      throw new Error(`the template's postgres did not shut down cleanly`);
    fs.rmSync(path.join(data, 'postmaster.opts'), { force: true });
    try {
      fs.renameSync(data, final);
    } catch (e) {
      // Another process won the race: use its template.
      if (!fs.existsSync(path.join(final, 'PG_VERSION'))) throw e;
    }
  } finally {
    fs.rmSync(building, { recursive: true, force: true });
  }
  return final;
}

/**
 * Starts a throwaway PostgreSQL cluster: a copy of a template cluster in a temp directory,
 * `postgres` on a free loopback port with its unix socket in that directory, `fsync=off`, trust
 * auth, and a `test` database. As root it runs as the `postgres` user. Stop it with `stop()`.
 *
 * @example
 * const server = await startPostgres();
 * const store = createStore(postgres({ url: server.url, schema: 'x' }));
 * // ... pg_terminate_backend anything: nobody else uses it
 * await store.close();
 * await server.stop();
 */
export async function startPostgres(opts: PostgresOptions = {}): Promise<PostgresServer> {
  const bin = postgresBinDir();
  const who = pgIdentity();
  installExitHook();
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const tpl = await template(bin, who, timeoutMs);
  for (let attempt = 1; ; attempt++) {
    const dir = makeTempDir('pg');
    const data = path.join(dir, 'data');
    chownTree(dir, who);
    run('cp', ['-R', '-p', tpl, data], who);
    fs.chmodSync(data, 0o700);
    const port = await freePort();
    let b: Booted;
    try {
      b = await boot(
        bin,
        who,
        dir,
        data,
        port,
        {
          ...FAST,
          listen_addresses: '127.0.0.1',
          unix_socket_directories: dir,
          max_connections: 200,
          shared_buffers: '32MB',
          ...opts.settings,
        },
        timeoutMs,
      );
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      if (e instanceof StartError && e.portTaken && attempt < 5) continue;
      throw e;
    }
    const { l, pid } = b;
    let stopping: Promise<void> | undefined;
    return {
      url: `postgres://postgres@127.0.0.1:${port}/test`,
      port,
      pid,
      dir,
      stop: () =>
        (stopping ??= (async () => {
          // SIGINT: fast shutdown (open sessions are ended, not waited for).
          await stopProcess(l, 'SIGINT', 10_000);
          fs.rmSync(dir, { recursive: true, force: true });
        })()),
    };
  }
}

async function createTestDatabase(port: number, dir: string, timeoutMs: number): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({
    host: dir,
    port,
    user: 'postgres',
    database: 'postgres',
    connectionTimeoutMillis: timeoutMs,
  });
  await client.connect();
  try {
    await client.query('CREATE DATABASE test');
  } finally {
    await client.end();
  }
}
