/**
 * Untyped views of the ops and guard builders, so the suite can reach every operation on every
 * field (including ones the schema's types would forbid, to check the backend's run-time refusal)
 * and compare exact backend semantics on JSON values of any shape.
 */
import type { Guard } from './api.js';

/** Every field op, untyped. */
export interface AnyFieldOps {
  set(value: unknown): void;
  unset(): void;
  incr(by?: number): void;
  append(value: unknown): void;
  extend(values: readonly unknown[]): void;
  insert(index: number, value: unknown): void;
  remove(value: unknown): void;
  pop(index?: number): void;
  setItem(item: string, value: unknown): void;
  deleteItem(item: string): void;
  merge(entries: Record<string, unknown>): void;
}

/** Every length guard, untyped. */
export interface AnyLengthGuards {
  eq(n: number): Guard;
  ne(n: number): Guard;
  lt(n: number): Guard;
  lte(n: number): Guard;
  gt(n: number): Guard;
  gte(n: number): Guard;
}

/** Every field guard, untyped. */
export interface AnyFieldGuards {
  eq(value: unknown): Guard;
  ne(value: unknown): Guard;
  lt(n: number): Guard;
  lte(n: number): Guard;
  gt(n: number): Guard;
  gte(n: number): Guard;
  exists(present?: boolean): Guard;
  contains(value: unknown): Guard;
  notContains(value: unknown): Guard;
  readonly length: AnyLengthGuards;
}

/** An ops builder seen as "every field offers every op". */
export type AnyOps = Record<string, AnyFieldOps>;
/** A guard builder seen as "every field offers every guard". */
export type AnyGuards = Record<string, AnyFieldGuards>;

/** Casts a typed build callback's argument to {@link AnyOps}. */
export function loose<B>(fn: (o: AnyOps) => unknown): (o: B) => unknown {
  return fn as unknown as (o: B) => unknown;
}

/** Casts a typed `when` callback's argument to {@link AnyGuards}. */
export function looseWhen<G>(fn: (g: AnyGuards) => Guard | Guard[]): (g: G) => Guard | Guard[] {
  return fn as unknown as (g: G) => Guard | Guard[];
}
