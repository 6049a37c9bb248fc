/**
 * The verification workloads: concurrent clients doing real operations on a store, each
 * recorded in a {@link History}, and the check each workload's history gets afterwards.
 * - `register`: read / write / compare-and-set of one field on a few keys (linearizability);
 * - `counter`: atomic increments and reads (linearizability and the counter invariant);
 * - `bank`: guarded transfers and locked snapshots of every account (the bank invariant);
 * - `mutex`: lock holders that sometimes outlive their lease, each appending its fence to the
 *   document (mutual exclusion with fences).
 */
import type { Json } from '../store/backend.js';
import type { Model } from '../store/model.js';
import type { StandardSchemaV1 } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { classifyError, type History, type Operation } from './history.js';
import { type Anomaly, checkBank, checkCounter, checkMutex } from './invariants.js';
import {
  checkLinearizable,
  counterModel,
  type LinearizabilityResult,
  registerModel,
} from './linearizable.js';
import type { PlantedBug } from './mutants.js';

/** The workloads {@link runVerify} can run. */
export type WorkloadName = 'register' | 'counter' | 'bank' | 'mutex';

/** Every workload, in the order they are reported. */
export const workloadNames: readonly WorkloadName[] = ['register', 'counter', 'bank', 'mutex'];

/** A workload's verdict on its part of the history. */
export interface WorkloadCheck {
  readonly anomalies: readonly Anomaly[];
  /** For the linearizability-checked workloads. */
  readonly linearizability?: LinearizabilityResult;
}

/** What a workload needs while it runs. */
export interface WorkloadContext {
  readonly store: Store;
  readonly history: History;
  /** Model-name prefix of this run (isolates it from other runs on a shared server). */
  readonly prefix: string;
  /** Seeded randomness for this client. */
  readonly random: () => number;
  /** The planted client-side bug, if any. */
  readonly bug?: PlantedBug;
  /** Lease length of the mutex workload, ms; a holder stalls past it now and then. */
  readonly leaseMs: number;
  /** The history's clock (critical sections are timed with it). */
  readonly now: () => number;
  /** A value no other client of the run writes (unique across processes too). */
  readonly unique: () => number;
  /** Told when a mutex holder enters its critical section and when its lock call returned. */
  readonly onSection?: (inside: boolean) => void;
}

/** One workload: set up its documents, run one client's next operation, check the history. */
export interface Workload {
  readonly name: WorkloadName;
  setup(ctx: WorkloadContext): Promise<void>;
  /** One operation of client `client`. Never throws: every outcome is recorded. */
  step(ctx: WorkloadContext, client: string): Promise<void>;
  check(ctx: WorkloadContext, ops: readonly Operation[], checkMs: number): Promise<WorkloadCheck>;
}

