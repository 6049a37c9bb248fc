/**
 * The Store: one backend, many models, and atomic batches across them.
 */
import { ValidationError } from '../errors.js';
import type { Backend } from './backend.js';
import { checkModelName } from './keys.js';
import { Model, type OpBatch, refusalError } from './model.js';
import type { InferInput, InferOutput, StandardSchemaV1 } from './schema.js';

/** A store: models over one backend. Made by {@link createStore}. */
export interface Store {
  /** The backend every model of this store uses. */
  readonly backend: Backend;
  /**
   * Declares a model: documents validated by `schema` (any Standard Schema: zod, valibot, arktype).
   *
   * @example
   * ```ts
   * const Account = store.model('account', z.object({ balance: z.number().min(0) }));
   * ```
   */
  model<S extends StandardSchemaV1>(name: string, schema: S): Model<InferOutput<S>, InferInput<S>>;
  /**
   * Applies several documents' ops (from `Model.ops`) atomically: every guard holds and every
   * write applies, or nothing is written (`{ applied: false }` when a guard was false).
   *
   * @example
   * ```ts
   * const { applied } = await store.apply([
   *   Account.ops('ann', (a) => a.balance.incr(-10), (a) => a.balance.gte(10)),
   *   Account.ops('bob', (a) => a.balance.incr(10)),
   * ]);
   * ```
   */
  apply(batches: readonly OpBatch[]): Promise<{ applied: boolean }>;
  /** Closes the backend (connections, timers). Clients you passed in stay open. */
  close(): Promise<void>;
}

/** Refuses a batch that names one document twice (its ops belong in one `Model.ops` call). */
function checkDistinct(writes: ReadonlyArray<{ model: string; key: string }>): void {
  // Batches are small: pairwise comparison allocates nothing; a Set only for large ones.
  if (writes.length <= 16) {
    for (let i = 1; i < writes.length; i++) {
      const w = writes[i] as { model: string; key: string };
      for (let j = 0; j < i; j++) {
        const v = writes[j] as { model: string; key: string };
        if (v.key === w.key && v.model === w.model) throw twice(w);
      }
    }
    return;
  }
  const seen = new Set<string>();
  for (const w of writes) {
    const id = `${w.model}\u0000${w.key}`;
    if (seen.has(id)) throw twice(w);
    seen.add(id);
  }
}

function twice(w: { model: string; key: string }): ValidationError {
  return new ValidationError('store.apply', [
    {
      message: `${w.model} ${JSON.stringify(w.key)} appears twice; put all its ops in one Model.ops call`,
    },
  ]);
}

class StoreImpl implements Store {
  readonly backend: Backend;
  constructor(backend: Backend) {
    this.backend = backend;
  }

  model<S extends StandardSchemaV1>(name: string, schema: S): Model<InferOutput<S>, InferInput<S>> {
    checkModelName(name);
    if (typeof schema?.['~standard']?.validate !== 'function') {
      throw new ValidationError(`schema of model ${name}`, [
        { message: 'expected a Standard Schema (zod, valibot, arktype, ...)' },
      ]);
    }
    return new Model<InferOutput<S>, InferInput<S>>(
      this.backend,
      name,
      schema as StandardSchemaV1<unknown, InferOutput<S>>,
    );
  }

  apply(batches: readonly OpBatch[]): Promise<{ applied: boolean }> {
    if (batches.length === 0) return Promise.resolve({ applied: true });
    const writes = batches.map((b) => b.write);
    try {
      checkDistinct(writes);
    } catch (err) {
      return Promise.reject(err);
    }
    // Not `async`: one `then` on the backend's (often already settled) promise.
    return this.backend.write(writes).then((r) => {
      if (r.applied) return { applied: true };
      if (r.reason === 'guard') return { applied: false };
      throw refusalError(r, writes);
    });
  }

  close(): Promise<void> {
    return this.backend.close();
  }
}

/**
 * Creates a store over `backend` (default: the embedded memory backend).
 *
 * @example
 * ```ts
 * import { createStore, memory } from 'lockstep';
 * const store = createStore(memory());
 * ```
 */
export function createStore(backend: Backend): Store {
  return new StoreImpl(backend);
}
