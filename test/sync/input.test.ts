/**
 * Bad input to every public entry of src/sync (Mutex, RWLock, Semaphore, LockTable, runAsTask)
 * is a `ValidationError` (code INVALID) naming the call, the argument and what to give, raised
 * at the call: a synchronous method throws, a promise-returning one returns a rejected promise
 * (never throws). Nothing is taken or queued: checked on a free primitive and on one with a
 * holder and a queued waiter, before and after both are released.
 */
import { describe, expect, it } from 'vitest';
import { LockstepError, ValidationError } from '../../src/errors.js';
import { LockTable, Mutex, RWLock, runAsTask, Semaphore } from '../../src/sync/index.js';
import type { Permit } from '../../src/sync/permit.js';

/** A primitive in a known state: `state()` to compare, `drain()` releases what the world holds. */
interface World {
  state(): Record<string, unknown>;
  drain(): Promise<void>;
  /** How many times a `fn` given to a bad call ran (must stay 0). */
  ran: number;
}

type Target = Mutex | RWLock | Semaphore | LockTable;

function world<T extends Target>(
  make: () => T,
  state: (t: T) => Record<string, unknown>,
  take: (t: T) => Permit | undefined,
  queue: (t: T) => Promise<Permit>,
  contended: boolean,
): World & { t: T } {
  const t = make();
  const held = contended ? take(t) : undefined;
  if (contended) expect(held).toBeDefined();
  const queued = contended ? queue(t) : undefined;
  return {
    t,
    ran: 0,
    state: () => state(t),
    async drain() {
      held?.release();
      (await queued)?.release();
    },
  };
}

const mutexState = (m: Mutex) => ({ isLocked: m.isLocked, waiting: m.waiting });
const rwState = (l: RWLock) => ({
  isLocked: l.isLocked,
  isWriteLocked: l.isWriteLocked,
  readers: l.readers,
  waiting: l.waiting,
});
const semState = (s: Semaphore) => ({ available: s.available, waiting: s.waiting });
const tableState = (t: LockTable) => ({ size: t.size });

const worlds = {
  mutex: (c: boolean) =>
    world(
      () => new Mutex(),
      mutexState,
      (m) => m.tryAcquire(),
      (m) => m.acquire(),
      c,
    ),
  rwlock: (c: boolean) =>
    world(
      () => new RWLock(),
      rwState,
      (l) => l.tryAcquireWrite(),
      (l) => l.acquireRead(),
      c,
    ),
  semaphore: (c: boolean) =>
    world(
      () => new Semaphore(2),
      semState,
      (s) => s.tryAcquire(2),
      (s) => s.acquire(),
      c,
    ),
  table: (c: boolean) =>
    world(
      () => new LockTable({ detectDeadlocks: true }),
      tableState,
      (t) => t.tryAcquire('a'),
      (t) => t.acquire(['a', 'b']),
      c,
    ),
};
type WorldName = keyof typeof worlds;

interface Case {
  /** The call as the user writes it (the test's title). */
  title: string;
  world: WorldName;
  /** `what` in the message: the call's name. */
  what: string;
  /** The argument the message and `issues[0].path` name. */
  path: readonly (string | number)[];
  sync: boolean;
  // biome-ignore lint/suspicious/noExplicitAny: bad input on purpose, whatever the target
  call: (t: any, w: World) => unknown;
}

/** Bad values of an AcquireOptions bag, with the argument each one names. */
const BAD_OPTIONS: [string, unknown, string][] = [
  ['5', 5, 'options'],
  ['null', null, 'options'],
  ["'fast'", 'fast', 'options'],
  ['{ timeoutMs: -1 }', { timeoutMs: -1 }, 'timeoutMs'],
  ['{ timeoutMs: NaN }', { timeoutMs: Number.NaN }, 'timeoutMs'],
  ['{ timeoutMs: -Infinity }', { timeoutMs: Number.NEGATIVE_INFINITY }, 'timeoutMs'],
  ["{ timeoutMs: '5' }", { timeoutMs: '5' }, 'timeoutMs'],
  ['{ signal: {} }', { signal: {} }, 'signal'],
  ["{ signal: 'abort' }", { signal: 'abort' }, 'signal'],
  ['{ signal: null }', { signal: null }, 'signal'],
  ['{ signal: new AbortController() }', { signal: new AbortController() }, 'signal'],
];

const fnOf = (w: World) => () => {
  w.ran++;
};

