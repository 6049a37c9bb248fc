/**
 * The REFERENCE semantics of field operations ({@link Op}) and guards ({@link Guard}): pure,
 * synchronous, and exactly what `backend.ts` documents. The memory backend executes batches with
 * these functions; other backends may compute post-images with them, and the conformance suite
 * holds every backend to the same results.
 *
 * @example
 * ```ts
 * const r = applyOps({ n: 1, tags: ['a'] }, [
 *   { op: 'incr', field: 'n', by: 2 },
 *   { op: 'append', field: 'tags', value: 'b' },
 * ]);
 * // r → { ok: true, data: { n: 3, tags: ['a', 'b'] }, results: [3, 2] }
 * ```
 */
import type { CmpOp, Data, Guard, Json, Op } from './backend.js';
import { cloneJson, deepEqual } from './json.js';

export { cloneJson, deepEqual };

/** Values nest at most this deep in {@link copyJson}; deeper values (or cycles) are refused. */
const MAX_DEPTH = 1000;

/** A record: a non-null, non-array JSON object. */
type Rec = { [key: string]: Json };

function isRecord(v: Json | undefined): v is Rec {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Own property or undefined: `{}` has no field named `toString` or `__proto__`. */
function own(obj: Rec, key: string): Json | undefined {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/** Defines an own property; a key named `__proto__` stays a plain field, never a prototype. */
function setOwn(obj: Rec, key: string, value: Json): void {
  if (key === '__proto__') {
    Object.defineProperty(obj, key, {
      value,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  } else {
    obj[key] = value;
  }
}

/**
 * Thrown by {@link copyJson} for a value that is not JSON; `at` says where.
 *
 * @example
 * ```ts
 * try { copyJson({ when: new Date() }, 'data'); } catch (err) {
 *   if (err instanceof NotJsonError) console.log(err.at); // 'data'
 * }
 * ```
 */
export class NotJsonError extends TypeError {
  /** Where the offending value sits, e.g. `value.items[2]`. */
  readonly at: string;
  constructor(at: string, what: string) {
    super(`${at} is not JSON: ${what}`);
    this.name = 'NotJsonError';
    this.at = at;
  }
}

function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return `${value} (numbers must be finite)`;
  if (typeof value === 'object' && value !== null) {
    const proto = Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null;
    return `a ${proto?.constructor?.name ?? 'non-plain'} object (only plain objects and arrays)`;
  }
  return `a ${typeof value}`;
}

function copy(value: unknown, at: string, depth: number): Json {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      if (!Number.isFinite(value)) throw new NotJsonError(at, describe(value));
      // JSON has no -0 (JSON.stringify(-0) is "0"): every backend stores 0.
      return value === 0 ? 0 : value;
    case 'object': {
      if (value === null) return null;
      if (depth >= MAX_DEPTH) {
        throw new NotJsonError(at, `nested deeper than ${MAX_DEPTH} levels (or cyclic)`);
      }
      if (Array.isArray(value)) {
        const n = value.length;
        const out: Json[] = new Array(n);
        for (let i = 0; i < n; i++) {
          const item: unknown = value[i];
          if (item === undefined) throw new NotJsonError(`${at}[${i}]`, 'undefined');
          out[i] = copy(item, at, depth + 1);
        }
        return out;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new NotJsonError(at, describe(value));
      }
      const src = value as Record<string, unknown>;
      const out: Rec = {};
      for (const k of Object.keys(src)) {
        const item = src[k];
        // As JSON.stringify does: a property holding undefined is simply absent.
        if (item === undefined) continue;
        setOwn(out, k, copy(item, at, depth + 1));
      }
      return out;
    }
    default:
      throw new NotJsonError(at, describe(value));
  }
}

/**
 * Validated deep copy: a fresh JSON value sharing nothing with `value`, or {@link NotJsonError}
 * when `value` is not JSON (undefined array elements, functions, symbols, bigints, NaN/Infinity,
 * class instances such as Date or Map, cycles). Properties holding `undefined` are dropped, as
 * `JSON.stringify` does; a field named `__proto__` is kept as a plain field.
 *
 * @example
 * ```ts
 * copyJson({ a: [1, 'x'], b: undefined }); // { a: [1, 'x'] }
 * copyJson({ at: new Date() }, 'data'); // throws NotJsonError: data is not JSON: a Date object ...
 * ```
 */
export function copyJson(value: unknown, at = 'value'): Json {
  return copy(value, at, 0);
}

/** The outcome of {@link applyOps}. */
export type ApplyOpsResult =
  | {
      readonly ok: true;
      /** The post-image. Shares unchanged nested values with the input: treat both as immutable. */
      readonly data: Data;
      /** One result per op, in order (see {@link Op}). Never aliases the input or the output. */
      readonly results: Json[];
    }
  | { readonly ok: false; readonly detail: string };

class OpFailure extends Error {}

/**
 * Applies `ops` in order to a copy of `data` and returns the post-image with one result per op,
 * or `{ ok: false, detail }` when an op does not fit its field (incr on a string, append on a
 * record, ...) or is malformed (a non-finite `by`, a non-integer index, a non-JSON value).
 * `data` and `ops` are never mutated; values taken from ops are copied.
 *
 * Semantics (those of `backend.ts`):
 * - `set` / `unset` replace / remove the field → null.
 * - `incr` adds `by` (missing field = 0) → the new value. A non-finite result is refused.
 * - `append` / `extend` / `insert` (missing field = []) → the new length. `insert` clamps
 *   like `splice`: negative counts from the end, then clamped to [0, length].
 * - `remove` drops every element deep-equal to `value` → the count (missing field: 0, no change).
 * - `pop` removes the element at `index` (negative from the end) → it, or null (and no change)
 *   for a missing field, an empty array or an index out of range.
 * - `setItem` / `merge` (missing field = {}) → null. `deleteItem` → whether the item existed
 *   (missing field: false, no change).
 *
 * @example
 * ```ts
 * applyOps({ q: [1, 2, 3] }, [{ op: 'pop', field: 'q', index: 0 }]);
 * // { ok: true, data: { q: [2, 3] }, results: [1] }
 * applyOps({ n: 'x' }, [{ op: 'incr', field: 'n', by: 1 }]);
 * // { ok: false, detail: 'op #0 (incr) on field "n": needs a number field, found a string' }
 * ```
 */
export function applyOps(data: Data, ops: readonly Op[]): ApplyOpsResult {
  if (!Array.isArray(ops)) return { ok: false, detail: 'ops must be an array' };
  const out: Data = { ...data };
  // Fields whose array/record value was already copied in this call (ours to mutate in place).
  let owned: Set<string> | undefined;
  const results: Json[] = new Array(ops.length);
  let i = 0;
  let name = '?';
  let field = '?';
  try {
    for (; i < ops.length; i++) {
      const op = ops[i] as Op;
      if (typeof op !== 'object' || op === null) throw new OpFailure('is not an op object');
      name = typeof op.op === 'string' ? op.op : '?';
      if (typeof op.field !== 'string') {
        field = '?';
        throw new OpFailure('needs a string field name');
      }
      field = op.field;
      const cur = own(out, field);
      switch (op.op) {
        case 'set':
          if (op.value === undefined) throw new OpFailure('needs a value (unset removes a field)');
          setOwn(out, field, copy(op.value, 'value', 0));
          (owned ??= new Set()).add(field);
          results[i] = null;
          break;
        case 'unset':
          delete out[field];
          owned?.delete(field);
          results[i] = null;
          break;
        case 'incr': {
          const by: unknown = op.by;
          if (typeof by !== 'number' || !Number.isFinite(by)) {
            throw new OpFailure(`by must be a finite number, got ${describe(by)}`);
          }
          if (cur !== undefined && typeof cur !== 'number') {
            throw new OpFailure(`needs a number field, found ${kindOf(cur)}`);
          }
          const next = (cur ?? 0) + by;
          if (!Number.isFinite(next)) throw new OpFailure(`the result ${next} is not finite`);
          const stored = next === 0 ? 0 : next; // never -0, as in JSON
          setOwn(out, field, stored);
          results[i] = stored;
          break;
        }
        case 'append': {
          if (op.value === undefined) throw new OpFailure('needs a value');
          const v = copy(op.value, 'value', 0);
          const arr = ownArray(out, field, cur, (owned ??= new Set()));
          arr.push(v);
          results[i] = arr.length;
          break;
        }
        case 'extend': {
          if (!Array.isArray(op.values)) throw new OpFailure('values must be an array');
          const vs = copy(op.values, 'values', 0) as Json[];
          const arr = ownArray(out, field, cur, (owned ??= new Set()));
          for (const v of vs) arr.push(v);
          results[i] = arr.length;
          break;
        }
        case 'insert': {
          const index = integer(op.index, 'index');
          if (op.value === undefined) throw new OpFailure('needs a value');
          const v = copy(op.value, 'value', 0);
          const arr = ownArray(out, field, cur, (owned ??= new Set()));
          const at = index < 0 ? Math.max(0, arr.length + index) : Math.min(index, arr.length);
          arr.splice(at, 0, v);
          results[i] = arr.length;
          break;
        }
        case 'remove': {
          if (op.value === undefined) throw new OpFailure('needs a value');
          const v = copy(op.value, 'value', 0);
          if (cur === undefined) {
            results[i] = 0;
            break;
          }
          if (!Array.isArray(cur))
            throw new OpFailure(`needs an array field, found ${kindOf(cur)}`);
          const kept = cur.filter((x) => !deepEqual(x, v));
          const removed = cur.length - kept.length;
          if (removed > 0) {
            setOwn(out, field, kept);
            (owned ??= new Set()).add(field);
          }
          results[i] = removed;
          break;
        }
        case 'pop': {
          const index = op.index === undefined ? -1 : integer(op.index, 'index');
          if (cur === undefined) {
            results[i] = null;
            break;
          }
          if (!Array.isArray(cur))
            throw new OpFailure(`needs an array field, found ${kindOf(cur)}`);
          const at = index < 0 ? cur.length + index : index;
          if (at < 0 || at >= cur.length) {
            results[i] = null;
            break;
          }
          const arr = ownArray(out, field, cur, (owned ??= new Set()));
          const [popped] = arr.splice(at, 1);
          results[i] = copy(popped, 'value', 0);
          break;
        }
        case 'setItem': {
          if (typeof op.item !== 'string') throw new OpFailure('item must be a string');
          if (op.value === undefined) throw new OpFailure('needs a value (deleteItem removes)');
          const v = copy(op.value, 'value', 0);
          setOwn(ownRecord(out, field, cur, (owned ??= new Set())), op.item, v);
          results[i] = null;
          break;
        }
        case 'deleteItem': {
          if (typeof op.item !== 'string') throw new OpFailure('item must be a string');
          if (cur === undefined) {
            results[i] = false;
            break;
          }
          if (!isRecord(cur)) throw new OpFailure(`needs a record field, found ${kindOf(cur)}`);
          if (!Object.hasOwn(cur, op.item)) {
            results[i] = false;
            break;
          }
          const rec = ownRecord(out, field, cur, (owned ??= new Set()));
          delete rec[op.item];
          results[i] = true;
          break;
        }
        case 'merge': {
          const v = copy(op.value, 'value', 0);
          if (!isRecord(v)) throw new OpFailure(`value must be an object, got ${kindOf(v)}`);
          const rec = ownRecord(out, field, cur, (owned ??= new Set()));
          for (const k of Object.keys(v)) setOwn(rec, k, v[k] as Json);
          results[i] = null;
          break;
        }
        default:
          throw new OpFailure(`unknown op ${JSON.stringify(name)}`);
      }
    }
  } catch (err) {
    if (err instanceof OpFailure || err instanceof NotJsonError) {
      return {
        ok: false,
        detail: `op #${i} (${name}) on field ${JSON.stringify(field)}: ${err.message}`,
      };
    }
    throw err;
  }
  return { ok: true, data: out, results };
}

function kindOf(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'a record';
  return `a ${typeof v}`;
}

function integer(n: unknown, what: string): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) {
    throw new OpFailure(`${what} must be an integer, got ${describe(n)}`);
  }
  return n;
}

