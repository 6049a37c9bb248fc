/**
 * Property tests under fast-check's scheduler: every interleaving of the actors' steps (their
 * starts, each await inside critical sections, aborts, and timeouts fired through fake timers at
 * scheduled points) is explored at random, 200 runs each.
 *
 * Invariants checked after every step:
 * - mutual exclusion (and shared/exclusive compatibility);
 * - FIFO: when an actor is granted, every actor that asked before it was granted already or
 *   was aborted (no barging, no overtaking); write preference follows for RWLock;
 * - no lost wake-up: a queue never has a head that fits in what is free (a timed-out or aborted
 *   waiter wakes whoever it was blocking), and at the end every actor that was not aborted got
 *   its lock (nothing hangs);
 * - LockTable: all-or-nothing acquisition of several keys, `size` back to 0, and deadlocks
 *   reported (DeadlockError) instead of hanging.
 */
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DeadlockError } from '../../src/errors.js';
import {
  type AcquireOptions,
  LockTable,
  Mutex,
  type Permit,
  RWLock,
  Semaphore,
} from '../../src/sync/index.js';
import type { Waiter, WaitQueue } from '../../src/sync/wait-queue.js';

const RUNS = 200;

/** Once the scheduler is idle every task must be settled: one that is not hangs forever. */
async function settledOrHang<T>(tasks: Promise<T>[]): Promise<T[]> {
  let done = false;
  const all = Promise.all(tasks).finally(() => {
    done = true;
  });
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (!done) throw new Error('a task hangs: not settled once the scheduler is idle');
  return all;
}

/** Starts `actor` at a point the scheduler picks (its steps are scheduled too). */
function start<T>(s: fc.Scheduler, actor: () => Promise<T>): Promise<T> {
  return s.schedule(Promise.resolve(), 'start').then(actor);
}

/** The queue behind a primitive (white-box: checks the no-lost-wake-up invariant). */
function queueOf(lock: Mutex | RWLock | Semaphore): WaitQueue {
  return (lock as unknown as { queue: WaitQueue }).queue;
}

/** A waiter at the head that would fit in what is free means somebody forgot to wake it. */
function assertNoLostWakeup(q: WaitQueue): void {
  if (q.head !== null && q.head.weight <= q.available) {
    throw new Error(`lost wake-up: head wants ${q.head.weight}, ${q.available} free`);
  }
}

function tableQueues(t: LockTable): WaitQueue[] {
  const inner = t as unknown as {
    main: Map<string, { queue: WaitQueue }>;
    byAction: Map<string, Map<string, { queue: WaitQueue }>>;
  };
  const out: WaitQueue[] = [];
  for (const e of inner.main.values()) out.push(e.queue);
  for (const b of inner.byAction.values()) for (const e of b.values()) out.push(e.queue);
  return out;
}

interface Actor {
  id: number;
  /** Order in which it called acquire (set synchronously at the call). */
  asked: number;
  granted: boolean;
  abortRequested: boolean;
  settled: boolean;
  rejected: unknown;
  /** Its node in the wait queue, if the request had to queue (white-box). */
  waiter?: Waiter | null;
}

const actorSpec = fc.record({
  kind: fc.constantFrom('read', 'write'),
  hold: fc.nat({ max: 3 }),
  abort: fc.boolean(),
  weight: fc.integer({ min: 1, max: 4 }),
  viaRun: fc.boolean(),
});

type Spec = {
  kind: 'read' | 'write';
  hold: number;
  abort: boolean;
  weight: number;
  viaRun: boolean;
};

/**
 * Runs actors against a unit-based primitive. `request` starts the acquisition; `enter` and
 * `leave` keep the model of who is inside and throw when an invariant breaks.
 */