function optionCases(): Case[] {
  const out: Case[] = [];
  const entries: [WorldName, string, boolean, (t: never, o: unknown, w: World) => unknown][] = [
    ['mutex', 'Mutex.acquire', false, (t: Mutex, o) => t.acquire(o as never)],
    ['mutex', 'Mutex.run', false, (t: Mutex, o, w) => t.run(fnOf(w), o as never)],
    ['rwlock', 'RWLock.acquireRead', false, (t: RWLock, o) => t.acquireRead(o as never)],
    ['rwlock', 'RWLock.acquireWrite', false, (t: RWLock, o) => t.acquireWrite(o as never)],
    ['rwlock', 'RWLock.read', false, (t: RWLock, o, w) => t.read(fnOf(w), o as never)],
    ['rwlock', 'RWLock.write', false, (t: RWLock, o, w) => t.write(fnOf(w), o as never)],
    ['semaphore', 'Semaphore.acquire', false, (t: Semaphore, o) => t.acquire(o as never)],
    ['semaphore', 'Semaphore.run', false, (t: Semaphore, o, w) => t.run(fnOf(w), o as never)],
    ['table', 'LockTable.acquire', false, (t: LockTable, o) => t.acquire('a', o as never)],
    ['table', 'LockTable.run', false, (t: LockTable, o, w) => t.run('b', fnOf(w), o as never)],
    ['table', 'LockTable.tryAcquire', true, (t: LockTable, o) => t.tryAcquire('c', o as never)],
    [
      'table',
      'LockTable.acquireNowait',
      true,
      (t: LockTable, o) => t.acquireNowait('c', o as never),
    ],
  ];
  for (const [world, what, sync, call] of entries) {
    for (const [shown, value, path] of BAD_OPTIONS) {
      out.push({
        title: `${what}(…, ${shown})`,
        world,
        what,
        path: [path],
        sync,
        call: (t, w) => call(t as never, value, w),
      });
    }
  }
  return out;
}

const BAD_WEIGHTS: [string, unknown][] = [
  ['0', 0],
  ['-1', -1],
  ['1.5', 1.5],
  ['NaN', Number.NaN],
  ['Infinity', Number.POSITIVE_INFINITY],
  ["'2'", '2'],
  ['null', null],
  ['3 (above the capacity, 2)', 3],
];

const BAD_KEYS: [string, unknown, readonly (string | number)[]][] = [
  ['5', 5, ['keys']],
  ['null', null, ['keys']],
  ['{}', {}, ['keys']],
  ['[]', [], ['keys']],
  ['[1]', [1], ['keys', 0]],
  ["['a', undefined]", ['a', undefined], ['keys', 1]],
  // biome-ignore lint/suspicious/noSparseArray: a hole on purpose
  ["['a', , 'c']", ['a', , 'c'], ['keys', 1]],
];

const BAD_FNS: [string, unknown][] = [
  ['42', 42],
  ['null', null],
  ['undefined', undefined],
  ["'fn'", 'fn'],
  ['a promise', Promise.resolve(1)],
];

