import { describe, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import type { Doc, GuardBuilder, Model, OpsBuilder, Store } from '../../src/store/index.js';

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
});
