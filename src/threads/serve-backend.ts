/**
 * `serveBackend(backend)`: the thread that owns a backend serves it to clients in other threads
 * ({@link remoteBackend}), one `MessagePort` per client, with the protocol of `protocol.ts`.
 *
 * The owner runs every call on the backend itself, so every client sees one backend with all its
 * guarantees: atomic batches, leases with fences, plain writers waiting for exclusive leases,
 * timeouts and aborts (a client's abort aborts the owner's wait), and errors sent back as the
 * same classes with the same codes. A client that goes away (its port closes: `close()`, the
 * worker exited or was terminated) loses what it held: the owner releases its leases at once,
 * stops its waits and refuses the writes still waiting for one of its callbacks (nothing of
 * those is written). A client thread that is alive but stuck (a synchronous loop) keeps what it
 * holds, as a stuck task would in the owner's thread: on the memory backend a renewing lease
 * lasts as long as its holder's connection; use `renew: false` (it ends at `leaseMs`) where that
 * matters.
 *
 * @example
 * ```ts
 * import { Worker } from 'node:worker_threads';
 * import { memory } from 'lockstep';
 * import { serveBackend } from 'lockstep/threads';
 * const server = serveBackend(memory());
 * const handle = server.handle();
 * new Worker('./worker.js', { workerData: { backend: handle }, transferList: [handle.port] });
 * // worker.js: const store = createStore(remoteBackend(workerData.backend));
 * ```
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { BackendError } from '../errors.js';
import type { Backend, Json } from '../store/backend.js';
import { deepEqual } from '../store/json.js';
import { describeValue, invalid } from './options.js';
import type { Prediction } from './predict.js';
import {
  ABORT,
  ANSWER,
  BACKEND_METHODS,
  type BackendHandle,
  BYE,
  CALL,
  FAIL,
  type Frame,
  fill,
  fromWire,
  goneAnswer,
  HANDLE_KIND,
  type Hole,
  INVOKE,
  KINDS,
  LOST,
  type ObjectKind,
  RESULT,
  RETURNS,
  toWire,
  type WireError,
} from './protocol.js';

/**
 * A served backend: makes connections for clients and tracks them.
 *
 * @example
 * ```ts
 * const server = serveBackend(memory());
 * const handle = server.handle(); // one per client: transfer handle.port to its thread
 * await server.close();           // ends every connection (the backend itself stays open)
 * ```
 */
export interface BackendServer {
  /** A new connection: its handle, for one {@link remoteBackend} in one thread. */
  handle(): BackendHandle;
  /**
   * Serves `port`, one end of a `MessageChannel` you made; the client's handle for the other end
   * is {@link BackendServer.handleFor}.
   */
  serve(port: MessagePort): void;
  /** The handle of a client whose end of a channel is `port` (the owner serves the other end). */
  handleFor(port: MessagePort): BackendHandle;
  /** Connections open right now (0 when every client closed or went away). */
  readonly connections: number;
  /**
   * Ends every connection: their leases are released, their waits stopped; their clients get
   * BackendError from then on. The backend is not closed (it is yours).
   */
  close(): Promise<void>;
}

/** The rejection value of an owner's wait stopped by the client's signal number `n`. */
class Aborted {
  constructor(readonly signal: number) {}
}

/** The rejection value of a client callback that threw (the client keeps what it threw). */
class CallbackFailed {
  constructor(
    readonly invoke: number,
    readonly error: unknown,
  ) {}
}

/** A live object (a lease) of one connection. */
interface Live {
  readonly obj: Record<string, unknown>;
  readonly kind: ObjectKind;
  readonly onLost: (() => void) | undefined;
  readonly signal: AbortSignal | undefined;
}

/** What a call still running needs when its client aborts or goes away. */
interface Running {
  controllers: AbortController[] | undefined;
}

/** One client: its port, its live objects and its calls in flight. */
class Connection {
  readonly #port: MessagePort;
  readonly #backend: Backend;
  readonly #objects = new Map<number, Live>();
  readonly #running = new Map<number, Running>();
  readonly #invokes = new Map<number, { resolve(v: unknown): void; reject(e: unknown): void }>();
  readonly #onEnd: (c: Connection) => void;
  #nextObject = 1;
  #nextInvoke = 1;
  #out: Frame[] = [];
  #flushQueued = false;
  #ended = false;