/** The field's array, copied on first write in this call; a missing field becomes []. */
function ownArray(out: Data, field: string, cur: Json | undefined, owned: Set<string>): Json[] {
  if (cur === undefined) {
    const arr: Json[] = [];
    setOwn(out, field, arr);
    owned.add(field);
    return arr;
  }
  if (!Array.isArray(cur)) throw new OpFailure(`needs an array field, found ${kindOf(cur)}`);
  if (owned.has(field)) return cur;
  const arr = cur.slice();
  setOwn(out, field, arr);
  owned.add(field);
  return arr;
}

/** The field's record, copied on first write in this call; a missing field becomes {}. */
function ownRecord(out: Data, field: string, cur: Json | undefined, owned: Set<string>): Rec {
  if (cur === undefined) {
    const rec: Rec = {};
    setOwn(out, field, rec);
    owned.add(field);
    return rec;
  }
  if (!isRecord(cur)) throw new OpFailure(`needs a record field, found ${kindOf(cur)}`);
  if (owned.has(field)) return cur;
  const rec: Rec = { ...cur };
  setOwn(out, field, rec);
  owned.add(field);
  return rec;
}

const CMP_OPS: ReadonlySet<string> = new Set<CmpOp>(['eq', 'ne', 'lt', 'lte', 'gt', 'gte']);

