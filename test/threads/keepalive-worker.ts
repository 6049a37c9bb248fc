/** keepalive-main's worker: "hold" takes the mutex, reports, releases after 30 ms and ends;
 * "wait" waits for it (nothing else keeps this thread alive), reports and ends. */
import { parentPort, workerData } from 'node:worker_threads';
import { Mutex } from '../../src/threads/index.js';

const m = Mutex.from(workerData.handle);
if (workerData.job === 'hold') {
  const p = m.tryAcquire()!;
  parentPort!.postMessage('held');
  setTimeout(() => p.release(), 30);
} else {
  const p = await m.acquire();
  parentPort!.postMessage('got');
  p.release();
}