function otherCases(): Case[] {
  const out: Case[] = [];
  for (const [shown, weight] of BAD_WEIGHTS) {
    const path = ['weight'];
    out.push(
      {
        title: `Semaphore.acquire({ weight: ${shown} })`,
        world: 'semaphore',
        what: 'Semaphore.acquire',
        path,
        sync: false,
        call: (t: Semaphore) => t.acquire({ weight: weight as number }),
      },
      {
        title: `Semaphore.run(fn, { weight: ${shown} })`,
        world: 'semaphore',
        what: 'Semaphore.run',
        path,
        sync: false,
        call: (t: Semaphore, w) => t.run(fnOf(w), { weight: weight as number }),
      },
    );
    if (weight !== null) {
      out.push({
        title: `Semaphore.tryAcquire(${shown})`,
        world: 'semaphore',
        what: 'Semaphore.tryAcquire',
        path,
        sync: true,
        call: (t: Semaphore) => t.tryAcquire(weight as number),
      });
    }
  }
  for (const [shown, keys, path] of BAD_KEYS) {
    const k = keys as string[];
    out.push(
      {
        title: `LockTable.acquire(${shown})`,
        world: 'table',
        what: 'LockTable.acquire',
        path,
        sync: false,
        call: (t: LockTable) => t.acquire(k),
      },
      {
        title: `LockTable.run(${shown}, fn)`,
        world: 'table',
        what: 'LockTable.run',
        path,
        sync: false,
        call: (t: LockTable, w) => t.run(k, fnOf(w)),
      },
      {
        title: `LockTable.tryAcquire(${shown})`,
        world: 'table',
        what: 'LockTable.tryAcquire',
        path,
        sync: true,
        call: (t: LockTable) => t.tryAcquire(k),
      },
      {
        title: `LockTable.acquireNowait(${shown})`,
        world: 'table',
        what: 'LockTable.acquireNowait',
        path,
        sync: true,
        call: (t: LockTable) => t.acquireNowait(k),
      },
    );
  }
  const lockOptions: [string, unknown, string][] = [
    ["{ mode: 'write' }", { mode: 'write' }, 'mode'],
    ['{ mode: null }', { mode: null }, 'mode'],
    ['{ action: 7 }', { action: 7 }, 'action'],
  ];
  for (const [shown, o, p] of lockOptions) {
    for (const what of ['acquire', 'tryAcquire', 'acquireNowait', 'run'] as const) {
      out.push({
        title: `LockTable.${what}('a', ${shown})`,
        world: 'table',
        what: `LockTable.${what}`,
        path: [p],
        sync: what === 'tryAcquire' || what === 'acquireNowait',
        call: (t: LockTable, w) =>
          what === 'run' ? t.run('a', fnOf(w), o as never) : t[what]('a', o as never),
      });
    }
  }
  const runs: [WorldName, string, (t: never, fn: unknown) => unknown][] = [
    ['mutex', 'Mutex.run', (t: Mutex, fn) => t.run(fn as never)],
    ['rwlock', 'RWLock.read', (t: RWLock, fn) => t.read(fn as never)],
    ['rwlock', 'RWLock.write', (t: RWLock, fn) => t.write(fn as never)],
    ['semaphore', 'Semaphore.run', (t: Semaphore, fn) => t.run(fn as never)],
    ['table', 'LockTable.run', (t: LockTable, fn) => t.run('a', fn as never)],
  ];
  for (const [world, what, call] of runs) {
    for (const [shown, fn] of BAD_FNS) {
      out.push({
        title: `${what}(${shown})`,
        world,
        what,
        path: ['fn'],
        sync: false,
        call: (t) => call(t as never, fn),
      });
    }
  }
  return out;
}

const NOTHING_QUEUED = '; nothing was acquired or queued';

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Runs `call` and checks how it failed: a synchronous call throws, a promise-returning one
 * returns a promise (it must not throw). Returns the error, or the promise of it.
 */
function failure(call: () => unknown, sync: boolean): { error: Promise<unknown> } {
  let result: unknown;
  try {
    result = call();
  } catch (err) {
    expect(sync, `a promise-returning call must reject, not throw: ${String(err)}`).toBe(true);
    return { error: Promise.resolve(err) };
  }
  expect(sync, 'a synchronous call must throw').toBe(false);
  expect(result).toBeInstanceOf(Promise);
  return {
    error: (result as Promise<unknown>).then(
      () => expect.fail('the call succeeded'),
      (err: unknown) => err,
    ),
  };
}

function expectInvalid(
  err: unknown,
  what: string,
  path: readonly (string | number)[],
  outcome: string,
) {
  expect(err).toBeInstanceOf(ValidationError);
  expect(err).toBeInstanceOf(LockstepError);
  const e = err as ValidationError;
  expect(e.code).toBe('INVALID');
  expect(e.issues).toHaveLength(1);
  expect(e.issues[0]?.path).toEqual(path);
  expect(e.message).toMatch(
    new RegExp(`^${escapeRegExp(what)} is invalid: ${escapeRegExp(path.join('.'))}: `),
  );
  expect(e.message.endsWith(outcome), e.message).toBe(true);
}

