/**
 * `bank`: transfers between accounts, with I/O (a fraud check, a call to a ledger service)
 * inside the critical section — the double-spent balance and the deadlocked transfer.
 *
 * - unsafe: read both balances, await the I/O, write both back: concurrent transfers overwrite
 *   each other, money appears and vanishes.
 * - global-lock: one lease on a single `bank` document serialises every transfer. Correct, but
 *   only one transfer does its I/O at a time.
 * - nested-locks: lock the source account, then (inside) the destination, in whatever order the
 *   transfer names them. Two opposite transfers wait for each other: a deadlock. The memory and
 *   PostgreSQL backends detect it (DeadlockError); Redis has no detector, so the inner lock uses a
 *   short timeout and a LockTimeoutError counts as a deadlock. The transfer is retried a few times,
 *   then skipped; the run never hangs.
 * - ordered-locks: one `Model.lock([from, to])` takes both leases in canonical order (no cycle is
 *   possible) and commits both accounts atomically. Transfers on disjoint accounts run in parallel.
 * - optimistic: read both, await the I/O, then one `store.apply` that writes both balances guarded
 *   by "still the balance I read" on each; retried on refusal. (`Model.update` on each account
 *   separately would not be atomic across the two documents.)
 * - atomic: the I/O, then one guarded `store.apply`: debit `from` if its balance >= amount and
 *   credit `to`, all-or-nothing, nothing held while waiting.
 */
import { DeadlockError, LockTimeoutError, runAsTask } from '../../index.js';
import { checkBank, type Transfer } from '../checks.js';
import { drive, driveOptions, type OpResult, outcome } from '../runner.js';
import { shape } from '../schema.js';
import type { LabContext, Scenario, Strategy, StrategyOutcome } from '../types.js';
import { mapConcurrent, sleep } from '../util.js';

const OPENING = 100;
const MAX_AMOUNT = 40;
const DEADLOCK_ATTEMPTS = 3;
const OPTIMISTIC_ATTEMPTS = 200;

const accountShape = shape({ balance: 'int' });
const gateShape = shape({ transfers: 'int' });

function accountModel(ctx: LabContext, strategy: string) {
  return ctx.store.model(`bank_${strategy.replace(/-/g, '_')}`, accountShape);
}
type AccountModel = ReturnType<typeof accountModel>;

const GATE_KEY = 'bank';
const gates = new WeakMap<LabContext['store'], ReturnType<typeof makeGate>>();
function makeGate(ctx: LabContext) {
  return ctx.store.model('bank_global_gate', gateShape);
}
/** The single document whose lease serialises every transfer of global-lock (one per store). */
function gateModel(ctx: LabContext): ReturnType<typeof makeGate> {
  let gate = gates.get(ctx.store);
  if (gate === undefined) {
    gate = makeGate(ctx);
    gates.set(ctx.store, gate);
  }
  return gate;
}

/** State shared by the operations of one strategy run. */
interface BankRun {
  readonly ctx: LabContext;
  readonly Account: AccountModel;
  readonly transfers: readonly Transfer[];
  /** Acknowledged transfers: the ledger the checker replays. */
  readonly ledger: Transfer[];
  deadlocks: number;
}

type Transfer1 = (run: BankRun, t: Transfer) => Promise<OpResult>;

function accountKeys(ctx: LabContext): string[] {
  const n = Math.max(4, ctx.workers);
  return Array.from({ length: n }, (_, i) => `acct-${String(i).padStart(3, '0')}`);
}

function strategy(
  name: string,
  safe: boolean,
  description: string,
  transfer: Transfer1,
  prepare?: (ctx: LabContext) => Promise<void>,
): Strategy {
  return {
    name,
    safe,
    description,
    async run(ctx: LabContext): Promise<StrategyOutcome> {
      const Account = accountModel(ctx, name);
      const keys = accountKeys(ctx);
      const opening: Record<string, number> = {};
      await mapConcurrent(keys, ctx.workers, (k) => Account.put(k, { balance: OPENING }));
      for (const k of keys) opening[k] = OPENING;
      await prepare?.(ctx);
      const transfers: Transfer[] = Array.from({ length: ctx.ops }, () => {
        const from = ctx.rng.pick(keys);
        let to = ctx.rng.pick(keys);
        while (to === from) to = ctx.rng.pick(keys);
        return { from, to, amount: ctx.rng.int(1, MAX_AMOUNT) };
      });
      const state: BankRun = { ctx, Account, transfers, ledger: [], deadlocks: 0 };
      const run = await drive(driveOptions(ctx), (i) => transfer(state, transfers[i] as Transfer));
      const final: Record<string, number> = {};
      const docs = await mapConcurrent(keys, ctx.workers, (k) => Account.get(k));
      for (const d of docs) final[d.key] = d.data.balance;
      const result = outcome(
        run,
        checkBank({ opening, transfers: state.ledger, final }),
        state.deadlocks,
      );
      if (name !== 'nested-locks') return result;
      const how = ctx.store.backend.supports.inProcessDeadlocks
        ? 'deadlocks reported at once by the wait-for graph'
        : `deadlocks broken by a ${innerTimeoutMs(ctx)} ms lock timeout (deadlock detection is off for this backend)`;
      return { ...result, note: `${result.note}; ${how}; ${run.skipped} transfers given up` };
    },
  };
}

/**
 * How long the inner lock of nested-locks may wait before it counts as a deadlock. With in-process
 * deadlock detection (the store's boundary, on every backend that declares it) a cycle among this
 * process's tasks is reported at once and the timeout is only a safety net. Without it, the cycle
 * runs through this process (the outer lease is held by a task that is waiting, client side, for
 * its inner lock) and no server can see it: a short timeout breaks it, and a LockTimeoutError
 * counts as a deadlock.
 */