/**
 * Why `g` is not a well-formed guard, or undefined when it is. Backends refuse a batch holding a
 * malformed guard with reason `invalid` and this detail.
 *
 * @example
 * ```ts
 * guardProblem({ guard: 'cmp', field: 'n', cmp: 'lt', value: 3 }); // undefined
 * guardProblem({ guard: 'cmp', field: 'n', cmp: 'less', value: 3 } as never); // 'unknown comparison "less"'
 * ```
 */
export function guardProblem(g: Guard): string | undefined {
  if (typeof g !== 'object' || g === null) return 'a guard must be an object';
  if (typeof g.field !== 'string') return 'a guard needs a string field name';
  switch (g.guard) {
    case 'cmp':
      if (!CMP_OPS.has(g.cmp)) return `unknown comparison ${JSON.stringify(g.cmp)}`;
      return jsonProblem(g.value);
    case 'contains':
    case 'notContains':
      return jsonProblem(g.value);
    case 'exists':
      return typeof g.value === 'boolean' ? undefined : 'exists needs value true or false';
    default:
      return `unknown guard ${JSON.stringify((g as { guard?: unknown }).guard)}`;
  }
}

function jsonProblem(v: unknown): string | undefined {
  if (v === undefined) return 'the guard needs a value';
  try {
    copy(v, 'value', 0);
    return undefined;
  } catch (err) {
    if (err instanceof NotJsonError) return err.message;
    throw err;
  }
}

