/**
 * A lease commit whose reply is lost after the server ran COMMIT, with a second holder (a direct
 * connection) queued on the key that takes it and commits before the lost commit is resolved.
 * The holder's connections go through a TCP proxy (test/support/tcp-proxy.ts) that destroys
 * both sockets instead of forwarding the server's reply to the Query holding COMMIT. Every
 * commit path of a lease is faulted this way (simple patch, checked snapshot, several documents,
 * the general batch, a delete); the stored state and the reported outcome must agree every
 * time: applied when the row shows the write, a refusal only when it does not, and never an
 * "unknown" for a commit the server is known to have run.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresBackend, postgres } from '../../../src/backends/postgres/index.js';
import type {
  DocWrite,
  LeaseRequest,
  PatchWrite,
  WriteResult,
} from '../../../src/store/backend.js';
import { leaseRequest } from '../../support/lease-request.js';
import { startProxy, type TcpProxy } from '../../support/tcp-proxy.js';

const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const schema = `lslost_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const model = 'doc';

let proxy: TcpProxy;
let viaProxy: PostgresBackend;
let direct: PostgresBackend;
let admin: pg.Client;

beforeAll(async () => {
  const u = new URL(url);
  proxy = await startProxy({ host: u.hostname, port: Number(u.port || 5432) });
  u.hostname = '127.0.0.1';
  u.port = String(proxy.port);
  viaProxy = postgres({ url: u.toString(), schema, poolSize: 4 });
  direct = postgres({ url, schema, poolSize: 4 });
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await direct.migrate([model]);
});

afterAll(async () => {
  await viaProxy.close();
  await direct.close();
  await proxy.close();
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.end();
});

function request(keys: string[]): LeaseRequest {
  return leaseRequest(model, [...keys].sort(), { leaseMs: 10_000 });
}

/** Waits until a session of this schema waits for a lock (the second holder is queued). */
async function queued(): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const r = await admin.query(
      `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`,
      [schema],
    );
    if ((r.rowCount ?? 0) > 0) return;
    await new Promise((res) => setTimeout(res, 5));
  }
  throw new Error('the second holder never queued');
}

type Outcome = 'applied' | 'refused' | 'unknown';

/**
 * One run: create the documents, hold them through the proxy, queue a direct holder, commit
 * `writes(keys)` with the reply to COMMIT lost, let the second holder commit, then compare the
 * outcome with what is stored (`landed(doc data per key)`).
 */
async function run(
  keys: string[],
  writes: (keys: string[]) => DocWrite[],
  landed: (docs: Array<Record<string, unknown> | undefined>) => boolean,
): Promise<{ outcome: Outcome; landed: boolean }> {
  const created = await direct.write(
    keys.map((key) => ({ kind: 'create', model, key, data: { n: 0 } })),
  );
  expect(created.applied).toBe(true);
  const first = await viaProxy.acquire(request(keys));
  if (!first) throw new Error('no lease');
  const second = direct.acquire(request([keys[0] as string])).then(async (l) => {
    if (!l) throw new Error('no lease');
    return l.commit([
      { kind: 'patch', model, key: keys[0] as string, ops: [{ op: 'incr', field: 'n', by: 100 }] },
    ]);
  });
  await queued();
  const drop = proxy.dropReplyTo(/COMMIT/);
  let outcome: Outcome;
  try {
    const r: WriteResult = await first.commit(writes(keys));
    outcome = r.applied ? 'applied' : 'refused';
    if (!r.applied) expect(r.reason).toBe('fence');
  } catch (err) {
    expect((err as { outcomeUnknown?: boolean }).outcomeUnknown).toBe(true);
    outcome = 'unknown';
  } finally {
    drop.removed();
  }
  const r2 = await second;
  expect(r2.applied).toBe(true);
  const docs = await direct.read(keys.map((key) => ({ model, key })));
  return { outcome, landed: landed(docs.map((d) => d?.data)) };
}

let serial = 0;
const fresh = (n: number) => {
  serial += 1;
  return Array.from({ length: n }, (_, i) => `k${serial}-${i}`);
};

/** Runs `runs` times; every run's outcome must agree with the stored state, and none is unknown. */
async function check(
  runs: number,
  n: number,
  writes: (keys: string[]) => DocWrite[],
  landed: (docs: Array<Record<string, unknown> | undefined>) => boolean,
  expected: 'applied' | 'refused' = 'applied',
): Promise<void> {
  const seen: Record<Outcome, number> = { applied: 0, refused: 0, unknown: 0 };
  const wrong: string[] = [];
  for (let i = 0; i < runs; i++) {
    const r = await run(fresh(n), writes, landed);
    seen[r.outcome] += 1;
    if (r.outcome === 'applied' && !r.landed) wrong.push(`run ${i}: applied, not stored`);
    if (r.outcome === 'refused' && r.landed) wrong.push(`run ${i}: refused, but stored`);
  }
  expect(wrong).toEqual([]);
  // The reply was dropped after the server ran COMMIT: the commit landed every time, and the
  // backend can tell (the transaction's status), so it is never reported unknown.
  expect(seen).toEqual({ applied: 0, refused: 0, unknown: 0, [expected]: runs });
}

/** A commit of one document that sets `mine`, with `extra` fields on the patch. */
const setMine =
  (extra: Partial<PatchWrite> = {}) =>
  (keys: readonly string[]): DocWrite[] => [
    {
      kind: 'patch',
      model,
      key: keys[0] as string,
      ops: [{ op: 'set', field: 'mine', value: true }],
      ...extra,
    },
  ];

