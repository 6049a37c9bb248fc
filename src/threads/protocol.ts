/**
 * The wire protocol between {@link serveBackend} (the thread that owns a backend) and
 * {@link remoteBackend} (a client in any thread), over one `MessagePort` per client.
 *
 * Both sides batch: every message of one turn of the event loop goes in one `postMessage` (an
 * array of frames), so concurrent calls cost one structured clone and one wake-up per turn.
 *
 * Frames (tuples; the first element is the tag):
 * - client → owner: `CALL` (a method of the backend, target 0, or of a live object such as a
 *   lease, target its id; with the client's predicted checks, see `predict.ts`), `ABORT` (a signal the call carried was aborted), `ANSWER` (what a
 *   callback the call carried returned), `BYE` (the client closes: the owner ends its objects).
 * - owner → client: `RESULT`, `FAIL` (an error, {@link WireError}), `INVOKE` (run the call's
 *   callback `i` with these arguments, e.g. a patch's schema post-check), `LOST` (a live object's
 *   `signal` aborted: the lease is lost), `BYE` (acknowledged; the port closes).
 *
 * Forwarding is driven by two tables, so that a new Backend method or a new lease-like object
 * costs a line here and a thin method on the client:
 * - {@link RETURNS}: which methods answer with a live object, and of which kind;
 * - {@link KINDS}: per object kind, the fields copied once when it is made (`docs`, `fences`,
 *   `fence`), the methods that end it, and what a call answers once it is gone.
 * Arguments cross as they are (structured clone), except functions and `AbortSignal`s found in
 * an argument, in its own properties, or in the own properties of its array elements (a patch's
 * `check`, an options object's `signal`): they stay in the client's thread and are replaced by
 * holes ({@link Hole}) that the owner fills with a proxy function or its own `AbortSignal`.
 *
 * @example
 * ```ts
 * const frames: Frame[] = [[CALL, 1, 0, 'read', [[{ model: 'counter', key: 'c1' }]], undefined]];
 * port.postMessage(frames);
 * ```
 */
import type { MessagePort } from 'node:worker_threads';
import {
  AlreadyExistsError,
  BackendError,
  ConflictError,
  DeadlockError,
  LeaseLostError,
  LockBusyError,
  LockstepError,
  type LockstepErrorCode,
  LockTimeoutError,
  NotFoundError,
  ValidationError,
} from '../errors.js';
import type { BackendCapabilities, WriteResult } from '../store/backend.js';
import type { Prediction } from './predict.js';

/** Client → owner: call `method` of target (0: the backend; else a live object's id). */
export const CALL = 0;
/** Client → owner: the call's signal number `i` was aborted. */
export const ABORT = 1;
/** Client → owner: the answer to an `INVOKE`. */
export const ANSWER = 2;
/** Both ways: the client closes (client → owner); acknowledged (owner → client). */
export const BYE = 3;
/** Owner → client: the call's result. */
export const RESULT = 4;
/** Owner → client: the call failed. */
export const FAIL = 5;
/** Owner → client: run callback `i` of a call. */
export const INVOKE = 6;
/** Owner → client: a live object was lost (its signal aborted with this error). */
export const LOST = 7;

/**
 * Where a function or a signal was taken out of a call's arguments: `[arg]`, `[arg, prop]` or
 * `[arg, element, prop]`, and what it was (`f` a function, `s` a signal).
 */
export type Hole = readonly [kind: 'f' | 's', arg: number, a?: string | number, b?: string];

/** What a live object is sent as: its id, kind and the fields of its kind. */
export interface ObjectWire {
  readonly id: number;
  readonly kind: ObjectKind;
  readonly fields: Record<string, unknown>;
}

