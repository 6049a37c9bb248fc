/**
 * JSON value helpers shared by the store and the backends: deep equality (object key order
 * ignored, as every backend compares) and copying (so nothing a caller holds aliases storage).
 */
import type { Json } from './backend.js';

/**
 * Deep equality of two JSON values; object key order is ignored.
 *
 * @example
 * ```ts
 * deepEqual({ a: 1, b: [2] }, { b: [2], a: 1 }); // true
 * ```
 */
export function deepEqual(a: Json | undefined, b: Json | undefined): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    if (!Object.hasOwn(b, k) || !deepEqual(a[k], b[k])) return false;
  }
  return true;
}

/**
 * A deep copy of a JSON value. Object properties whose value is `undefined` are dropped (as
 * JSON does), so the copy is exactly what a backend stores; a field named `__proto__` stays a
 * plain field. No validation: this is the fast copy, for values already known to be JSON (stored
 * data, snapshots); `copyJson` in `apply-ops.ts` is the validating copy for caller input.
 *
 * @example
 * ```ts
 * const copy = cloneJson({ tags: ['a'] });
 * ```
 */
export function cloneJson<T extends Json>(v: T): T;
export function cloneJson(v: Json): Json {
  if (typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) {
    const out = v.slice();
    for (let i = 0; i < out.length; i++) {
      const x = out[i] as Json | undefined;
      if (typeof x === 'object') {
        if (x !== null) out[i] = cloneJson(x);
      } else if (x === undefined) out[i] = null;
    }
    return out;
  }
  // Spread copies every own field in one step (a `__proto__` field too, as a plain field); then
  // nested objects and arrays are replaced by their copies.
  const out: { [k: string]: Json } = { ...v };
  for (const k in out) {
    const x = out[k] as Json | undefined;
    if (typeof x !== 'object') {
      if (x === undefined) return cloneDropping(v);
      continue;
    }
    if (x === null) continue;
    if (k === '__proto__') defineField(out, k, cloneJson(x));
    else out[k] = cloneJson(x);
  }
  return out;
}

/** The rare path of {@link cloneJson}: an object holding `undefined` properties (dropped). */
function cloneDropping(v: { [k: string]: Json }): Json {
  const out: { [k: string]: Json } = {};
  for (const k in v) {
    const x = v[k] as Json | undefined;
    if (x === undefined) continue;
    if (k === '__proto__') defineField(out, k, cloneJson(x));
    else out[k] = cloneJson(x);
  }
  return out;
}

/** A field named "__proto__" is data: assigning it would set the object's prototype instead. */
function defineField(out: { [k: string]: Json }, k: string, value: Json): void {
  Object.defineProperty(out, k, { value, enumerable: true, writable: true, configurable: true });
}
