/**
 * The client-side nemesis: a TCP proxy the run puts between its own driver and the server, so
 * that faults touch only connections this run opened — never anyone else's sessions on a
 * shared server. Faults: `reset` (every proxied connection destroyed at once, the way a
 * network drop or a server-side kill looks to the driver).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

/** A running proxy. */
export interface FaultProxy {
  /** The local port to point the driver at (127.0.0.1). */
  readonly port: number;
  /** Destroys every open connection (both sides); resolves how many there were. */
  reset(): number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Stops accepting and destroys every connection. */
  close(): Promise<void>;
}

/**
 * Starts a proxy on 127.0.0.1 (a free port) forwarding to `target`.
 *
 * @example
 * ```ts
 * const proxy = await startFaultProxy({ host: '127.0.0.1', port: 6379 });
 * const url = `redis://127.0.0.1:${proxy.port}`; // this run's connections only
 * proxy.reset(); // drop them all
 * await proxy.close();
 * ```
 */
export async function startFaultProxy(target: {
  readonly host: string;
  readonly port: number;
}): Promise<FaultProxy> {
  const pairs = new Set<[Socket, Socket]>();
  let accepted = 0;
  const server: Server = createServer((client) => {
    accepted++;
    const upstream = connect({ host: target.host, port: target.port });
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    port,
    get accepted() {
      return accepted;
    },
    reset() {
      const n = pairs.size;
      for (const [a, b] of [...pairs]) {
        a.resetAndDestroy();
        b.resetAndDestroy();
      }
      pairs.clear();
      return n;
    },
    close() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Resets the proxy's connections at random intervals (`minMs`..`maxMs`) until `signal` aborts;
 * resolves how many resets it did (with at least one connection open).
 *
 * @example
 * ```ts
 * const stop = new AbortController();
 * const faults = resetPeriodically(proxy, { minMs: 300, maxMs: 1500, signal: stop.signal });
 * ```
 */
export async function resetPeriodically(
  proxy: FaultProxy,
  options: { readonly minMs: number; readonly maxMs: number; readonly signal: AbortSignal },
): Promise<number> {
  let faults = 0;
  while (!options.signal.aborted) {
    const wait = options.minMs + Math.random() * (options.maxMs - options.minMs);
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        options.signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, wait);
      options.signal.addEventListener('abort', done, { once: true });
    });
    if (options.signal.aborted) break;
    if (proxy.reset() > 0) faults++;
  }
  return faults;
}
