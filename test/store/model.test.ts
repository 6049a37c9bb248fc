import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  createStore,
  DeadlockError,
  LockTimeoutError,
  memory,
  type OpsBuilder,
  type StandardSchemaV1,
  ValidationError,
} from '../../src/index.js';

describe('Model on the memory backend (store-level behaviour)', () => {
  it('a field named __proto__ survives lock and update drafts (bug: cloneJson set the prototype)', async () => {
    const store = createStore(memory());
    // zod drops a "__proto__" key itself; this hand-written Standard Schema keeps every field.
    const numbers: StandardSchemaV1<Record<string, number>> = {
      '~standard': {
        version: 1,
        vendor: 'test',
        validate: (value) =>
          typeof value === 'object' &&
          value !== null &&
          Object.values(value).every((v) => typeof v === 'number')
            ? { value: value as Record<string, number> }
            : { issues: [{ message: 'expected numbers' }] },
      },
    };
    const M = store.model('proto', numbers);
    const data = JSON.parse('{"__proto__": 1, "n": 0}') as Record<string, number>;
    await M.create('k', data);
    await M.lock('k', (d) => {
      d.n = (d.n ?? 0) + 1;
    });
    await M.update('k', (d) => {
      d.n = (d.n ?? 0) + 1;
    });
    const doc = await M.get('k');
    expect(Object.keys(doc.data).sort()).toEqual(['__proto__', 'n']);
    expect(Object.getOwnPropertyDescriptor(doc.data, '__proto__')?.value).toBe(1);
    expect(doc.data.n).toBe(2);
    await store.close();
  });

  it('a schema that validates asynchronously works through lock, update and apply, and still refuses bad data', async () => {
    const store = createStore(memory());
    const counter: StandardSchemaV1<{ n: number }> = {
      '~standard': {
        version: 1,
        vendor: 'test',
        validate: async (value) => {
          await new Promise((r) => setTimeout(r, 1));
          const n = (value as { n?: unknown }).n;
          return typeof n === 'number' && n >= 0
            ? { value: { n } }
            : { issues: [{ message: 'n must be a number >= 0' }] };
        },
      },
    };
    const M = store.model('async', counter);
    await M.create('k', { n: 0 });
    await M.lock('k', (d) => {
      d.n += 2;
    });
    await M.update('k', (d) => {
      d.n += 1;
    });
    await M.apply('k', (d) => d.n.incr(1));
    const err = await M.lock('k', (d) => {
      d.n = -1;
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((await M.get('k')).data).toEqual({ n: 4 });
    await store.close();
  });

  it('a schema that does not accept its own output (a type-changing transform) fails lock and update clearly, writing nothing', async () => {
    // README: "a schema must accept its own output".
    const store = createStore(memory());
    const M = store.model('transform', z.object({ n: z.string().transform(Number) }));
    await M.create('k', { n: '1' });
    expect((await M.get('k')).data).toEqual({ n: 1 });
    await expect(
      M.lock('k', (d) => {
        (d as { n: unknown }).n = '2';
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(M.update('k', () => {})).rejects.toBeInstanceOf(ValidationError);
    const doc = await M.get('k');
    expect(doc.data).toEqual({ n: 1 });
    expect(doc.version).toBe(1);
    await store.close();
  });

  it('re-entering a key from inside its own lock is a DeadlockError, not a hang', async () => {
    const store = createStore(memory());
    const M = store.model('reenter', z.object({ n: z.number() }));
    await M.create('k', { n: 0 });
    const err = await M.lock('k', () => M.lock('k', () => 1, { timeoutMs: 5_000 })).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DeadlockError);
    // A different action on the same key is a different lock: no deadlock.
    await expect(M.lock('k', () => M.lock('k', () => 2, { action: 'audit' }))).resolves.toBe(2);
    await store.close();
  });

  it('independent flows still wait for each other (a timeout, not a deadlock)', async () => {
    const store = createStore(memory());
    const M = store.model('flows', z.object({ n: z.number() }));
    await M.create('k', { n: 0 });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const holder = M.lock('k', async () => {
      entered();
      await held;
    });
    await inside;
    await expect(M.lock('k', () => 0, { timeoutMs: 10 })).rejects.toBeInstanceOf(LockTimeoutError);
    release();
    await holder;
    await store.close();
  });

  it('an op recorder kept after build() refuses to record', async () => {
    const store = createStore(memory());
    const M = store.model('leak', z.object({ n: z.number() }));
    await M.create('k', { n: 0 });
    let kept: OpsBuilder<{ n: number }> | undefined;
    await M.apply('k', (d) => {
      kept = d;
      d.n.incr();
    });
    const n = kept?.n;
    expect(() => n?.incr()).toThrow(ValidationError);
    expect((await M.get('k')).data.n).toBe(1);
    await store.close();
  });

  it('a shared lock cannot write, and lock() refuses duplicate or no keys', async () => {
    const store = createStore(memory());
    const M = store.model('shared', z.object({ n: z.number() }));
    await M.create('k', { n: 0 });
    await expect(
      M.lock(
        'k',
        (d) => {
          d.n = 5;
        },
        { mode: 'shared' },
      ),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(M.lock(['k', 'k'], () => 0)).rejects.toBeInstanceOf(ValidationError);
    await expect(M.lock([], () => 0)).rejects.toBeInstanceOf(ValidationError);
    expect((await M.get('k')).data.n).toBe(0);
    await store.close();
  });

  it('store.apply refuses a batch naming one document twice (small and large batches), writing nothing', async () => {
    const store = createStore(memory());
    const M = store.model('twice', z.object({ n: z.number() }));
    for (let i = 0; i < 20; i++) await M.create(`k${i}`, { n: 0 });
    const incr = (k: string) => M.ops(k, (d) => d.n.incr(1));
    await expect(store.apply([incr('k0'), incr('k0')])).rejects.toBeInstanceOf(ValidationError);
    const many = Array.from({ length: 20 }, (_, i) => incr(`k${i}`));
    await expect(store.apply([...many, incr('k19')])).rejects.toBeInstanceOf(ValidationError);
    for (let i = 0; i < 20; i++) expect((await M.get(`k${i}`)).data.n).toBe(0);
    // distinct documents (same key in two models is two documents) apply
    const N = store.model('twice_other', z.object({ n: z.number() }));
    await N.create('k0', { n: 0 });
    await expect(store.apply([incr('k0'), N.ops('k0', (d) => d.n.incr(1))])).resolves.toEqual({
      applied: true,
    });
    await expect(store.apply(many)).resolves.toEqual({ applied: true });
    expect((await M.get('k0')).data.n).toBe(2);
    await store.close();
  });
});
