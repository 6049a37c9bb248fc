/**
 * The ops and guards language of `Model.apply`, typed by the model's schema: a number field offers
 * `incr`, an array field `append`/`pop`, a record field `setItem`/`merge`, and a call that does not
 * fit the field's type is a compile-time error. At run time the builders only record plain
 * {@link Op} / {@link Guard} objects; the backend executes them atomically.
 *
 * @example
 * ```ts
 * await Campaign.apply('spring', (c) => c.applicants.append('ann'), {
 *   when: (c) => [c.applicants.length.lt(100), c.applicants.notContains('ann')],
 * });
 * ```
 */
import { ValidationError } from '../errors.js';
import type { CmpOp, FieldRef, Guard, Json, Op } from './backend.js';
import { nonJson } from './checks.js';

type NN<V> = NonNullable<V>;

/** Operations every field has. */
export interface ScalarOps<V> {
  /** Replace the field's value. */
  set(value: V): void;
  /** Remove the field (the post-state must still pass the schema). */
  unset(): void;
}
/** Operations of a number field. */
export interface NumberOps<V> extends ScalarOps<V> {
  /** Add `by` (default 1, may be negative) on the server; a missing field counts as 0. Result: the new value. */
  incr(by?: number): void;
}
/** Operations of an array field. Results: new length (append/extend/insert), count (remove), element or null (pop). */
export interface ArrayOps<V, E> extends ScalarOps<V> {
  append(value: E): void;
  extend(values: readonly E[]): void;
  /** Insert at `index` (negative counts from the end; clamped like `splice`). */
  insert(index: number, value: E): void;
  /** Remove every element deep-equal to `value`. */
  remove(value: E): void;
  /** Remove and return the element at `index` (default -1: the last; 0: the first). */
  pop(index?: number): void;
}
/** Operations of a record (object) field. Result of deleteItem: whether the item existed. */
export interface RecordOps<V, I> extends ScalarOps<V> {
  setItem(item: string, value: I): void;
  deleteItem(item: string): void;
  /** Shallow-merge entries into the record. */
  merge(entries: { readonly [k: string]: I }): void;
}

/** The operations a field of type `V` offers. */
export type FieldOps<V> = [NN<V>] extends [number]
  ? NumberOps<V>
  : [NN<V>] extends [readonly (infer E)[]]
    ? ArrayOps<V, E>
    : [NN<V>] extends [string | boolean | null]
      ? ScalarOps<V>
      : [NN<V>] extends [{ readonly [k: string]: infer I }]
        ? RecordOps<V, I>
        : ScalarOps<V>;

/** The ops builder handed to `apply(key, build)`: one entry per field of the schema. */
export type OpsBuilder<T> = { readonly [K in keyof T & string]-?: FieldOps<T[K]> };

/**
 * The marker of a guard operand: every field of a guard builder (and every `.length`) can stand
 * on the right-hand side of another field's comparison, as in `c.applicants.length.lt(c.max)`.
 */
export const operand: unique symbol = Symbol('lockstep.operand');

/**
 * Another field of the same document (or its length) used as a comparison's right-hand side. `V`
 * is the type it compares as. Made by the guard builder, never by hand.
 */
export interface FieldOperand<V> {
  /** @internal the field it names. */
  readonly [operand]: FieldRef;
  /** @internal type only: what the field holds. */
  readonly __compares?: V;
}

/** A number, or another number field (or a length) of the same document. */
export type NumberOperand = number | FieldOperand<number>;

/** Comparisons of a length (strings and arrays); itself usable as a number operand. */
export interface LengthGuards extends FieldOperand<number> {
  eq(n: NumberOperand): Guard;
  ne(n: NumberOperand): Guard;
  lt(n: NumberOperand): Guard;
  lte(n: NumberOperand): Guard;
  gt(n: NumberOperand): Guard;
  gte(n: NumberOperand): Guard;
}
/** Guards every field has. `eq`/`ne` compare deeply, with a value or another field. */
export interface BaseGuards<V> extends FieldOperand<NN<V>> {
  eq(value: V | FieldOperand<NN<V>>): Guard;
  ne(value: V | FieldOperand<NN<V>>): Guard;
  /** The field is present (default) or absent (`exists(false)`). */
  exists(present?: boolean): Guard;
}
/** Guards of a number field: compare with a number, another number field or a length. */
export interface NumberGuards<V> extends BaseGuards<V> {
  lt(n: NumberOperand): Guard;
  lte(n: NumberOperand): Guard;
  gt(n: NumberOperand): Guard;
  gte(n: NumberOperand): Guard;
}
/** Guards of a string field. `contains` tests for a substring. */
export interface StringGuards<V> extends BaseGuards<V> {
  readonly length: LengthGuards;
  contains(part: string): Guard;
  notContains(part: string): Guard;
}
/** Guards of an array field. `contains` tests for a deep-equal element. */
export interface ArrayGuards<V, E> extends BaseGuards<V> {
  readonly length: LengthGuards;
  contains(element: E): Guard;
  notContains(element: E): Guard;
}
/** Guards of a record field. `contains` tests for a key. */
export interface RecordGuards<V> extends BaseGuards<V> {
  contains(item: string): Guard;
  notContains(item: string): Guard;
}

