/**
 * Job queues of the Redis backend (`backend.queues`, semantics in `src/store/backend.ts`): one
 * Lua script per step (`scripts/q*.lua`), all on the queue's keys (one hash tag, see
 * `KeyLayout.queue`), expiry and delays on the server's `TIME`:
 * - `qenqueue`: jobs created in the same script as a write batch (the batch machinery of
 *   `run_batch`, its lease gate and its predictions included: the write path `writes.ts` drives
 *   it as any batch), then a PUBLISH that wakes claimers;
 * - `qclaim`: due delayed jobs and expired claims come back, then ZPOPMIN of the ready jobs
 *   (priority, run time, id), stamped active with a new fence; a claim that finds nothing
 *   subscribes (`queue-wakeups.ts`), looks once more, then sleeps until a PUBLISH or the next
 *   due time the script reported;
 * - `qcomplete`: the claim checked, then the effects (as `write` runs them) and the job's
 *   deletion, in ONE script;
 * - `qstep`: retry, fail, extend, and a dead letter's retry; `qread`: a job, a queue's counts.
 * On Redis Cluster a completion's effects must share the queue's slot; queues are not offered
 * on Cluster yet (BackendError).
 */
import type { Cluster, Redis } from 'ioredis';
import { BackendError } from '../../errors.js';
import type {
  ClaimedJob,
  ClaimRequest,
  DocWrite,
  EnqueuedJob,
  EnqueueRequest,
  EnqueueResult,
  JobState,
  Json,
  QueueBackend,
  QueueStats,
  StoredJob,
  WriteOptions,
  WriteResult,
} from '../../store/backend.js';
import { wakeOrTimeout } from '../../sync/wake-or-timeout.js';
import type { KeyLayout, QueueKeys } from './keys.js';
import { QueueWakeups, type Sleeper } from './queue-wakeups.js';
import type { ScriptName } from './scripts.js';
import { type Reply, readReply } from './wire.js';
import type { LockWait, Plan, WritePath } from './writes.js';

/** What the queues use of their backend. */
export interface RedisQueuesHost {
  readonly layout: KeyLayout;
  readonly writes: WritePath;
  readonly client: Redis | Cluster;
  readonly cluster: boolean;
  script(
    name: ScriptName,
    keys: string[],
    args: (string | number)[],
    writes: boolean,
  ): Promise<unknown>;
  /** A plain write's wait for leases (write-wait.ts), for a batch's "locked" answers. */
  waitFor(plan: Plan, options: WriteOptions | undefined, started: number): LockWait;
  assertOpen(): void;
}

interface WireJob {
  id?: string;
  s?: string;
  p: number;
  r: number;
  a: number;
  f: number;
  m: number;
  k: string | null;
  e: string | null;
  x?: number;
  now: number;
  d: Json;
}

function toJob(queue: string, id: string, w: WireJob, claimed: boolean): StoredJob {
  let state: JobState;
  let error = w.e ?? undefined;
  const x = w.x ?? 0;
  if (claimed) state = 'active';
  else if (w.s === 'failed') state = 'failed';
  else if (w.s === 'active' && x > w.now) state = 'active';
  else if (w.s === 'active' && w.a >= w.m) {
    state = 'failed';
    error = 'the lease expired on the last attempt';
  } else if (w.s === 'pending' && w.r > w.now) state = 'delayed';
  else state = 'waiting';
  const out: { -readonly [K in keyof StoredJob]: StoredJob[K] } = {
    id,
    queue,
    data: w.d,
    state,
    priority: w.p,
    runAt: w.r,
    attempt: w.a,
    fence: w.f,
    maxAttempts: w.m,
  };
  if (w.k !== null) out.key = w.k;
  if (error !== undefined) out.error = error;
  return out;
}

/** A job id as the counter makes them. */
const ID = /^[1-9][0-9]{0,15}$/;

/**
 * The queue primitives of one Redis backend.
 *
 * @example
 * ```ts
 * const queues = new RedisQueues(host);
 * await queues.enqueue([{ queue: 'mail', data: {}, delayMs: 0, priority: 0, maxAttempts: 3 }], []);
 * ```
 */
export class RedisQueues implements QueueBackend {
  readonly #host: RedisQueuesHost;
  #wakeups: QueueWakeups | undefined;