async function runActors(
  s: fc.Scheduler,
  specs: Spec[],
  q: WaitQueue,
  request: (spec: Spec, o: AcquireOptions) => Promise<Permit>,
  runForm:
    | ((spec: Spec, body: () => void | Promise<void>, o: AcquireOptions) => Promise<void>)
    | undefined,
  enter: (spec: Spec, actor: Actor, actors: Actor[]) => void,
  leave: (spec: Spec) => void,
  /** How actors with `abort` give up: an AbortSignal, or a timeout fired by fake timers. */
  cancel: 'abort' | 'timeout' = 'abort',
): Promise<Actor[]> {
  let asked = 0;
  const actors: Actor[] = [];
  const step = () => s.schedule(Promise.resolve()).then(() => assertNoLostWakeup(q));
  const all: Promise<void>[] = specs.map((spec, id) => {
    const actor: Actor = {
      id,
      asked: -1,
      granted: false,
      abortRequested: false,
      settled: false,
      rejected: undefined,
    };
    actors.push(actor);
    const ac = new AbortController();
    const o: AcquireOptions =
      cancel === 'abort' ? { signal: ac.signal } : spec.abort ? { timeoutMs: 5 } : {};
    // the abort (or the timeout) lands at a point the scheduler picks, after the request
    const scheduleAbort = () => {
      if (!spec.abort) return;
      void s.schedule(Promise.resolve(), `abort ${id}`).then(() => {
        if (!actor.settled) actor.abortRequested = true;
        if (cancel === 'abort') ac.abort(new Error(`abort ${id}`));
        else {
          // fires every timeout still pending: each actor with a timeout may give up now
          for (const other of actors) {
            if (specs[other.id]!.abort && !other.settled) other.abortRequested = true;
          }
          vi.advanceTimersByTime(5);
        }
        assertNoLostWakeup(q);
      });
    };
    return start(s, async () => {
      actor.asked = asked++;
      try {
        if (runForm !== undefined && spec.viaRun) {
          // through run(): a synchronous body (runs inline when free) or one with awaits
          const queued = q.length;
          const done = runForm(
            spec,
            spec.hold === 0
              ? () => {
                  actor.granted = true;
                  enter(spec, actor, actors);
                  leave(spec);
                }
              : async () => {
                  actor.granted = true;
                  enter(spec, actor, actors);
                  for (let i = 0; i < spec.hold; i++) await step();
                  leave(spec);
                },
            o,
          );
          if (q.length > queued) actor.waiter = q.tail;
          scheduleAbort();
          await done;
        } else {
          const queued = q.length;
          const pending = request(spec, o);
          if (q.length > queued) actor.waiter = q.tail;
          scheduleAbort();
          const permit = await pending;
          actor.granted = true;
          enter(spec, actor, actors);
          for (let i = 0; i < spec.hold; i++) await step();
          leave(spec);
          permit.release();
          permit.release(); // idempotent
        }
      } catch (err) {
        actor.rejected = err;
      } finally {
        actor.settled = true;
        assertNoLostWakeup(q);
      }
    });
  });
  await s.waitIdle();
  for (const a of actors) if (!a.settled) throw new Error(`actor ${a.id} hangs`);
  await Promise.all(all);
  return actors;
}

/**
 * FIFO, checked on the queue itself: when `actor` runs, no one who asked earlier is still
 * queued (granted in the same batch is fine: readers, or small weights, are served together,
 * and who of them observes it first is up to the microtask queue).
 */
function assertFifo(actor: Actor, actors: Actor[]): void {
  for (const other of actors) {
    if (other.asked >= 0 && other.asked < actor.asked && other.waiter?.queued) {
      throw new Error(`actor ${actor.id} overtook actor ${other.id}, still queued`);
    }
  }
}

function assertEveryoneServed(actors: Actor[]): void {
  for (const a of actors) {
    expect(a.settled).toBe(true);
    // not aborted => granted; aborted => granted before the abort, or rejected by it
    if (!a.abortRequested) expect(a.granted, `actor ${a.id} never got the lock`).toBe(true);
    if (a.rejected !== undefined) expect(String(a.rejected)).toMatch(/abort|LockTimeoutError/);
  }
}

