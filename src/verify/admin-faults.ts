/**
 * The server-side nemesis (`lab verify --faults admin`): faults that act on the server itself,
 * for a server the run started or one its owner said may be disturbed. Redis: `CLIENT KILL` of
 * this run's own connections (found by their connection name) and `CLIENT PAUSE` (which holds
 * every client of the server: never on a shared one); PostgreSQL: `pg_terminate_backend` of this
 * run's own sessions (found by their `application_name`). The run's drivers are named with
 * {@link tagServerUrl}, so nobody else's connection is ever killed.
 */
/** The faults a server nemesis injects. */
export type ServerFaultKind = 'client-kill' | 'client-pause' | 'terminate-backend';

/** What one injected fault did. */
export interface InjectedFault {
  readonly kind: ServerFaultKind;
  /** What it touched: `{ killed: 3 }`, `{ ms: 400 }`, `{ terminated: 5 }`. */
  readonly detail: Readonly<Record<string, number | boolean>>;
  /** False when there was nothing to act on (no connection of the run open at that moment). */
  readonly touched: boolean;
}

/** A connection to the server that injects faults on the run's own connections. */
export interface ServerNemesis {
  /** The kinds this server supports. */
  readonly kinds: readonly ServerFaultKind[];
  /** Injects one fault of `kind`; `random` in [0, 1) picks its size. */
  inject(kind: ServerFaultKind, random: () => number): Promise<InjectedFault>;
  /** Closes the nemesis's own connection. */
  close(): Promise<void>;
}

/**
 * The name a run's connections carry (Redis connection name, PostgreSQL application_name).
 *
 * @example
 * ```ts
 * connectionTag('9f3a61c2e0'); // 'lockstep-verify-9f3a61c2e0'
 * ```
 */
export function connectionTag(runId: string): string {
  return `lockstep-verify-${runId}`;
}

/**
 * `url` with the connection name `tag` in it (`?connectionName=` for ioredis,
 * `?application_name=` for pg), so that the nemesis can find the run's connections.
 *
 * @example
 * ```ts
 * tagServerUrl('redis://127.0.0.1:6379', 'lockstep-verify-1'); // 'redis://127.0.0.1:6379?connectionName=lockstep-verify-1'
 * ```
 */
export function tagServerUrl(url: string, tag: string): string {
  const u = new URL(url);
  u.searchParams.set(u.protocol.startsWith('redis') ? 'connectionName' : 'application_name', tag);
  return u.href;
}

/** Pause lengths of `client-pause`, ms: long enough to outlive a lock holder's lease. */
const PAUSE_MS = { min: 200, max: 900 };

/**
 * Opens a nemesis on the server at `url` for the connections named `tag`.
 *
 * @example
 * ```ts
 * const nemesis = await serverNemesis(server.url, connectionTag(runId));
 * await nemesis.inject('client-kill', Math.random); // { kind: 'client-kill', detail: { killed: 4 }, touched: true }
 * await nemesis.close();
 * ```
 */
export async function serverNemesis(url: string, tag: string): Promise<ServerNemesis> {
  const protocol = new URL(url).protocol;
  if (protocol === 'redis:' || protocol === 'rediss:') return redisNemesis(url, tag);
  if (protocol === 'postgres:' || protocol === 'postgresql:') return postgresNemesis(url, tag);
  throw new RangeError(`serverNemesis: no server faults for ${protocol} (redis:// or postgres://)`);
}

async function redisNemesis(url: string, tag: string): Promise<ServerNemesis> {
  const { Redis } = await import('ioredis');
  const admin = new Redis(url, {
    connectionName: `${tag}-nemesis`,
    maxRetriesPerRequest: 3,
    lazyConnect: true,
  });
  admin.on('error', () => {});
  await admin.connect();
  return {
    kinds: ['client-kill', 'client-pause'],
    async inject(kind, random): Promise<InjectedFault> {
      if (kind === 'client-pause') {
        const ms = Math.round(PAUSE_MS.min + random() * (PAUSE_MS.max - PAUSE_MS.min));
        await admin.call('CLIENT', 'PAUSE', String(ms), 'ALL');
        return { kind, detail: { ms }, touched: true };
      }
      if (kind !== 'client-kill') throw new RangeError(`Redis has no ${kind} fault`);
      const list = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'normal'));
      const ours = list
        .split('\n')
        .map((line) => ({
          id: /(?:^|\s)id=(\d+)/.exec(line)?.[1],
          name: /(?:^|\s)name=(\S*)/.exec(line)?.[1],
        }))
        .filter((c) => c.id !== undefined && c.name === tag);
      let killed = 0;
      for (const c of ours) {
        // One at a time: filters given together are ANDed. A client gone meanwhile answers 0.
        killed += Number(await admin.call('CLIENT', 'KILL', 'ID', c.id as string));
      }
      return { kind, detail: { killed }, touched: killed > 0 };
    },
    async close() {
      admin.disconnect();
    },
  };
}

async function postgresNemesis(url: string, tag: string): Promise<ServerNemesis> {
  const { default: pg } = await import('pg');
  const admin = new pg.Client({ connectionString: url, application_name: `${tag}-nemesis` });
  admin.on('error', () => {});
  await admin.connect();
  return {
    kinds: ['terminate-backend'],
    async inject(kind, random): Promise<InjectedFault> {
      if (kind !== 'terminate-backend') throw new RangeError(`PostgreSQL has no ${kind} fault`);
      // All of the run's sessions half the time, else one of them.
      const all = random() < 0.5;
      const r = await admin.query<{ ok: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
          WHERE application_name = $1 AND pid <> pg_backend_pid()
          ORDER BY random() LIMIT $2`,
        [tag, all ? 10_000 : 1],
      );
      const terminated = r.rows.filter((row) => row.ok).length;
      return { kind, detail: { terminated, all }, touched: terminated > 0 };
    },
    async close() {
      await admin.end().catch(() => {});
    },
  };
}
