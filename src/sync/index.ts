/**
 * In-process primitives: `Mutex`, `RWLock`, `Semaphore` and `LockTable`, all built on one FIFO
 * wait queue (O(1) cancel, direct hand-off, synchronous fast path). Zero dependencies.
 *
 * @example
 * ```ts
 * import { Mutex, LockTable } from 'lockstep';
 * const mutex = new Mutex();
 * await mutex.run(() => counter++);
 * const table = new LockTable({ detectDeadlocks: true });
 * await table.run(['acct:1', 'acct:2'], () => transfer(1, 2, 10));
 * ```
 */
export { runAsTask } from './deadlock.js';
export type { LockOptions, LockTableOptions } from './lock-table.js';
export { LockTable } from './lock-table.js';
export type { MutexOptions } from './mutex.js';
export { Mutex } from './mutex.js';
export type { AcquireOptions, Permit } from './permit.js';
export type { RWLockOptions } from './rwlock.js';
export { RWLock } from './rwlock.js';
export type { SemaphoreAcquireOptions, SemaphoreOptions } from './semaphore.js';
export { Semaphore } from './semaphore.js';
