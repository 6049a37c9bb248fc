/**
 * Loads the Lua scripts (kept as .lua files next to this module; the build copies them into
 * dist) and runs them on the server. The shared helpers (lib.lua, then permit-lib.lua for the
 * named permit pools) come before every entry script.
 *
 * Two ways to run them, chosen per client:
 * - `functions` (the default on Redis 7+ and Valkey): lib.lua and every entry script are loaded
 *   once as one function library named after the hash of its source (`lockstep_<hash>`), and each
 *   call is an FCALL. The library's functions are defined once at load, not on every call, which
 *   saves ~9 us of server CPU per call against EVALSHA. A server that lost the library (restart
 *   without persistence, FUNCTION FLUSH) answers "Function not found" and the library is loaded
 *   again. Libraries of other Lockstep versions are left alone (they are a few tens of kilobytes).
 * - `eval`: each entry script is sent as lib.lua + the entry and run by EVALSHA, falling back to
 *   EVAL (which also caches it) on NOSCRIPT. Used when asked for, and when the server refuses
 *   FUNCTION LOAD (Redis 6, or an ACL that does not allow it).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';

/** Entry scripts; each is sent as lib.lua + the entry. */
export type ScriptName =
  | 'write'
  | 'writes'
  | 'read'
  | 'acquire'
  | 'release'
  | 'leave'
  | 'renew'
  | 'commit'
  | 'consume'
  | 'unlimit'
  | 'permit-acquire'
  | 'permit-release'
  | 'permit-leave'
  | 'permit-renew'
  | 'permit-held'
  | 'qenqueue'
  | 'qclaim'
  | 'qcomplete'
  | 'qstep'
  | 'qread';

/** How scripts run on a server: one function library and FCALL, or EVALSHA. */
export type ScriptMode = 'functions' | 'eval';

const NAMES: readonly ScriptName[] = [
  'write',
  'writes',
  'read',
  'acquire',
  'release',
  'leave',
  'renew',
  'commit',
  'consume',
  'unlimit',
  'permit-acquire',
  'permit-release',
  'permit-leave',
  'permit-renew',
  'permit-held',
  'qenqueue',
  'qclaim',
  'qcomplete',
  'qstep',
  'qread',
];

/** The shared helpers, in order: every entry script sees all of them. */
const LIBS: readonly string[] = ['lib', 'permit-lib'];

interface Loaded {
  /** EVAL form: lib.lua, bind_globals(), the entry. */
  readonly source: string;
  readonly sha: string;
  /** FCALL name in the function library. */
  readonly fn: string;
}

interface Scripts {
  readonly entries: Map<ScriptName, Loaded>;
  /** The function library's name and source (FUNCTION LOAD). */
  readonly library: string;
  readonly librarySource: string;
}

let loaded: Scripts | undefined;

function load(): Scripts {
  if (loaded) return loaded;
  const read = (n: string) => readFileSync(new URL(`./scripts/${n}.lua`, import.meta.url), 'utf8');
  const lib = LIBS.map(read).join('\n');
  const bodies = NAMES.map((n) => [n, read(n)] as const);
  const hash = createHash('sha1');
  hash.update(lib);
  for (const [n, body] of bodies) hash.update(`\0${n}\0${body}`);
  const library = `lockstep_${hash.digest('hex').slice(0, 16)}`;
  const entries = new Map<ScriptName, Loaded>();
  const registrations: string[] = [];
  for (const [n, body] of bodies) {
    const source = `${lib}\nbind_globals()\n-- entry: ${n}\n${body}`;
    // Function names allow letters, digits and underscores only.
    const fn = `${library}_${n.replaceAll('-', '_')}`;
    entries.set(n, { source, sha: createHash('sha1').update(source).digest('hex'), fn });
    registrations.push(
      `redis.register_function('${fn}', function(KEYS, ARGV)\n` +
        `if not sfind then bind_globals() end\n-- entry: ${n}\n${body}\nend)`,
    );
  }
  const librarySource = `#!lua name=${library}\n${lib}\n${registrations.join('\n')}\n`;
  loaded = { entries, library, librarySource };
  return loaded;
}

/** Per client: how its server runs our scripts, once known (or being found out). */
const modes = new WeakMap<Redis | Cluster, ScriptMode | Promise<ScriptMode>>();

const isError = (err: unknown, prefix: string): boolean =>
  err instanceof Error && err.message.startsWith(prefix);

