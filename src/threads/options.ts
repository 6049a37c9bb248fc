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
import { ValidationError } from '../errors.js';

/** Validated acquire options. @internal */
export interface ParsedOptions {
  timeoutMs: number | undefined;
  signal: AbortSignal | undefined;
}

/** setTimeout's largest delay; longer timeouts mean "no timeout". */
const MAX_TIMER_MS = 2_147_483_647;

/** A ValidationError about one input of `what`. @internal */
export function invalid(what: string, message: string): ValidationError {
  return new ValidationError(what, [{ message }]);
}

/** A short description of a bad value for error messages. @internal */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v == null) return String(v);
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : typeof v;
}

/** Checks `{ timeoutMs?, signal? }`; throws a ValidationError naming `what`. @internal */
export function parseOptions(o: unknown, what: string): ParsedOptions {
  if (o === null || typeof o !== 'object') {
    throw invalid(what, `options must be an object, got ${describeValue(o)}`);
  }
  const { timeoutMs, signal } = o as { timeoutMs?: unknown; signal?: unknown };
  if (timeoutMs !== undefined) {
    if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) {
      throw invalid(
        what,
        `timeoutMs must be a number of milliseconds >= 0 (or Infinity to wait forever), got ${describeValue(timeoutMs)}`,
      );
    }
  }
  if (signal !== undefined) {
    const s = signal as AbortSignal | null;
    if (
      s === null ||
      typeof s !== 'object' ||
      typeof s.addEventListener !== 'function' ||
      typeof s.aborted !== 'boolean'
    ) {
      throw invalid(what, `signal must be an AbortSignal, got ${describeValue(signal)}`);
    }
  }
  return {
    timeoutMs:
      timeoutMs === undefined || (timeoutMs as number) > MAX_TIMER_MS
        ? undefined
        : (timeoutMs as number),
    signal: signal as AbortSignal | undefined,
  };
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
