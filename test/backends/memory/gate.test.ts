/**
 * The memory backend's write gate: plain writes wait for exclusive default-action leases, in
 * FIFO order with lock waiters, synchronously when nothing holds their documents, and leave
 * nothing behind; plus malformed field-ref guards.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type MemoryBackend, memory } from '../../../src/backends/memory/index.js';
import { BackendError, LockTimeoutError, ValidationError } from '../../../src/errors.js';
import type {
  CheckIssue,
  DocWrite,
  Guard,
  Lease,
  LeaseRequest,
} from '../../../src/store/backend.js';
import { bounded } from '../../../src/store/boundary.js';
import { leaseRequest } from '../../support/lease-request.js';

const M = 'gate';

function req(keys: string[], extra: Partial<LeaseRequest> = {}): LeaseRequest {
  return leaseRequest(M, keys, extra);
}
const append = (key: string, value: string): DocWrite => ({
  kind: 'patch',
  model: M,
  key,
  ops: [{ op: 'append', field: 'l', value }],
});
const tick = () => new Promise((r) => setImmediate(r));

async function must(p: Promise<Lease | undefined>): Promise<Lease> {
  const l = await p;
  if (!l) throw new Error('expected a lease');
  return l;
}

const backends: MemoryBackend[] = [];
async function fresh(...keys: string[]): Promise<MemoryBackend> {
  const b = memory();
  backends.push(b);
  const r = await b.write(keys.map((key) => ({ kind: 'create', model: M, key, data: { l: [] } })));
  expect(r.applied).toBe(true);
  return b;
}
afterEach(async () => {
  for (const b of backends.splice(0)) {
    expect(b.stats()).toMatchObject({ leases: 0, locks: 0, gated: 0, reservations: 0 });
    await b.close();
  }
});

async function list(b: MemoryBackend, key: string): Promise<unknown> {
  const [d] = await b.read([{ model: M, key }]);
  return d?.data.l;
}

describe('memory write gate', () => {
  it('nothing gated: a write applies synchronously, without the lock table (also beside a lease on another document)', async () => {
    const b = await fresh('k', 'j');
    const before = b.stats().documents;
    const p = b.write([{ kind: 'create', model: M, key: 'new', data: {} }]);
    expect(b.stats().documents).toBe(before + 1); // installed before the call returned
    expect(b.stats().locks).toBe(0);
    await p;
    const lease = await must(b.acquire(req(['j'])));
    const q = b.write([{ kind: 'delete', model: M, key: 'new' }]);
    expect(b.stats().documents).toBe(before);
    expect(b.stats()).toMatchObject({ locks: 1, gated: 1 }); // the lease's only
    await q;
    await lease.release();
  });

  it('writes queued behind a lease run in order, and a write issued once the lease ended goes after them', async () => {
    const b = await fresh('k');
    const lease = await must(b.acquire(req(['k'])));
    const queued = [b.write([append('k', '1')]), b.write([append('k', '2')])];
    expect(b.stats().gated).toBe(1); // one document
    await tick();
    expect(await list(b, 'k')).toStrictEqual([]);
    const released = lease.release(); // the lease ends now, synchronously
    // The queued writes were let in but have not run yet: this one must not overtake them.
    const late = b.write([append('k', '3')]);
    expect(await released).toBe(true);
    await Promise.all([...queued, late]);
    expect(await list(b, 'k')).toStrictEqual(['1', '2', '3']);
  });

  it('FIFO with lock waiters: a write queued before a lease waiter runs first; one queued after it waits for that lease too', async () => {
    const b = await fresh('k');
    const first = await must(b.acquire(req(['k'])));
    const w1 = b.write([append('k', 'w1')]);
    const second = b.acquire(req(['k']));
    await tick();
    const w2 = b.write([append('k', 'w2')]);
    await first.release();
    const l2 = await must(second);
    // The lease waiter sees the write queued before it, not the one queued after it.
    expect(l2.docs[0]?.data.l).toStrictEqual(['w1']);
    expect((await w1).applied).toBe(true);
    await tick();
    expect(await list(b, 'k')).toStrictEqual(['w1']);
    const r = await l2.commit([append('k', 'lease')]);
    expect(r.applied).toBe(true); // no conflict: nothing moved the field under the lease
    await w2;
    expect(await list(b, 'k')).toStrictEqual(['w1', 'lease', 'w2']);
  });

  it('a queued write whose post-check is async keeps the document until it is done; the next lease sees its result', async () => {
    const b = await fresh('k');
    const first = await must(b.acquire(req(['k'])));
    let release!: (v: CheckIssue[] | undefined) => void;
    const checked = new Promise<CheckIssue[] | undefined>((r) => {
      release = r;
    });
    const w: DocWrite = { ...append('k', 'slow'), check: () => checked } as DocWrite;
    const slow = b.write([w]);
    const next = b.acquire(req(['k']));
    await first.release();
    await tick();
    let granted = false;
    void next.then(() => {
      granted = true;
    });
    await tick();
    expect(granted).toBe(false); // the write holds the document while its check runs
    release(undefined);
    expect((await slow).applied).toBe(true);
    const l = await must(next);
    expect(l.docs[0]?.data.l).toStrictEqual(['slow']);
    await l.release();
  });

  it('an ungated write whose post-check is async holds the document too: a lease asked for meanwhile waits and sees it, its commit meets no conflict', async () => {
    // Found by the threads conformance runner, where every schema check is a round trip to the
    // client's thread: a lease granted between the write's evaluation and its install read the
    // document before the write, and its commit was refused with `conflict`.
    const b = await fresh('k');
    let release!: (v: CheckIssue[] | undefined) => void;
    const checked = new Promise<CheckIssue[] | undefined>((r) => {
      release = r;
    });
    const slow = b.write([{ ...append('k', 'slow'), check: () => checked } as DocWrite]);
    const next = b.acquire(req(['k']));
    let granted = false;
    void next.then(() => {
      granted = true;
    });
    await tick();
    expect(granted).toBe(false); // the write holds the document while its check runs
    release(undefined);
    expect((await slow).applied).toBe(true);
    const l = await must(next);
    expect(l.docs[0]?.data.l).toStrictEqual(['slow']);
    const r = await l.commit([
      { ...append('k', 'mine'), fieldsUnchangedSince: l.docs[0]?.version } as DocWrite,
    ]);
    expect(r.applied).toBe(true);
    expect(await list(b, 'k')).toStrictEqual(['slow', 'mine']);
  });

  it('timeout and abort leave nothing queued; the write never lands later', async () => {
    const b = await fresh('k');
    const lease = await must(b.acquire(req(['k'])));
    const err = await b.write([append('k', 'x')], { timeoutMs: 5 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as Error).message).toContain('waiting for the exclusive lease on gate "k"');
    const ac = new AbortController();
    const aborted = b.write([append('k', 'y')], { signal: ac.signal });
    await tick();
    expect(b.stats()).toMatchObject({ locks: 1, gated: 1 });
    ac.abort(new Error('no'));
    await expect(aborted).rejects.toThrow('no');
    expect(b.stats()).toMatchObject({ locks: 1, gated: 1 }); // the lease's only
    await lease.release();
    await tick();
    expect(await list(b, 'k')).toStrictEqual([]);
  });

  it('close() while writes wait: they reject with BackendError, nothing stays gated', async () => {
    const b = await fresh('k');
    await must(b.acquire(req(['k'])));
    const waiting = b.write([append('k', 'x')]);
    await tick();
    await b.close();
    await expect(waiting).rejects.toBeInstanceOf(BackendError);
    expect(b.stats()).toMatchObject({ leases: 0, locks: 0, gated: 0 });
  });

  it('a multi-document batch waits for the one gated document and writes all or nothing', async () => {
    const b = await fresh('a', 'z');
    const lease = await must(b.acquire(req(['z'])));
    const both = b.write([append('a', '1'), append('z', '1')]);
    await tick();
    expect(await list(b, 'a')).toStrictEqual([]);
    // Writes to the free document alone still go straight through.
    const r = await b.write([append('a', 'alone')], { timeoutMs: 0 });
    expect(r.applied).toBe(true);
    await lease.release();
    expect((await both).applied).toBe(true);
    expect([await list(b, 'a'), await list(b, 'z')]).toStrictEqual([['alone', '1'], ['1']]);
  });
});

describe('behind the boundary, malformed field refs are a ValidationError, nothing written', () => {
  const cases: Array<[string, unknown]> = [
    ['value and ref', { guard: 'cmp', field: 'n', cmp: 'eq', value: 1, ref: { field: 'm' } }],
    ['ref not an object', { guard: 'cmp', field: 'n', cmp: 'eq', ref: 'm' }],
    ['ref.field not a string', { guard: 'cmp', field: 'n', cmp: 'eq', ref: { field: 1 } }],
    [
      'ref.length not a boolean',
      { guard: 'cmp', field: 'n', cmp: 'eq', ref: { field: 'm', length: 1 } },
    ],
    ['unknown comparison', { guard: 'cmp', field: 'n', cmp: 'less', ref: { field: 'm' } }],
  ];
  for (const [name, guard] of cases) {
    it(name, async () => {
      const b = await fresh('k');
      await expect(
        bounded(b).write([{ ...append('k', 'x'), guards: [guard as Guard] } as DocWrite]),
      ).rejects.toBeInstanceOf(ValidationError);
      expect(await list(b, 'k')).toStrictEqual([]);
    });
  }
});
