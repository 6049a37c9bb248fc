/**
 * `transaction()` and `lockRows()` on a user's own tables, against a real PostgreSQL: a real
 * deadlock (40P01) retried to completion, serialization failures (40001) retried with no lost
 * update, nesting that never restarts the outer transaction, and row locks in key order.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockRows, sqlState, transaction } from '../../../src/backends/postgres/index.js';

const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const schema = `lshelp_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
let pool: pg.Pool;
const T = `"${schema}".accounts`;

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: url, max: 8 });
  await pool.query(`CREATE SCHEMA "${schema}"`);
  await pool.query(`CREATE TABLE ${T} (id int PRIMARY KEY, balance int NOT NULL)`);
  // a table whose name needs quoting: it must work, and never be interpolated raw
  await pool.query(`CREATE TABLE "${schema}"."we""ird; name" ("my id" text PRIMARY KEY)`);
});

afterAll(async () => {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
});

async function reset(n: number, balance: number): Promise<void> {
  await pool.query(`DELETE FROM ${T}`);
  await pool.query(`INSERT INTO ${T} SELECT g, $2 FROM generate_series(1, $1) g`, [n, balance]);
}

describe('transaction()', () => {
  it('a real deadlock between two transactions: one gets 40P01, is retried, both complete', async () => {
    await reset(2, 100);
    let arrived = 0;
    let open!: () => void;
    const both = new Promise<void>((r) => {
      open = r;
    });
    const attempts = { ab: 0, ba: 0 };
    const errors: string[] = [];
    const transfer = (name: 'ab' | 'ba', first: number, second: number) =>
      transaction(
        pool,
        async (c) => {
          attempts[name] += 1;
          await c.query(`UPDATE ${T} SET balance = balance - 1 WHERE id = $1`, [first]);
          if (attempts[name] === 1) {
            // first attempt of each: both hold their first row before asking for the second
            arrived += 1;
            if (arrived === 2) open();
            await both;
          }
          try {
            await c.query(`UPDATE ${T} SET balance = balance + 1 WHERE id = $1`, [second]);
          } catch (err) {
            errors.push(sqlState(err) ?? 'none');
            throw err;
          }
        },
        { retries: 3 },
      );
    await Promise.all([transfer('ab', 1, 2), transfer('ba', 2, 1)]);
    expect(errors).toStrictEqual(['40P01']);
    expect(attempts.ab + attempts.ba).toBe(3);
    const r = await pool.query<{ id: number; balance: number }>(
      `SELECT id, balance FROM ${T} ORDER BY id`,
    );
    // both transfers applied exactly once: the balances are back where they started
    expect(r.rows.map((x) => x.balance)).toStrictEqual([100, 100]);
  });

  it('serializable read-modify-write from 12 tasks: 40001 retried, no lost update', async () => {
    await reset(1, 0);
    const seen = new Set<string>();
    await Promise.all(
      Array.from({ length: 12 }, () =>
        transaction(
          pool,
          async (c) => {
            const r = await c.query<{ balance: number }>(`SELECT balance FROM ${T} WHERE id = 1`);
            try {
              await c.query(`UPDATE ${T} SET balance = $1 WHERE id = 1`, [r.rows[0]!.balance + 1]);
            } catch (err) {
              seen.add(sqlState(err) ?? 'none');
              throw err;
            }
          },
          { isolation: 'serializable', retries: 100 },
        ),
      ),
    );
    const r = await pool.query<{ balance: number }>(`SELECT balance FROM ${T} WHERE id = 1`);
    expect(r.rows[0]!.balance).toBe(12);
    expect([...seen].every((s) => s === '40001')).toBe(true);
  });

  it('when retries run out, the original error is rethrown and nothing is committed', async () => {
    await reset(1, 5);
    const failure = Object.assign(new Error('serialization failure'), { code: '40001' });
    let calls = 0;
    const p = transaction(
      pool,
      async (c) => {
        calls += 1;
        await c.query(`UPDATE ${T} SET balance = 0 WHERE id = 1`);
        throw failure;
      },
      { retries: 2 },
    );
    await expect(p).rejects.toBe(failure);
    expect(calls).toBe(3);
    const r = await pool.query<{ balance: number }>(`SELECT balance FROM ${T} WHERE id = 1`);
    expect(r.rows[0]!.balance).toBe(5);
  });

  it('other errors roll back and are not retried; 55P03 is retried only when asked', async () => {
    await reset(1, 5);
    let calls = 0;
    const boom = new Error('boom');
    await expect(
      transaction(pool, async (c) => {
        calls += 1;
        await c.query(`UPDATE ${T} SET balance = 1 WHERE id = 1`);
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(calls).toBe(1);
    const holder = await pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${T} WHERE id = 1 FOR UPDATE`);
      let tries = 0;
      const busy = transaction(
        pool,
        async (c) => {
          tries += 1;
          await lockRows(c, { schema, name: 'accounts' }, [1], { nowait: true });
        },
        { retries: 3, retryOnLockNotAvailable: true },
      );
      await expect(busy).rejects.toMatchObject({ code: '55P03' });
      expect(tries).toBe(4);
      tries = 0;
      await expect(
        transaction(pool, async (c) => {
          tries += 1;
          await lockRows(c, { schema, name: 'accounts' }, [1], { nowait: true });
        }),
      ).rejects.toMatchObject({ code: '55P03' });
      expect(tries).toBe(1);
      // lockTimeoutMs: a waiter gives up with 55P03 instead of waiting forever
      await expect(
        transaction(
          pool,
          async (c) => {
            await c.query(`SELECT 1 FROM ${T} WHERE id = 1 FOR UPDATE`);
          },
          { lockTimeoutMs: 50 },
        ),
      ).rejects.toMatchObject({ code: '55P03' });
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
  });

  it('statementTimeoutMs cancels a slow statement (57014, not retried); a signal stops retries', async () => {
    let calls = 0;
    await expect(
      transaction(
        pool,
        async (c) => {
          calls += 1;
          await c.query('SELECT pg_sleep(5)');
        },
        { statementTimeoutMs: 50, retries: 3 },
      ),
    ).rejects.toMatchObject({ code: '57014' });
    expect(calls).toBe(1);
    const ac = new AbortController();
    const reason = new Error('stop');
    let tries = 0;
    await expect(
      transaction(
        pool,
        async () => {
          tries += 1;
          ac.abort(reason);
          throw Object.assign(new Error('serialization failure'), { code: '40001' });
        },
        { retries: 5, signal: ac.signal },
      ),
    ).rejects.toBe(reason);
    expect(tries).toBe(1);
  });

  it('nested on the same client: runs inside the outer transaction, never restarts it', async () => {
    await reset(1, 0);
    let outer = 0;
    let inner = 0;
    await transaction(pool, async (c) => {
      outer += 1;
      await transaction(c, async (c2) => {
        inner += 1;
        expect(c2).toBe(c);
        await c2.query(`UPDATE ${T} SET balance = balance + 1 WHERE id = 1`);
      });
      await c.query(`UPDATE ${T} SET balance = balance + 1 WHERE id = 1`);
    });
    expect([outer, inner]).toStrictEqual([1, 1]);
    const r = await pool.query<{ balance: number }>(`SELECT balance FROM ${T} WHERE id = 1`);
    expect(r.rows[0]!.balance).toBe(2);
    // a client inside a transaction someone else opened: refused, the transaction is untouched
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      await expect(transaction(c, async () => 1)).rejects.toMatchObject({ code: 'INVALID' });
      await c.query('ROLLBACK');
    } finally {
      c.release();
    }
  });

  it('rejects bad options with a clear error and runs nothing', async () => {
    let called = false;
    const fn = async () => {
      called = true;
    };
    await expect(transaction(pool, fn, { retries: -1 })).rejects.toMatchObject({ code: 'INVALID' });
    await expect(
      transaction(pool, fn, { isolation: 'chaos' as 'serializable' }),
    ).rejects.toMatchObject({ code: 'INVALID' });
    await expect(transaction(pool, fn, { lockTimeoutMs: 0 })).rejects.toMatchObject({
      code: 'INVALID',
    });
    expect(called).toBe(false);
  });
});

describe('lockRows()', () => {
  it('refuses to run outside a transaction', async () => {
    const c = await pool.connect();
    try {
      await expect(lockRows(c, { schema, name: 'accounts' }, [1])).rejects.toMatchObject({
        code: 'INVALID',
      });
    } finally {
      c.release();
    }
  });

  it('locks in key order whatever the argument order: opposite-order transfers never deadlock', async () => {
    await reset(10, 1000);
    const deadlocks: string[] = [];
    const tasks = Array.from({ length: 40 }, (_, i) => {
      const a = (i % 10) + 1;
      const b = ((i * 7 + 3) % 10) + 1;
      const [from, to] = i % 2 ? [a, b === a ? (a % 10) + 1 : b] : [b === a ? (a % 10) + 1 : b, a];
      return transaction(
        pool,
        async (c) => {
          const locked = await lockRows(c, { schema, name: 'accounts' }, [from, to]);
          expect(locked).toStrictEqual([Math.min(from, to), Math.max(from, to)]);
          await c.query(`UPDATE ${T} SET balance = balance - 1 WHERE id = $1`, [from]);
          await c.query(`UPDATE ${T} SET balance = balance + 1 WHERE id = $1`, [to]);
        },
        { retries: 0 },
      ).catch((err: unknown) => {
        deadlocks.push(sqlState(err) ?? String(err));
      });
    });
    await Promise.all(tasks);
    expect(deadlocks).toStrictEqual([]);
    const r = await pool.query<{ total: string }>(`SELECT sum(balance) AS total FROM ${T}`);
    expect(Number(r.rows[0]!.total)).toBe(10_000);
  });

  it('skipLocked returns only the rows it could lock; identifiers are quoted', async () => {
    await reset(3, 0);
    const holder = await pool.connect();
    try {
      await holder.query('BEGIN');
      await lockRows(holder, { schema, name: 'accounts' }, [2]);
      const got = await transaction(pool, (c) =>
        lockRows(c, { schema, name: 'accounts' }, [3, 2, 1], { skipLocked: true }),
      );
      expect(got).toStrictEqual([1, 3]);
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    await pool.query(`INSERT INTO "${schema}"."we""ird; name" VALUES ('x'), ('y')`);
    const weird = await transaction(pool, (c) =>
      lockRows(c, { schema, name: 'we"ird; name' }, ['y', 'x', 'nope'], {
        column: 'my id',
        mode: 'share',
      }),
    );
    expect(weird).toStrictEqual(['x', 'y']);
  });
});