describe('scheduler properties', () => {
  it('Mutex: mutual exclusion, FIFO (acquire and inline run), no lost wake-up', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.array(actorSpec, { minLength: 1, maxLength: 7 }),
        async (s, specs) => {
          const m = new Mutex();
          let inside = 0;
          const actors = await runActors(
            s,
            specs,
            queueOf(m),
            (_spec, o) => m.acquire(o),
            (_spec, body, o) => m.run(body, o),
            (_spec, actor, all) => {
              if (++inside !== 1) throw new Error('two holders inside the mutex');
              assertFifo(actor, all);
            },
            () => {
              inside--;
            },
          );
          assertEveryoneServed(actors);
          expect(m.isLocked).toBe(false);
          expect(m.waiting).toBe(0);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('RWLock: readers share, writers exclude, FIFO with writer preference, aborted writer wakes readers', () =>
    rwlockProperty('abort'));

  it('Semaphore: weighted, never over capacity, FIFO, no lost wake-up', () =>
    semaphoreProperty('abort'));

  const KEYS = ['a', 'b', 'c', 'd'];
  const tableActor = fc.record({
    keys: fc.uniqueArray(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 3 }),
    mode: fc.constantFrom<'shared' | 'exclusive'>('shared', 'exclusive'),
    action: fc.constantFrom<string | undefined>(undefined, undefined, 'other'),
    hold: fc.nat({ max: 3 }),
    abort: fc.boolean(),
    nowait: fc.boolean(),
  });

  it('LockTable: exclusion per (key, action), all-or-nothing multi-key, rollback on abort, size back to 0', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.array(tableActor, { minLength: 1, maxLength: 6 }),
        fc.record({ detectDeadlocks: fc.boolean(), reentrant: fc.boolean() }),
        async (s, specs, tableOptions) => {
          const t = new LockTable(tableOptions);
          // (action/key) -> holders' modes
          const held = new Map<string, Array<'shared' | 'exclusive'>>();
          const check = () => {
            for (const q of tableQueues(t)) assertNoLostWakeup(q);
          };
          const step = () => s.schedule(Promise.resolve()).then(check);
          const outcomes: Array<'done' | 'aborted' | 'busy' | 'pending'> = specs.map(
            () => 'pending',
          );
          const aborted: boolean[] = specs.map(() => false);
          const tasks = specs.map((spec, i) => {
            const ac = new AbortController();
            const scheduleAbort = () => {
              if (!spec.abort) return;
              void s.schedule(Promise.resolve(), `abort ${i}`).then(() => {
                aborted[i] = outcomes[i] === 'pending';
                ac.abort(new Error('aborted'));
                check();
              });
            };
            return start(s, async () => {
              const opts = { mode: spec.mode, action: spec.action };
              let permit: Permit | undefined;
              try {
                if (spec.nowait) {
                  permit = t.tryAcquire(spec.keys, opts);
                  if (permit === undefined) {
                    outcomes[i] = 'busy';
                    check();
                    return;
                  }
                } else {
                  const pending = t.acquire(spec.keys, { ...opts, signal: ac.signal });
                  scheduleAbort();
                  permit = await pending;
                }
              } catch (err) {
                expect(String(err)).toMatch(/aborted/);
                outcomes[i] = 'aborted';
                check();
                return;
              }
              // all keys at once: none may be held in a conflicting mode by someone else
              for (const k of spec.keys) {
                const id = `${spec.action ?? ''}/${k}`;
                const modes = held.get(id) ?? [];
                if (
                  modes.includes('exclusive') ||
                  (spec.mode === 'exclusive' && modes.length > 0)
                ) {
                  throw new Error(`conflicting holders on ${id}`);
                }
                held.set(id, [...modes, spec.mode]);
              }
              for (let j = 0; j < spec.hold; j++) await step();
              for (const k of spec.keys) {
                const id = `${spec.action ?? ''}/${k}`;
                const modes = held.get(id)!;
                modes.splice(modes.indexOf(spec.mode), 1);
              }
              permit.release();
              outcomes[i] = 'done';
              check();
            });
          });
          await s.waitIdle();
          await settledOrHang(tasks);
          specs.forEach((spec, i) => {
            if (!aborted[i] && !spec.nowait) expect(outcomes[i]).toBe('done');
            expect(outcomes[i]).not.toBe('pending');
          });
          expect(t.size).toBe(0);
        },
      ),
      { numRuns: RUNS },
    );
  });

  const nested = fc.record({
    first: fc.constantFrom(...KEYS.slice(0, 3)),
    second: fc.constantFrom(...KEYS.slice(0, 3)),
    hold: fc.nat({ max: 2 }),
  });

  it('LockTable deadlock detection: nested runs in any order never hang; a deadlock is a DeadlockError', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.array(nested, { minLength: 2, maxLength: 5 }),
        async (s, specs) => {
          const t = new LockTable({ detectDeadlocks: true });
          const inside = new Set<string>();
          const enter = (k: string) => {
            if (inside.has(k)) throw new Error(`two holders of ${k}`);
            inside.add(k);
          };
          const outcomes: Array<'done' | 'deadlock' | 'pending'> = specs.map(() => 'pending');
          const tasks = specs
            .filter((sp) => sp.first !== sp.second)
            .map((spec, i) =>
              start(s, async () => {
                try {
                  await t.run(spec.first, async () => {
                    enter(spec.first);
                    for (let j = 0; j < spec.hold; j++) await s.schedule(Promise.resolve());
                    try {
                      await t.run(spec.second, async () => {
                        enter(spec.second);
                        await s.schedule(Promise.resolve());
                        inside.delete(spec.second);
                      });
                    } finally {
                      inside.delete(spec.first);
                    }
                  });
                  outcomes[i] = 'done';
                } catch (err) {
                  expect(err).toBeInstanceOf(DeadlockError);
                  const cycle = (err as DeadlockError).cycle;
                  expect(cycle[0]).toBe(cycle[cycle.length - 1]);
                  expect(cycle).toContain(spec.second);
                  outcomes[i] = 'deadlock';
                }
              }),
            );
          await s.waitIdle();
          await settledOrHang(tasks);
          expect(outcomes.slice(0, tasks.length)).not.toContain('pending');
          expect(t.size).toBe(0);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('LockTable deadlock detection: no false positive when every task takes keys in one order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.array(nested, { minLength: 2, maxLength: 5 }),
        async (s, specs) => {
          const t = new LockTable({ detectDeadlocks: true });
          const tasks = specs
            .filter((sp) => sp.first !== sp.second)
            .map((spec) => {
              const [a, b] = [spec.first, spec.second].sort() as [string, string];
              return start(s, async () => {
                await t.run(a, async () => {
                  for (let j = 0; j < spec.hold; j++) await s.schedule(Promise.resolve());
                  await t.run(b, () => s.schedule(Promise.resolve()), { mode: 'shared' });
                });
              });
            });
          await s.waitIdle();
          await settledOrHang(tasks); // a DeadlockError would reject here
          expect(t.size).toBe(0);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('LockTable reentrant: a task re-acquires its own keys, others are still excluded', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.array(nested, { minLength: 1, maxLength: 5 }),
        async (s, specs) => {
          const t = new LockTable({ reentrant: true, detectDeadlocks: true });
          const owner = new Map<string, number>();
          const tasks = specs.map((spec, i) =>
            start(s, async () => {
              await t.run(spec.first, async () => {
                const o = owner.get(spec.first);
                if (o !== undefined && o !== i) throw new Error('two owners');
                owner.set(spec.first, i);
                await s.schedule(Promise.resolve());
                // re-enter the same key (nested), in both modes
                await t.run(spec.first, () => s.schedule(Promise.resolve()));
                await t.run(spec.first, () => s.schedule(Promise.resolve()), { mode: 'shared' });
                expect(owner.get(spec.first)).toBe(i);
                owner.delete(spec.first);
              });
            }),
          );
          await s.waitIdle();
          await settledOrHang(tasks);
          expect(t.size).toBe(0);
        },
      ),
      { numRuns: RUNS },
    );
  });
});

