/**
 * The lock commit's short path (fast_commit in commit.lua): when the document has not moved since
 * the lease's snapshot, the commit stores the changed fields after one HMGET, without loading the
 * document, and the next holder of this process gets the document from our own prediction. These
 * tests watch the commands the scripts run (MONITOR) to prove the short path is taken, and that
 * what every holder sees and leaves is still exact: within one process, across two processes
 * (whose grants must carry the whole document), and when the holder of another action moves the
 * document in between (the general path takes over). (A plain write no longer can: it waits for
 * the default action's exclusive lease.)
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { redis } from '../../../src/backends/redis/index.js';
import { KeyLayout } from '../../../src/backends/redis/keys.js';
import { createStore } from '../../../src/index.js';
import { dropPrefix } from './drop-prefix.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `lslc:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
const Doc = z.object({ n: z.number().int(), other: z.string(), tags: z.array(z.string()) });

let admin: Redis;
let monitor: Awaited<ReturnType<Redis['monitor']>>;
/** Commands run on the test's documents (inside scripts too), as [command, first key]. */
const seen: Array<[string, string]> = [];

beforeAll(async () => {
  admin = new Redis(url);
  monitor = await new Redis(url).monitor();
  const docPrefix = new KeyLayout(prefix).doc('doc', 'x').doc.split('{')[0] as string;
  monitor.on('monitor', (_time: string, args: string[]) => {
    const [cmd, key] = args;
    if (cmd && key?.startsWith(docPrefix)) seen.push([cmd.toUpperCase(), key]);
  });
});

afterAll(async () => {
  monitor.disconnect();
  await dropPrefix(admin, prefix);
  await admin.quit();
});

/** Waits until MONITOR has shown everything sent so far (a PING round trip on the monitor). */
async function settle(): Promise<void> {
  await admin.ping();
  await new Promise((r) => setTimeout(r, 50));
}

const count = (cmd: string, key: string) => seen.filter(([c, k]) => c === cmd && k === key).length;

