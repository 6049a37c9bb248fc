/**
 * Tiny hand-written Standard Schemas for the lab's documents, so the lab has no run time
 * dependency on a validation library (users bring zod, valibot or arktype for their own models).
 */
import type { StandardSchemaV1 } from '../store/schema.js';

/** What a field must be. */
export type FieldKind = 'int' | 'number' | 'string' | 'string[]';

type KindType<K extends FieldKind> = K extends 'int' | 'number'
  ? number
  : K extends 'string'
    ? string
    : string[];

/** The document type described by a field map. */
export type Shape<F extends Record<string, FieldKind>> = {
  -readonly [K in keyof F]: KindType<F[K]>;
};

function fits(kind: FieldKind, value: unknown): boolean {
  switch (kind) {
    case 'int':
      return Number.isInteger(value);
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    case 'string':
      return typeof value === 'string';
    case 'string[]':
      return Array.isArray(value) && value.every((v) => typeof v === 'string');
  }
}

/**
 * A Standard Schema for an object whose fields are all required and of the given kinds.
 *
 * @example
 * ```ts
 * const Counter = store.model('counter', shape({ n: 'int' })); // Model<{ n: number }>
 * ```
 */
export function shape<const F extends Record<string, FieldKind>>(
  fields: F,
): StandardSchemaV1<Shape<F>, Shape<F>> {
  return {
    '~standard': {
      version: 1,
      vendor: 'lockstep-lab',
      validate: (value: unknown) => {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) {
          return { issues: [{ message: 'expected an object' }] };
        }
        const obj = value as Record<string, unknown>;
        const issues = Object.entries(fields)
          .filter(([name, kind]) => !fits(kind, obj[name]))
          .map(([name, kind]) => ({ message: `expected ${kind}`, path: [name] }));
        if (issues.length > 0) return { issues };
        return { value: value as Shape<F> };
      },
    },
  };
}
