/**
 * `lockstep/threads`: `Mutex`, `RWLock` and `Semaphore` shared by worker threads. Their state
 * lives in a `SharedArrayBuffer`; `.handle` is passed to workers (`postMessage`, `workerData`) and
 * `X.from(handle)` rebuilds the primitive there. Same API, options and errors as the in-process
 * primitives of `lockstep` (FIFO ticket queue, timeouts, abort signals, `using`, synchronous
 * `tryAcquire`); waiting uses `Atomics.waitAsync` and never blocks an event loop; `watch(worker)`
 * takes back what a worker held when it exits.
 *
 * @example
 * ```ts
 * import { Worker } from 'node:worker_threads';
 * import { Mutex } from 'lockstep/threads';
 * const mutex = new Mutex();
 * const counter = new Int32Array(new SharedArrayBuffer(4));
 * const worker = new Worker('./worker.js', { workerData: { mutex: mutex.handle, counter } });
 * mutex.watch(worker);
 * // worker.js: const m = Mutex.from(workerData.mutex);
 * //            await m.run(() => { workerData.counter[0] += 1; });
 * ```
 *
 * The store across threads: `serveBackend(backend)` in the thread that owns a backend, and
 * `createStore(remoteBackend(handle))` in each worker (one handle per client, its port
 * transferred): every worker sees one store, leases and fences included.
 */
export type { AcquireOptions, Permit } from '../sync/permit.js';
export type { MutexHandle, MutexOptions } from './mutex.js';
export { Mutex } from './mutex.js';
export type { BackendHandle } from './protocol.js';
export { RemoteBackend, remoteBackend } from './remote-backend.js';
export type { RWLockHandle, RWLockOptions } from './rwlock.js';
export { RWLock } from './rwlock.js';
export type { SemaphoreAcquireOptions, SemaphoreHandle, SemaphoreOptions } from './semaphore.js';
export { Semaphore } from './semaphore.js';
export type { BackendServer } from './serve-backend.js';
export { serveBackend } from './serve-backend.js';
export type { Reclaimed } from './watch.js';