  constructor(host: RedisQueuesHost) {
    this.#host = host;
  }

  /** Claimers waiting and whether the subscriber connection is open. */
  stats(): { sleepers: number; listening: boolean } {
    return this.#wakeups?.stats() ?? { sleepers: 0, listening: false };
  }

  #keys(queue: string): QueueKeys {
    this.#host.assertOpen();
    if (this.#host.cluster) {
      throw new BackendError(
        'job queues are not offered on Redis Cluster yet; use a standalone Redis',
      );
    }
    return this.#host.layout.queue(queue);
  }

  /** Runs a compiled batch through `script` with the given fixed keys and args before its own. */
  #batch(
    plan: Plan,
    name: ScriptName,
    fixedKeys: string[],
    args: (env: string) => (string | number)[],
    options: WriteOptions | undefined,
    seen: (reply: Reply & { jobs?: Array<[string, number]> }) => void,
  ): Promise<WriteResult> {
    const started = options?.timeoutMs === undefined ? 0 : performance.now();
    return this.#host.writes.runBatch(
      plan,
      async (keys, env) => {
        const raw = await this.#host.script(
          name,
          [...fixedKeys, ...keys],
          args(JSON.stringify(env)),
          true,
        );
        const reply = readReply<Reply & { jobs?: Array<[string, number]> }>(raw, name);
        seen(reply);
        return reply;
      },
      () => this.#host.waitFor(plan, options, started),
    );
  }

  async enqueue(
    jobs: readonly EnqueueRequest[],
    writes: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<EnqueueResult> {
    const names: string[] = [];
    for (const j of jobs) if (!names.includes(j.queue)) names.push(j.queue);
    const ks = names.map((n) => this.#keys(n));
    if (ks.length === 0) this.#host.assertOpen();
    const fixed = ks.flatMap((k) => [
      k.ready,
      k.delayed,
      k.active,
      k.keys,
      k.failed,
      k.counter,
      k.channel,
    ]);
    const wire = JSON.stringify(
      jobs.map((j) => ({
        q: names.indexOf(j.queue) + 1,
        p: String(j.priority),
        r: j.runAt ?? false,
        dl: j.delayMs,
        m: j.maxAttempts,
        k: j.key ?? false,
        d: JSON.stringify(j.data),
      })),
    );
    const prefixes = JSON.stringify(ks.map((k) => k.job));
    const args = (env: string) => [names.length, wire, prefixes, env];
    let made: Array<[string, number]> | undefined;
    const seen = (r: { jobs?: Array<[string, number]> }) => {
      if (r.jobs) made = r.jobs;
    };
    let result: WriteResult;
    if (writes.length === 0) {
      const raw = await this.#host.script('qenqueue', fixed, args(''), true);
      const r = readReply<Reply & { jobs?: Array<[string, number]> }>(raw, 'qenqueue');
      seen(r);
      result = { applied: true, docs: [], results: [] };
    } else {
      const plan = this.#host.writes.plan(writes, 'store.apply');
      result = await this.#batch(plan, 'qenqueue', fixed, args, options, seen);
    }
    if (!result.applied) return result;
    const refs: EnqueuedJob[] = (made ?? []).map(([id, c]) => ({ id, created: c === 1 }));
    return { ...result, jobs: refs };
  }

  async #claimOnce(
    queue: string,
    k: QueueKeys,
    leaseMs: number,
  ): Promise<ClaimedJob | number | undefined> {
    const raw = (await this.#host.script(
      'qclaim',
      [k.ready, k.delayed, k.active, k.keys, k.failed],
      [Math.ceil(leaseMs), k.job],
      true,
    )) as string;
    const w = readReply<WireJob & { wait?: number | null }>(raw, 'qclaim');
    if (w.id !== undefined) return toJob(queue, w.id, w, true);
    return w.wait === null || w.wait === undefined ? undefined : w.wait;
  }

  async claim(request: ClaimRequest): Promise<ClaimedJob | undefined> {
    const { queue, leaseMs, timeoutMs, signal } = request;
    const k = this.#keys(queue);
    const first = await this.#claimOnce(queue, k, leaseMs);
    if (typeof first === 'object' || timeoutMs === 0)
      return typeof first === 'object' ? first : undefined;
    const deadline =
      timeoutMs === undefined ? Number.POSITIVE_INFINITY : performance.now() + timeoutMs;
    this.#wakeups ??= new QueueWakeups(this.#host.client as Redis);
    const wakeups = this.#wakeups;
    for (;;) {
      signal?.throwIfAborted();
      this.#host.assertOpen();
      let woken!: () => void;
      const wake = new Promise<void>((r) => {
        woken = r;
      });
      const sleeper: Sleeper = { channel: k.channel, wake: () => woken() };
      try {
        await abortable(wakeups.add(sleeper), signal);
        const got = await this.#claimOnce(queue, k, leaseMs);
        if (typeof got === 'object') return got;
        const left = deadline - performance.now();
        if (left <= 0) return undefined;
        const ms = Math.min(left, got === undefined ? Number.POSITIVE_INFINITY : got + 1);
        await wakeOrTimeout(wake, ms, signal);
      } finally {
        wakeups.remove(sleeper);
      }
      if (performance.now() >= deadline) {
        const last = await this.#claimOnce(queue, k, leaseMs);
        return typeof last === 'object' ? last : undefined;
      }
    }
  }

  async complete(
    queue: string,
    id: string,
    fence: number,
    effects: readonly DocWrite[],
    options?: WriteOptions,
  ): Promise<WriteResult> {
    const k = this.#keys(queue);
    const lost: WriteResult = {
      applied: false,
      reason: 'fence',
      index: 0,
      detail: 'the claim expired or the job was claimed again',
    };
    if (!ID.test(id)) return lost;
    const fixed = [k.active, k.keys];
    const args = (env: string) => [k.job + id, id, String(fence), env];
    if (effects.length === 0) {
      const raw = await this.#host.script('qcomplete', fixed, args(''), true);
      const r = readReply<Reply>(raw, 'qcomplete');
      return r.ok === 1 ? { applied: true, docs: [], results: [] } : lost;
    }
    const plan = this.#host.writes.plan(effects, 'complete');
    return this.#batch(plan, 'qcomplete', fixed, args, options, () => {});
  }

  async #step(
    queue: string,
    step: string,
    id: string,
    rest: (string | number)[],
  ): Promise<boolean> {
    const k = this.#keys(queue);
    if (!ID.test(id)) return false;
    const r = await this.#host.script(
      'qstep',
      [k.ready, k.delayed, k.active, k.keys, k.failed, k.channel],
      [step, k.job + id, id, ...rest],
      true,
    );
    return r === 1;
  }

  retry(
    queue: string,
    id: string,
    fence: number,
    delayMs: number,
    error?: string,
  ): Promise<boolean> {
    return this.#step(queue, 'retry', id, [String(fence), Math.ceil(delayMs), error ?? '']);
  }

  fail(queue: string, id: string, fence: number, error: string): Promise<boolean> {
    return this.#step(queue, 'fail', id, [String(fence), error]);
  }

  extend(queue: string, id: string, fence: number, ms: number): Promise<boolean> {
    return this.#step(queue, 'extend', id, [String(fence), Math.ceil(ms)]);
  }

  retryFailed(queue: string, id: string): Promise<boolean> {
    return this.#step(queue, 'revive', id, ['']);
  }

  async getJob(queue: string, id: string): Promise<StoredJob | undefined> {
    const k = this.#keys(queue);
    if (!ID.test(id)) return undefined;
    const raw = await this.#host.script(
      'qread',
      [k.ready, k.delayed, k.active, k.failed],
      ['get', k.job + id],
      false,
    );
    const w = readReply<WireJob | null>(raw, 'qread');
    return w === null ? undefined : toJob(queue, id, w, false);
  }

  async queueStats(queue: string): Promise<QueueStats> {
    const k = this.#keys(queue);
    const r = (await this.#host.script(
      'qread',
      [k.ready, k.delayed, k.active, k.failed],
      ['stats', k.job],
      false,
    )) as number[];
    return { waiting: r[0] ?? 0, delayed: r[1] ?? 0, active: r[2] ?? 0, failed: r[3] ?? 0 };
  }

  /** Closes the subscriber connection (waiting claimers wake and find the backend closed). */
  close(): Promise<void> {
    return this.#wakeups?.close() ?? Promise.resolve();
  }
}

/** `p`, or a rejection with `signal.reason` as soon as `signal` aborts (whichever comes first). */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
