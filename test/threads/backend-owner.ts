/**
 * A worker thread that owns a memory backend and serves it (`serveBackend`): the main thread asks
 * it for handles (one per client), for the backend's leak counters, and for the number of open
 * connections. Used by the threads conformance runner and test/threads/remote-backend.test.ts.
 */
import { parentPort } from 'node:worker_threads';
import { memory } from '../../src/backends/memory/index.js';
import { serveBackend } from '../../src/threads/index.js';

/** What the main thread asks the owner. */
export type OwnerRequest = {
  id: number;
  ask: 'handle' | 'stats' | 'connections' | 'limitKeys';
  /** For `limitKeys`: the limiter's name. */
  name?: string;
};

const backend = memory();
const server = serveBackend(backend);
const port = parentPort;
if (!port) throw new Error('backend-owner.ts runs in a worker thread');
port.on('message', (m: OwnerRequest) => {
  if (m.ask === 'handle') {
    const handle = server.handle();
    port.postMessage({ id: m.id, value: handle }, [handle.port]);
  } else if (m.ask === 'stats') {
    port.postMessage({ id: m.id, value: backend.stats() });
  } else if (m.ask === 'limitKeys') {
    port.postMessage({ id: m.id, value: backend.limitKeys(m.name ?? '') });
  } else {
    port.postMessage({ id: m.id, value: server.connections });
  }
});
