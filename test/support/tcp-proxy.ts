/**
 * A small TCP proxy for fault tests: listens on a free loopback port and forwards every
 * connection to a target, with rules that can drop, delay, reset or black-hole traffic. Generic
 * (bytes in, bytes out), plus one PostgreSQL-aware rule: "the server's reply to a client Query
 * message whose SQL matches is never delivered: both sockets are destroyed instead" (the reply is
 * sent by the server only after it ran the statement, so the client cannot tell whether it ran).
 *
 * @example
 * ```ts
 * const proxy = await startProxy({ port: 5432 });
 * proxy.dropReplyTo(/COMMIT/); // the next reply to a Query containing COMMIT is lost
 * const pool = new pg.Pool({ host: '127.0.0.1', port: proxy.port, ... });
 * // ...
 * await proxy.close();
 * ```
 */
import net from 'node:net';

/** What a rule may do with one chunk travelling through the proxy. */
export type Verdict = 'forward' | 'drop' | 'reset' | { delayMs: number };

/** One proxied connection, as rules see it. */
export interface ProxiedConnection {
  readonly id: number;
  /** The client's socket (the side that connected to the proxy). */
  readonly client: net.Socket;
  /** The socket to the target. */
  readonly server: net.Socket;
  /** Destroys both sockets at once (the client sees its connection reset). */
  reset(): void;
}

/** A rule: called for each chunk in one direction; the first non-'forward' verdict wins. */
export type Rule = (
  conn: ProxiedConnection,
  chunk: Buffer,
  direction: 'toServer' | 'toClient',
) => Verdict;

/** A running proxy. */
export interface TcpProxy {
  readonly port: number;
  /** Connections currently open through the proxy. */
  readonly connections: ReadonlySet<ProxiedConnection>;
  /** Adds a rule; returns a function that removes it. */
  addRule(rule: Rule): () => void;
  /**
   * PostgreSQL: for the next `times` Query ('Q') or Parse ('P') messages whose SQL matches `pattern`, the
   * server's reply is not forwarded: the first bytes of it destroy both sockets instead. Resolves
   * (the returned promise) each time this happens, with the connection it happened on.
   */
  dropReplyTo(pattern: RegExp, times?: number): { removed: () => void; dropped: Promise<void> };
  /** Destroys every open connection now (a network reset). */
  resetAll(): void;
  /** Stops forwarding in both directions for every connection while on (a black hole). */
  blackHole(on: boolean): void;
  /** Delays every chunk in both directions by `ms` (0 turns it off). */
  delay(ms: number): void;
  close(): Promise<void>;
}

/**
 * Starts a proxy on 127.0.0.1 (a free port) forwarding to `target`.
 *
 * @example
 * ```ts
 * const proxy = await startProxy({ host: '127.0.0.1', port: 6379 });
 * proxy.delay(50);
 * ```
 */
export async function startProxy(target: { host?: string; port: number }): Promise<TcpProxy> {
  const rules = new Set<Rule>();
  const connections = new Set<ProxiedConnection>();
  let holeOn = false;
  let delayMs = 0;
  let nextId = 1;

  const server = net.createServer((client) => {
    const upstream = net.connect({ host: target.host ?? '127.0.0.1', port: target.port });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const conn: ProxiedConnection = {
      id: nextId++,
      client,
      server: upstream,
      reset() {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      },
    };
    connections.add(conn);
    const end = () => {
      connections.delete(conn);
      if (!client.destroyed) client.destroy();
      if (!upstream.destroyed) upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
    // Chunks are forwarded in order even when some are delayed.
    const pipe = (from: net.Socket, to: net.Socket, direction: 'toServer' | 'toClient') => {
      let chain = Promise.resolve();
      from.on('data', (chunk: Buffer) => {
        let verdict: Verdict = 'forward';
        for (const r of rules) {
          verdict = r(conn, chunk, direction);
          if (verdict !== 'forward') break;
        }
        if (verdict === 'reset') {
          conn.reset();
          return;
        }
        if (verdict === 'drop' || holeOn) return;
        const wait = typeof verdict === 'object' ? verdict.delayMs : delayMs;
        if (wait > 0) {
          chain = chain.then(
            () =>
              new Promise<void>((res) =>
                setTimeout(() => {
                  if (!to.destroyed) to.write(chunk);
                  res();
                }, wait),
              ),
          );
        } else {
          chain = chain.then(() => {
            if (!to.destroyed) to.write(chunk);
          });
        }
      });
    };
    pipe(client, upstream, 'toServer');
    pipe(upstream, client, 'toClient');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  const proxy: TcpProxy = {
    port,
    connections,
    addRule(rule) {
      rules.add(rule);
      return () => rules.delete(rule);
    },
    dropReplyTo(pattern, times = 1) {
      // Per connection: armed once a matching Query went to the server; the next server bytes
      // are the reply to it (node-postgres sends one query at a time and waits for ReadyForQuery).
      const armed = new WeakSet<ProxiedConnection>();
      let left = times;
      let signal: () => void = () => {};
      const dropped = new Promise<void>((res) => {
        signal = res;
      });
      const rule: Rule = (conn, chunk, direction) => {
        if (direction === 'toServer') {
          if (left > 0 && queryMatches(chunk, pattern)) {
            armed.add(conn);
            left -= 1;
          }
          return 'forward';
        }
        if (!armed.has(conn)) return 'forward';
        armed.delete(conn);
        signal();
        return 'reset';
      };
      const removed = proxy.addRule(rule);
      return { removed, dropped };
    },
    resetAll() {
      for (const c of connections) c.reset();
    },
    blackHole(on) {
      holeOn = on;
    },
    delay(ms) {
      delayMs = ms;
    },
    async close() {
      for (const c of connections) c.reset();
      await new Promise<void>((res) => server.close(() => res()));
    },
  };
  return proxy;
}

/**
 * True when `chunk` holds a PostgreSQL frontend Query message ('Q', int32 length, SQL text, NUL)
 * or Parse message ('P': the extended protocol's statement text, sent the first time a named
 * statement is used on a connection) whose SQL matches `pattern`. Others never match.
 */
function queryMatches(chunk: Buffer, pattern: RegExp): boolean {
  let at = 0;
  while (at + 5 <= chunk.length) {
    const type = chunk[at];
    const len = chunk.readInt32BE(at + 1);
    if (len < 4) return false;
    const end = Math.min(chunk.length, at + 1 + len);
    if (type === 0x51 /* 'Q' */) {
      if (pattern.test(chunk.toString('utf8', at + 5, end))) return true;
    } else if (type === 0x50 /* 'P': Parse, statement name then SQL text */) {
      const nameEnd = chunk.indexOf(0, at + 5);
      if (nameEnd >= 0 && nameEnd < end && pattern.test(chunk.toString('utf8', nameEnd + 1, end))) {
        return true;
      }
    }
    at += 1 + len;
  }
  return false;
}