/** Any plain object passes: the workloads test the store, not validation. */
function anyObject<T>(): StandardSchemaV1<T, T> {
  return {
    '~standard': {
      version: 1,
      vendor: 'lockstep-verify',
      validate: (value: unknown) =>
        typeof value === 'object' && value !== null && !Array.isArray(value)
          ? { value: value as T }
          : { issues: [{ message: 'expected an object' }] },
    },
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const pick = <T>(random: () => number, items: readonly T[]): T =>
  items[Math.floor(random() * items.length)] as T;

/** Records `fn` as one operation, with the errors classified by {@link classifyError}. */
async function op(
  ctx: WorkloadContext,
  client: string,
  key: string,
  kind: string,
  arg: Json | undefined,
  fn: () => Promise<{ ok: Json | undefined } | { fail: string }>,
): Promise<void> {
  const id = ctx.history.invoke(client, key, kind, arg);
  try {
    const r = await fn();
    if ('fail' in r) ctx.history.fail(id, r.fail);
    else ctx.history.ok(id, r.ok);
  } catch (err) {
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    if (classifyError(err) === 'fail') ctx.history.fail(id, message);
    else ctx.history.info(id, message);
  }
}

type Reg = { v: number };
const REG_KEYS = ['r0', 'r1', 'r2'];
const regModel = (ctx: WorkloadContext): Model<Reg> =>
  ctx.store.model(`${ctx.prefix}reg`, anyObject<Reg>());
const lastSeen = new WeakMap<WorkloadContext, Map<string, number>>();

/** Read / write / cas on a few registers; checked for linearizability. */
const register: Workload = {
  name: 'register',
  async setup(ctx) {
    const R = regModel(ctx);
    for (const k of REG_KEYS) await R.put(k, { v: 0 });
  },
  async step(ctx, client) {
    const R = regModel(ctx);
    const key = pick(ctx.random, REG_KEYS);
    const seen = lastSeen.get(ctx) ?? new Map<string, number>();
    lastSeen.set(ctx, seen);
    const roll = ctx.random();
    if (roll < 0.4) {
      await op(ctx, client, `reg:${key}`, 'read', undefined, async () => {
        const v = (await R.get(key)).data.v;
        seen.set(`${client}:${key}`, v);
        return { ok: v };
      });
    } else if (roll < 0.7) {
      const v = ctx.unique();
      await op(ctx, client, `reg:${key}`, 'write', v, async () => {
        const r = await R.apply(key, (d) => d.v.set(v));
        return r.applied ? { ok: undefined } : { fail: 'refused' };
      });
    } else {
      const from = seen.get(`${client}:${key}`) ?? 0;
      const to = ctx.unique();
      await op(ctx, client, `reg:${key}`, 'cas', [from, to], async () => {
        const r = await R.apply(key, (d) => d.v.set(to), { when: (g) => g.v.eq(from) });
        return { ok: r.applied };
      });
    }
  },
  async check(_ctx, ops, checkMs) {
    const linearizability = checkLinearizable(ops, {
      model: registerModel(0),
      timeLimitMs: checkMs,
    });
    // A value read that only a write reported as failed wrote: show that write too.
    const anomalies = linAnomalies(linearizability).map((a) => {
      const read = new Set(a.ops.filter((o) => o.kind === 'read').map((o) => o.result));
      const writers = ops.filter(
        (o) =>
          o.key === a.key &&
          o.status === 'fail' &&
          read.has(o.kind === 'cas' && Array.isArray(o.arg) ? (o.arg[1] as Json) : (o.arg as Json)),
      );
      return writers.length === 0
        ? a
        : {
            ...a,
            message: `${a.message}; a value read was written by ${writers.map((o) => `#${o.id}`).join(', ')}, reported as failed`,
            ops: [...a.ops, ...writers].sort((x, y) => x.invoke - y.invoke),
          };
    });
    return { anomalies, linearizability };
  },
};

type Cnt = { n: number };
const cntModel = (ctx: WorkloadContext): Model<Cnt> =>
  ctx.store.model(`${ctx.prefix}cnt`, anyObject<Cnt>());

/** Increments and reads of one counter; linearizability and the counter invariant. */
const counter: Workload = {
  name: 'counter',
  async setup(ctx) {
    await cntModel(ctx).put('c0', { n: 0 });
  },
  async step(ctx, client) {
    const C = cntModel(ctx);
    if (ctx.random() < 0.25) {
      await op(ctx, client, 'cnt:c0', 'read', undefined, async () => ({
        ok: (await C.get('c0')).data.n,
      }));
      return;
    }
    await op(ctx, client, 'cnt:c0', 'add', 1, async () => {
      if (ctx.bug === 'read-then-write-increment') {
        // The planted bug: read, then write the incremented value back (a lost update).
        const n = (await C.get('c0')).data.n;
        await sleep(ctx.random() * 2);
        await C.put('c0', { n: n + 1 });
        return { ok: n + 1 };
      }
      const r = await C.apply('c0', (d) => d.n.incr(1));
      return r.applied ? { ok: r.results[0] as number } : { fail: 'refused' };
    });
  },
  async check(ctx, ops, checkMs) {
    const final = (await cntModel(ctx).get('c0')).data.n;
    const linearizability = checkLinearizable(ops, {
      model: counterModel(0),
      timeLimitMs: checkMs,
    });
    return {
      anomalies: [...checkCounter(ops, { key: 'cnt:c0', final }), ...linAnomalies(linearizability)],
      linearizability,
    };
  },
};

type Acct = { balance: number };
const ACCOUNTS = ['a0', 'a1', 'a2', 'a3'] as const;
const START = 100;
const acctModel = (ctx: WorkloadContext): Model<Acct> =>
  ctx.store.model(`${ctx.prefix}acct`, anyObject<Acct>());

/** Guarded transfers and locked snapshots; the bank invariant. */
const bank: Workload = {
  name: 'bank',
  async setup(ctx) {
    const A = acctModel(ctx);
    for (const k of ACCOUNTS) await A.put(k, { balance: START });
  },
  async step(ctx, client) {
    const A = acctModel(ctx);
    if (ctx.random() < 0.2) {
      await op(ctx, client, 'bank', 'snapshot', undefined, async () => {
        // A short lease: an acquire whose reply a fault lost leaves the accounts locked (and
        // transfers waiting) until the lease expires.
        const b = await A.lock(ACCOUNTS, (ds) => ds.map((d) => d.balance), {
          timeoutMs: 5000,
          leaseMs: 2000,
        });
        return { ok: Object.fromEntries(ACCOUNTS.map((k, i) => [k, b[i] as number])) };
      });
      return;
    }
    const from = pick(ctx.random, ACCOUNTS);
    const to = pick(
      ctx.random,
      ACCOUNTS.filter((k) => k !== from),
    );
    const amount = 1 + Math.floor(ctx.random() * 40);
    await op(ctx, client, 'bank', 'transfer', { from, to, amount }, async () => {
      const r = await ctx.store.apply([
        A.ops(
          from,
          (a) => a.balance.incr(-amount),
          (a) => a.balance.gte(amount),
        ),
        A.ops(to, (a) => a.balance.incr(amount)),
      ]);
      return { ok: r.applied };
    });
  },
  async check(ctx, ops) {
    const A = acctModel(ctx);
    const final: Record<string, number> = {};
    for (const k of ACCOUNTS) final[k] = (await A.get(k)).data.balance;
    return {
      anomalies: checkBank(ops, { key: 'bank', total: START * ACCOUNTS.length, final }),
    };
  },
};

type Log = { log: number[] };
const lockModel = (ctx: WorkloadContext): Model<Log> =>
  ctx.store.model(`${ctx.prefix}lock`, anyObject<Log>());

/** Lock holders (some stall past their lease) append their fence; mutual exclusion with fences. */
const mutex: Workload = {
  name: 'mutex',
  async setup(ctx) {
    await lockModel(ctx).put('m0', { log: [] });
  },
  async step(ctx, client) {
    const L = lockModel(ctx);
    const id = ctx.history.invoke(client, 'lock:m0', 'lock');
    const stall = ctx.random() < 0.15;
    let detail: { fence: number; enter: number; exit: number } | undefined;
    let inside = false;
    try {
      await L.lock(
        'm0',
        async (d, lock) => {
          const enter = ctx.now();
          if (!inside) ctx.onSection?.(true);
          inside = true;
          await sleep(stall ? ctx.leaseMs * 2 : ctx.random() * 3);
          d.log.push(lock.fence);
          detail = { fence: lock.fence, enter, exit: ctx.now() };
        },
        { leaseMs: ctx.leaseMs, renew: false, timeoutMs: 10_000 },
      );
      ctx.history.ok(id, undefined, detail);
    } catch (err) {
      const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      if (classifyError(err) === 'fail') ctx.history.fail(id, message, detail);
      else ctx.history.info(id, message, detail);
    } finally {
      if (inside) ctx.onSection?.(false);
    }
  },
  async check(ctx, ops) {
    const log = (await lockModel(ctx).get('m0')).data.log;
    return { anomalies: checkMutex(ops, { logs: { 'lock:m0': log } }) };
  },
};

function linAnomalies(r: LinearizabilityResult): Anomaly[] {
  return r.anomalies.map((k) => ({
    kind: 'linearizability',
    key: k.key,
    message: k.reason ?? 'not linearizable',
    ops: k.witness ?? [],
  }));
}

/** The workload named `name`. @example `workload('counter').name // 'counter'` */
export function workload(name: WorkloadName): Workload {
  return { register, counter, bank, mutex }[name];
}
