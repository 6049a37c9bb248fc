/**
 * Loads the Lua scripts (kept as .lua files next to this module; the build copies them into
 * dist) and runs them by EVALSHA, falling back to EVAL (which also caches the script on the
 * server) when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH).
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
  | 'commit';

const NAMES: readonly ScriptName[] = [
  'write',
  'writes',
  'read',
  'acquire',
  'release',
  'leave',
  'renew',
  'commit',
];

interface Loaded {
  readonly source: string;
  readonly sha: string;
}

let loaded: Map<ScriptName, Loaded> | undefined;

function load(): Map<ScriptName, Loaded> {
  if (loaded) return loaded;
  const read = (n: string) => readFileSync(new URL(`./scripts/${n}.lua`, import.meta.url), 'utf8');
  const lib = read('lib');
  const m = new Map<ScriptName, Loaded>();
  for (const n of NAMES) {
    const source = `${lib}\n-- entry: ${n}\n${read(n)}`;
    m.set(n, { source, sha: createHash('sha1').update(source).digest('hex') });
  }
  loaded = m;
  return m;
}

/**
 * Runs a named script on `client` with `keys` and `args`; returns the script's reply.
 *
 * @example
 * ```ts
 * const reply = await runScript(client, 'read', ['lockstep:{account:ann}'], []);
 * ```
 */
export async function runScript(
  client: Redis | Cluster,
  name: ScriptName,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<unknown> {
  const s = load().get(name) as Loaded;
  try {
    return await client.evalsha(s.sha, keys.length, ...keys, ...args);
  } catch (err) {
    if (err instanceof Error && err.message.startsWith('NOSCRIPT')) {
      return client.eval(s.source, keys.length, ...keys, ...args);
    }
    throw err;
  }
}