describe('postgres: a lease commit whose reply is lost after COMMIT ran', () => {
  it('one set patch (the single-statement path), 30 runs', async () => {
    await check(30, 1, setMine(), (docs) => docs[0]?.mine === true);
  }, 120_000);

  it('one checked set patch (the checked-snapshot path), 10 runs', async () => {
    await check(10, 1, setMine({ check: () => undefined }), (docs) => docs[0]?.mine === true);
  }, 60_000);

  it('set patches of two documents (the multi-document path), 10 runs', async () => {
    await check(
      10,
      2,
      (keys) =>
        keys.map((key) => ({
          kind: 'patch' as const,
          model,
          key,
          ops: [{ op: 'set' as const, field: 'mine', value: true }],
        })),
      (docs) => docs[0]?.mine === true && docs[1]?.mine === true,
    );
  }, 60_000);

  it('an incr patch (the general batch), 10 runs', async () => {
    await check(
      10,
      1,
      (keys) => [
        {
          kind: 'patch',
          model,
          key: keys[0] as string,
          ops: [{ op: 'incr', field: 'mine', by: 1 }],
        },
      ],
      (docs) => docs[0]?.mine === 1,
    );
  }, 60_000);

  // A commit that matches no row (another incarnation expected) commits an empty transaction if
  // it is allowed to reach COMMIT: "the transaction committed" must not be read as "written".
  it('a set patch that matches no row (expectIncarnation differs) is refused, not applied, 10 runs', async () => {
    await check(
      10,
      1,
      // expectIncarnation '0' is never assigned: incarnations start at 1
      setMine({ expectIncarnation: '0' }),
      (docs) => docs[0]?.mine === true,
      'refused',
    );
  }, 60_000);

  it('a checked set patch that matches no row is refused, not applied, 10 runs', async () => {
    await check(
      10,
      1,
      setMine({ expectIncarnation: '0', check: () => undefined }),
      (docs) => docs[0]?.mine === true,
      'refused',
    );
  }, 60_000);
});

describe('postgres: a plain write whose reply is lost after the server ran it', () => {
  // No lease, so no transaction id to look up: the answer must be outcomeUnknown (never a
  // refusal or a plain error that reads as "not written"), and the write did land.
  const lostReply = async (pattern: RegExp, writes: DocWrite[]) => {
    const drop = proxy.dropReplyTo(pattern);
    try {
      await viaProxy.write(writes);
      return 'returned';
    } catch (err) {
      return (err as { outcomeUnknown?: boolean }).outcomeUnknown === true ? 'unknown' : err;
    } finally {
      drop.removed();
    }
  };

  it('a single-statement create: outcomeUnknown, and it is stored', async () => {
    const key = fresh(1)[0] as string;
    expect(await lostReply(/INSERT/, [{ kind: 'create', model, key, data: { n: 1 } }])).toBe(
      'unknown',
    );
    const [doc] = await direct.read([{ model, key }]);
    expect(doc?.data).toStrictEqual({ n: 1 });
  });

  it('a general batch (two documents): outcomeUnknown, and both are stored', async () => {
    const keys = fresh(2);
    const r = await direct.write(
      keys.map((key) => ({ kind: 'create', model, key, data: { n: 0 } })),
    );
    expect(r.applied).toBe(true);
    const writes: DocWrite[] = keys.map((key) => ({
      kind: 'patch',
      model,
      key,
      ops: [{ op: 'incr', field: 'n', by: 1 }],
    }));
    expect(await lostReply(/COMMIT/, writes)).toBe('unknown');
    const docs = await direct.read(keys.map((key) => ({ model, key })));
    expect(docs.map((d) => d?.data.n)).toStrictEqual([1, 1]);
  });

  it('a combined apply (one document, ops the single statement cannot do): outcomeUnknown, stored', async () => {
    const key = fresh(1)[0] as string;
    await direct.write([{ kind: 'create', model, key, data: { n: 0 } }]);
    const incr: DocWrite[] = [
      { kind: 'patch', model, key, ops: [{ op: 'incr', field: 'n', by: 1 }] },
    ];
    expect(await lostReply(/COMMIT/, incr)).toBe('unknown');
    const [doc] = await direct.read([{ model, key }]);
    expect(doc?.data.n).toBe(1);
  });
});

describe('postgres: a bounded write whose bound passes after the server ran it', () => {
  // The statement commits at once; its reply is held back past timeoutMs, so the bound fires
  // and a cancel is sent for a statement that already completed: the answer must be its success.
  it('reports the success (not LockTimeoutError), and the write is stored', async () => {
    const key = fresh(1)[0] as string;
    await direct.write([{ kind: 'create', model, key, data: { n: 0 } }]);
    const slow = proxy.addRule((_c, _chunk, direction) =>
      direction === 'toClient' ? { delayMs: 300 } : 'forward',
    );
    let r: WriteResult;
    try {
      r = await viaProxy.write(
        [{ kind: 'patch', model, key, ops: [{ op: 'set', field: 'mine', value: true }] }],
        { timeoutMs: 50 },
      );
    } finally {
      slow();
    }
    expect(r.applied).toBe(true);
    const [doc] = await direct.read([{ model, key }]);
    expect(doc?.data.mine).toBe(true);
  });
});

describe('postgres: a read on a pooled connection that was reset while idle', () => {
  it('is sent again on another connection (a read has no effect), and answers', async () => {
    const key = 'idle-reset';
    await direct.write([{ kind: 'put', model, key, data: { v: 1, mine: false } }]);
    // The pool now keeps idle connections through the proxy: a network reset kills them all
    // while nobody uses them, and the pool finds out only when it writes to one.
    await Promise.all([0, 1].map(() => viaProxy.read([{ model, key }])));
    proxy.resetAll();
    const [doc] = await viaProxy.read([{ model, key }]);
    expect(doc?.data.v).toBe(1);
  });
});
