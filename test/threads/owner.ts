/**
 * The main thread's side of test/threads/backend-owner.ts: starts the owner worker and asks it
 * for handles, the memory backend's leak counters and its open connections.
 */
import type { Worker } from 'node:worker_threads';
import type { MemoryStats } from '../../src/backends/memory/index.js';
import type { BackendHandle } from '../../src/threads/index.js';
import type { OwnerRequest } from './backend-owner.js';
import { message, startWorker } from './support.js';

/** A worker thread owning a served memory backend. */
export interface Owner {
  readonly worker: Worker;
  handle(): Promise<BackendHandle>;
  stats(): Promise<MemoryStats>;
  connections(): Promise<number>;
  /** Rate-limit keys of limiter `name` holding state in the owner's backend. */
  limitKeys(name: string): Promise<number>;
}

/** Starts a worker that owns a memory backend and serves it. */
export async function startOwner(): Promise<Owner> {
  const worker = await startWorker('./backend-owner.ts', undefined);
  let next = 0;
  const ask = async <T>(what: OwnerRequest['ask'], name?: string): Promise<T> => {
    const id = ++next;
    const reply = message<{ id: number; value: T }>(worker, (m) => m.id === id);
    worker.postMessage({ id, ask: what, name } satisfies OwnerRequest);
    return (await reply).value;
  };
  return {
    worker,
    handle: () => ask<BackendHandle>('handle'),
    stats: () => ask<MemoryStats>('stats'),
    connections: () => ask<number>('connections'),
    limitKeys: (name) => ask<number>('limitKeys', name),
  };
}