describe('bad input to src/sync is a ValidationError at the call, and nothing is queued', () => {
  const cases = [...optionCases(), ...otherCases()];

  it('covers every public entry', () => {
    const names = new Set(cases.map((c) => c.what));
    expect([...names].sort()).toEqual(
      [
        'LockTable.acquire',
        'LockTable.acquireNowait',
        'LockTable.run',
        'LockTable.tryAcquire',
        'Mutex.acquire',
        'Mutex.run',
        'RWLock.acquireRead',
        'RWLock.acquireWrite',
        'RWLock.read',
        'RWLock.write',
        'Semaphore.acquire',
        'Semaphore.run',
        'Semaphore.tryAcquire',
      ].sort(),
    );
  });

  for (const contended of [false, true]) {
    describe(contended ? 'with a holder and a queued waiter' : 'when free', () => {
      it.each(cases.map((c) => [c.title, c] as const))('%s', async (_title, c) => {
        const w = worlds[c.world](contended);
        const before = w.state();
        const { error } = failure(() => c.call(w.t, w), c.sync);
        // Refused at the call: nothing taken or queued, even before the rejection is seen.
        expect(w.state()).toEqual(before);
        // Nothing was queued behind the world's waiter either (a LockTable's size does not show
        // a second waiter on a key): once the world's holder and waiter are done, all is free.
        await w.drain();
        await new Promise((r) => setTimeout(r, 0));
        expect(w.state()).toEqual(worlds[c.world](false).state());
        expectInvalid(await error, c.what, c.path, NOTHING_QUEUED);
        expect(w.ran).toBe(0);
      });
    });
  }

  it('the semaphore names its capacity when the weight is above it', async () => {
    const err = await new Semaphore(2).acquire({ weight: 3 }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/above the capacity \(2\).*give at most 2/);
  });

  it('runAsTask(fn) refuses a non-function before running anything', () => {
    for (const fn of [5, null, undefined, 'f']) {
      let err: unknown;
      try {
        runAsTask(fn as never);
      } catch (e) {
        err = e;
      }
      expectInvalid(err, 'runAsTask', ['fn'], NOTHING_QUEUED);
    }
  });

  describe('constructors refuse bad options and create nothing', () => {
    const made: [string, string, readonly string[], () => unknown][] = [
      ['new Mutex(5)', 'new Mutex()', ['options'], () => new Mutex(5 as never)],
      ['new Mutex(null)', 'new Mutex()', ['options'], () => new Mutex(null as never)],
      ['new Mutex({ name: 3 })', 'new Mutex()', ['name'], () => new Mutex({ name: 3 as never })],
      ["new RWLock('x')", 'new RWLock()', ['options'], () => new RWLock('x' as never)],
      [
        'new RWLock({ name: {} })',
        'new RWLock()',
        ['name'],
        () => new RWLock({ name: {} as never }),
      ],
      ...[0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '2', undefined, 2 ** 53].map(
        (p) =>
          [
            `new Semaphore(${String(p)})`,
            'new Semaphore()',
            ['permits'],
            () => new Semaphore(p as never),
          ] as [string, string, readonly string[], () => unknown],
      ),
      ['new Semaphore(2, 5)', 'new Semaphore()', ['options'], () => new Semaphore(2, 5 as never)],
      [
        'new Semaphore(2, { name: 1 })',
        'new Semaphore()',
        ['name'],
        () => new Semaphore(2, { name: 1 as never }),
      ],
      ['new LockTable(5)', 'new LockTable()', ['options'], () => new LockTable(5 as never)],
      ['new LockTable(null)', 'new LockTable()', ['options'], () => new LockTable(null as never)],
      [
        "new LockTable({ detectDeadlocks: 'yes' })",
        'new LockTable()',
        ['detectDeadlocks'],
        () => new LockTable({ detectDeadlocks: 'yes' as never }),
      ],
      [
        'new LockTable({ reentrant: 1 })',
        'new LockTable()',
        ['reentrant'],
        () => new LockTable({ reentrant: 1 as never }),
      ],
      [
        'new LockTable({ name: 2 })',
        'new LockTable()',
        ['name'],
        () => new LockTable({ name: 2 as never }),
      ],
    ];
    it.each(made)('%s', (_title, what, path, make) => {
      let err: unknown;
      try {
        make();
      } catch (e) {
        err = e;
      }
      expectInvalid(err, what, path, '; nothing was created');
    });
  });

  it('good input is still accepted (the checks refuse only what they say)', async () => {
    const m = new Mutex({ name: 'm' });
    const ac = new AbortController();
    await m.run(() => 1, { timeoutMs: 0, signal: ac.signal });
    await m.run(() => 1, { timeoutMs: Number.POSITIVE_INFINITY });
    (await m.acquire({ timeoutMs: 2 ** 40 })).release();
    const s = new Semaphore(3, {});
    s.tryAcquire(3)?.release();
    expect(s.tryAcquire(1.0)).toBeDefined();
    const t = new LockTable({ name: 't', reentrant: false, detectDeadlocks: false });
    t.acquireNowait(['', 'x'], { mode: 'shared', action: '' }).release();
    t.tryAcquire('x', { timeoutMs: 0, signal: ac.signal })?.release();
    expect(t.size).toBe(0);
    expect(runAsTask(() => 7)).toBe(7);
  });
});
