/**
 * Job queues of the memory backend (`backend.queues`, semantics in `src/store/backend.ts`): per
 * queue, three heaps (claimable jobs by priority, run time and enqueue order; delayed jobs by run
 * time; active claims by expiry, process clock), waiting claimers in FIFO order handed a job
 * directly when one arrives, and one timer per queue only while claimers wait for a delay or an
 * expiry. Completions and enqueues with writes go through the backend's writer with a commit
 * context, so the claim check and the job's change happen in the same synchronous step as the
 * documents' install. An idle queue (no job, no claimer) leaves nothing behind.
 *
 * @example
 * ```ts
 * const queues = new MemoryQueues(writer, gate, () => closed);
 * await queues.enqueue([{ queue: 'mail', data: {}, delayMs: 0, priority: 0, maxAttempts: 3 }], []);
 * const job = await queues.claim({ queue: 'mail', leaseMs: 30_000, timeoutMs: 0 });
 * ```
 */
import type {
  ClaimedJob,
  ClaimRequest,
  DocWrite,
  EnqueuedJob,
  EnqueueRequest,
  EnqueueResult,
  Json,
  QueueBackend,
  QueueStats,
  StoredJob,
  WriteOptions,
  WriteResult,
} from '../../store/backend.js';
import { cloneJson } from '../../store/json.js';
import { type CommitContext, refuse } from './batch.js';
import { closedError } from './closed.js';
import type { WriteGate } from './gate.js';
import { Heap, MostlySorted } from './heap.js';
import type { Writer } from './writer.js';

/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2_147_483_647;

/** The error a job keeps when its lease expired on its last attempt. */
export const EXPIRED_LAST = 'the lease expired on the last attempt';

interface MemJob {
  readonly id: string;
  readonly seq: number;
  readonly data: Json;
  readonly priority: number;
  readonly maxAttempts: number;
  readonly key: string | undefined;
  runAt: number;
  /** `pending`: waiting or delayed (by `runAt`); `active`: claimed; `failed`: dead letter. */
  state: 'pending' | 'active' | 'failed';
  attempt: number;
  fence: number;
  expiresAt: number;
  error: string | undefined;
  /** Bumped on every state change: heap entries carrying an older value are stale. */
  gen: number;
}

interface Entry {
  readonly job: MemJob;
  readonly gen: number;
}

interface Claimer {
  readonly leaseMs: number;
  resolve(job: ClaimedJob | undefined): void;
  reject(err: unknown): void;
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** One queue's jobs, heaps, claimers and timer. */
class MemQueue {
  readonly jobs = new Map<string, MemJob>();
  readonly keys = new Map<string, string>();
  readonly ready = new MostlySorted<Entry>(
    (a, b) => a.job.priority - b.job.priority || a.job.runAt - b.job.runAt || a.job.seq - b.job.seq,
  );
  readonly delayed = new Heap<Entry>((a, b) => a.job.runAt - b.job.runAt || a.job.seq - b.job.seq);
  readonly active = new MostlySorted<Entry>((a, b) => a.job.expiresAt - b.job.expiresAt);
  readonly claimers = new Set<Claimer>();
  timer: NodeJS.Timeout | undefined;
  timerAt = Number.POSITIVE_INFINITY;
}

/** An entry still stands for its job's state (every change, removal included, bumps `gen`). */
function live(e: Entry): boolean {
  return e.gen === e.job.gen;
}

function view(q: string, j: MemJob, now: number): StoredJob {
  const state =
    j.state === 'failed'
      ? 'failed'
      : j.state === 'active' && j.expiresAt > now
        ? 'active'
        : j.state === 'pending' && j.runAt > now
          ? 'delayed'
          : 'waiting';
  const out: { -readonly [K in keyof StoredJob]: StoredJob[K] } = {
    id: j.id,
    queue: q,
    data: cloneJson(j.data),
    state,
    priority: j.priority,
    runAt: j.runAt,
    attempt: j.attempt,
    fence: j.fence,
    maxAttempts: j.maxAttempts,
  };
  if (j.key !== undefined) out.key = j.key;
  if (j.error !== undefined) out.error = j.error;
  return out;
}

/**
 * Every queue of one memory backend.
 *
 * @example
 * ```ts
 * queues.stats(); // { queues: 0, claimers: 0, timers: 0 } when idle and empty
 * ```
 */
export class MemoryQueues implements QueueBackend {
  readonly #writer: Writer;
  readonly #gate: WriteGate;
  readonly #closed: () => boolean;
  readonly #queues = new Map<string, MemQueue>();
  #seq = 0;

