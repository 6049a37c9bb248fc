/**
 * Lockstep: race-free shared state. This entry point holds the in-process primitives, the store,
 * the embedded memory backend and the errors. Redis and PostgreSQL live in `lockstep/redis` and
 * `lockstep/postgres`.
 *
 * @example
 * ```ts
 * import { createStore, Mutex } from 'lockstep';
 * const store = createStore(); // the embedded memory backend
 * ```
 */
import { memory } from './backends/memory/index.js';
import type { Backend } from './store/backend.js';
import { createStore as createStoreOn, type Store } from './store/store.js';

export { memory } from './backends/memory/index.js';
export * from './errors.js';
export * from './store/index.js';
export * from './sync/index.js';

/**
 * Creates a store over `backend`, by default the embedded memory backend.
 *
 * @example
 * ```ts
 * import { createStore } from 'lockstep';
 * import { redis } from 'lockstep/redis';
 * const local = createStore();
 * const shared = createStore(redis({ url: 'redis://127.0.0.1:6379', prefix: 'app' }));
 * ```
 */
export function createStore(backend: Backend = memory()): Store {
  return createStoreOn(backend);
}
