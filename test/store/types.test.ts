import { describe, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import type {
  Doc,
  GuardBuilder,
  LockContext,
  Model,
  OpsBuilder,
  Store,
} from '../../src/store/index.js';

const Campaign = z.object({
  name: z.string(),
  seats: z.number().int(),
  applicants: z.array(z.string()),
  scores: z.record(z.string(), z.number()),
  note: z.string().optional(),
});
type C = z.infer<typeof Campaign>;

describe('types inferred from the schema', () => {
  it('gives Doc<T> and typed ops/guards', () => {
    const store = {} as Store;
    const make = () => store.model('campaign', Campaign);
    type M = ReturnType<typeof make>;
    expectTypeOf<M>().toEqualTypeOf<Model<C, z.input<typeof Campaign>>>();
    expectTypeOf<Awaited<ReturnType<M['get']>>>().toEqualTypeOf<Doc<C>>();
    const build = (c: OpsBuilder<C>) => {
      c.seats.incr(1);
      c.applicants.append('x');
      c.applicants.pop();
      c.scores.setItem('a', 1);
      c.name.set('n');
      c.note.unset();
      // @ts-expect-error incr is only offered on number fields
      c.name.incr(1);
      // @ts-expect-error appending a number to a string array
      c.applicants.append(1);
      // @ts-expect-error setItem is for records
      c.applicants.setItem('a', 'b');
    };
    const when = (c: GuardBuilder<C>) => [
      c.applicants.length.lt(10),
      c.applicants.notContains('x'),
      c.seats.gte(1),
      c.scores.contains('a'),
      c.note.exists(false),
      // @ts-expect-error lt is only offered on numbers
      c.name.lt(3),
    ];
    expectTypeOf(build).toBeFunction();
    expectTypeOf(when).toBeFunction();
  });

  it('compares a field with another field or a length, and only where the types fit', () => {
    const when = (c: GuardBuilder<C>) => [
      c.applicants.length.lt(c.seats),
      c.seats.gte(c.applicants.length),
      c.name.eq(c.name),
      // @ts-expect-error a number field is not compared with a string field
      c.seats.lt(c.name),
      // @ts-expect-error a string field does not equal a number field
      c.name.eq(c.seats),
    ];
    expectTypeOf(when).toBeFunction();
  });

  it('types lock drafts as a tuple of the keys and gives the callback a LockContext', () => {
    const store = {} as Store;
    const make = () => store.model('campaign', Campaign);
    // types only: nothing below is called
    const M = {} as ReturnType<typeof make>;
    const multi = () =>
      M.lock(['a', 'b'], ([a, b], ctx) => {
        // under noUncheckedIndexedAccess: the tuple's elements are drafts, not `C | undefined`
        expectTypeOf(a).toEqualTypeOf<C>();
        expectTypeOf(b).toEqualTypeOf<C>();
        expectTypeOf(ctx).toEqualTypeOf<LockContext>();
        return a.seats + b.seats;
      });
    expectTypeOf(multi).returns.resolves.toEqualTypeOf<number>();
    const single = () => M.lock('a', (d, ctx) => `${d.name}:${ctx.fence}`);
    expectTypeOf(single).returns.resolves.toEqualTypeOf<string>();
    const keys: string[] = ['a'];
    const dynamic = () => M.lock(keys, (ds) => ds.length);
    expectTypeOf(dynamic).returns.resolves.toEqualTypeOf<number>();
  });
});