/** RWLock under the scheduler; waiters with `abort` give up by signal or by timeout. */
async function rwlockProperty(cancel: 'abort' | 'timeout'): Promise<void> {
  await fc.assert(
    fc.asyncProperty(
      fc.scheduler(),
      fc.array(actorSpec, { minLength: 1, maxLength: 7 }),
      async (s, specs) => {
        const l = new RWLock();
        let readers = 0;
        let writers = 0;
        const kinds = new Map<Actor, Spec['kind']>();
        const actors = await runActors(
          s,
          specs,
          queueOf(l),
          (spec, o) => (spec.kind === 'read' ? l.acquireRead(o) : l.acquireWrite(o)),
          (spec, body, o) => (spec.kind === 'read' ? l.read(body, o) : l.write(body, o)),
          (spec, actor, all) => {
            kinds.set(actor, spec.kind);
            if (spec.kind === 'write') {
              if (readers !== 0 || writers !== 0) throw new Error('writer not alone');
              writers++;
            } else {
              if (writers !== 0) throw new Error('reader inside with a writer');
              readers++;
            }
            assertFifo(actor, all);
            // writer preference: a reader never overtakes a writer that asked before it
            for (const other of all) {
              if (
                spec.kind === 'read' &&
                specs[other.id]!.kind === 'write' &&
                other.asked >= 0 &&
                other.asked < actor.asked &&
                other.waiter?.queued
              ) {
                throw new Error('a reader overtook a queued writer');
              }
            }
          },
          (spec) => {
            if (spec.kind === 'write') writers--;
            else readers--;
          },
          cancel,
        );
        assertEveryoneServed(actors);
        expect(l.isLocked).toBe(false);
        expect(l.waiting).toBe(0);
      },
    ),
    { numRuns: RUNS },
  );
}

