/**
 * Guards as this backend evaluates them: on the pre-image read under the row lock, in the write's
 * own transaction (so the answer, and the index of the first false guard, is exact — nothing is
 * re-read afterwards), with field-to-field guards (`ref`) resolved against the same pre-image.
 */
import { evalGuard } from '../../store/apply-ops.js';
import type { Data, Guard, Json } from '../../store/backend.js';

/**
 * The index of the first guard that is false on `data`, or -1. A `ref` guard compares with the
 * other field's pre-image value (or, with `ref.length`, its length: string or array, missing 0);
 * a ref with no value to compare (missing field, or a length of something that has none) makes
 * the guard behave as for a missing field: `ne` true, every other comparison false.
 *
 * @example
 * ```ts
 * firstFalse({ n: 2, max: 3 }, [{ guard: 'cmp', field: 'n', cmp: 'lt', ref: { field: 'max' } }]); // -1
 * ```
 */
export function firstFalse(data: Data, guards: readonly Guard[]): number {
  for (let i = 0; i < guards.length; i++) {
    if (!holds(data, guards[i] as Guard)) return i;
  }
  return -1;
}

function holds(data: Data, g: Guard): boolean {
  if (g.guard !== 'cmp' || g.ref === undefined) return evalGuard(data, g);
  const right = refValue(data, g.ref.field, g.ref.length === true);
  if (right === undefined) return g.cmp === 'ne';
  const { ref: _ref, ...literal } = g;
  return evalGuard(data, { ...literal, value: right });
}

function refValue(data: Data, field: string, length: boolean): Json | undefined {
  const v = Object.hasOwn(data, field) ? data[field] : undefined;
  if (!length) return v;
  if (v === undefined) return 0;
  return typeof v === 'string' || Array.isArray(v) ? v.length : undefined;
}
