/**
 * The write gate of the memory backend: plain writes wait for exclusive leases of the default
 * action, as an `UPDATE` waits for a row locked `FOR UPDATE`.
 *
 * A document is "gated" while an exclusive default-action lease holds it, or while a plain write
 * to it is queued or running behind such a lease. A write to ungated documents goes straight to
 * the writer (one `Map.size` check when nothing is gated; no promise, no lock-table call). A write
 * to a gated document takes a shared permit of the default action on its documents in the
 * backend's `LockTable`: it queues FIFO with the lock waiters (neither starves the other), runs
 * once the lease ends, and leaves the queue at once on timeout or abort, having written nothing.
 * Shared leases and leases of other actions are compatible with that permit and never gate.
 *
 * @example
 * ```ts
 * const gate = new WriteGate(locks);
 * const out = gate.mustWait(writes) ? gate.pass(writes, options, () => writer.write(writes)) : writer.write(writes);
 * ```
 */

import { LockTimeoutError } from '../../errors.js';
import type { DocWrite, WriteOptions, WriteResult } from '../../store/backend.js';
import { DEFAULT_ACTION, docName } from '../../store/names.js';
import type { LockTable } from '../../sync/lock-table.js';
import type { Permit } from '../../sync/permit.js';

/**
 * The lock-table id of a document: `model:key`, the id leases use too (unambiguous: model names
 * hold no ':').
 */
export function lockId(model: string, key: string): string {
  return `${model}:${key}`;
}

/**
 * Which documents plain writes must queue for, and the queueing itself.
 *
 * @example
 * ```ts
 * gate.hold('counter:c1');   // an exclusive default-action lease now holds counter "c1"
 * gate.mustWait(writes);     // true for a batch touching it
 * gate.unhold('counter:c1'); // the lease ended
 * ```
 */
export class WriteGate {
  readonly #locks: LockTable;
  /** Lock id → exclusive default-action leases holding it + plain writes queued or running on it. */
  readonly #gated = new Map<string, number>();

  constructor(locks: LockTable) {
    this.#locks = locks;
  }

  /** Documents gated right now (0 when idle). */
  get size(): number {
    return this.#gated.size;
  }

  /** Gates one document (an exclusive default-action lease took it, or a write queued on it). */
  hold(id: string): void {
    this.#gated.set(id, (this.#gated.get(id) ?? 0) + 1);
  }

  /** Undoes one {@link hold}. */
  unhold(id: string): void {
    const n = this.#gated.get(id) ?? 0;
    if (n <= 1) this.#gated.delete(id);
    else this.#gated.set(id, n - 1);
  }

  /** True when some document of the batch is gated: the write must take its turn. */
  mustWait(writes: readonly DocWrite[]): boolean {
    if (this.#gated.size === 0) return false;
    for (const w of writes) if (this.#gated.has(lockId(w.model, w.key))) return true;
    return false;
  }

  /**
   * Waits for a shared default-action permit on every document of the batch (FIFO with lease
   * waiters), runs `run` holding it, then lets the next one in. Rejects with LockTimeoutError
   * after `options.timeoutMs`, or `options.signal.reason`; `run` is not called then.
   */
  async pass(
    writes: readonly DocWrite[],
    options: WriteOptions | undefined,
    run: () => Promise<WriteResult>,
  ): Promise<WriteResult> {
    const ids = [...new Set(writes.map((w) => lockId(w.model, w.key)))];
    // Gated while queued too: a later write to these documents queues behind this one.
    for (const id of ids) this.hold(id);
    let permit: Permit | undefined;
    try {
      try {
        permit = await this.#locks.acquire(ids, {
          mode: 'shared',
          action: DEFAULT_ACTION,
          timeoutMs: options?.timeoutMs,
          signal: options?.signal,
        });
      } catch (err) {
        if (err instanceof LockTimeoutError) {
          throw new LockTimeoutError(
            `the exclusive lease on ${describe(writes)} (a plain write waits for it)`,
            err.waitedMs,
          );
        }
        throw err;
      }
      return await run();
    } finally {
      permit?.release();
      for (const id of ids) this.unhold(id);
    }
  }
}

/** How an error names a batch's documents: `counter "c1", counter "c2"`. */
function describe(writes: readonly DocWrite[]): string {
  return writes.map((w) => docName(w.model, w.key)).join(', ');
}
