/**
 * Standard Schema (https://standardschema.dev) support: any validator that implements the
 * `~standard` interface (zod, valibot, arktype, ...) can describe a model. Lockstep has no run
 * time dependency on any of them; the interface below is the published spec's shape, declared here
 * so that types flow from the user's schema into `Doc<T>`, drafts and the ops builder.
 */
import { ValidationError } from '../errors.js';
import type { CheckIssue, Data } from './backend.js';

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
    return result.then((r) => checkedData(what, r));
  }
  return checkedData(what, result);
}

function checkedData<T>(what: string, result: StandardResult<T>): Data {
  if (result.issues) throw new ValidationError(what, result.issues);
  assertPlainData(what, result.value);
  return result.value as Data;
}

/** Turns a schema into the backend's post-image check (issues or undefined). */
export function postCheck<T>(
  schema: StandardSchemaV1<unknown, T>,
): (data: Data) => readonly CheckIssue[] | undefined | Promise<readonly CheckIssue[] | undefined> {
  return (data) => {
    const r = validateWith(schema, data);
    if (r instanceof Promise) return r.then((x) => x.issues);
    return r.issues;
  };
}

/** A model's documents must be plain JSON objects (schemas that output Dates or Maps are refused). */
export function assertPlainData(what: string, value: unknown): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ValidationError(what, [{ message: 'a document must be an object of fields' }]);
  }
  const bad = findNonJson(value, []);
  if (bad) throw new ValidationError(what, [{ message: bad.message, path: bad.path }]);
}

function findNonJson(
  v: unknown,
  path: PropertyKey[],
): { message: string; path: PropertyKey[] } | undefined {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(v)
        ? undefined
        : { message: `${v} cannot be stored (numbers must be finite)`, path };
    case 'object': {
      if (v === null) return undefined;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          const bad = findNonJson(v[i], [...path, i]);
          if (bad) return bad;
        }
        return undefined;
      }
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) {
        return {
          message: `a ${proto?.constructor?.name ?? 'non-plain object'} cannot be stored; documents hold JSON values (use strings or numbers for dates)`,
          path,
        };
      }
      for (const [k, x] of Object.entries(v)) {
        if (x === undefined) continue;
        const bad = findNonJson(x, [...path, k]);
        if (bad) return bad;
      }
      return undefined;
    }
    case 'undefined':
      return undefined;
    default:
      return { message: `a ${typeof v} cannot be stored; documents hold JSON values`, path };
  }
}
