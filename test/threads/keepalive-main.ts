/**
 * Run as a child process by the threads tests (argv[2]: the bundled keepalive-worker). The main
 * thread awaits, at top level, a mutex a worker holds (the worker releases it and exits); then a
 * worker whose only work is waiting for the main thread's mutex must stay alive until it gets
 * it. Without the keep-alive the first can end with exit code 13 and the second worker exits
 * without the lock. Prints "done" and exits 0 when both held.
 */
import { Worker } from 'node:worker_threads';
import { Mutex } from '../../src/threads/index.js';

const workerFile = process.argv[2]!;
const m = new Mutex();
for (let i = 0; i < 4; i++) {
  const holder = new Worker(workerFile, { workerData: { handle: m.handle, job: 'hold' } });
  await new Promise((r) => holder.once('message', r));
  (await m.acquire()).release();
  const held = m.tryAcquire()!;
  const waiter = new Worker(workerFile, { workerData: { handle: m.handle, job: 'wait' } });
  // Listened to at once: a worker's last message and its exit can arrive in one turn (Node
  // drains the port, then emits 'exit'), so a listener added after the message would miss it.
  const exit = new Promise((r) => waiter.once('exit', r));
  setTimeout(() => held.release(), 50);
  const outcome = await Promise.race([
    new Promise((r) => waiter.once('message', () => r('got it'))),
    exit.then(() => 'exited without the lock'),
  ]);
  if (outcome !== 'got it') {
    console.log(`worker ${outcome}`);
    process.exit(2);
  }
  await exit;
}
console.log('done');
