/**
 * Taking back what a dead thread held: the owner of every hold and every queued ticket is the
 * thread's `threadId + 1` in shared memory, and the side that created a worker (it has the
 * `Worker` object, whose `exit` event fires on a normal exit, `process.exit()`, an uncaught error
 * and `terminate()`) calls {@link watchWorker} once; on `exit`, the units the worker held are given
 * back and its queued tickets dropped, and the next waiters are served.
 *
 * What the dead holder may have left: whatever it was doing inside its critical section, half
 * done. The lock protects nothing any more once it is taken back: data the holder was changing
 * in a `SharedArrayBuffer` may be half written (check an invariant, or write to a copy and
 * publish it with one atomic store). The lock's own state is meant to stay consistent even if the
 * worker was stopped inside an acquire or release call: each internal step writes its words
 * between two points where V8 can stop a thread (a call, a loop's back edge). That is argued from
 * where V8 checks for termination, not tested: the tests terminate holders inside their critical
 * sections, not inside the lock's own code.
 *
 * @example
 * ```ts
 * import { Worker } from 'node:worker_threads';
 * import { Mutex } from 'lockstep/threads';
 * const mutex = new Mutex();
 * const worker = new Worker('./job.js', { workerData: mutex.handle });
 * mutex.watch(worker); // if the worker dies holding the mutex, the next waiter gets it
 * ```
 */
import type { Worker } from 'node:worker_threads';
import { describeValue, invalid } from './options.js';
import type { SharedQueue } from './shared-queue.js';

/** What {@link watchWorker} took back when a worker exited. */
export interface Reclaimed {
  /** The exited worker's threadId. */
  threadId: number;
  /** Units it held (1 for a mutex it held, the weight for a semaphore). */
  units: number;
  /** Its queued acquisitions, dropped. */
  waiters: number;
}

/**
 * On `worker`'s exit, gives back what it held in `queue` and drops its queued tickets.
 * @internal
 */
export function watchWorker(
  queue: SharedQueue,
  worker: Worker,
  what: string,
  onReclaim?: (r: Reclaimed) => void,
): void {
  const w = worker as Partial<Worker> | null;
  if (w === null || typeof w !== 'object' || typeof w.once !== 'function') {
    throw invalid(what, `expected a Worker from node:worker_threads, got ${describeValue(worker)}`);
  }
  const threadId = w.threadId;
  if (typeof threadId !== 'number' || threadId < 1) {
    throw invalid(
      what,
      'the worker has already exited (its threadId is gone); watch it right after new Worker()',
    );
  }
  w.once('exit', () => {
    const { units, waiters } = queue.reclaim(threadId + 1);
    onReclaim?.({ threadId, units, waiters });
  });
}