  constructor(port: MessagePort, backend: Backend, onEnd: (c: Connection) => void) {
    this.#port = port;
    this.#backend = backend;
    this.#onEnd = onEnd;
    port.on('message', (frames: Frame[]) => this.#receive(frames));
    port.on('close', () => this.end());
    // A served port does not keep the owner's thread alive: its clients' threads do.
    port.unref();
  }

  #send(frame: Frame): void {
    if (this.#ended) return;
    this.#out.push(frame);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushQueued = false;
    const out = this.#out;
    if (out.length === 0 || this.#ended) return;
    this.#out = [];
    try {
      this.#port.postMessage(out);
    } catch (err) {
      // Something in a result could not be cloned: answer each call on its own, so that only
      // the call at fault fails.
      for (const f of out) this.#postAlone(f, err);
    }
  }

  #postAlone(f: Frame, err: unknown): void {
    try {
      this.#port.postMessage([f]);
    } catch {
      if (f[0] === RESULT) {
        const e = new BackendError(
          `the backend's answer could not be sent to the client's thread (${String(err)})`,
          { cause: err },
        );
        this.#port.postMessage([[FAIL, f[1], toWire(e)]]);
      }
    }
  }

  #receive(frames: Frame[]): void {
    for (const f of frames) {
      switch (f[0]) {
        case CALL:
          this.#call(f[1], f[2], f[3], f[4], f[5], f[6]);
          break;
        case ABORT:
          this.#running.get(f[1])?.controllers?.[f[2]]?.abort(new Aborted(f[2]));
          break;
        case ANSWER: {
          const inv = this.#invokes.get(f[1]);
          if (!inv) break;
          this.#invokes.delete(f[1]);
          if (f[2]) inv.resolve(f[3]);
          else inv.reject(new CallbackFailed(f[1], fromWire(f[3] as WireError)));
          break;
        }
        case BYE:
          this.end();
          this.#port.postMessage([[BYE]]);
          break;
        default:
          break;
      }
    }
  }

  #call(
    id: number,
    target: number,
    method: string,
    args: unknown[],
    holes: Hole[] | undefined,
    predictions: Array<Prediction | undefined> | undefined,
  ) {
    let running: Running | undefined;
    if (holes !== undefined) {
      const r: Running = { controllers: undefined };
      running = r;
      this.#running.set(id, r);
      fill(args, holes, (kind, n) => {
        if (kind === 's') {
          const c = new AbortController();
          (r.controllers ??= [])[n] = c;
          return c.signal;
        }
        const predicted = predictions?.[n];
        if (predicted === undefined) return (...a: unknown[]) => this.#invoke(id, n, a);
        // The client ran the check on the post-image it predicted: the same post-image, the
        // same verdict, here and now; another one, ask the client.
        return (...a: unknown[]) =>
          deepEqual(a[0] as Json, predicted[0]) ? predicted[1] : this.#invoke(id, n, a);
      });
    }
    let p: Promise<unknown>;
    let live: Live | undefined;
    try {
      if (target === 0) {
        if (!(BACKEND_METHODS as readonly string[]).includes(method)) {
          throw invalid('remoteBackend', `no backend method ${describeValue(method)} to call`);
        }
        const fn = (this.#backend as unknown as Record<string, (...a: unknown[]) => unknown>)[
          method
        ];
        p = Promise.resolve(fn?.apply(this.#backend, args));
      } else {
        live = this.#objects.get(target);
        if (live === undefined) {
          // Dropped when it was lost (the client may not know yet): answer as a lost object.
          p = this.#gone(target, method);
        } else {
          const fn = live.obj[method];
          if (typeof fn !== 'function') {
            throw invalid('remoteBackend', `no ${live.kind} method ${describeValue(method)}`);
          }
          if ((KINDS[live.kind].ends as readonly string[]).includes(method)) this.#forget(target);
          p = Promise.resolve((fn as (...a: unknown[]) => unknown).apply(live.obj, args));
        }
      }
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (value) => {
        if (running) this.#running.delete(id);
        const kind = RETURNS[method];
        if (kind !== undefined && target === 0 && value !== undefined && value !== null) {
          this.#handOut(id, kind, value as Record<string, unknown>);
        } else {
          this.#send([RESULT, id, value, undefined]);
        }
      },
      (err: unknown) => {
        if (running) this.#running.delete(id);
        this.#send([FAIL, id, this.#wireError(err)]);
      },
    );
  }

  #wireError(err: unknown): WireError {
    if (err instanceof Aborted) return { as: 'aborted', signal: err.signal };
    if (err instanceof CallbackFailed) return { as: 'callback', invoke: err.invoke };
    return toWire(err);
  }

  #gone(_target: number, method: string): Promise<unknown> {
    const answer = goneAnswer(undefined, method, {
      lost: true,
      why: 'it was lost before this call arrived',
      label: 'the lease',
    });
    if (answer === undefined) {
      return Promise.reject(invalid('remoteBackend', `no method ${describeValue(method)}`));
    }
    return 'error' in answer ? Promise.reject(answer.error) : Promise.resolve(answer.value);
  }

  /** Registers a live object and sends it with its fields; watches its signal for loss. */
  #handOut(call: number, kind: ObjectKind, obj: Record<string, unknown>): void {
    if (this.#ended) {
      // The client went away while it waited: what it got is given back at once.
      this.#endObject(obj);
      return;
    }
    const id = this.#nextObject++;
    const fields: Record<string, unknown> = {};
    for (const f of KINDS[kind].fields) fields[f] = obj[f];
    const signal = obj.signal as AbortSignal | undefined;
    let onLost: (() => void) | undefined;
    if (signal !== undefined) {
      if (signal.aborted) {
        this.#send([RESULT, call, undefined, { id, kind, fields }]);
        this.#send([LOST, id, toWire(signal.reason)]);
        this.#endObject(obj);
        return;
      }
      onLost = () => {
        if (!this.#objects.has(id)) return;
        this.#forget(id);
        this.#send([LOST, id, toWire(signal.reason)]);
        this.#endObject(obj);
      };
      signal.addEventListener('abort', onLost, { once: true });
    }
    this.#objects.set(id, { obj, kind, onLost, signal });
    this.#send([RESULT, call, undefined, { id, kind, fields }]);
  }

  #forget(id: number): void {
    const live = this.#objects.get(id);
    if (!live) return;
    this.#objects.delete(id);
    if (live.onLost) live.signal?.removeEventListener('abort', live.onLost);
  }

  /** Ends an object nobody will use again: `release()` (idempotent, never throws when lost). */
  #endObject(obj: Record<string, unknown>): void {
    const release = obj.release;
    if (typeof release !== 'function') return;
    try {
      Promise.resolve((release as () => unknown).call(obj)).catch(() => {});
    } catch {
      // a release that throws has nothing left to give back
    }
  }

  /** Runs callback `fn` of call `call` in the client's thread. */
  #invoke(call: number, fn: number, args: unknown[]): Promise<unknown> {
    if (this.#ended) {
      return Promise.reject(new BackendError('the client went away; nothing was written'));
    }
    const inv = this.#nextInvoke++;
    return new Promise((resolve, reject) => {
      this.#invokes.set(inv, { resolve, reject });
      this.#send([INVOKE, inv, call, fn, args]);
    });
  }

  /** The client closed or went away: its objects are released and its waits stopped. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#out = [];
    const gone = new BackendError('the client went away; nothing was written');
    for (const inv of this.#invokes.values()) inv.reject(gone);
    this.#invokes.clear();
    for (const r of this.#running.values()) {
      r.controllers?.forEach((c, n) => {
        c.abort(new Aborted(n));
      });
    }
    this.#running.clear();
    for (const id of [...this.#objects.keys()]) {
      const live = this.#objects.get(id) as Live;
      this.#forget(id);
      this.#endObject(live.obj);
    }
    this.#onEnd(this);
  }

  /** Ends the connection from the owner's side, and closes the port. */
  close(): void {
    this.end();
    this.#port.close();
  }
}

