/**
 * The write engine of the memory backend, shared by plain writes and lease commits: one
 * synchronous attempt settles the common case; when a schema post-check is async, the writer
 * awaits it and installs only if nothing moved meanwhile, else recomputes while holding a
 * reservation on the documents so that it cannot starve.
 *
 * @example
 * ```ts
 * const writer = new Writer(docs, () => closed);
 * const out = writer.attempt(writes, undefined); // a WriteResult, or a Plan awaiting post-checks
 * ```
 */
import type { DocWrite, WriteResult } from '../../store/backend.js';
import { docName } from '../../store/names.js';
import { type CommitContext, evaluate, install, type Plan, refuse, unchanged } from './batch.js';
import { closedError } from './closed.js';
import type { Documents } from './documents.js';

/**
 * Run in the same synchronous step as a batch's install, just before it: true lets the batch
 * install (and has recorded what goes with it, e.g. rate-limit consumptions), false refuses it
 * with {@link LIMITED} (nothing installed).
 */
export type Admit = () => boolean;

/** The refusal a batch gets when its {@link Admit} said no (identified by identity). */
export const LIMITED: Extract<WriteResult, { applied: false }> = {
  applied: false,
  reason: 'guard',
  index: -1,
  detail: 'a rate limit refused the batch',
};

/**
 * Applies batches to {@link Documents}, synchronously when it can, and holds the reservations of
 * writes whose async post-check is being re-run.
 *
 * @example
 * ```ts
 * const result = await writer.write(writes); // { applied: true, docs, results } or a refusal
 * ```
 */
export class Writer {
  readonly #docs: Documents;
  readonly #closed: () => boolean;
  /** Documents reserved by a write re-running its async post-check → released when it ends. */
  readonly #reserved = new Map<string, Promise<void>>();

  constructor(docs: Documents, closed: () => boolean) {
    this.#docs = docs;
    this.#closed = closed;
  }

  /** Documents reserved right now (0 when idle). */
  get reservations(): number {
    return this.#reserved.size;
  }

  /**
   * A plain write (the batch is already validated). When it cannot settle in one synchronous
   * step (an async post-check, or a reservation pending), `slow` runs the rest: the backend
   * passes the write gate there, so that no exclusive lease is granted on its documents between
   * the evaluation and the install. `admit` runs right before the install (see {@link Admit}).
   */
  write(
    writes: readonly DocWrite[],
    slow?: (first: Plan | undefined) => Promise<WriteResult>,
    admit?: Admit,
  ): Promise<WriteResult> {
    const rest = slow ?? ((first: Plan | undefined) => this.run(writes, undefined, first, admit));
    // The common case settles synchronously: no reservation pending, no async post-check.
    if (this.#reserved.size === 0) {
      const out = this.attempt(writes, undefined, admit);
      return 'slots' in out ? rest(out) : Promise.resolve(out);
    }
    return rest(undefined);
  }

  /**
   * One synchronous attempt: the final result, or the plan when some post-check is async.
   * Throws BackendError when closed, or whatever a post-check throws (nothing installed).
   */
  attempt(
    writes: readonly DocWrite[],
    ctx: CommitContext | undefined,
    admit?: Admit,
  ): WriteResult | Plan {
    if (this.#closed()) throw closedError();
    const pre = ctx?.precondition();
    if (pre) return pre;
    const plan = evaluate(this.#docs, writes, ctx);
    if (plan.pending !== undefined) return plan;
    if (plan.refusal) return plan.refusal;
    if (admit !== undefined && !admit()) return LIMITED;
    install(plan, this.#docs);
    ctx?.installed?.();
    return { applied: true, docs: plan.docs, results: plan.results };
  }

  /**
   * A lease commit's synchronous attempt: the result, the plan when a post-check is
   * async, or undefined when a reservation is pending (then `run` takes over).
   */
  commitNow(writes: readonly DocWrite[], ctx: CommitContext): WriteResult | Plan | undefined {
    return this.#reserved.size === 0 ? this.attempt(writes, ctx) : undefined;
  }

  /**
   * Synchronous attempts, and when a post-check is async, await it and install only if nothing
   * moved (else recompute, then holding the documents so that the writer cannot starve).
   */
  async run(
    writes: readonly DocWrite[],
    ctx: CommitContext | undefined,
    first: Plan | undefined,
    admit?: Admit,
  ): Promise<WriteResult> {
    let mine: { ids: string[]; done: () => void } | undefined;
    let reserve = false;
    let plan = first;
    try {
      for (;;) {
        if (plan === undefined) {
          if (mine === undefined && (reserve || this.#reserved.size > 0)) {
            const ids = writes.map((w) => JSON.stringify([w.model, w.key]));
            const blocker = ids.map((id) => this.#reserved.get(id)).find((p) => p !== undefined);
            if (blocker) {
              await blocker;
              continue;
            }
            if (reserve) mine = this.#reserve(ids);
          }
          const out = this.attempt(writes, ctx, admit);
          if (!('slots' in out)) return out;
          plan = out;
        }
        // Some post-checks are async: wait for them, then install only if nothing moved.
        const pending = plan.pending ?? [];
        const outcomes = await Promise.all(pending.map((p) => p.promise));
        for (let i = 0; i < outcomes.length; i++) {
          const issues = outcomes[i];
          if (issues && issues.length > 0) {
            const index = (pending[i] as { index: number }).index;
            const w = writes[index] as DocWrite;
            return refuse(
              index,
              'invalid',
              `the post-image of ${docName(w.model, w.key)} fails the schema`,
              issues,
            );
          }
        }
        if (plan.refusal) return plan.refusal;
        if (this.#closed()) throw closedError();
        const pre = ctx?.precondition();
        if (pre) return pre;
        if (unchanged(plan)) {
          if (admit !== undefined && !admit()) return LIMITED;
          install(plan, this.#docs);
          ctx?.installed?.();
          return { applied: true, docs: plan.docs, results: plan.results };
        }
        // Someone wrote meanwhile: recompute, this time holding the documents so we cannot starve.
        reserve = true;
        plan = undefined;
      }
    } finally {
      mine?.done();
    }
  }

  #reserve(ids: string[]): { ids: string[]; done: () => void } {
    let done!: () => void;
    const released = new Promise<void>((resolve) => {
      done = resolve;
    });
    for (const id of ids) this.#reserved.set(id, released);
    return {
      ids,
      done: () => {
        for (const id of ids) if (this.#reserved.get(id) === released) this.#reserved.delete(id);
        done();
      },
    };
  }
}
