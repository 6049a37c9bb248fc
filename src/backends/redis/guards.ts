/**
 * Guards evaluated in JavaScript, for the write path's predictions (writes.ts): the store's
 * `evalGuard` for literal right-hand sides, and field references (`ref`, see `FieldRef` in
 * src/store/backend.ts) resolved here on the same pre-image, exactly as guard_ok in lib.lua does:
 * a missing ref field (or the length of neither a string nor an array) makes `ne` true and every
 * other comparison false. A prediction only decides whether to speculate: the script evaluates
 * every guard again on the server.
 */
import { evalGuard } from '../../store/apply-ops.js';
import type { Data, Guard, Json } from '../../store/backend.js';

/**
 * True when every guard holds on `data` (an empty list holds).
 *
 * @example
 * ```ts
 * guardsHold({ taken: 2, max: 3 }, [{ guard: 'cmp', field: 'taken', cmp: 'lt', ref: { field: 'max' } }]); // true
 * ```
 */
export function guardsHold(data: Data, guards: readonly Guard[]): boolean {
  for (const g of guards) if (!guardHolds(data, g)) return false;
  return true;
}

function guardHolds(data: Data, g: Guard): boolean {
  if (g.guard !== 'cmp' || g.ref === undefined) return evalGuard(data, g);
  const r = Object.hasOwn(data, g.ref.field) ? data[g.ref.field] : undefined;
  let right: Json | undefined = r;
  if (g.ref.length === true) {
    right = r === undefined ? 0 : typeof r === 'string' || Array.isArray(r) ? r.length : undefined;
  }
  // A missing left side gives the same answer, so the order of the two checks does not matter.
  if (right === undefined) return g.cmp === 'ne';
  const { ref: _ref, ...literal } = g;
  return evalGuard(data, { ...literal, value: right });
}
