/**
 * Guards as the memory backend evaluates them: the store's guard semantics
 * (`src/store/apply-ops.ts`), plus field references (`ref`: the right-hand side is another field
 * of the same document, or its length), and the index of the first guard that is false. Guards
 * arrive well-formed (the boundary checks them).
 *
 * @example
 * ```ts
 * firstFalse({ count: 3, max: 3 }, [{ guard: 'cmp', field: 'count', cmp: 'lt', ref: { field: 'max' } }]); // 0
 * ```
 */
import { describeGuard, evalGuard } from '../../store/apply-ops.js';
import type { Data, Guard, Json } from '../../store/backend.js';

type CmpGuard = Extract<Guard, { guard: 'cmp' }>;

/**
 * The value a field reference stands for on `data`: the field's value, or with `length` its
 * length (string or array; a missing field has length 0); undefined when there is none (missing
 * field, or a length of something that has none).
 */
function refValue(data: Data, ref: NonNullable<CmpGuard['ref']>): Json | undefined {
  const v = Object.hasOwn(data, ref.field) ? data[ref.field] : undefined;
  if (ref.length !== true) return v;
  if (v === undefined) return 0;
  return typeof v === 'string' || Array.isArray(v) ? v.length : undefined;
}

/**
 * True when `g` holds on `data` (the pre-image). A `ref` guard compares with the referenced
 * field; when that field has no value (missing, or no length), `ne` holds and nothing else does,
 * as for a missing field on the left.
 *
 * @example
 * ```ts
 * holds({ n: 1 }, { guard: 'cmp', field: 'n', cmp: 'ne', ref: { field: 'gone' } }); // true
 * ```
 */
export function holds(data: Data, g: Guard): boolean {
  if (g.guard !== 'cmp' || g.ref === undefined) return evalGuard(data, g);
  const right = refValue(data, g.ref);
  if (right === undefined) return g.cmp === 'ne';
  return evalGuard(data, {
    guard: 'cmp',
    field: g.field,
    cmp: g.cmp,
    value: right,
    length: g.length,
  });
}

/**
 * The index of the first guard of `guards` that is false on `data`, or -1 when all hold.
 *
 * @example
 * ```ts
 * firstFalse({ n: 1 }, [{ guard: 'exists', field: 'n', value: true }, { guard: 'exists', field: 'm', value: true }]); // 1
 * ```
 */
export function firstFalse(data: Data, guards: readonly Guard[]): number {
  for (let i = 0; i < guards.length; i++) if (!holds(data, guards[i] as Guard)) return i;
  return -1;
}

/**
 * A short description of a guard for refusal details: `"count" lt field "max"`.
 *
 * @example
 * ```ts
 * describe({ guard: 'cmp', field: 'n', cmp: 'lt', ref: { field: 'max', length: true } }); // '"n" lt length of "max"'
 * ```
 */
export function describe(g: Guard): string {
  if (g.guard !== 'cmp' || g.ref === undefined) return describeGuard(g);
  const right = `${g.ref.length ? 'length of' : 'field'} ${JSON.stringify(g.ref.field)}`;
  return `${JSON.stringify(g.field)}${g.length ? ' length' : ''} ${g.cmp} ${right}`;
}