function contains(v: Json | undefined, value: Json): boolean {
  if (Array.isArray(v)) {
    for (const x of v) if (deepEqual(x, value)) return true;
    return false;
  }
  if (typeof v === 'string') return typeof value === 'string' && v.includes(value);
  if (isRecord(v)) return typeof value === 'string' && Object.hasOwn(v, value);
  return false;
}

/**
 * Evaluates one guard on a document's data (the state BEFORE a batch's ops), per `backend.ts`:
 * - `cmp`: `eq`/`ne` deep equality; `lt/lte/gt/gte` true only when both sides are numbers. With
 *   `length: true` the left side is the length of a string (UTF-16 code units) or an array, 0 for
 *   a missing field (other types have no length: only `ne` holds). A missing field: only `ne` holds.
 * - `contains`: an array holds a deep-equal element, a record has the key, a string the substring.
 *   A missing field (or any other type) contains nothing. `notContains` is its negation.
 * - `exists`: presence of the field equals `value`.
 * A malformed guard (see {@link guardProblem}) is false.
 *
 * @example
 * ```ts
 * evalGuard({ tags: ['a'] }, { guard: 'cmp', field: 'tags', cmp: 'lt', value: 2, length: true }); // true
 * evalGuard({}, { guard: 'cmp', field: 'n', cmp: 'ne', value: 1 }); // true (missing field)
 * ```
 */
