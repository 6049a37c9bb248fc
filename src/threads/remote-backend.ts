/**
 * `remoteBackend(handle)`: a Backend in any thread whose calls run on the backend another thread
 * serves ({@link serveBackend}), over the handle's `MessagePort` and the protocol of
 * `protocol.ts`. `createStore(remoteBackend(handle))` in every worker sees one store.
 *
 * What stays in this thread: a patch's schema check (the owner calls it back with the post-image
 * and waits for its answer, so validation runs where the schema is), abort signals (an abort is
 * sent to the owner, which stops its wait; the call then rejects with `signal.reason` itself),
 * the in-process deadlock graph of this thread's stores (the boundary's; cycles through other
 * threads end at `timeoutMs`, as across processes), and program order (a lease waits for this
 * thread's writes in flight on its keys). Errors come back as the same classes with the same
 * codes. A lease's `lost` and `signal` follow the owner's: the owner tells when it is lost.
 *
 * @example
 * ```ts
 * import { workerData } from 'node:worker_threads';
 * import { createStore } from 'lockstep';
 * import { remoteBackend } from 'lockstep/threads';
 * const store = createStore(remoteBackend(workerData.backend));
 * ```
 */
import type { MessagePort } from 'node:worker_threads';
import { BackendError, LeaseLostError } from '../errors.js';
import type {
  Backend,
  BackendCapabilities,
  ConsumeResult,
  Consumption,
  DocRef,
  DocWrite,
  Lease,
  LeaseRequest,
  LimitRef,
  PermitKind,
  PermitLease,
  PermitRequest,
  StoredDoc,
  WriteOptions,
  WriteResult,
} from '../store/backend.js';
import { lockName, permitName } from '../store/names.js';
import { describeValue, invalid } from './options.js';
import { type Prediction, Predictor } from './predict.js';
import { trackWrites, waitForWrites } from './program-order.js';
import {
  ABORT,
  ANSWER,
  type BackendHandle,
  BYE,
  CALL,
  cloneable,
  FAIL,
  type Frame,
  fromWire,
  type GoneState,
  goneAnswer,
  HANDLE_KIND,
  INVOKE,
  type Kept,
  KINDS,
  LOST,
  type ObjectKind,
  type ObjectWire,
  RESULT,
  strip,
  toWire,
  type WireError,
} from './protocol.js';

export type { BackendHandle } from './protocol.js';

/** A call waiting for the owner's answer. */
interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  /** What the call's arguments carried that stayed here (undefined when nothing). */
  kept: Kept | undefined;
  /** Listeners on `kept.signals`, removed when the call settles. */
  onAbort: Array<() => void> | undefined;
  /** What a callback threw, per invoke: the call rejects with it. */
  thrown: Map<number, unknown> | undefined;
  /** A write: if the connection ends first, it may or may not have landed. */
  write: boolean;
  /** The lock's name, for an object the call answers with. */
  label: string;
}

/** The client's end of one connection. */
class ClientConnection {
  readonly #port: MessagePort;
  readonly #pending = new Map<number, Pending>();
  readonly #objects = new Map<number, RemoteObject>();
  #nextCall = 1;
  #out: Frame[] = [];
  #flushQueued = false;
  /** Set once the connection ended: every call rejects with it. */
  #ended: BackendError | undefined;
  readonly #bye: Promise<void>;
  #byeDone!: () => void;