/** One frame. */
export type Frame =
  | readonly [
      tag: typeof CALL,
      call: number,
      target: number,
      method: string,
      args: unknown[],
      holes: Hole[] | undefined,
      /** Per function hole: a predicted check (see `predict.ts`), or undefined. */
      predictions: Array<Prediction | undefined> | undefined,
    ]
  | readonly [tag: typeof ABORT, call: number, signal: number]
  | readonly [tag: typeof ANSWER, invoke: number, ok: boolean, value: unknown]
  | readonly [tag: typeof BYE]
  | readonly [tag: typeof RESULT, call: number, value: unknown, object: ObjectWire | undefined]
  | readonly [tag: typeof FAIL, call: number, error: WireError]
  | readonly [tag: typeof INVOKE, invoke: number, call: number, fn: number, args: unknown[]]
  | readonly [tag: typeof LOST, object: number, error: WireError];

/** The kinds of live objects the owner hands out. */
export type ObjectKind = keyof typeof KINDS;

/** Why an object is gone: it was lost (`why` says how), or it ended (commit, release). */
export interface GoneState {
  readonly lost: boolean;
  readonly why: string;
  /** The lock's name for messages (`permitName`, `lockName`). */
  readonly label: string;
}

/** What a call to an object that is gone answers, per kind and method. */
type Gone = (state: GoneState) => { value: unknown } | { error: Error };

/** Refusal of a commit on a lease that is gone: nothing was written. */
function goneCommit(state: GoneState): { value: WriteResult } {
  const detail = state.lost
    ? `the lease was lost: ${state.why}`
    : 'the lease already ended (committed or released)';
  return { value: { applied: false, reason: 'fence', index: 0, detail } };
}

/**
 * Per kind of live object: the fields copied when it is made, the methods after which the owner
 * forgets it, and the answer of each method once it is gone.
 */
export const KINDS = {
  /** A document lease (`Backend.acquire`). */
  lease: {
    fields: ['docs', 'fences'],
    ends: ['commit', 'release'],
    gone: {
      commit: goneCommit,
      release: (state) => ({ value: !state.lost }),
    } as Record<string, Gone>,
  },
  /** A permit of a named pool (`Backend.acquirePermit`). */
  permit: {
    fields: ['fence'],
    ends: ['release'],
    gone: {
      extend: (state) => ({
        error: new LeaseLostError(state.label, state.lost ? state.why : 'it was already released'),
      }),
      release: (state) => ({ value: !state.lost }),
    } as Record<string, Gone>,
  },
} as const;

/**
 * What `method` of an object of `kind` answers once the object is gone (`kind` undefined: the
 * owner no longer knows it, so the first kind with that method decides), or undefined when the
 * kind has no such method.
 */
export function goneAnswer(
  kind: ObjectKind | undefined,
  method: string,
  state: GoneState,
): { value: unknown } | { error: Error } | undefined {
  if (kind !== undefined) return KINDS[kind].gone[method]?.(state);
  for (const k of Object.keys(KINDS) as ObjectKind[]) {
    const g = KINDS[k].gone[method];
    if (g) return g(state);
  }
  return undefined;
}

/** Methods of the backend or of a kind that answer with a live object, and its kind. */
export const RETURNS: Readonly<Record<string, ObjectKind>> = {
  acquire: 'lease',
  acquirePermit: 'permit',
};

/** The methods of the backend a client may call (the optional ones where the backend has them). */
export const BACKEND_METHODS = [
  'read',
  'write',
  'acquire',
  'acquirePermit',
  'permitsHeld',
  'consume',
  'resetLimit',
] as const;

/** The kind of a handle (see {@link BackendHandle}). */
export const HANDLE_KIND = 'lockstep/threads:Backend';

/**
 * One client's connection to a served backend: a structured-cloneable value whose `port` must be
 * transferred (`transferList: [handle.port]`), usable by one `remoteBackend` in one thread.
 *
 * @example
 * ```ts
 * const handle = server.handle();
 * new Worker('./worker.js', { workerData: { backend: handle }, transferList: [handle.port] });
 * ```
 */
