/**
 * Outcome decisions on Redis (an audit of commit, release, apply): a failure that may come after
 * the script wrote is BackendError with `outcomeUnknown: true`, never an error that reads as "not
 * written". Redis does not roll a script back when it fails part-way, so an error raised while
 * our script runs (after it stored the document) is such a failure; an error Redis raises before
 * running it (NOSCRIPT, BUSY, ...) is not. An unreadable reply is unknown too.
 */
import type { Redis } from 'ioredis';
import { beforeAll, describe, expect, it } from 'vitest';
import { toBackendError } from '../../../src/backends/redis/client.js';
import { readReply } from '../../../src/backends/redis/wire.js';
import { BackendError } from '../../../src/errors.js';
import type { Backend } from '../../../src/store/backend.js';
import { oneKeyLease as lease, prefixedSpace } from './prefixed.js';

const space = prefixedSpace('lsout', 2);
const { layout } = space;
let admin: Redis;
let b1: Backend;
let b2: Backend;
beforeAll(() => {
  admin = space.admin;
  b1 = space.backends[0] as Backend;
  b2 = space.backends[1] as Backend;
});

const replyError = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });

describe('redis outcomes', () => {
  it('a script error after the commit stored its document: BackendError with outcomeUnknown, and the document has the commit', async () => {
    const m = 'partial';
    await b1.write([{ kind: 'put', model: m, key: 'k', data: { s: 'before' } }]);
    const held = await b1.acquire(lease(m, 'k'));
    // A waiter of another process: the commit hands the lease to it after storing the document.
    const waiting = b2.acquire(lease(m, 'k', { timeoutMs: 3_000 })).catch((e: unknown) => e);
    const qa = layout.lease(layout.doc(m, 'k'), 'default').queueInfo;
    while ((await admin.hlen(qa)) === 0) await new Promise((r) => setTimeout(r, 5));
    // The hand-off's fence counter is not a number: the script fails at its INCR, after the
    // document was stored (Redis keeps what a failing script already wrote).
    const fence = layout.doc(m, 'k').fence;
    await admin.set(fence, 'not a number');
    const err = await held
      ?.commit([
        { kind: 'patch', model: m, key: 'k', ops: [{ op: 'set', field: 's', value: 'after' }] },
      ])
      .then(
        (r) => r,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(BackendError);
    expect((err as BackendError).outcomeUnknown).toBe(true);
    expect((await b1.read([{ model: m, key: 'k' }]))[0]?.data.s).toBe('after');
    await admin.del(fence);
    const next = await waiting;
    if (next && typeof next === 'object' && 'release' in next) {
      await (next as { release(): Promise<boolean> }).release();
    }
  });

  it('classifies server errors: raised while our script ran → unknown; refused before it ran → not written', () => {
    const ran = replyError(
      'ERR value is not an integer or out of range script: lockstep_x_commit, on @user_function:812.',
    );
    expect(toBackendError('commit script', ran, true)).toMatchObject({ outcomeUnknown: true });
    const evalRan = replyError('ERR user_script:1: boom script: 3db9, on @user_script:1.');
    expect(toBackendError('write script', evalRan, true)).toMatchObject({ outcomeUnknown: true });
    for (const before of ['NOSCRIPT No matching script.', 'BUSY Redis is busy running a script.']) {
      expect(toBackendError('write script', replyError(before), true)).toMatchObject({
        outcomeUnknown: false,
      });
    }
    // A read never wrote anything.
    expect(toBackendError('read script', ran, false)).toMatchObject({ outcomeUnknown: false });
    // No reply at all: unknown for a write.
    expect(toBackendError('write script', new Error('Connection is closed.'), true)).toMatchObject({
      outcomeUnknown: true,
    });
  });

  it('an unreadable write reply is BackendError with outcomeUnknown, not a SyntaxError', () => {
    let err: unknown;
    try {
      readReply('{"ok":1,"docs":[', 'write');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BackendError);
    expect((err as BackendError).outcomeUnknown).toBe(true);
  });
});