  constructor(port: MessagePort) {
    this.#port = port;
    this.#bye = new Promise<void>((resolve) => {
      this.#byeDone = resolve;
    });
    port.on('message', (frames: Frame[]) => this.#receive(frames));
    port.on('close', () =>
      this.#end(
        new BackendError(
          'the thread serving this backend is gone (its port closed); nothing more can be read or written through it',
        ),
      ),
    );
    port.unref();
  }

  /** Predicted checks of this connection's writes (see `predict.ts`). */
  readonly predictor = new Predictor();
  #nextWrite = 1;

  /**
   * A write (`Backend.write`, `Lease.commit`) of `writes`: its checks predicted, and the cache
   * of known documents updated by the owner's answer.
   */
  callWrite(
    target: number,
    method: string,
    args: unknown[],
    writes: readonly DocWrite[],
  ): Promise<WriteResult> {
    const seq = this.#nextWrite++;
    const predictions = this.predictor.predict(writes, seq);
    const p = this.call(target, method, args, true, '', predictions) as Promise<WriteResult>;
    p.then(
      (r) => this.predictor.settled(writes, seq, r),
      () => this.predictor.settled(writes, seq, undefined),
    );
    return p;
  }

  /**
   * Rate-limit consumptions with a batch (`Backend.consume`): the batch's checks predicted and
   * the cache of known documents updated by the answer, as {@link callWrite} does.
   */
  callConsume(args: unknown[], writes: readonly DocWrite[]): Promise<ConsumeResult> {
    const seq = this.#nextWrite++;
    const predictions = this.predictor.predict(writes, seq);
    const p = this.call(0, 'consume', args, true, '', predictions) as Promise<ConsumeResult>;
    p.then(
      (r) => this.predictor.settled(writes, seq, r.write),
      () => this.predictor.settled(writes, seq, undefined),
    );
    return p;
  }

  /**
   * Calls `method` of `target` (0: the backend), resolving with the owner's answer. `write`: the
   * outcome is unknown if the connection ends first; `label`: the lock's name, for an object the
   * owner answers with.
   */
  call(
    target: number,
    method: string,
    args: unknown[],
    write = false,
    label = '',
    predictions?: Array<Prediction | undefined>,
  ): Promise<unknown> {
    if (this.#ended) return Promise.reject(this.#ended);
    let kept: Kept | undefined;
    let sent = args;
    let holes: ReturnType<typeof strip>['holes'];
    // Arguments that are plain data cross as they are; only objects may hide functions/signals.
    for (const a of args) {
      if (a !== null && (typeof a === 'object' || typeof a === 'function')) {
        kept = { fns: [], signals: [] };
        ({ args: sent, holes } = strip(args, kept));
        break;
      }
    }
    if (holes === undefined) kept = undefined;
    const signals = kept?.signals;
    if (signals !== undefined) {
      for (const s of signals) if (s.aborted) return Promise.reject(s.reason);
    }
    const id = this.#nextCall++;
    return new Promise<unknown>((resolve, reject) => {
      const p: Pending = {
        resolve,
        reject,
        kept,
        onAbort: undefined,
        thrown: undefined,
        write,
        label,
      };
      if (signals !== undefined && signals.length > 0) {
        p.onAbort = signals.map((s, n) => {
          const on = () => this.#send([ABORT, id, n]);
          s.addEventListener('abort', on, { once: true });
          return on;
        });
      }
      if (this.#pending.size === 0) this.#port.ref();
      this.#pending.set(id, p);
      this.#send([CALL, id, target, method, sent, holes, holes && predictions]);
    });
  }

  /** Registers an object the owner handed out. */
  adopt(o: RemoteObject): void {
    this.#objects.set(o.id, o);
  }

  /** Forgets an object that ended (commit, release) or was lost. */
  drop(id: number): void {
    this.#objects.delete(id);
  }

  #send(frame: Frame): void {
    this.#out.push(frame);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushQueued = false;
    const out = this.#out;
    if (out.length === 0) return;
    this.#out = [];
    if (this.#ended) return;
    try {
      this.#port.postMessage(out);
    } catch (err) {
      // An argument could not be cloned (a value no backend takes): fail only that call.
      for (const f of out) {
        try {
          this.#port.postMessage([f]);
        } catch {
          if (f[0] === CALL) {
            this.#settle(f[1])?.reject(
              new BackendError(
                `the call's arguments cannot be sent to the backend's thread (${String(err)}); pass plain JSON data`,
                { cause: err },
              ),
            );
          }
        }
      }
    }
  }

  /** Takes call `id` out of the pending set (undefined if it already settled). */
  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (p === undefined) return undefined;
    this.#pending.delete(id);
    if (this.#pending.size === 0 && !this.#ended) this.#port.unref();
    if (p.onAbort !== undefined) {
      const signals = (p.kept as Kept).signals;
      p.onAbort.forEach((on, n) => {
        signals[n]?.removeEventListener('abort', on);
      });
    }
    return p;
  }

  #receive(frames: Frame[]): void {
    for (const f of frames) {
      switch (f[0]) {
        case RESULT: {
          const p = this.#settle(f[1]);
          const wire = f[3];
          if (wire === undefined) p?.resolve(f[2]);
          else {
            const o = makeObject(this, wire, p?.label ?? '');
            if (p) p.resolve(o);
            // Nobody waits for it any more (the connection ends): give it back.
            else void o.call('release', []).catch(() => {});
          }
          break;
        }
        case FAIL: {
          const p = this.#settle(f[1]);
          if (p) p.reject(this.#error(p, f[2]));
          break;
        }
        case INVOKE:
          this.#invoke(f[1], f[2], f[3], f[4]);
          break;
        case LOST:
          this.#objects.get(f[1])?.markLost(fromWire(f[2]));
          break;
        case BYE:
          this.#byeDone();
          break;
        default:
          break;
      }
    }
  }

  #error(p: Pending, w: WireError): unknown {
    if (w.as === 'aborted') return p.kept?.signals[w.signal]?.reason;
    if (w.as === 'callback') {
      if (p.thrown?.has(w.invoke)) return p.thrown.get(w.invoke);
      return new BackendError('a callback of this call failed in this thread');
    }
    return fromWire(w);
  }

  /** Runs a callback of call `call` (a schema check) and sends its answer. */
  #invoke(inv: number, call: number, fn: number, args: unknown[]): void {
    const p = this.#pending.get(call);
    const f = p?.kept?.fns[fn];
    if (p === undefined || f === undefined) {
      const e = new BackendError('the call that carried this callback has already settled');
      this.#send([ANSWER, inv, false, toWire(e)]);
      return;
    }
    const failed = (err: unknown) => {
      (p.thrown ??= new Map()).set(inv, err);
      this.#send([ANSWER, inv, false, toWire(err)]);
    };
    let out: unknown;
    try {
      out = (f as (...a: unknown[]) => unknown)(...args);
    } catch (err) {
      failed(err);
      return;
    }
    if (
      out !== null &&
      typeof out === 'object' &&
      typeof (out as Promise<unknown>).then === 'function'
    ) {
      (out as Promise<unknown>).then((v) => this.#send([ANSWER, inv, true, cloneable(v)]), failed);
    } else {
      this.#send([ANSWER, inv, true, out === undefined ? undefined : cloneable(out)]);
    }
  }

  /** The connection ended: every call rejects with `why`, every object is lost. */
  #end(why: BackendError): void {
    if (this.#ended) return;
    this.#ended = why;
    this.#byeDone();
    for (const id of [...this.#pending.keys()]) {
      const p = this.#settle(id) as Pending;
      p.reject(
        p.write
          ? new BackendError(`${why.message} (this write may or may not have been applied)`, {
              outcomeUnknown: true,
            })
          : why,
      );
    }
    for (const o of [...this.#objects.values()]) {
      o.markLost(new LeaseLostError(o.label, why.message));
    }
    this.#objects.clear();
    this.#port.close();
  }

  /** Says goodbye (the owner releases what this client held), then closes the port. */
  async close(why: BackendError): Promise<void> {
    if (this.#ended) return;
    this.#send([BYE]);
    this.#flush();
    // Waiting for the answer keeps this thread alive (a pending call does the same).
    this.#port.ref();
    await this.#bye;
    this.#end(why);
  }
}

/** A live object of the owner (a lease), seen from this thread. */
class RemoteObject {
  readonly id: number;
  readonly kind: ObjectKind;
  /** The lock's name for messages. */
  readonly label: string;
  readonly #conn: ClientConnection;
  #lost = false;
  #why = '';
  #reason: unknown;
  /** Made on first use: most leases never look at their signal. */
  #controller: AbortController | undefined;
  /** Set when a method that ends it was called (commit, release). */
  #ended = false;
  /** Answers memoized per method (a second release resolves what the first did). */
  readonly #memo = new Map<string, Promise<unknown>>();

  constructor(conn: ClientConnection, wire: ObjectWire, label: string) {
    this.#conn = conn;
    this.id = wire.id;
    this.kind = wire.kind;
    this.label = label;
  }

  get lost(): boolean {
    return this.#lost;
  }

  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    if (this.#lost && !this.#controller.signal.aborted) this.#controller.abort(this.#reason);
    return this.#controller.signal;
  }

  markLost(reason: unknown): void {
    if (this.#lost) return;
    this.#lost = true;
    this.#reason = reason;
    this.#why = reason instanceof Error ? reason.message : String(reason);
    this.#conn.drop(this.id);
    this.#controller?.abort(reason);
  }

  /** Calls `method` on the owner's object, or answers here when it is gone. */
  call(method: string, args: unknown[], writes?: readonly DocWrite[]): Promise<unknown> {
    const memo = this.#memo.get(method);
    if (memo !== undefined) return memo;
    let p: Promise<unknown>;
    if (this.#lost || this.#ended) {
      const state: GoneState = { lost: this.#lost, why: this.#why, label: this.label };
      const answer = goneAnswer(this.kind, method, state);
      if (answer === undefined) p = Promise.reject(invalid('remoteBackend', `no method ${method}`));
      else if ('error' in answer) p = Promise.reject(answer.error);
      else p = Promise.resolve(answer.value);
    } else {
      const ends = (KINDS[this.kind].ends as readonly string[]).includes(method);
      if (ends) {
        this.#ended = true;
        this.#conn.drop(this.id);
      }
      p =
        writes === undefined
          ? this.#conn.call(this.id, method, args)
          : this.#conn.callWrite(this.id, method, args, writes);
    }
    if (method === 'release') this.#memo.set(method, p);
    return p;
  }
}

/** A document lease held through the owner. */
class RemoteLease extends RemoteObject implements Lease {
  readonly docs: ReadonlyArray<StoredDoc | undefined>;
  readonly fences: readonly number[];

  constructor(conn: ClientConnection, wire: ObjectWire, label: string) {
    super(conn, wire, label);
    this.docs = wire.fields.docs as ReadonlyArray<StoredDoc | undefined>;
    this.fences = wire.fields.fences as readonly number[];
  }

  commit(writes: readonly DocWrite[]): Promise<WriteResult> {
    return this.call('commit', [writes], writes) as Promise<WriteResult>;
  }

  release(): Promise<boolean> {
    return this.call('release', []) as Promise<boolean>;
  }
}

/** A permit of a named pool held through the owner. */
class RemotePermit extends RemoteObject implements PermitLease {
  readonly fence: number;

  constructor(conn: ClientConnection, wire: ObjectWire, label: string) {
    super(conn, wire, label);
    this.fence = wire.fields.fence as number;
  }

  extend(ms?: number): Promise<void> {
    return this.call('extend', ms === undefined ? [] : [ms]) as Promise<void>;
  }

  release(): Promise<boolean> {
    return this.call('release', []) as Promise<boolean>;
  }
}

/** The client's class per kind of live object (one line per kind of `KINDS`). */
const MAKERS: Record<
  ObjectKind,
  new (
    c: ClientConnection,
    w: ObjectWire,
    label: string,
  ) => RemoteObject
> = {
  lease: RemoteLease,
  permit: RemotePermit,
};

/** The object of the kind a wire description names. */
function makeObject(conn: ClientConnection, wire: ObjectWire, label: string): RemoteObject {
  const o = new MAKERS[wire.kind](conn, wire, label);
  conn.adopt(o);
  return o;
}

/**
 * A {@link Backend} whose calls run in the thread that serves it. Made by {@link remoteBackend}.
 *
 * @example
 * ```ts
 * const backend = remoteBackend(workerData.backend);
 * const [doc] = await backend.read([{ model: 'counter', key: 'c1' }]);
 * ```
 */
export class RemoteBackend implements Backend {
  readonly name: string;
  readonly namespace: string;
  readonly supports: BackendCapabilities;
  readonly #conn: ClientConnection;
  #closing: Promise<void> | undefined;

  /** @internal use {@link remoteBackend}. */
  constructor(handle: BackendHandle) {
    this.name = handle.name;
    this.namespace = handle.namespace;
    // Shared across threads by construction; across processes only if the served backend is.
    this.supports = { ...handle.supports, sharedAcrossThreads: true };
    this.#conn = new ClientConnection(handle.port);
    // What the served backend lacks, this one lacks too (the store then says it is unsupported).
    for (const m of ['acquirePermit', 'permitsHeld'] as const) {
      if (!handle.methods.includes(m)) Object.defineProperty(this, m, { value: undefined });
    }
  }

  read(refs: readonly DocRef[]): Promise<Array<StoredDoc | undefined>> {
    const p = this.#conn.call(0, 'read', [refs]) as Promise<Array<StoredDoc | undefined>>;
    return p.then((docs) => {
      for (let i = 0; i < refs.length; i++) {
        const r = refs[i] as DocRef;
        this.#conn.predictor.saw(r.model, [r.key], [docs[i]]);
      }
      return docs;
    });
  }

  write(writes: readonly DocWrite[], options?: WriteOptions): Promise<WriteResult> {
    const args = options === undefined ? [writes] : [writes, options];
    const p = this.#conn.callWrite(0, 'write', args, writes);
    trackWrites(this.namespace, writes, p);
    return p;
  }

  acquire(request: LeaseRequest): Promise<Lease | undefined> {
    const label = lockName(request.model, request.keys, request.action);
    const send = () =>
      (this.#conn.call(0, 'acquire', [request], false, label) as Promise<Lease | undefined>).then(
        (lease) => {
          if (lease) this.#conn.predictor.saw(request.model, request.keys, lease.docs);
          return lease;
        },
      );
    const wait = waitForWrites(this.namespace, request.model, request.keys, request.signal);
    return wait === undefined ? send() : wait.then(send);
  }

  /** Rate-limit consumptions (and a batch) on the served backend, in one of its atomic steps. */
  consume(
    consumptions: readonly Consumption[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<ConsumeResult> {
    const args = options === undefined ? [consumptions, writes] : [consumptions, writes, options];
    const p = this.#conn.callConsume(args, writes);
    if (writes.length > 0) trackWrites(this.namespace, writes, p);
    return p;
  }

  /** Forgets one rate-limit key on the served backend. */
  resetLimit(ref: LimitRef): Promise<void> {
    return this.#conn.call(0, 'resetLimit', [ref], true) as Promise<void>;
  }

  /** Named-lock permits (only where the served backend has them; see `handle.methods`). */
  acquirePermit(request: PermitRequest): Promise<PermitLease | undefined> {
    const label = permitName(request.kind, request.name);
    return this.#conn.call(0, 'acquirePermit', [request], false, label) as Promise<
      PermitLease | undefined
    >;
  }

  /** Units of a named pool held right now (where the served backend has named locks). */
  permitsHeld(kind: PermitKind, name: string): Promise<number> {
    return this.#conn.call(0, 'permitsHeld', [kind, name]) as Promise<number>;
  }

  /**
   * Closes this client's connection: the owner releases the leases it holds; its calls still
   * waiting reject with BackendError, as does every later call. The served backend stays open.
   */
  close(): Promise<void> {
    this.#closing ??= this.#conn.close(
      new BackendError('this remote backend is closed; open a new one with a new handle'),
    );
    return this.#closing;
  }
}

const claimed = new WeakSet<MessagePort>();

/**
 * A Backend for this thread on a backend served by another thread: `handle` is one of
 * {@link BackendServer.handle}'s, received with its port transferred. One handle serves one
 * client: take a new handle for each.
 *
 * @example
 * ```ts
 * import { parentPort } from 'node:worker_threads';
 * parentPort.once('message', ({ backend }) => {
 *   const store = createStore(remoteBackend(backend));
 * });
 * ```
 */
export function remoteBackend(handle: BackendHandle): RemoteBackend {
  const h = handle as Partial<BackendHandle> | null;
  if (h === null || typeof h !== 'object' || h.kind !== HANDLE_KIND) {
    throw invalid(
      'remoteBackend',
      `expected a handle from serveBackend(...).handle(), got ${describeValue(handle)}`,
    );
  }
  const port = h.port as unknown;
  if (
    port === null ||
    typeof port !== 'object' ||
    typeof (port as Partial<MessagePort>).postMessage !== 'function'
  ) {
    throw invalid(
      'remoteBackend',
      'the handle has no MessagePort: send it with its port transferred (transferList: [handle.port])',
    );
  }
  if (claimed.has(port as MessagePort)) {
    throw invalid(
      'remoteBackend',
      'this handle is in use by another remoteBackend; take a new handle for each client',
    );
  }
  claimed.add(port as MessagePort);
  return new RemoteBackend(handle);
}