/**
 * Serves `backend` to other threads: each {@link BackendServer.handle} is one client's
 * connection, for `createStore(remoteBackend(handle))` in the thread it is sent to. With `port`,
 * that port is served too (its other end goes to {@link BackendServer.handleFor}).
 *
 * Every client shares the backend's documents and locks, with its guarantees (see the file's
 * header). The owner's thread must stay alive while clients use it; served ports do not keep it
 * alive by themselves.
 *
 * @example
 * ```ts
 * const server = serveBackend(memory());
 * const handle = server.handle();
 * worker.postMessage({ backend: handle }, [handle.port]);
 * ```
 */
export function serveBackend(backend: Backend, port?: MessagePort): BackendServer {
  if (
    backend === null ||
    typeof backend !== 'object' ||
    typeof (backend as Partial<Backend>).acquire !== 'function'
  ) {
    throw invalid(
      'serveBackend',
      `expected a Backend (e.g. memory()), got ${describeValue(backend)}`,
    );
  }
  const open = new Set<Connection>();
  let closed = false;
  const serve = (p: MessagePort) => {
    if (closed) throw new BackendError('this backend server is closed; serve the backend again');
    const c = new Connection(p, backend, (gone) => open.delete(gone));
    open.add(c);
  };
  const handleFor = (p: MessagePort): BackendHandle => ({
    kind: HANDLE_KIND,
    port: p,
    name: backend.name,
    namespace: backend.namespace,
    supports: { ...backend.supports },
    methods: BACKEND_METHODS.filter(
      (m) => typeof (backend as unknown as Record<string, unknown>)[m] === 'function',
    ),
  });
  if (port !== undefined) serve(port);
  return {
    handle() {
      const { port1, port2 } = new MessageChannel();
      serve(port1);
      return handleFor(port2);
    },
    serve,
    handleFor,
    get connections() {
      return open.size;
    },
    async close() {
      closed = true;
      for (const c of [...open]) c.close();
    },
  };
}