  constructor(writer: Writer, gate: WriteGate, closed: () => boolean) {
    this.#writer = writer;
    this.#gate = gate;
    this.#closed = closed;
  }

  /** Queues held (with jobs or claimers), claimers waiting, and queue timers running. */
  stats(): { queues: number; claimers: number; timers: number } {
    let claimers = 0;
    let timers = 0;
    for (const q of this.#queues.values()) {
      claimers += q.claimers.size;
      if (q.timer !== undefined) timers += 1;
    }
    return { queues: this.#queues.size, claimers, timers };
  }

  #queue(name: string): MemQueue {
    let q = this.#queues.get(name);
    if (q === undefined) {
      q = new MemQueue();
      this.#queues.set(name, q);
    }
    return q;
  }

  /** Forgets a queue with no job and no claimer. */
  #tidy(name: string, q: MemQueue): void {
    if (q.jobs.size === 0 && q.claimers.size === 0) {
      if (q.timer !== undefined) clearTimeout(q.timer);
      this.#queues.delete(name);
    }
  }

  /** Puts a pending job in the heap its run time says. */
  #place(q: MemQueue, j: MemJob, now: number): void {
    j.gen += 1;
    const e = { job: j, gen: j.gen };
    if (j.runAt <= now) q.ready.push(e);
    else q.delayed.push(e);
  }

  #removeJob(q: MemQueue, j: MemJob): void {
    j.gen += 1;
    q.jobs.delete(j.id);
    if (j.key !== undefined && q.keys.get(j.key) === j.id) q.keys.delete(j.key);
  }

  /** Due delayed jobs become claimable; expired claims come back (or fail on their last attempt). */
  #settle(q: MemQueue, now: number): void {
    for (let e = q.delayed.peek(); e !== undefined; e = q.delayed.peek()) {
      if (!live(e)) {
        q.delayed.pop();
        continue;
      }
      if (e.job.runAt > now) break;
      q.delayed.pop();
      q.ready.push(e);
    }
    for (let e = q.active.peek(); e !== undefined; e = q.active.peek()) {
      if (!live(e)) {
        q.active.pop();
        continue;
      }
      const j = e.job;
      if (j.expiresAt > now) break;
      q.active.pop();
      if (j.attempt >= j.maxAttempts) {
        j.state = 'failed';
        j.error = EXPIRED_LAST;
        j.gen += 1;
        if (j.key !== undefined && q.keys.get(j.key) === j.id) q.keys.delete(j.key);
      } else {
        j.state = 'pending';
        this.#place(q, j, now);
      }
    }
  }

  /** Claims the next claimable job, or undefined. */
  #take(name: string, q: MemQueue, leaseMs: number, now: number): ClaimedJob | undefined {
    this.#settle(q, now);
    for (let e = q.ready.pop(); e !== undefined; e = q.ready.pop()) {
      if (!live(e)) continue;
      const j = e.job;
      j.state = 'active';
      j.attempt += 1;
      j.fence += 1;
      j.expiresAt = now + leaseMs;
      j.gen += 1;
      q.active.push({ job: j, gen: j.gen });
      return view(name, j, now);
    }
    return undefined;
  }

  /** Hands claimable jobs to waiting claimers (FIFO), then arms the timer for the rest. */
  #drain(name: string, q: MemQueue): void {
    if (q.claimers.size === 0) return;
    const now = Date.now();
    for (const c of q.claimers) {
      const job = this.#take(name, q, c.leaseMs, now);
      if (job === undefined) break;
      this.#leave(q, c);
      c.resolve(job);
    }
    this.#arm(name, q, now);
  }

  /** The queue's timer: armed for the next delay or expiry only while claimers wait. */
  #arm(name: string, q: MemQueue, now: number): void {
    let at = Number.POSITIVE_INFINITY;
    if (q.claimers.size > 0) {
      const d = q.delayed.peek();
      const a = q.active.peek();
      if (d !== undefined) at = Math.min(at, d.job.runAt);
      if (a !== undefined) at = Math.min(at, a.job.expiresAt);
    }
    if (at === q.timerAt && q.timer !== undefined) return;
    if (q.timer !== undefined) clearTimeout(q.timer);
    q.timer = undefined;
    q.timerAt = at;
    if (at === Number.POSITIVE_INFINITY) return;
    q.timer = setTimeout(
      () => {
        q.timer = undefined;
        q.timerAt = Number.POSITIVE_INFINITY;
        this.#drain(name, q);
        this.#tidy(name, q);
      },
      Math.min(MAX_TIMER_MS, Math.max(0, at - now + 1)),
    );
  }

  #leave(q: MemQueue, c: Claimer): void {
    q.claimers.delete(c);
    if (c.timer !== undefined) clearTimeout(c.timer);
    if (c.onAbort !== undefined) c.signal?.removeEventListener('abort', c.onAbort);
  }

  /** Commits `writes` through the writer with `ctx` (and through the gate when a lease holds them). */
  #commit(
    writes: readonly DocWrite[],
    ctx: CommitContext,
    options: WriteOptions | undefined,
  ): Promise<WriteResult> {
    if (writes.length > 0 && this.#gate.mustWait(writes)) {
      return this.#gate.pass(writes, options, () => this.#commitNow(writes, ctx));
    }
    return this.#commitNow(writes, ctx);
  }

  #commitNow(writes: readonly DocWrite[], ctx: CommitContext): Promise<WriteResult> {
    const out = this.#writer.commitNow(writes, ctx);
    if (out === undefined) return this.#writer.run(writes, ctx, undefined);
    return 'slots' in out ? this.#writer.run(writes, ctx, out) : Promise.resolve(out);
  }

  #add(reqs: readonly EnqueueRequest[], now: number): EnqueuedJob[] {
    const out: EnqueuedJob[] = [];
    const touched = new Map<string, MemQueue>();
    for (const r of reqs) {
      const q = this.#queue(r.queue);
      touched.set(r.queue, q);
      if (r.key !== undefined) {
        const existing = q.keys.get(r.key);
        if (existing !== undefined) {
          out.push({ id: existing, created: false });
          continue;
        }
      }
      this.#seq += 1;
      const id = String(this.#seq);
      const j: MemJob = {
        id,
        seq: this.#seq,
        data: cloneJson(r.data),
        priority: r.priority,
        maxAttempts: r.maxAttempts,
        key: r.key,
        runAt: r.runAt ?? now + r.delayMs,
        state: 'pending',
        attempt: 0,
        fence: 0,
        expiresAt: 0,
        error: undefined,
        gen: 0,
      };
      q.jobs.set(id, j);
      if (r.key !== undefined) q.keys.set(r.key, id);
      this.#place(q, j, now);
      out.push({ id, created: true });
    }
    for (const [name, q] of touched) this.#drain(name, q);
    return out;
  }

  enqueue(
    jobs: readonly EnqueueRequest[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<EnqueueResult> {
    if (this.#closed()) return Promise.reject(closedError());
    if (writes.length === 0) {
      return Promise.resolve({
        applied: true,
        docs: [],
        results: [],
        jobs: this.#add(jobs, Date.now()),
      });
    }
    let made: EnqueuedJob[] = [];
    const ctx: CommitContext = {
      precondition: () => undefined,
      installed: () => {
        made = this.#add(jobs, Date.now());
      },
    };
    return this.#commit(writes, ctx, options).then((r) => (r.applied ? { ...r, jobs: made } : r));
  }

  claim(request: ClaimRequest): Promise<ClaimedJob | undefined> {
    if (this.#closed()) return Promise.reject(closedError());
    const { queue: name, leaseMs, timeoutMs, signal } = request;
    const q = this.#queue(name);
    const now = Date.now();
    const job = this.#take(name, q, leaseMs, now);
    if (job !== undefined || timeoutMs === 0) {
      this.#tidy(name, q);
      return Promise.resolve(job);
    }
    return new Promise<ClaimedJob | undefined>((resolve, reject) => {
      const c: Claimer = { leaseMs, resolve, reject, timer: undefined, signal, onAbort: undefined };
      const give = (err: unknown, value?: undefined) => {
        if (!q.claimers.has(c)) return;
        this.#leave(q, c);
        this.#arm(name, q, Date.now());
        this.#tidy(name, q);
        if (err === undefined) resolve(value);
        else reject(err);
      };
      if (timeoutMs !== undefined) {
        c.timer = setTimeout(() => give(undefined), Math.min(MAX_TIMER_MS, timeoutMs));
      }
      if (signal !== undefined) {
        c.onAbort = () => give(signal.reason ?? new Error('aborted'));
        signal.addEventListener('abort', c.onAbort, { once: true });
      }
      q.claimers.add(c);
      this.#arm(name, q, now);
    });
  }

  /** @internal {@link Completion}: the claim holds now. */
  holds(name: string, id: string, fence: number): boolean {
    return this.#held(name, id, fence, Date.now()) !== undefined;
  }

  /** @internal {@link Completion}: the job is done (in the install's synchronous step). */
  completed(name: string, id: string): void {
    const q = this.#queues.get(name);
    const j = q?.jobs.get(id);
    if (q !== undefined && j !== undefined) {
      this.#removeJob(q, j);
      this.#tidy(name, q);
    }
  }

  /** The job, if the claim `fence` still holds it now. */
  #held(name: string, id: string, fence: number, now: number): MemJob | undefined {
    const j = this.#queues.get(name)?.jobs.get(id);
    return j !== undefined && j.state === 'active' && j.fence === fence && j.expiresAt > now
      ? j
      : undefined;
  }

  complete(
    queue: string,
    id: string,
    fence: number,
    effects: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<WriteResult> {
    if (this.#closed()) return Promise.reject(closedError());
    const ctx = new Completion(this, queue, id, fence);
    return this.#commit(effects, ctx, options);
  }

  async retry(
    queue: string,
    id: string,
    fence: number,
    delayMs: number,
    error?: string,
  ): Promise<boolean> {
    if (this.#closed()) throw closedError();
    const now = Date.now();
    const j = this.#held(queue, id, fence, now);
    const q = this.#queues.get(queue);
    if (j === undefined || q === undefined) return false;
    j.state = 'pending';
    j.runAt = now + delayMs;
    if (error !== undefined) j.error = error;
    this.#place(q, j, now);
    this.#drain(queue, q);
    return true;
  }

  async fail(queue: string, id: string, fence: number, error: string): Promise<boolean> {
    if (this.#closed()) throw closedError();
    const j = this.#held(queue, id, fence, Date.now());
    const q = this.#queues.get(queue);
    if (j === undefined || q === undefined) return false;
    j.state = 'failed';
    j.error = error;
    j.gen += 1;
    if (j.key !== undefined && q.keys.get(j.key) === j.id) q.keys.delete(j.key);
    return true;
  }

  async extend(queue: string, id: string, fence: number, ms: number): Promise<boolean> {
    if (this.#closed()) throw closedError();
    const now = Date.now();
    const j = this.#held(queue, id, fence, now);
    const q = this.#queues.get(queue);
    if (j === undefined || q === undefined) return false;
    j.expiresAt = now + ms;
    j.gen += 1;
    q.active.push({ job: j, gen: j.gen });
    this.#arm(queue, q, now);
    return true;
  }

  async getJob(queue: string, id: string): Promise<StoredJob | undefined> {
    if (this.#closed()) throw closedError();
    const q = this.#queues.get(queue);
    const now = Date.now();
    if (q === undefined) return undefined;
    this.#settle(q, now);
    const j = q.jobs.get(id);
    return j === undefined ? undefined : view(queue, j, now);
  }

  async queueStats(queue: string): Promise<QueueStats> {
    if (this.#closed()) throw closedError();
    const q = this.#queues.get(queue);
    const s = { waiting: 0, delayed: 0, active: 0, failed: 0 };
    if (q === undefined) return s;
    const now = Date.now();
    this.#settle(q, now);
    for (const j of q.jobs.values()) {
      if (j.state === 'failed') s.failed += 1;
      else if (j.state === 'active') s.active += 1;
      else if (j.runAt > now) s.delayed += 1;
      else s.waiting += 1;
    }
    return s;
  }

  async retryFailed(queue: string, id: string): Promise<boolean> {
    if (this.#closed()) throw closedError();
    const q = this.#queues.get(queue);
    if (q === undefined) return false;
    const now = Date.now();
    this.#settle(q, now);
    const j = q.jobs.get(id);
    if (j === undefined || j.state !== 'failed') return false;
    if (j.key !== undefined) {
      if (q.keys.has(j.key)) return false;
      q.keys.set(j.key, j.id);
    }
    j.state = 'pending';
    j.attempt = 0;
    j.runAt = now;
    this.#place(q, j, now);
    this.#drain(queue, q);
    return true;
  }

  /** Ends every waiting claim with the closed error and stops every timer. */
  closeAll(): void {
    for (const [name, q] of this.#queues) {
      for (const c of [...q.claimers]) {
        this.#leave(q, c);
        c.reject(closedError());
      }
      if (q.timer !== undefined) clearTimeout(q.timer);
      q.timer = undefined;
      this.#tidy(name, q);
    }
  }
}

const LOST = refuse(0, 'fence', 'the claim expired or the job was claimed again');

/** A completion's commit context: the claim checked, and the job deleted, in the install's step. */
class Completion implements CommitContext {
  readonly #queues: MemoryQueues;
  readonly #queue: string;
  readonly #id: string;
  readonly #fence: number;
  constructor(queues: MemoryQueues, queue: string, id: string, fence: number) {
    this.#queues = queues;
    this.#queue = queue;
    this.#id = id;
    this.#fence = fence;
  }
  precondition() {
    return this.#queues.holds(this.#queue, this.#id, this.#fence) ? undefined : LOST;
  }
  installed(): void {
    this.#queues.completed(this.#queue, this.#id);
  }
}