/** The guards a field of type `V` offers. */
export type FieldGuards<V> = [NN<V>] extends [number]
  ? NumberGuards<V>
  : [NN<V>] extends [string]
    ? StringGuards<V>
    : [NN<V>] extends [readonly (infer E)[]]
      ? ArrayGuards<V, E>
      : [NN<V>] extends [boolean | null]
        ? BaseGuards<V>
        : [NN<V>] extends [{ readonly [k: string]: unknown }]
          ? RecordGuards<V>
          : BaseGuards<V>;

/** The guard builder handed to `when`: one entry per field of the schema. */
export type GuardBuilder<T> = { readonly [K in keyof T & string]-?: FieldGuards<T[K]> };

/** What `when` may return. */
export type GuardsInput = Guard | readonly Guard[] | undefined;

function json(field: string, what: string, value: unknown): Json {
  const bad = nonJson(value);
  if (bad) {
    throw new ValidationError(`${what} on field ${JSON.stringify(field)}`, [
      bad.path.length > 0 ? { message: bad.message, path: bad.path } : { message: bad.message },
    ]);
  }
  return value as Json;
}

function int(field: string, what: string, n: unknown): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) {
    throw new ValidationError(`${what} on field ${JSON.stringify(field)}`, [
      { message: `index must be an integer, got ${String(n)}` },
    ]);
  }
  return n;
}

function num(field: string, what: string, n: unknown): number {
  if (typeof n !== 'number' || !Number.isFinite(n)) {
    throw new ValidationError(`${what} on field ${JSON.stringify(field)}`, [
      { message: `expected a finite number, got ${String(n)}` },
    ]);
  }
  return n;
}

function str(field: string, what: string, s: unknown): string {
  if (typeof s !== 'string') {
    throw new ValidationError(`${what} on field ${JSON.stringify(field)}`, [
      { message: `expected a string, got ${typeof s}` },
    ]);
  }
  return s;
}

/** Where the `recordOps` call in progress collects its ops (build functions are synchronous). */
let sink: Op[] | undefined;

function currentSink(field: string): Op[] {
  if (!sink) {
    throw new ValidationError(`op on field ${JSON.stringify(field)}`, [
      { message: 'ops can only be recorded while the build function of apply()/ops() runs' },
    ]);
  }
  return sink;
}

/** The run-time object behind every field of an ops builder (it offers every op; types narrow it). */
class FieldOpsRecorder {
  constructor(private readonly field: string) {}
  private get out(): Op[] {
    return currentSink(this.field);
  }
  set(value: unknown): void {
    this.out.push({ op: 'set', field: this.field, value: json(this.field, 'set', value) });
  }
  unset(): void {
    this.out.push({ op: 'unset', field: this.field });
  }
  incr(by: unknown = 1): void {
    this.out.push({ op: 'incr', field: this.field, by: num(this.field, 'incr', by) });
  }
  append(value: unknown): void {
    this.out.push({ op: 'append', field: this.field, value: json(this.field, 'append', value) });
  }
  extend(values: unknown): void {
    if (!Array.isArray(values)) {
      throw new ValidationError(`extend on field ${JSON.stringify(this.field)}`, [
        { message: 'expected an array of values' },
      ]);
    }
    this.out.push({
      op: 'extend',
      field: this.field,
      values: json(this.field, 'extend', values) as Json[],
    });
  }
  insert(index: unknown, value: unknown): void {
    this.out.push({
      op: 'insert',
      field: this.field,
      index: int(this.field, 'insert', index),
      value: json(this.field, 'insert', value),
    });
  }
  remove(value: unknown): void {
    this.out.push({ op: 'remove', field: this.field, value: json(this.field, 'remove', value) });
  }
  pop(index: unknown = -1): void {
    this.out.push({ op: 'pop', field: this.field, index: int(this.field, 'pop', index) });
  }
  setItem(item: unknown, value: unknown): void {
    this.out.push({
      op: 'setItem',
      field: this.field,
      item: str(this.field, 'setItem', item),
      value: json(this.field, 'setItem', value),
    });
  }
  deleteItem(item: unknown): void {
    this.out.push({
      op: 'deleteItem',
      field: this.field,
      item: str(this.field, 'deleteItem', item),
    });
  }
  merge(entries: unknown): void {
    const v = json(this.field, 'merge', entries);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      throw new ValidationError(`merge on field ${JSON.stringify(this.field)}`, [
        { message: 'expected an object of entries' },
      ]);
    }
    this.out.push({ op: 'merge', field: this.field, value: v });
  }
}

