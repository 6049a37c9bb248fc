/**
 * Hand-written histories for the verify tests: `op(...)` builds one recorded operation with
 * explicit times, `sequential(...)` runs a random sequence against a real sequential object and
 * spreads each operation's interval around its moment (so the history is linearizable by
 * construction).
 */
import type { Json } from '../../src/store/backend.js';
import type { Operation, OpStatus } from '../../src/verify/history.js';

/** One operation: `op(id, process, kind, arg, result, invoke, complete, status?)`. */
export function op(
  id: number,
  process: string,
  kind: string,
  arg: Json | undefined,
  result: Json | undefined,
  invoke: number,
  complete: number | undefined,
  status: OpStatus = 'ok',
  key = 'x',
): Operation {
  return {
    id,
    process,
    key,
    kind,
    ...(arg === undefined ? {} : { arg }),
    ...(result === undefined || status !== 'ok' ? {} : { result }),
    status,
    invoke,
    ...(complete === undefined ? {} : { complete }),
  };
}

/** A step of a generated sequential execution. */
export type GenStep =
  | { readonly kind: 'read' }
  | { readonly kind: 'write' }
  | { readonly kind: 'cas'; readonly hit: boolean }
  | { readonly kind: 'add'; readonly by: number };

/**
 * Runs `steps` in order on a real register (values: unique per write) or counter, and gives the
 * operations times: operation i happens at 10*i, invoked `before[i]` earlier and completed
 * `after[i]` later (so intervals overlap at random); `unknown[i]` makes it `info`.
 */
export function sequential(
  steps: readonly GenStep[],
  before: readonly number[],
  after: readonly number[],
  unknown: readonly boolean[],
): Operation[] {
  let reg = 0;
  let cnt = 0;
  let next = 100;
  return steps.map((s, i): Operation => {
    const at = 10 * i;
    const invoke = at - (before[i] ?? 0);
    const complete = at + (after[i] ?? 0);
    const status: OpStatus = unknown[i] ? 'info' : 'ok';
    const key = s.kind === 'add' ? 'n' : 'x';
    switch (s.kind) {
      case 'read':
        return op(i, `p${i}`, 'read', undefined, reg, invoke, complete, status, key);
      case 'write': {
        reg = next++;
        return op(i, `p${i}`, 'write', reg, undefined, invoke, complete, status, key);
      }
      case 'cas': {
        const from = s.hit ? reg : -1;
        const to = next++;
        const applied = from === reg;
        if (applied) reg = to;
        return op(i, `p${i}`, 'cas', [from, to], applied, invoke, complete, status, key);
      }
      default:
        cnt += s.by;
        return op(i, `p${i}`, 'add', s.by, cnt, invoke, complete, status, key);
    }
  });
}