/** Semaphore under the scheduler; waiters with `abort` give up by signal or by timeout. */
async function semaphoreProperty(cancel: 'abort' | 'timeout'): Promise<void> {
  await fc.assert(
    fc.asyncProperty(
      fc.scheduler(),
      fc.integer({ min: 1, max: 4 }),
      fc.array(actorSpec, { minLength: 1, maxLength: 7 }),
      async (s, capacity, rawSpecs) => {
        const specs = rawSpecs.map((sp) => ({ ...sp, weight: Math.min(sp.weight, capacity) }));
        const sem = new Semaphore(capacity);
        let used = 0;
        const actors = await runActors(
          s,
          specs,
          queueOf(sem),
          (spec, o) => sem.acquire({ ...o, weight: spec.weight }),
          (spec, body, o) => sem.run(body, { ...o, weight: spec.weight }),
          (spec, actor, all) => {
            used += spec.weight;
            if (used > capacity) throw new Error(`${used} permits in use, capacity ${capacity}`);
            assertFifo(actor, all);
          },
          (spec) => {
            used -= spec.weight;
          },
          cancel,
        );
        assertEveryoneServed(actors);
        expect(sem.available).toBe(capacity);
        expect(sem.capacity).toBe(capacity);
      },
    ),
    { numRuns: RUNS },
  );
}

describe('scheduler properties with timeouts (fake timers fired at scheduled points)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('RWLock: a writer that times out wakes the readers behind it; FIFO; exclusion', () =>
    rwlockProperty('timeout'));

  it('Semaphore: a heavy waiter that times out wakes the light ones behind it; FIFO', () =>
    semaphoreProperty('timeout'));
});