/** The length a `length` comparison sees: of a string or an array; 0 when missing; else none. */
function lengthOf(v: Json | undefined): number | undefined {
  if (v === undefined) return 0;
  return typeof v === 'string' || Array.isArray(v) ? v.length : undefined;
}

export function evalGuard(data: Data, g: Guard): boolean {
  const v = Object.hasOwn(data, g.field) ? data[g.field] : undefined;
  switch (g.guard) {
    case 'exists':
      return (v !== undefined) === g.value;
    case 'contains':
      return contains(v, g.value);
    case 'notContains':
      return !contains(v, g.value);
    case 'cmp': {
      const left = g.length === true ? lengthOf(v) : v;
      if (left === undefined) return g.cmp === 'ne';
      // The right-hand side: a literal, or another field of the same document (its pre-image).
      let right: Json | undefined = g.value;
      if (g.ref !== undefined) {
        const r = Object.hasOwn(data, g.ref.field) ? data[g.ref.field] : undefined;
        right = g.ref.length === true ? lengthOf(r) : r;
        if (right === undefined) return g.cmp === 'ne';
      }
      switch (g.cmp) {
        case 'eq':
          return deepEqual(left, right);
        case 'ne':
          return !deepEqual(left, right);
        case 'lt':
          return typeof left === 'number' && typeof right === 'number' && left < right;
        case 'lte':
          return typeof left === 'number' && typeof right === 'number' && left <= right;
        case 'gt':
          return typeof left === 'number' && typeof right === 'number' && left > right;
        case 'gte':
          return typeof left === 'number' && typeof right === 'number' && left >= right;
        default:
          return false;
      }
    }
    default:
      return false;
  }
}

/**
 * True when every guard holds on `data` (an empty list holds).
 *
 * @example
 * ```ts
 * evalGuards({ n: 3 }, [
 *   { guard: 'exists', field: 'n', value: true },
 *   { guard: 'cmp', field: 'n', cmp: 'lt', value: 10 },
 * ]); // true
 * ```
 */
export function evalGuards(data: Data, guards: readonly Guard[]): boolean {
  return firstFalseGuard(data, guards) === -1;
}

/**
 * The index of the first guard that does not hold on `data`, or -1 when all hold. Backends use it
 * to say which guard refused a batch.
 *
 * @example
 * ```ts
 * firstFalseGuard({ n: 3 }, [{ guard: 'cmp', field: 'n', cmp: 'gt', value: 5 }]); // 0
 * ```
 */
export function firstFalseGuard(data: Data, guards: readonly Guard[]): number {
  for (let i = 0; i < guards.length; i++) {
    if (!evalGuard(data, guards[i] as Guard)) return i;
  }
  return -1;
}

/**
 * A short human description of a guard, for refusal details: `guard #1 (tags length lt 10)`.
 *
 * @example
 * ```ts
 * describeGuard({ guard: 'cmp', field: 'n', cmp: 'lt', value: 3 }); // 'n lt 3'
 * ```
 */
export function describeGuard(g: Guard): string {
  const f = JSON.stringify(g.field);
  switch (g.guard) {
    case 'cmp': {
      const right =
        g.ref === undefined
          ? JSON.stringify(g.value)
          : `${g.ref.length ? 'the length of' : 'field'} ${JSON.stringify(g.ref.field)}`;
      return `${f}${g.length ? ' length' : ''} ${g.cmp} ${right}`;
    }
    case 'exists':
      return g.value ? `${f} exists` : `${f} is absent`;
    default:
      return `${f} ${g.guard} ${JSON.stringify(g.value)}`;
  }
}