export interface BackendHandle {
  readonly kind: typeof HANDLE_KIND;
  /** The client's end of the connection. Transfer it; it works in one thread, for one client. */
  readonly port: MessagePort;
  /** The served backend's name ("memory", "redis", ...). */
  readonly name: string;
  /** The served backend's namespace: every client shares its documents and locks. */
  readonly namespace: string;
  /** The served backend's capabilities. */
  readonly supports: BackendCapabilities;
  /** The methods of {@link BACKEND_METHODS} the served backend implements. */
  readonly methods: readonly string[];
}

/** An error as it crosses the port. */
export type WireError =
  | {
      readonly as: 'lockstep';
      readonly code: LockstepErrorCode;
      readonly message: string;
      /** Own properties of the error (`lock`, `waitedMs`, `cycle`, `key`, `issues`, ...). */
      readonly props: Record<string, unknown>;
      readonly cause?: WireError;
    }
  | {
      readonly as: 'error';
      readonly name: string;
      readonly message: string;
      readonly stack?: string;
    }
  | { readonly as: 'value'; readonly value: unknown }
  /** The owner's call was stopped by the client's signal number `signal`. */
  | { readonly as: 'aborted'; readonly signal: number }
  /** The client's callback threw: the client rejects with what it threw. */
  | { readonly as: 'callback'; readonly invoke: number };

const CLASSES: Record<LockstepErrorCode, abstract new (...args: never[]) => LockstepError> = {
  LOCK_TIMEOUT: LockTimeoutError,
  LOCK_BUSY: LockBusyError,
  DEADLOCK: DeadlockError,
  LEASE_LOST: LeaseLostError,
  CONFLICT: ConflictError,
  NOT_FOUND: NotFoundError,
  ALREADY_EXISTS: AlreadyExistsError,
  INVALID: ValidationError,
  BACKEND: BackendError,
};

/** Own properties an error carries besides the platform's (message, stack). */
function ownProps(err: object): Record<string, unknown> {
  const props: Record<string, unknown> = {};
  for (const k of Object.keys(err)) {
    if (k === 'cause') continue;
    props[k] = cloneable((err as Record<string, unknown>)[k]);
  }
  return props;
}

/**
 * `v` if it survives a structured clone as data (JSON-like values, errors, arrays of them),
 * else a description: a function, a symbol or a class instance with methods would fail the
 * whole batch of frames, so they never cross.
 */
export function cloneable(v: unknown, depth = 0): unknown {
  if (v === null || v === undefined) return v;
  const t = typeof v;
  if (t === 'string' || t === 'number' || t === 'boolean' || t === 'bigint') return v;
  if (t === 'symbol') return String(v);
  if (t === 'function') return `[function ${(v as { name?: string }).name ?? ''}]`;
  if (depth > 32) return '[too deep]';
  if (Array.isArray(v)) return v.map((x) => cloneable(x, depth + 1));
  if (v instanceof Error) return toWire(v);
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v as object)) {
    out[k] = cloneable((v as Record<string, unknown>)[k], depth + 1);
  }
  return out;
}

/** An error (or any rejection value) as it crosses the port. */
export function toWire(err: unknown): WireError {
  if (err instanceof LockstepError && err.code in CLASSES) {
    const w: WireError = {
      as: 'lockstep',
      code: err.code,
      message: err.message,
      props: ownProps(err),
      ...(err.cause !== undefined ? { cause: toWire(err.cause) } : {}),
    };
    return w;
  }
  if (err instanceof Error) {
    return {
      as: 'error',
      name: err.name,
      message: err.message,
      ...(err.stack ? { stack: err.stack } : {}),
    };
  }
  return { as: 'value', value: cloneable(err) };
}

/**
 * The error a {@link WireError} stands for, re-created in this thread: Lockstep errors as the
 * same class (so `instanceof` and `code` hold) with the same message and properties.
 */