describe('redis lock commit without loading the document', () => {
  it('one process: every commit takes the short path, and every holder sees the exact document', async () => {
    const store = createStore(redis({ url, prefix }));
    try {
      const M = store.model('doc', Doc);
      await M.put('one', { n: 0, other: 'kept', tags: [] });
      const docKey = new KeyLayout(prefix).doc('doc', 'one').doc;
      await settle();
      seen.length = 0;
      const snapshots: string[] = [];
      await Promise.all(
        Array.from({ length: 8 }, (_, t) =>
          (async () => {
            for (let i = 0; i < 10; i++) {
              await M.lock('one', (d) => {
                snapshots.push(JSON.stringify({ other: d.other, tags: d.tags.length, n: d.n }));
                d.n += 1;
                if (i === 0) d.tags.push(`t${t}`);
              });
            }
          })(),
        ),
      );
      const final = await M.get('one');
      expect(final.data.n).toBe(80);
      expect(final.data.other).toBe('kept');
      expect([...final.data.tags].sort()).toEqual(['t0', 't1', 't2', 't3', 't4', 't5', 't6', 't7']);
      expect(final.version).toBe(81);
      // Each holder saw the count left by the one before it: 0..79, each exactly once.
      const ns = snapshots.map((s) => (JSON.parse(s) as { n: number }).n).sort((a, b) => a - b);
      expect(ns).toEqual(Array.from({ length: 80 }, (_, i) => i));
      for (const s of snapshots) expect((JSON.parse(s) as { other: string }).other).toBe('kept');
      await settle();
      // 80 commits, each one HMGET of the fields' versions and one HSET: the short path.
      expect(count('HMGET', docKey)).toBe(80);
      expect(count('HSET', docKey)).toBe(80);
    } finally {
      await store.close();
    }
  });

  it('two processes: grants to the other process carry the whole document', async () => {
    const one = createStore(redis({ url, prefix }));
    const two = createStore(redis({ url, prefix }));
    try {
      const A = one.model('doc', Doc);
      const B = two.model('doc', Doc);
      await A.put('two', { n: 0, other: 'kept', tags: ['a'] });
      const bad: string[] = [];
      await Promise.all(
        Array.from({ length: 8 }, (_, t) =>
          (async () => {
            const M = t % 2 === 0 ? A : B;
            for (let i = 0; i < 15; i++) {
              await M.lock('two', (d) => {
                if (d.other !== 'kept' || d.tags.join() !== 'a') bad.push(JSON.stringify(d));
                d.n += 1;
              });
            }
          })(),
        ),
      );
      expect(bad).toEqual([]);
      expect((await A.get('two')).data).toEqual({ n: 120, other: 'kept', tags: ['a'] });
    } finally {
      await one.close();
      await two.close();
    }
  });

  it('a commit that changes two fields and removes a third takes the short path and stores exactly that', async () => {
    const store = createStore(redis({ url, prefix }));
    try {
      const M = store.model('doc', Doc.extend({ note: z.string().optional() }));
      await M.put('four', { n: 0, other: 'a', tags: ['t'], note: 'gone soon' });
      const docKey = new KeyLayout(prefix).doc('doc', 'four').doc;
      await settle();
      seen.length = 0;
      await M.lock('four', (d) => {
        d.n = 5;
        d.other = 'b';
        delete d.note;
      });
      await settle();
      // The acquire read the document once (its snapshot); the commit: one HMGET of the three
      // fields' versions, one HDEL of the removed field, one HSET, and no read.
      expect(count('HGETALL', docKey)).toBe(1);
      expect(count('HMGET', docKey)).toBe(1);
      expect(count('HDEL', docKey)).toBe(1);
      expect(count('HSET', docKey)).toBe(1);
      const doc = await M.get('four');
      expect(doc.data).toEqual({ n: 5, other: 'b', tags: ['t'] });
      expect(doc.version).toBe(2);
      // The next holder sees exactly what the short path stored, and can add the field back.
      await M.lock('four', (d) => {
        expect(d).toEqual({ n: 5, other: 'b', tags: ['t'] });
        d.note = 'back';
      });
      expect((await M.get('four')).data).toEqual({ n: 5, other: 'b', tags: ['t'], note: 'back' });
    } finally {
      await store.close();
    }
  });

  it('shared waiters of this process queued behind the commit get their grants in its reply, compact or not', async () => {
    // The short path answers compactly ("x|version|token|incarnation|waiter|fence...") when it
    // has nothing else to say, and in JSON when another wake-up of ours comes with it (here a
    // two-key waiter, which is woken to try its keys). Every waiter must start at once with the
    // committed document: their timeouts are far shorter than the fallback timers.
    const store = createStore(redis({ url, prefix }));
    try {
      const M = store.model('doc', Doc);
      await M.put('five', { n: 0, other: 'a', tags: [] });
      await M.put('six', { n: 0, other: 'b', tags: [] });
      const layout = new KeyLayout(prefix);
      const queueKey = layout.lease(layout.doc('doc', 'five'), 'default').queue;
      const queued = async (len: number) => {
        for (let t = 0; t < 500 && (await admin.llen(queueKey)) < len; t++) {
          await new Promise((r) => setTimeout(r, 5));
        }
        expect(await admin.llen(queueKey)).toBe(len);
      };
      const shared = { mode: 'shared' as const, timeoutMs: 3_000, leaseMs: 30_000 };
      for (const [round, withTwoKeys] of [
        [1, false],
        [2, true],
      ] as const) {
        const seen: string[] = [];
        const waiters: Promise<unknown>[] = [];
        // The waiters are started outside the holder's fn (inside, they would be nested locks of
        // its task: a deadlock).
        let letGo = (): void => {};
        const gate = new Promise<void>((r) => (letGo = r));
        let holding = (): void => {};
        const held = new Promise<void>((r) => (holding = r));
        const holder = M.lock(
          'five',
          async (d) => {
            holding();
            await gate;
            d.n = round;
          },
          { leaseMs: 30_000 },
        );
        await held;
        if (withTwoKeys) {
          waiters.push(M.lock(['five', 'six'], ([a]) => void seen.push(`both:${a?.n}`), shared));
          await queued(1);
        }
        waiters.push(M.lock('five', (x) => void seen.push(`one:${x.n}`), shared));
        await queued(withTwoKeys ? 2 : 1);
        waiters.push(M.lock('five', (x) => void seen.push(`two:${x.n}`), shared));
        await queued(withTwoKeys ? 3 : 2);
        letGo();
        await holder;
        await Promise.all(waiters);
        expect(seen.sort()).toEqual(
          withTwoKeys
            ? [`both:${round}`, `one:${round}`, `two:${round}`]
            : [`one:${round}`, `two:${round}`],
        );
      }
      expect((await M.get('five')).data.n).toBe(2);
    } finally {
      await store.close();
    }
  });

  it('a commit of another action in between: the commit is predicted again, the holder keeps its field, the other keeps its own', async () => {
    const store = createStore(redis({ url, prefix }));
    const other = createStore(redis({ url, prefix }));
    try {
      const M = store.model('doc', Doc);
      const O = other.model('doc', Doc);
      await M.put('three', { n: 0, other: 'start', tags: [] });
      const docKey = new KeyLayout(prefix).doc('doc', 'three').doc;
      await settle();
      seen.length = 0;
      await M.lock('three', async (d) => {
        d.n = 41;
        // Another process changes another field while we hold the lock: the holder of another
        // action (a lane of its own; a plain write would wait for our lease).
        await O.lock(
          'three',
          (o) => {
            o.other = 'moved';
          },
          { action: 'side' },
        );
        await settle();
        seen.length = 0;
      });
      expect((await M.get('three')).data).toEqual({ n: 41, other: 'moved', tags: [] });
      await settle();
      // The short path looked (HMGET), saw the document moved and asked for the envelope (it is
      // not sent with the short form); the general path loaded the document and answered "stale"
      // with it; the commit was predicted again on it and took the short path. A third HMGET
      // would mean the short form was sent again with the envelope.
      expect(count('HMGET', docKey)).toBe(2);
      expect(count('HGETALL', docKey)).toBeGreaterThanOrEqual(1);
      // The next holder of this process starts from the merged document.
      await M.lock('three', (d) => {
        expect(d).toEqual({ n: 41, other: 'moved', tags: [] });
        d.n += 1;
      });
      expect((await O.get('three')).data).toEqual({ n: 42, other: 'moved', tags: [] });
    } finally {
      await store.close();
      await other.close();
    }
  });

  it('lock holders of two processes race writers of a third on one document: nothing is lost, and commits that met a moved document went again', async () => {
    // The holder of another action moves the document between a holder's snapshot and its
    // commit: the short form (sent without the envelope) answers "e", the commit goes again with
    // the envelope, meets "stale", is predicted again and lands. Plain writers wait for the
    // holders' leases. Every increment and every append must be there at the end, each exactly
    // once.
    const stores = [0, 1, 2].map(() => createStore(redis({ url, prefix })));
    const model = (st: (typeof stores)[number]) => st.model('doc', Doc);
    const [A, B, W] = stores.map(model) as [
      ReturnType<typeof model>,
      ReturnType<typeof model>,
      ReturnType<typeof model>,
    ];
    const docKey = new KeyLayout(prefix).doc('doc', 'six').doc;
    let commits = 0;
    const onCommit = (_time: string, args: string[]) => {
      if (
        args[0]?.toLowerCase() === 'fcall' &&
        args[1]?.endsWith('_commit') &&
        args.includes(docKey)
      ) {
        commits += 1;
      }
    };
    monitor.on('monitor', onCommit);
    try {
      await A.put('six', { n: 0, other: 'x', tags: [] });
      const [HOLDERS, ROUNDS, WRITERS, WRITES] = [4, 15, 3, 20];
      const LOCKS = HOLDERS * ROUNDS;
      // One append inside the first lock of each holder, and the writers' own.
      const APPENDS = HOLDERS + WRITERS * WRITES;
      await Promise.all([
        ...Array.from({ length: HOLDERS }, (_, t) =>
          (async () => {
            const M = t % 2 === 0 ? A : B;
            for (let i = 0; i < ROUNDS; i++) {
              await M.lock('six', async (d) => {
                d.n += 1;
                // At least one commit per holder meets a document moved under its snapshot.
                if (i === 0) {
                  await W.lock('six', (o) => void o.tags.push(`in-${t}`), { action: 'side' });
                }
              });
            }
          })(),
        ),
        ...Array.from({ length: WRITERS }, (_, t) =>
          (async () => {
            for (let i = 0; i < WRITES; i++) {
              await W.apply('six', (o) => o.tags.append(`w${t}-${i}`));
            }
          })(),
        ),
      ]);
      const final = (await A.get('six')).data;
      expect(final.n).toBe(LOCKS);
      expect(final.tags.length).toBe(APPENDS);
      expect(new Set(final.tags).size).toBe(APPENDS);
      await settle();
      expect(commits).toBeGreaterThan(LOCKS);
    } finally {
      monitor.off('monitor', onCommit);
      await Promise.all(stores.map((s) => s.close()));
    }
  });
});
