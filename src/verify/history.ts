/**
 * The history recorder: every operation of a verification run as an invocation followed by its
 * completion — `ok` (it happened, with this result), `fail` (it certainly did not happen) or
 * `info` (unknown: a timeout, a dropped connection, `BackendError.outcomeUnknown`; it may have
 * happened, at any time after its invocation). Times are monotonic milliseconds of this process.
 */
import { BackendError, LockstepError } from '../errors.js';
import type { Json } from '../store/backend.js';

/** How an operation ended. `pending` until it completes; a pending operation is checked as `info`. */
export type OpStatus = 'pending' | 'ok' | 'fail' | 'info';

/** One recorded operation. */
export interface Operation {
  /** Position in the history (0, 1, ...), unique. */
  readonly id: number;
  /** The client (process, connection or task) that issued it; one operation at a time each. */
  readonly process: string;
  /** The object it is on (a document key, an account set, a lock name). */
  readonly key: string;
  /** What it does: `read`, `write`, `cas`, `add`, `transfer`, `snapshot`, `lock`, ... */
  readonly kind: string;
  /** Its argument (the value written, `[from, to]` of a cas, the amount added). */
  readonly arg?: Json;
  readonly status: OpStatus;
  /** Its result when `ok` (the value read, whether a cas applied, the counter's new value). */
  readonly result?: Json;
  /** Why it failed or why its outcome is unknown. */
  readonly error?: string;
  /** What the client knew whatever the outcome (the fence it held, when its critical section ran). */
  readonly detail?: Json;
  /** Monotonic time of the invocation, ms. */
  readonly invoke: number;
  /** Monotonic time of the completion, ms (undefined while pending). */
  readonly complete?: number;
}

/** How {@link History.record} classifies an error thrown by the operation. */
export type Classify = (err: unknown) => 'fail' | 'info';

/**
 * The default classification, by the errors' contract: a `LockstepError` says nothing was
 * written (a refusal, a lock timeout, a lost lease, bad input, a `BackendError` without
 * `outcomeUnknown`) and is `fail`; `BackendError` with `outcomeUnknown` and any other error (a
 * driver's timeout, a socket error) are `info`, since the operation may have happened.
 *
 * @example
 * ```ts
 * classifyError(new BackendError('reset', { outcomeUnknown: true })); // 'info'
 * ```
 */
export function classifyError(err: unknown): 'fail' | 'info' {
  if (err instanceof BackendError) return err.outcomeUnknown ? 'info' : 'fail';
  return err instanceof LockstepError ? 'fail' : 'info';
}

/**
 * Records the operations of a run. One instance per run; any number of concurrent clients.
 *
 * @example
 * ```ts
 * const h = new History();
 * const v = await h.record('c1', 'x', 'read', undefined, async () => (await Reg.get('x')).data.v);
 * h.operations(); // [{ id: 0, process: 'c1', key: 'x', kind: 'read', status: 'ok', result: v, ... }]
 * ```
 */
export class History {
  readonly #ops: Operation[] = [];
  readonly #now: () => number;
  readonly #onChange: ((op: Operation) => void) | undefined;

  /**
   * `now` is the monotonic clock (default `performance.now`); tests may pass their own.
   * `onChange` sees each operation when it is invoked (before it runs) and again when it
   * completes: a journal written there survives the process being killed mid-run.
   */
  constructor(options: { now?: () => number; onChange?: (op: Operation) => void } = {}) {
    this.#now = options.now ?? (() => performance.now());
    this.#onChange = options.onChange;
  }

  /**
   * Records an invocation; complete it with {@link ok}, {@link fail} or {@link info}.
   *
   * @example
   * ```ts
   * const id = h.invoke('c1', 'x', 'write', 3);
   * h.ok(id);
   * ```
   */
  invoke(process: string, key: string, kind: string, arg?: Json): number {
    const id = this.#ops.length;
    const op: Operation = {
      id,
      process,
      key,
      kind,
      ...(arg === undefined ? {} : { arg }),
      status: 'pending',
      invoke: this.#now(),
    };
    this.#ops.push(op);
    this.#onChange?.(op);
    return id;
  }

  /** The operation happened, with `result`. @example `h.ok(id, 7)` */
  ok(id: number, result?: Json, detail?: Json): void {
    this.#complete(id, 'ok', { ...(result === undefined ? {} : { result }), ...with_(detail) });
  }

  /** The operation certainly did not happen. @example `h.fail(id, 'guard refused')` */
  fail(id: number, error: string, detail?: Json): void {
    this.#complete(id, 'fail', { error, ...with_(detail) });
  }

  /** The outcome is unknown: it may have happened. @example `h.info(id, 'timeout')` */
  info(id: number, error: string, detail?: Json): void {
    this.#complete(id, 'info', { error, ...with_(detail) });
  }

