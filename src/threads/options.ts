/**
 * Input checks of `lockstep/threads`: acquire options (`timeoutMs`, `signal`), weights, counts
 * and names. Bad input throws a {@link ValidationError} (code `INVALID`) that says what is wrong,
 * before anything is taken or queued.
 *
 * @example
 * ```ts
 * import { Mutex } from 'lockstep/threads';
 * await new Mutex().acquire({ timeoutMs: -1 }); // rejects: ValidationError (INVALID)
 * ```
 */
import type { ValidationError } from '../errors.js';
import { describeValue, invalid as invalidInput } from '../sync/permit.js';

// The acquire options and the description of bad values are src/sync's: one rule for both.
export { describeValue, type ParsedOptions, parseOptions } from '../sync/permit.js';

/** A ValidationError about one input of `what` (as src/sync words it). @internal */
export function invalid(what: string, message: string): ValidationError {
  return invalidInput(what, [], message);
}

/** Throws unless `n` is an integer in [1, max]. @internal */
export function checkCount(n: unknown, max: number, what: string, field: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > max) {
    throw invalid(what, `${field} must be an integer from 1 to ${max}, got ${describeValue(n)}`);
  }
  return n;
}

/** Throws unless `fn` is a function. @internal */
export function checkFunction(fn: unknown, what: string): void {
  if (typeof fn !== 'function') {
    throw invalid(what, `expected a function to run, got ${describeValue(fn)}`);
  }
}

/** Reads `{ name? }` (and checks it is an object); returns the name or undefined. @internal */
export function nameOption(o: unknown, what: string): string | undefined {
  if (o === undefined) return undefined;
  if (o === null || typeof o !== 'object') {
    throw invalid(what, `options must be an object, got ${describeValue(o)}`);
  }
  const { name } = o as { name?: unknown };
  if (name !== undefined && typeof name !== 'string') {
    throw invalid(what, `name must be a string, got ${describeValue(name)}`);
  }
  return name;
}
