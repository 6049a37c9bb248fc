/**
 * Drafts: the mutable copies `lock` and `update` hand to user code, and the diff that turns an
 * edited draft back into the smallest write (only the top-level fields that changed).
 */
import type { Data, Json, Op } from './backend.js';
import { deepEqual } from './json.js';

/**
 * The ops that turn `before` into `after`: `set` for every top-level field whose value changed
 * or appeared, `unset` for every field that disappeared. Fields are compared deeply.
 *
 * @example
 * ```ts
 * diffFields({ a: 1, b: [1] }, { a: 2, b: [1] }); // [{ op: 'set', field: 'a', value: 2 }]
 * ```
 */
export function diffFields(before: Data, after: Data): Op[] {
  const ops: Op[] = [];
  for (const field of Object.keys(after)) {
    const v = after[field] as Json | undefined;
    if (v === undefined) continue;
    if (!Object.hasOwn(before, field) || !deepEqual(before[field], v)) {
      ops.push({ op: 'set', field, value: v });
    }
  }
  for (const field of Object.keys(before)) {
    if (!Object.hasOwn(after, field) || after[field] === undefined)
      ops.push({ op: 'unset', field });
  }
  return ops;
}
