/**
 * A plain write batch: one `BEGIN IMMEDIATE` transaction that first checks the write gate (a live
 * exclusive lease of the default action on one of the batch's documents: then the batch waits,
 * as an UPDATE waits for a row locked FOR UPDATE), then evaluates the batch on the rows it
 * touches and writes them back, all in one synchronous step.
 *
 * A gated batch waits for the lease's end (a wake-up, see `wakeups.ts`) or its expiry, bounded by
 * `timeoutMs` (LockTimeoutError) and `signal` (its reason); nothing is written when it gives up.
 * A batch whose post-check is async is evaluated, checked outside the transaction, and
 * installed by a later transaction if nothing moved meanwhile (`batch.ts`).
 *
 * @example
 * ```ts
 * const now = tryWrite(ctx, writes); // a WriteResult, or what to wait for
 * const result = isResult(now) ? now : await writeSlow(ctx, writes, options, now);
 * ```
 */
import { LockTimeoutError } from '../../errors.js';
import type { DocWrite, WriteOptions, WriteResult } from '../../store/backend.js';
import { docName } from '../../store/names.js';
import { refuse } from '../memory/batch.js';
import { appliedResult, type Evaluated, evaluateBatch, persist, stillCurrent } from './batch.js';
import type { SqliteContext } from './context.js';
import { BUSY, type Busy, immediate, retryBusy } from './transaction.js';

/** Why an attempt did not settle: gated until a lease's expiry, or a plan awaiting its checks. */
export type NotYet =
  | { readonly gated: number; readonly doc: string }
  | { readonly checking: Evaluated }
  | Busy;

/** The latest expiry of a live exclusive default-action lease on one of `writes`' documents. */
export function gatedUntil(
  ctx: SqliteContext,
  writes: readonly DocWrite[],
  now: number,
): { gated: number; doc: string } | undefined {
  const gate = ctx.statements.gate;
  let out: { gated: number; doc: string } | undefined;
  for (const w of writes) {
    const until = gate.get(w.model, w.key, now)?.until;
    if (until !== null && until !== undefined && (out === undefined || until > out.gated)) {
      out = { gated: until, doc: docName(w.model, w.key) };
    }
  }
  return out;
}

/**
 * One synchronous attempt: the result, or why not yet. With `expected` (a plan whose async
 * checks passed), installs that plan if its rows did not move, else evaluates afresh.
 */
export function tryWrite(
  ctx: SqliteContext,
  writes: readonly DocWrite[],
  expected?: Evaluated,
): WriteResult | NotYet {
  return immediate<WriteResult | NotYet>(ctx, () => {
    const gated = gatedUntil(ctx, writes, Date.now());
    if (gated) return { value: gated, write: false };
    if (expected && stillCurrent(ctx, writes, expected.plan)) {
      persist(ctx, writes, expected);
      return { value: appliedResult(expected.plan), write: true };
    }
    const e = evaluateBatch(ctx, writes, undefined);
    if (e.plan.pending !== undefined) return { value: { checking: e }, write: false };
    if (e.plan.refusal) return { value: e.plan.refusal, write: false };
    persist(ctx, writes, e);
    return { value: appliedResult(e.plan), write: true };
  });
}

/** True when `out` settled the batch. */
export function isResult(out: WriteResult | NotYet): out is WriteResult {
  return out !== BUSY && 'applied' in out;
}

/** The slow path: waits (gate, busy file, async checks) and tries again until it settles. */
export async function writeSlow(
  ctx: SqliteContext,
  writes: readonly DocWrite[],
  options: WriteOptions | undefined,
  first: NotYet | undefined,
): Promise<WriteResult> {
  const started = Date.now();
  const deadline = options?.timeoutMs === undefined ? undefined : started + options.timeoutMs;
  const signal = options?.signal;
  const lock = writes.map((w) => docName(w.model, w.key)).join(', ');
  let unwatch: (() => void) | undefined;
  let expected: Evaluated | undefined;
  let out: WriteResult | NotYet | undefined = first;
  try {
    for (;;) {
      ctx.checkOpen();
      if (signal?.aborted) throw signal.reason;
      if (out === undefined || out === BUSY) {
        const gen = ctx.channel.generation;
        out = await retryBusy(ctx, 'write', () => tryWrite(ctx, writes, expected), {
          deadline,
          started,
          lock,
          signal,
        });
        if (isResult(out)) return out;
        if ('gated' in out) {
          if (unwatch === undefined) {
            // Watch first, then try again at once: a release in between is not missed.
            unwatch = ctx.channel.watch();
            out = undefined;
            continue;
          }
          if (deadline !== undefined && Date.now() >= deadline) {
            throw new LockTimeoutError(out.doc, Date.now() - started);
          }
          await ctx.channel.changed(gen, out.gated, {
            deadline,
            started,
            lock: out.doc,
            signal,
            cancels: ctx.cancels,
          });
          out = undefined;
          continue;
        }
      }
      if ('checking' in out) {
        const e = out.checking;
        const pending = e.plan.pending ?? [];
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
        if (e.plan.refusal) return e.plan.refusal;
        expected = e;
        out = undefined;
        continue;
      }
      if ('gated' in out) {
        out = undefined;
      }
    }
  } finally {
    unwatch?.();
  }
}