  /**
   * Runs `fn` as one operation: `ok` with its result, or on a throw `fail` / `info` as
   * `classify` says (default {@link classifyError}). Never throws: resolves the operation.
   *
   * @example
   * ```ts
   * await h.record('c2', 'n', 'add', 1, async () => (await N.apply('n', (d) => d.n.incr(1))).results[0] as number);
   * ```
   */
  async record(
    process: string,
    key: string,
    kind: string,
    arg: Json | undefined,
    fn: () => Promise<Json | undefined>,
    classify: Classify = classifyError,
  ): Promise<Operation> {
    const id = this.invoke(process, key, kind, arg);
    try {
      const result = await fn();
      this.ok(id, result);
    } catch (err) {
      const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      if (classify(err) === 'fail') this.fail(id, message);
      else this.info(id, message);
    }
    return this.#ops[id] as Operation;
  }

  /** Every operation so far, in invocation order (pending ones included). @example `h.operations().length` */
  operations(): readonly Operation[] {
    return this.#ops;
  }

  /** Counts by status. @example `h.counts(); // { ok: 90, fail: 4, info: 6, pending: 0 }` */
  counts(): Record<OpStatus, number> {
    const c: Record<OpStatus, number> = { pending: 0, ok: 0, fail: 0, info: 0 };
    for (const o of this.#ops) c[o.status]++;
    return c;
  }

  #complete(id: number, status: 'ok' | 'fail' | 'info', extra: Partial<Operation>): void {
    const op = this.#ops[id];
    if (op === undefined || op.status !== 'pending') {
      throw new RangeError(`History: operation ${id} is not pending (complete it once)`);
    }
    const done: Operation = { ...op, ...extra, status, complete: this.#now() };
    this.#ops[id] = done;
    this.#onChange?.(done);
  }
}

const with_ = (detail: Json | undefined): { detail?: Json } =>
  detail === undefined ? {} : { detail };

/**
 * One line per operation, for reports: `#12 c3 x cas [1,2] ok true  (3.1..4.0 ms)`.
 *
 * @example
 * ```ts
 * console.log(h.operations().map(formatOp).join('\n'));
 * ```
 */
export function formatOp(op: Operation): string {
  const arg = op.arg === undefined ? '' : ` ${JSON.stringify(op.arg)}`;
  const out =
    op.status === 'ok'
      ? op.result === undefined
        ? ''
        : ` ${JSON.stringify(op.result)}`
      : op.error
        ? ` (${op.error})`
        : '';
  const detail = op.detail === undefined ? '' : ` ${JSON.stringify(op.detail)}`;
  const end = op.complete === undefined ? '…' : op.complete.toFixed(2);
  return `#${op.id} ${op.process} ${op.key} ${op.kind}${arg} ${op.status}${out}${detail}  [${op.invoke.toFixed(2)}..${end} ms]`;
}

/** One process's part of a history recorded across processes. */
export interface HistoryPart {
  readonly ops: readonly Operation[];
  /** How far this process's clock is ahead of the reference clock, ms (subtracted). */
  readonly offsetMs?: number;
  /** How uncertain that offset is, ms: the part's intervals are widened by as much. */
  readonly marginMs?: number;
}

function shift(o: Operation, by: number, widen: number): Operation {
  const d = o.detail;
  const section =
    d !== null &&
    typeof d === 'object' &&
    !Array.isArray(d) &&
    typeof d.enter === 'number' &&
    typeof d.exit === 'number'
      ? { detail: { ...d, enter: d.enter - by + widen, exit: d.exit - by - widen } }
      : {};
  return {
    ...o,
    invoke: o.invoke - by - widen,
    ...(o.complete === undefined ? {} : { complete: o.complete - by + widen }),
    ...section,
  };
}

/**
 * One history from several processes' (each recorded with a clock they share, such as
 * `performance.timeOrigin + performance.now()`): each part's times corrected by its
 * `offsetMs` and its intervals widened by its `marginMs` on both sides (critical sections in a
 * `detail` narrowed by as much), so that what is left of the clocks' skew can only hide an
 * anomaly, never invent one; operations renumbered in invocation order, times relative to the
 * first invocation.
 *
 * @example
 * ```ts
 * const merged = mergeHistories([{ ops: mine }, { ops: theirs, offsetMs: 0.02, marginMs: 0.1 }]);
 * ```
 */
export function mergeHistories(parts: readonly HistoryPart[]): Operation[] {
  const all = parts.flatMap((p) => p.ops.map((o) => shift(o, p.offsetMs ?? 0, p.marginMs ?? 0)));
  all.sort((a, b) => a.invoke - b.invoke);
  const t0 = all[0]?.invoke ?? 0;
  return all.map((o, id) => ({ ...shift(o, t0, 0), id }));
}