/** Loads the function library on the server(s) behind `client`; resolves to the mode to use. */
async function loadLibrary(client: Redis | Cluster): Promise<ScriptMode> {
  const s = load();
  const targets: Array<Redis> =
    'nodes' in client && typeof client.nodes === 'function'
      ? (client as Cluster).nodes('master')
      : [client as Redis];
  try {
    for (const node of targets) {
      try {
        await node.call('FUNCTION', 'LOAD', s.librarySource);
      } catch (err) {
        if (!(err instanceof Error && /already exists/i.test(err.message))) throw err;
      }
    }
    return 'functions';
  } catch (err) {
    // Not a Redis 7 server, or an ACL without FUNCTION: EVALSHA still works.
    if (
      err instanceof Error &&
      /unknown command|NOPERM|no permissions|not allowed|unknown subcommand/i.test(err.message)
    ) {
      return 'eval';
    }
    throw err;
  }
}

function modeOf(
  client: Redis | Cluster,
  wanted: ScriptMode | 'auto',
): ScriptMode | Promise<ScriptMode> {
  if (wanted === 'eval') return 'eval';
  const known = modes.get(client);
  if (known !== undefined) return known;
  const p = loadLibrary(client).then(
    (m) => {
      if (wanted === 'functions' && m === 'eval') {
        modes.delete(client);
        throw new Error(
          'this Redis server refuses FUNCTION LOAD (Redis 7+ and the FUNCTION permission are needed for scripts: "functions")',
        );
      }
      modes.set(client, m);
      return m;
    },
    (err: unknown) => {
      modes.delete(client);
      throw err;
    },
  );
  modes.set(client, p);
  return p;
}

async function evalScript(
  client: Redis | Cluster,
  s: Loaded,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<unknown> {
  try {
    return await client.evalsha(s.sha, keys.length, ...keys, ...args);
  } catch (err) {
    // NOSCRIPT: the script is not in the server's cache, so nothing ran: send its source.
    if (isError(err, 'NOSCRIPT')) return client.eval(s.source, keys.length, ...keys, ...args);
    throw err;
  }
}

/**
 * Runs a named script on `client` with `keys` and `args`; returns the script's reply. `mode`
 * picks FCALL of the function library (`functions`), EVALSHA (`eval`), or the first that the
 * server accepts (`auto`, the default). When the server lost our function library (a restart
 * without persistence, FUNCTION FLUSH), the call fails with "Function not found": pass that
 * error to {@link rerunScript}, which loads the library again and runs the script once more.
 * (The retry is the caller's, so that the common reply reaches it without an extra promise.)
 *
 * @example
 * ```ts
 * const args = [client, 'read', ['lockstep:{account:ann}'], []] as const;
 * const reply = await runScript(...args).catch((err) => rerunScript(err, ...args) ?? Promise.reject(err));
 * ```
 */
export function runScript(
  client: Redis | Cluster,
  name: ScriptName,
  keys: readonly string[],
  args: readonly (string | number)[],
  mode: ScriptMode | 'auto' = 'auto',
): Promise<unknown> {
  const s = load().entries.get(name) as Loaded;
  const m = modeOf(client, mode);
  // The common case, the library known to be loaded: the FCALL's own promise, nothing else
  // (every promise and await costs, more so with AsyncLocalStorage's hooks on).
  if (m === 'functions') return client.fcall(s.fn, keys.length, ...keys, ...args);
  if (m === 'eval') return evalScript(client, s, keys, args);
  return m.then((known) =>
    known === 'eval'
      ? evalScript(client, s, keys, args)
      : client.fcall(s.fn, keys.length, ...keys, ...args),
  );
}

/**
 * The retry of a {@link runScript} call that failed with `err`: after "Function not found" (the
 * server lost the library), loads it again and runs the script once more; undefined for any
 * other error (EVALSHA's NOSCRIPT is handled inside runScript).
 */
export function rerunScript(
  err: unknown,
  client: Redis | Cluster,
  name: ScriptName,
  keys: readonly string[],
  args: readonly (string | number)[],
  mode: ScriptMode | 'auto' = 'auto',
): Promise<unknown> | undefined {
  // Safe to send again, for writes too: Redis answers "Function not found" (and NOSCRIPT) when
  // it looks the function up, before running anything, so the first call wrote nothing. Any
  // other error may come from a script that ran (partly): never retried here.
  if (!isError(err, 'ERR Function not found')) return undefined;
  return reloaded(client, load().entries.get(name) as Loaded, keys, args, mode);
}

/** Loads the function library again (it was lost) and runs the script once more. */
async function reloaded(
  client: Redis | Cluster,
  s: Loaded,
  keys: readonly string[],
  args: readonly (string | number)[],
  mode: ScriptMode | 'auto',
): Promise<unknown> {
  modes.delete(client);
  const m = await modeOf(client, mode);
  if (m === 'eval') return evalScript(client, s, keys, args);
  return client.fcall(s.fn, keys.length, ...keys, ...args);
}
