/**
 * lockstep/threads across real worker threads: mutual exclusion under a non-atomic
 * read-modify-write from 4 workers and the main thread (totals exact), FIFO order over threads,
 * timeouts and aborts leaving nothing queued, a terminated holder's lock taken back, the
 * keep-alive a pending waitAsync lacks, and bad input. THREADS_REPEAT=n runs the whole file n
 * times in one invocation (the no-hang check).
 */
import { spawn } from 'node:child_process';
import type { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { LockTimeoutError, ValidationError } from '../../src/errors.js';
import { Mutex, RWLock, Semaphore } from '../../src/threads/index.js';
import { bundled, message, noHang, root, sleep, startWorker } from './support.js';

const REPEAT = Number(process.env.THREADS_REPEAT ?? 1);
const WORKERS = 4;
const ITERATIONS = 300;

type Kind = 'mutex' | 'rwlock' | 'semaphore';

function make(kind: Kind) {
  if (kind === 'mutex') {
    const m = new Mutex({ name: 'hammer' });
    return {
      handle: m.handle,
      exclusive: <T>(fn: () => Promise<T>) => m.run(fn),
      lock: m,
      free: () => !m.isLocked,
    };
  }
  if (kind === 'rwlock') {
    const l = new RWLock({ name: 'hammer' });
    return {
      handle: l.handle,
      exclusive: <T>(fn: () => Promise<T>) => l.write(fn),
      lock: l,
      free: () => !l.isLocked,
    };
  }
  const s = new Semaphore(3, { name: 'hammer' });
  return {
    handle: s.handle,
    exclusive: <T>(fn: () => Promise<T>) => s.run(fn, { weight: 3 }),
    lock: s,
    free: () => s.available === s.capacity,
  };
}

async function stopAll(workers: Worker[]): Promise<void> {
  await Promise.all(workers.map((w) => w.terminate()));
}

for (let round = 0; round < REPEAT; round++) {
  describe(`lockstep/threads${REPEAT > 1 ? ` (round ${round + 1})` : ''}`, () => {
    for (const kind of ['mutex', 'rwlock', 'semaphore'] as const) {
      it(`${kind}: ${WORKERS} workers and the main thread hammer one counter; the total is exact`, async () => {
        const p = make(kind);
        const counter = new Int32Array(new SharedArrayBuffer(4));
        const workers = await Promise.all(
          Array.from({ length: WORKERS }, () =>
            startWorker('./hammer-worker.ts', {
              kind,
              handle: p.handle,
              job: 'hammer',
              counter,
              iterations: ITERATIONS,
            }),
          ),
        );
        try {
          const done = workers.map((w) =>
            message<{ done?: boolean; error?: string }>(w, (m) => !!m.done || !!m.error),
          );
          for (const w of workers) w.postMessage('go');
          for (let i = 0; i < ITERATIONS; i++) {
            await p.exclusive(async () => {
              const v = counter[0]!;
              await new Promise<void>((r) => setImmediate(r));
              counter[0] = v + 1;
            });
          }
          const results = await noHang(Promise.all(done), `${kind} hammer`);
          for (const r of results) expect(r.error).toBeUndefined();
          expect(counter[0]).toBe((WORKERS + 1) * ITERATIONS);
          expect(p.lock.waiting).toBe(0);
          expect(p.free()).toBe(true);
        } finally {
          await stopAll(workers);
        }
      });
    }

    it('rwlock: readers and writers in 4 workers: a writer never meets anyone, and no write is lost', async () => {
      const l = new RWLock({ name: 'rw' });
      const c = new Int32Array(new SharedArrayBuffer(16));
      const workers = await Promise.all(
        Array.from({ length: WORKERS }, () =>
          startWorker('./hammer-worker.ts', {
            kind: 'rwlock',
            handle: l.handle,
            job: 'readers',
            counter: c,
            iterations: ITERATIONS,
          }),
        ),
      );
      try {
        const done = workers.map((w) =>
          message<{ done?: boolean; error?: string }>(w, (m) => !!m.done || !!m.error),
        );
        for (const w of workers) w.postMessage('go');
        const results = await noHang(Promise.all(done), 'rwlock readers');
        for (const r of results) expect(r.error).toBeUndefined();
        expect(c[3]).toBe(0); // violations
        expect(c[0]).toBe((WORKERS * ITERATIONS) / 4);
        expect(l.isLocked).toBe(false);
        expect(l.waiting).toBe(0);
      } finally {
        await stopAll(workers);
      }
    });

    for (const kind of ['mutex', 'rwlock', 'semaphore'] as const) {
      it(`${kind}: the blocking acquireSync in 4 workers and run() on the main thread share one queue; the total is exact`, async () => {
        const p = make(kind);
        const c = new Int32Array(new SharedArrayBuffer(16));
        const workers = await Promise.all(
          Array.from({ length: WORKERS }, () =>
            startWorker('./hammer-worker.ts', {
              kind,
              handle: p.handle,
              job: 'sync-hammer',
              counter: c,
              iterations: ITERATIONS,
            }),
          ),
        );
        try {
          const done = workers.map((w) =>
            message<{ done?: boolean; error?: string }>(w, (x) => !!x.done || !!x.error),
          );
          for (const w of workers) w.postMessage('go');
          for (let i = 0; i < ITERATIONS; i++) {
            await p.exclusive(async () => {
              const v = c[0]!;
              await new Promise<void>((r) => setImmediate(r));
              c[0] = v + 1;
            });
          }
          const results = await noHang(Promise.all(done), 'acquireSync hammer');
          for (const r of results) expect(r.error).toBeUndefined();
          expect(c[0]).toBe((WORKERS + 1) * ITERATIONS);
          expect(c[3], 'reads that saw a write').toBe(0);
          expect(p.free()).toBe(true);
          expect(p.lock.waiting).toBe(0);
        } finally {
          await stopAll(workers);
        }
      });
    }

    it('rwlock and semaphore: acquireSync times out leaving nothing queued, refuses a signal and a bad weight', () => {
      const l = new RWLock({ name: 'sync' });
      const w = l.tryAcquireWrite()!;
      expect(() => l.acquireReadSync({ timeoutMs: 20 })).toThrow(LockTimeoutError);
      expect(() => l.acquireWriteSync({ timeoutMs: 0 })).toThrow(LockTimeoutError);
      expect(l.waiting).toBe(0);
      expect(() => l.acquireReadSync({ signal: new AbortController().signal } as never)).toThrow(
        ValidationError,
      );
      w.release();
      const r1 = l.acquireReadSync({ timeoutMs: 20 });
      const r2 = l.acquireReadSync({ timeoutMs: 20 });
      expect(l.readers).toBe(2);
      expect(() => l.acquireWriteSync({ timeoutMs: 10 })).toThrow(LockTimeoutError);
      r1.release();
      r2.release();
      l.acquireWriteSync({ timeoutMs: 20 }).release();
      expect(l.isLocked).toBe(false);

      const s = new Semaphore(3, { name: 'sync' });
      const two = s.acquireSync({ weight: 2 });
      expect(s.available).toBe(1);
      expect(() => s.acquireSync({ weight: 2, timeoutMs: 10 })).toThrow(LockTimeoutError);
      expect(s.waiting).toBe(0);
      expect(() => s.acquireSync({ weight: 4 })).toThrow(ValidationError);
      s.acquireSync({ timeoutMs: 10 }).release();
      two.release();
      expect(s.available).toBe(3);
    });

    it('mutex: acquireSync times out leaving nothing queued, and refuses a signal', () => {
      const m = new Mutex({ name: 'sync' });
      const held = m.tryAcquire()!;
      expect(() => m.acquireSync({ timeoutMs: 20 })).toThrow(LockTimeoutError);
      expect(m.waiting).toBe(0);
      expect(() => m.acquireSync({ timeoutMs: 0 })).toThrow(LockTimeoutError);
      expect(() => m.acquireSync({ signal: new AbortController().signal } as never)).toThrow(
        ValidationError,
      );
      held.release();
      const p = m.acquireSync({ timeoutMs: 20 });
      expect(m.isLocked).toBe(true);
      p.release();
      expect(m.isLocked).toBe(false);
    });

    it('mutex: FIFO over threads: waiters queued one after another, in several threads, get it in that order', async () => {
      const m = new Mutex({ name: 'fifo' });
      const log = new Int32Array(new SharedArrayBuffer(4 * 32));
      const counter = new Int32Array(new SharedArrayBuffer(4));
      const first = await m.acquire();
      const workers: Worker[] = [];
      const mainGranted: number[] = [];
      const mainWaits: Promise<void>[] = [];
      let tag = 0;
      try {
        for (let i = 0; i < 2 * WORKERS; i++) {
          tag++;
          if (i % 2 === 1) {
            // a main-thread waiter between two workers' waiters
            const t = tag;
            mainWaits.push(
              m.acquire().then((permit) => {
                log[Atomics.add(log, 0, 1) + 1] = t;
                mainGranted.push(t);
                permit.release();
              }),
            );
            continue;
          }
          const w = await startWorker('./hammer-worker.ts', {
            kind: 'mutex',
            handle: m.handle,
            job: 'queue',
            counter,
            log,
            tag,
          });
          workers.push(w);
          await noHang(
            message(w, (x: { queued?: number }) => x.queued !== undefined),
            'queued',
          );
        }
        expect(m.waiting).toBe(2 * WORKERS);
        // each worker releases as soon as it reports its grant
        for (const w of workers) {
          w.on('message', (x: { granted?: number }) => {
            if (x.granted !== undefined) w.postMessage('release');
          });
        }
        const released = workers.map((w) => message(w, (x: { released?: number }) => !!x.released));
        first.release();
        await noHang(Promise.all(mainWaits), 'main waiters');
        await noHang(Promise.all(released), 'workers release');
        const order = Array.from(log.subarray(1, 1 + log[0]!));
        expect(order).toEqual(Array.from({ length: 2 * WORKERS }, (_, i) => i + 1));
        expect(m.waiting).toBe(0);
        expect(m.isLocked).toBe(false);
      } finally {
        await stopAll(workers);
      }
    });

    it('timeouts and aborts leave nothing queued, and wake whoever they blocked', async () => {
      const m = new Mutex({ name: 't' });
      const held = m.tryAcquire()!;
      const timedOut = m.acquire({ timeoutMs: 20 });
      const ac = new AbortController();
      const aborted = m.acquire({ signal: ac.signal });
      const reason = new Error('stop');
      ac.abort(reason);
      await expect(aborted).rejects.toBe(reason);
      await expect(timedOut).rejects.toBeInstanceOf(LockTimeoutError);
      expect(m.waiting).toBe(0);
      held.release();
      expect(m.isLocked).toBe(false);
      const again = m.tryAcquire();
      expect(again).toBeDefined();
      again!.release();

      // a queued writer that times out lets in the readers queued behind it at once
      const l = new RWLock({ name: 'rw' });
      const reader = l.tryAcquireRead()!;
      const writer = l.acquireWrite({ timeoutMs: 30 });
      const behind = l.acquireRead(); // write-preferring: queued behind the writer
      expect(l.waiting).toBe(2);
      await expect(writer).rejects.toBeInstanceOf(LockTimeoutError);
      const second = await noHang(behind, 'reader behind the timed-out writer');
      expect(l.readers).toBe(2);
      second.release();
      reader.release();
      expect(l.isLocked).toBe(false);
      expect(l.waiting).toBe(0);

      // a heavy semaphore waiter that gives up lets the lighter ones behind it in
      const s = new Semaphore(4, { name: 's' });
      const three = s.tryAcquire(3)!;
      const heavy = s.acquire({ weight: 4, timeoutMs: 30 });
      const light = s.acquire({ weight: 1 });
      expect(s.available).toBe(1);
      expect(s.tryAcquire(1)).toBeUndefined(); // no barging past the queued heavy waiter
      await expect(heavy).rejects.toBeInstanceOf(LockTimeoutError);
      (await noHang(light, 'light waiter')).release();
      three.release();
      expect(s.available).toBe(4);
      expect(s.waiting).toBe(0);
    });

    it('a worker waiting with a timeout gives up and leaves nothing queued in shared memory', async () => {
      const m = new Mutex();
      const held = m.tryAcquire()!;
      const counter = new Int32Array(new SharedArrayBuffer(4));
      const w = await startWorker('./timeout-worker.ts', { handle: m.handle, counter });
      try {
        const r = await noHang(
          message<{ code?: string; waiting?: number }>(w, (x) => x.code !== undefined),
          'worker timeout',
        );
        expect(r.code).toBe('LOCK_TIMEOUT');
        expect(r.waiting).toBe(0);
        expect(m.waiting).toBe(0);
        held.release();
        expect(m.tryAcquire()).toBeDefined();
      } finally {
        await w.terminate();
      }
    });

    for (const kind of ['mutex', 'rwlock', 'semaphore'] as const) {
      it(`${kind}: a terminated holder's lock is taken back and the next waiter gets it`, async () => {
        const p = make(kind);
        const counter = new Int32Array(new SharedArrayBuffer(4));
        const holder = await startWorker('./hammer-worker.ts', {
          kind,
          handle: p.handle,
          job: 'hold',
          counter,
        });
        const reclaimed: number[] = [];
        p.lock.watch(holder, (r) => reclaimed.push(r.units));
        await noHang(
          message(holder, (x: { holding?: number }) => !!x.holding),
          'holder',
        );
        // a waiter in another worker, queued behind the holder, dies too: its ticket is dropped
        const waiter = await startWorker('./hammer-worker.ts', {
          kind,
          handle: p.handle,
          job: 'queue',
          counter,
          log: new Int32Array(new SharedArrayBuffer(8)),
          tag: 1,
        });
        p.lock.watch(waiter);
        await noHang(
          message(waiter, (x: { queued?: number }) => !!x.queued),
          'waiter queued',
        );
        const next = p.exclusive(async () => 'mine');
        expect(p.lock.waiting).toBe(2);
        await waiter.terminate();
        await holder.terminate();
        await expect(noHang(next, 'the next waiter after the dead holder')).resolves.toBe('mine');
        expect(reclaimed.length).toBe(1);
        expect(reclaimed[0]).toBeGreaterThan(0);
        expect(p.lock.waiting).toBe(0);
        expect(p.free()).toBe(true);
      });
    }

    for (const how of ['exit', 'throw'] as const) {
      it(`a holder that ends by ${how === 'exit' ? 'process.exit()' : 'an uncaught error'} is taken back too`, async () => {
        const m = new Mutex();
        const counter = new Int32Array(new SharedArrayBuffer(4));
        const holder = await startWorker('./hammer-worker.ts', {
          kind: 'mutex',
          handle: m.handle,
          job: 'hold',
          counter,
        });
        holder.on('error', () => {}); // the uncaught error is expected
        m.watch(holder);
        await noHang(
          message(holder, (x: { holding?: number }) => !!x.holding),
          'holder',
        );
        const next = m.run(() => 'mine');
        holder.postMessage(how);
        await expect(noHang(next, `the waiter after a holder's ${how}`)).resolves.toBe('mine');
        expect(m.isLocked).toBe(false);
      });
    }

    it('a pending waitAsync keeps neither a worker nor the main thread alive: the lock does', async () => {
      const main = await bundled('./keepalive-main.ts');
      const worker = await bundled('./keepalive-worker.ts');
      const child = spawn(process.execPath, [main, worker], {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (c) => (out += String(c)));
      child.stderr.on('data', (c) => (out += String(c)));
      const code = await noHang(
        new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c))),
        'child exit',
      ).finally(() => child.kill());
      expect({ out: out.trim(), code }).toEqual({ out: 'done', code: 0 });
    });

    it('bad input gets a ValidationError and changes nothing', async () => {
      expect(() => Mutex.from({} as never)).toThrow(ValidationError);
      expect(() => Mutex.from(new RWLock().handle as never)).toThrow(ValidationError);
      const fake = { ...new Mutex().handle, kind: 'lockstep/threads:RWLock' };
      expect(() => RWLock.from(fake as never)).toThrow(/not a RWLock \(it is a Mutex\)/);
      expect(() => new Semaphore(0)).toThrow(ValidationError);
      expect(() => new Mutex({ name: 3 as never })).toThrow(ValidationError);
      const m = new Mutex();
      await expect(m.acquire({ timeoutMs: -1 })).rejects.toBeInstanceOf(ValidationError);
      await expect(m.run(3 as never)).rejects.toBeInstanceOf(ValidationError);
      const s = new Semaphore(2);
      await expect(s.acquire({ weight: 3 })).rejects.toThrow(/above the capacity/);
      expect(() => s.tryAcquire(0)).toThrow(ValidationError);
      expect(() => m.watch({} as never)).toThrow(ValidationError);
      expect(m.isLocked).toBe(false);
      expect(s.available).toBe(2);
    });

    it('using releases at the end of the block; release is idempotent; tryAcquire queues nothing', async () => {
      const m = new Mutex();
      {
        using permit = await m.acquire();
        expect(m.isLocked).toBe(true);
        expect(m.tryAcquire()).toBeUndefined();
        expect(m.waiting).toBe(0);
        permit.release();
        permit.release();
        const other = m.tryAcquire()!;
        permit.release(); // a second release of an old permit must not free the new holder
        expect(m.isLocked).toBe(true);
        other.release();
      }
      expect(m.isLocked).toBe(false);
      {
        using _p = await m.acquire();
      }
      expect(m.isLocked).toBe(false);
      await sleep(0);
    });
  });
}