export function fromWire(w: WireError): unknown {
  switch (w.as) {
    case 'lockstep': {
      const cls = CLASSES[w.code];
      const options = w.cause !== undefined ? { cause: fromWire(w.cause) } : undefined;
      // A real Error (stack, [[ErrorData]]) whose prototype is the class's, without re-running
      // the constructor (which words its own message): the owner's message and fields stay.
      const err = Reflect.construct(Error, [w.message, options], cls) as LockstepError;
      Object.assign(err, w.props);
      return err;
    }
    case 'error': {
      const err = new Error(w.message);
      err.name = w.name;
      if (w.stack) err.stack = w.stack;
      return err;
    }
    case 'value':
      return w.value;
    default:
      return new BackendError(`an internal protocol answer (${w.as}) reached the wrong place`);
  }
}

/** True when `v` is an `AbortSignal`. */
function isSignal(v: unknown): v is AbortSignal {
  return typeof v === 'object' && v !== null && v instanceof AbortSignal;
}

/** Things a call's arguments carried that stay in the client's thread. */
export interface Kept {
  readonly fns: Array<(...args: never[]) => unknown>;
  readonly signals: AbortSignal[];
}

/** An own property of `o` to move out: a function or a signal. */
function special(v: unknown): 'f' | 's' | undefined {
  if (typeof v === 'function') return 'f';
  if (isSignal(v)) return 's';
  return undefined;
}

/** `o` without its functions and signals (a shallow copy, only when it had some). */
function stripObject(
  o: Record<string, unknown>,
  holes: Hole[],
  kept: Kept,
  arg: number,
  element: number | undefined,
): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const k in o) {
    const v = o[k];
    const s = special(v);
    if (s === undefined) continue;
    copy ??= { ...o };
    copy[k] = undefined;
    if (s === 'f') {
      holes.push(element === undefined ? ['f', arg, k] : ['f', arg, element, k]);
      kept.fns.push(v as (...args: never[]) => unknown);
    } else {
      holes.push(element === undefined ? ['s', arg, k] : ['s', arg, element, k]);
      kept.signals.push(v as AbortSignal);
    }
  }
  return copy ?? o;
}

/**
 * Takes functions and signals out of `args` (top level, own properties, own properties of array
 * elements), in the order the owner fills them back ({@link fill}).
 */
export function strip(args: unknown[], kept: Kept): { args: unknown[]; holes: Hole[] | undefined } {
  const holes: Hole[] = [];
  const out = args.slice();
  for (let i = 0; i < out.length; i++) {
    const a = out[i];
    const s = special(a);
    if (s === 'f') {
      holes.push(['f', i]);
      kept.fns.push(a as (...args: never[]) => unknown);
      out[i] = undefined;
    } else if (s === 's') {
      holes.push(['s', i]);
      kept.signals.push(a as AbortSignal);
      out[i] = undefined;
    } else if (Array.isArray(a)) {
      let copy: unknown[] | undefined;
      for (let j = 0; j < a.length; j++) {
        const e = a[j] as unknown;
        if (e === null || typeof e !== 'object' || Array.isArray(e)) continue;
        const stripped = stripObject(e as Record<string, unknown>, holes, kept, i, j);
        if (stripped !== e) {
          copy ??= a.slice();
          copy[j] = stripped;
        }
      }
      if (copy) out[i] = copy;
    } else if (a !== null && typeof a === 'object') {
      out[i] = stripObject(a as Record<string, unknown>, holes, kept, i, undefined);
    }
  }
  return { args: out, holes: holes.length > 0 ? holes : undefined };
}

/**
 * Puts a value back into every hole of `args` (which the owner owns: they were cloned):
 * `make(kind, n)` gives the n-th function (a proxy) or the n-th signal.
 */
export function fill(
  args: unknown[],
  holes: Hole[],
  make: (kind: 'f' | 's', n: number) => unknown,
): void {
  let fns = 0;
  let signals = 0;
  for (const [kind, arg, a, b] of holes) {
    const value = make(kind, kind === 'f' ? fns++ : signals++);
    if (a === undefined) args[arg] = value;
    else if (b === undefined) (args[arg] as Record<string, unknown>)[a as string] = value;
    else ((args[arg] as unknown[])[a as number] as Record<string, unknown>)[b] = value;
  }
}
