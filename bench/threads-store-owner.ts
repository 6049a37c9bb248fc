/**
 * The owner thread of bench/threads-store.ts: a memory backend served with `serveBackend`; the
 * main thread asks it for handles (one per client).
 */
import { parentPort } from 'node:worker_threads';
import { memory } from '../src/backends/memory/index.js';
import { serveBackend } from '../src/threads/index.js';

const server = serveBackend(memory());
parentPort?.on('message', () => {
  const handle = server.handle();
  parentPort?.postMessage(handle, [handle.port]);
});