/**
 * Runs `build` against a recording builder and returns the ops it recorded, in call order.
 *
 * @example
 * ```ts
 * const ops = recordOps<{ n: number }>((d) => d.n.incr(2)); // [{ op: 'incr', field: 'n', by: 2 }]
 * ```
 */
export function recordOps<T>(build: (ops: OpsBuilder<T>) => unknown): Op[] {
  const outer = sink;
  const out: Op[] = [];
  sink = out;
  try {
    build(opsProxy as OpsBuilder<T>);
  } finally {
    sink = outer;
  }
  return out;
}

/**
 * The builder handed to `build`. Field recorders are stateless (they write to the current sink),
 * so each field's recorder is made once, on first use, by a Proxy behind the builder, and then
 * kept as an own property of the builder: later accesses are plain property reads.
 */
const MAX_CACHED_FIELDS = 10_000;
let cachedFields = 0;
const opsProxy: object = Object.create(
  new Proxy(
    {},
    {
      get(_t, field, receiver) {
        if (typeof field !== 'string') return undefined;
        const rec = new FieldOpsRecorder(field);
        if (cachedFields < MAX_CACHED_FIELDS) {
          cachedFields++;
          Object.defineProperty(receiver, field, { value: rec, enumerable: true });
        }
        return rec;
      },
    },
  ),
);

function refOf(v: unknown): FieldRef | undefined {
  return typeof v === 'object' && v !== null && operand in v
    ? (v as FieldOperand<unknown>)[operand]
    : undefined;
}

function cmp(field: string, op: CmpOp, value: Json, length?: boolean): Guard {
  return length
    ? { guard: 'cmp', field, cmp: op, value, length: true }
    : { guard: 'cmp', field, cmp: op, value };
}

function cmpRef(field: string, op: CmpOp, ref: FieldRef, length?: boolean): Guard {
  const r: FieldRef = ref.length ? { field: ref.field, length: true } : { field: ref.field };
  return length
    ? { guard: 'cmp', field, cmp: op, ref: r, length: true }
    : { guard: 'cmp', field, cmp: op, ref: r };
}

function lengthGuards(field: string): LengthGuards {
  const mk = (op: CmpOp) => (n: unknown) => {
    const ref = refOf(n);
    return ref ? cmpRef(field, op, ref, true) : cmp(field, op, num(field, `length.${op}`, n), true);
  };
  return {
    [operand]: { field, length: true },
    eq: mk('eq'),
    ne: mk('ne'),
    lt: mk('lt'),
    lte: mk('lte'),
    gt: mk('gt'),
    gte: mk('gte'),
  };
}

function fieldGuards(field: string) {
  const val = (op: CmpOp) => (v: unknown) => {
    const ref = refOf(v);
    return ref ? cmpRef(field, op, ref) : cmp(field, op, json(field, op, v));
  };
  const n = (op: CmpOp) => (v: unknown) => {
    const ref = refOf(v);
    return ref ? cmpRef(field, op, ref) : cmp(field, op, num(field, op, v));
  };
  return {
    [operand]: { field },
    eq: val('eq'),
    ne: val('ne'),
    lt: n('lt'),
    lte: n('lte'),
    gt: n('gt'),
    gte: n('gte'),
    exists: (present: unknown = true): Guard => ({
      guard: 'exists',
      field,
      value: present !== false,
    }),
    contains: (v: unknown): Guard => ({
      guard: 'contains',
      field,
      value: json(field, 'contains', v),
    }),
    notContains: (v: unknown): Guard => ({
      guard: 'notContains',
      field,
      value: json(field, 'notContains', v),
    }),
    get length() {
      return lengthGuards(field);
    },
  };
}

/**
 * Runs `when` against a guard builder and returns the guards as a list.
 *
 * @example
 * ```ts
 * const guards = recordGuards<{ n: number }>((d) => d.n.lt(10)); // [{ guard: 'cmp', ... }]
 * ```
 */
export function recordGuards<T>(when: ((g: GuardBuilder<T>) => GuardsInput) | undefined): Guard[] {
  if (!when) return [];
  const proxy = new Proxy(
    {},
    {
      get(_t, field) {
        return typeof field === 'string' ? fieldGuards(field) : undefined;
      },
    },
  ) as GuardBuilder<T>;
  const g = when(proxy);
  if (g === undefined) return [];
  const list = (Array.isArray(g) ? g : [g]) as Guard[];
  for (const x of list) {
    if (typeof x !== 'object' || x === null || !('guard' in x)) {
      throw new ValidationError('when', [
        { message: 'when() must return guards built from its argument, e.g. c => c.n.lt(10)' },
      ]);
    }
  }
  return list;
}
