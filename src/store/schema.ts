/**
 * Standard Schema (https://standardschema.dev) support: any validator that implements the
 * `~standard` interface (zod, valibot, arktype, ...) can describe a model. Lockstep has no run
 * time dependency on any of them; the interface below is the published spec's shape, declared here
 * so that types flow from the user's schema into `Doc<T>`, drafts and the ops builder.
 */
import { ValidationError } from '../errors.js';
import type { CheckIssue, Data } from './backend.js';
import { nonJson } from './checks.js';

/** The Standard Schema v1 interface (structural: any compliant library matches it). */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => StandardResult<Output> | Promise<StandardResult<Output>>;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

/** The result of a Standard Schema validation. */
export type StandardResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | { readonly issues: readonly CheckIssue[] };

/** The output type of a schema: what a model's documents hold. */
export type InferOutput<S extends StandardSchemaV1> = NonNullable<
  S['~standard']['types']
>['output'];

/** The input type of a schema: what `create`/`put` accept. */
export type InferInput<S extends StandardSchemaV1> = NonNullable<S['~standard']['types']>['input'];

/**
 * Validates `value` against `schema`, returning the schema's output or the issues. Synchronous
 * when the schema is synchronous (the common case), so callers can stay on a fast path.
 */
export function validateWith<T>(
  schema: StandardSchemaV1<unknown, T>,
  value: unknown,
): StandardResult<T> | Promise<StandardResult<T>> {
  return schema['~standard'].validate(value);
}

/**
 * Validates a whole document and returns it as stored data, or throws {@link ValidationError}.
 *
 * @example
 * ```ts
 * const data = await parseDoc(schema, 'account "a1"', { balance: 10 });
 * ```
 */
export async function parseDoc<T>(
  schema: StandardSchemaV1<unknown, T>,
  what: string,
  value: unknown,
): Promise<Data> {
  return parseDocNow(schema, what, value);
}

/**
 * {@link parseDoc} without a promise when the schema validates synchronously (zod, valibot and
 * arktype do): hot paths await only what is a promise.
 *
 * @example
 * ```ts
 * const r = parseDocNow(schema, 'account "a1"', { balance: 10 });
 * const data = r instanceof Promise ? await r : r;
 * ```
 */
export function parseDocNow<T>(
  schema: StandardSchemaV1<unknown, T>,
  what: string,
  value: unknown,
): Data | Promise<Data> {
  const result = validateWith(schema, value);
  if (result instanceof Promise) {
    return result.then((r) => checkedData(what, value, r));
  }
  return checkedData(what, value, result);
}

function checkedData<T>(what: string, input: unknown, result: StandardResult<T>): Data {
  if (result.issues) throw new ValidationError(what, result.issues);
  // JSON first: a value that contains itself is refused before anything walks it.
  assertPlainData(what, result.value);
  const dropped = droppedField(input, result.value, []);
  if (dropped) throw new ValidationError(what, [dropped]);
  return result.value as Data;
}

/**
 * The first field the schema silently dropped: present in `input` (not undefined) but absent
 * from the schema's `output`, looked for in plain objects and in arrays of equal length. A
 * stripping schema (zod's default object) accepts unknown fields and drops them; Lockstep refuses
 * them instead, so that nothing a caller wrote disappears without a word. A schema that keeps
 * unknown fields (`z.looseObject`, `.passthrough()`) keeps accepting them.
 *
 * @example
 * ```ts
 * droppedField({ a: 1, bogus: 2 }, { a: 1 }, []); // { message: 'unknown field "bogus" ...', path: ['bogus'] }
 * ```
 */
export function droppedField(
  input: unknown,
  output: unknown,
  path: PropertyKey[],
): CheckIssue | undefined {
  const at = droppedAt(input, output);
  if (at === undefined) return undefined;
  const full = [...path, ...at.reverse()];
  return {
    message: `unknown field ${JSON.stringify(String(full[full.length - 1]))}: it is not in the model's schema, so it would be dropped; nothing was written`,
    path: full,
  };
}

/**
 * {@link droppedField} on the top level only: the check of a post-image whose new values are all
 * primitives (`incr`, a number or a string `set`, a string `append`...): what lies below the top
 * level came from the stored document, which was checked whole when it was written.
 *
 * @example
 * ```ts
 * droppedTopField({ n: 1, bogus: 2 }, { n: 1 }); // the issue for "bogus"
 * ```
 */
export function droppedTopField(input: Data, output: unknown): CheckIssue | undefined {
  if (typeof output !== 'object' || output === null) return undefined;
  for (const k in input) {
    if (!Object.hasOwn(input, k) || input[k] === undefined) continue;
    if (!Object.hasOwn(output, k)) return droppedField({ [k]: input[k] }, {}, []);
  }
  return undefined;
}

/**
 * The path (innermost first) of the first dropped field, or undefined. Allocates nothing on the
 * way down: it runs on every post-image check, and a path is only built for a refusal.
 */
function droppedAt(input: unknown, output: unknown): PropertyKey[] | undefined {
  if (
    typeof input !== 'object' ||
    input === null ||
    typeof output !== 'object' ||
    output === null
  ) {
    return undefined;
  }
  if (Array.isArray(input)) {
    if (!Array.isArray(output) || output.length !== input.length) return undefined;
    for (let i = 0; i < input.length; i++) {
      const v: unknown = input[i];
      if (typeof v !== 'object' || v === null) continue;
      const at = droppedAt(v, output[i]);
      if (at !== undefined) {
        at.push(i);
        return at;
      }
    }
    return undefined;
  }
  if (Array.isArray(output)) return undefined;
  const inp = input as Record<string, unknown>;
  const out = output as Record<string, unknown>;
  for (const k in inp) {
    if (!Object.hasOwn(inp, k)) continue;
    const v = inp[k];
    if (v === undefined) continue;
    if (!Object.hasOwn(out, k)) return [k];
    if (typeof v !== 'object' || v === null) continue;
    const at = droppedAt(v, out[k]);
    if (at !== undefined) {
      at.push(k);
      return at;
    }
  }
  return undefined;
}

/** Turns a schema into the backend's post-image check (issues or undefined). */
export function postCheck<T>(
  schema: StandardSchemaV1<unknown, T>,
  deep = true,
): (data: Data) => readonly CheckIssue[] | undefined | Promise<readonly CheckIssue[] | undefined> {
  const issues = (data: Data, r: StandardResult<T>): readonly CheckIssue[] | undefined => {
    if (r.issues) return r.issues;
    const dropped = deep ? droppedField(data, r.value, []) : droppedTopField(data, r.value);
    return dropped ? [dropped] : undefined;
  };
  return (data) => {
    const r = validateWith(schema, data);
    if (r instanceof Promise) return r.then((x) => issues(data, x));
    return issues(data, r);
  };
}

/** A model's documents must be plain JSON objects (schemas that output Dates or Maps are refused). */
export function assertPlainData(what: string, value: unknown): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ValidationError(what, [{ message: 'a document must be an object of fields' }]);
  }
  const bad = nonJson(value);
  if (bad) throw new ValidationError(what, [{ message: bad.message, path: bad.path }]);
}
