/** A worker that waits for a held mutex with a timeout and reports the error and the queue. */
import { parentPort, workerData } from 'node:worker_threads';
import { Mutex } from '../../src/threads/index.js';

const m = Mutex.from(workerData.handle);
m.acquire({ timeoutMs: 30 }).then(
  () => parentPort!.postMessage({ code: 'GRANTED', waiting: m.waiting }),
  (err: { code?: string }) => parentPort!.postMessage({ code: err.code, waiting: m.waiting }),
);