function innerTimeoutMs(ctx: LabContext): number {
  return ctx.store.backend.supports.inProcessDeadlocks ? 5000 : 100;
}

const unsafe: Transfer1 = async ({ ctx, Account, ledger }, t) => {
  const [a, b] = await Promise.all([Account.get(t.from), Account.get(t.to)]);
  if (a.data.balance < t.amount) return undefined;
  await sleep(ctx.ioMs);
  await Account.put(t.from, { balance: a.data.balance - t.amount });
  await Account.put(t.to, { balance: b.data.balance + t.amount });
  ledger.push(t);
  return undefined;
};

const globalLock: Transfer1 = async ({ ctx, Account, ledger }, t) => {
  const Gate = gateModel(ctx);
  await Gate.lock(GATE_KEY, async (g) => {
    const [a, b] = await Promise.all([Account.get(t.from), Account.get(t.to)]);
    if (a.data.balance < t.amount) return;
    await sleep(ctx.ioMs);
    const r = await ctx.store.apply([
      Account.ops(t.from, (x) => x.balance.set(a.data.balance - t.amount)),
      Account.ops(t.to, (x) => x.balance.set(b.data.balance + t.amount)),
    ]);
    if (r.applied) ledger.push(t);
    g.transfers += 1;
  });
  return undefined;
};

const nestedLocks: Transfer1 = async (run, t) => {
  const { ctx, Account, ledger } = run;
  for (let attempt = 0; attempt < DEADLOCK_ATTEMPTS; attempt++) {
    try {
      // One task per transfer: the deadlock detector sees the inner lock as the same task that
      // holds the outer one (runAsTask), so a wait-for cycle is reported instead of hanging.
      const done = await runAsTask(() =>
        Account.lock(t.from, async (a) => {
          if (a.balance < t.amount) return false;
          await Account.lock(
            t.to,
            async (b) => {
              await sleep(ctx.ioMs);
              b.balance += t.amount;
            },
            { timeoutMs: innerTimeoutMs(ctx) },
          );
          a.balance -= t.amount;
          return true;
        }),
      );
      if (done) ledger.push(t);
      return undefined;
    } catch (err) {
      if (!(err instanceof DeadlockError || err instanceof LockTimeoutError)) throw err;
      run.deadlocks++;
      await sleep(ctx.rng.int(0, 2 * ctx.ioMs + 1));
    }
  }
  return 'skipped';
};

const orderedLocks: Transfer1 = async ({ ctx, Account, ledger }, t) => {
  const done = await Account.lock([t.from, t.to], async ([a, b]) => {
    if (a === undefined || b === undefined || a.balance < t.amount) return false;
    await sleep(ctx.ioMs);
    a.balance -= t.amount;
    b.balance += t.amount;
    return true;
  });
  if (done) ledger.push(t);
  return undefined;
};

const optimistic: Transfer1 = async ({ ctx, Account, ledger }, t) => {
  for (let attempt = 0; attempt < OPTIMISTIC_ATTEMPTS; attempt++) {
    const [a, b] = await Promise.all([Account.get(t.from), Account.get(t.to)]);
    if (a.data.balance < t.amount) return undefined;
    await sleep(ctx.ioMs);
    const r = await ctx.store.apply([
      Account.ops(
        t.from,
        (x) => x.balance.set(a.data.balance - t.amount),
        (x) => x.balance.eq(a.data.balance),
      ),
      Account.ops(
        t.to,
        (x) => x.balance.set(b.data.balance + t.amount),
        (x) => x.balance.eq(b.data.balance),
      ),
    ]);
    if (r.applied) {
      ledger.push(t);
      return undefined;
    }
    await sleep(ctx.rng.int(0, Math.min(20, attempt + 1)));
  }
  return 'skipped';
};

const atomic: Transfer1 = async ({ ctx, Account, ledger }, t) => {
  await sleep(ctx.ioMs);
  const r = await ctx.store.apply([
    Account.ops(
      t.from,
      (x) => x.balance.incr(-t.amount),
      (x) => x.balance.gte(t.amount),
    ),
    Account.ops(t.to, (x) => x.balance.incr(t.amount)),
  ]);
  if (r.applied) ledger.push(t);
  return undefined;
};

/**
 * The bank scenario. Run it with `npm run lab -- bank`.
 *
 * @example
 * ```ts
 * for (const s of bank.strategies) console.log(s.name, s.safe, s.description);
 * ```
 */
export const bank: Scenario = {
  name: 'bank',
  description: 'transfers between accounts with I/O inside the critical section',
  invariant: 'every balance = opening + acknowledged transfers (total conserved), none negative',
  defaultOps: 1000,
  strategies: [
    strategy('unsafe', false, 'get both, await I/O, put both', unsafe),
    strategy(
      'global-lock',
      true,
      'one lease on a single "bank" document',
      globalLock,
      async (ctx) => {
        await gateModel(ctx).put(GATE_KEY, { transfers: 0 });
      },
    ),
    strategy('nested-locks', true, 'lock(from) then lock(to) inside: deadlocks', nestedLocks),
    strategy('ordered-locks', true, 'lock([from, to]): canonical order, one commit', orderedLocks),
    strategy('optimistic', true, 'read, I/O, store.apply guarded by the read', optimistic),
    strategy('atomic', true, 'store.apply: guarded debit + credit', atomic),
  ],
};
