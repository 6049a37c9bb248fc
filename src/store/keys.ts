/**
 * Names that reach storage: model names become table names and key segments, document keys are
 * user data. Both are checked here, once, so every backend sees the same rules.
 */
import { ValidationError } from '../errors.js';

const MODEL_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
// Printable keys below the surrogate range (no NUL, no lone surrogates): the common case.
const SIMPLE_KEY = /^[\u0020-\ud7ff]+$/;

/** Longest key, in UTF-8 bytes (PostgreSQL indexes and Redis keys both hold it comfortably). */
export const MAX_KEY_BYTES = 2048;

/**
 * Throws {@link ValidationError} unless `name` is a valid model name: a letter or underscore
 * followed by up to 62 letters, digits or underscores.
 *
 * @example
 * ```ts
 * checkModelName('account'); // ok
 * checkModelName('drop table'); // throws ValidationError
 * ```
 */
export function checkModelName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !MODEL_NAME.test(name)) {
    throw new ValidationError(`model name ${JSON.stringify(name)}`, [
      { message: 'use 1-63 letters, digits or underscores, starting with a letter or underscore' },
    ]);
  }
}

/**
 * Throws {@link ValidationError} unless `key` is a usable document key: a non-empty, well-formed
 * string of at most {@link MAX_KEY_BYTES} UTF-8 bytes without NUL characters. Any other character
 * (`:`, `{`, `*`, quotes, unicode) is fine and stored exactly.
 *
 * @example
 * ```ts
 * checkKey('user:42'); // ok
 * checkKey(''); // throws ValidationError
 * ```
 */
export function checkKey(key: unknown): asserts key is string {
  let problem: string | undefined;
  // The common case, checked cheaply: a short string of characters below U+D800 and above NUL.
  if (typeof key === 'string' && key.length > 0 && key.length <= 64 && SIMPLE_KEY.test(key)) return;
  if (typeof key !== 'string') problem = `a key must be a string, got ${typeof key}`;
  else if (key.length === 0) problem = 'a key must not be empty';
  else if (key.includes('\u0000')) problem = 'a key must not contain NUL characters';
  else if (!key.isWellFormed()) problem = 'a key must be well-formed unicode (no lone surrogates)';
  // A UTF-16 code unit takes at most 3 UTF-8 bytes: short keys need no byte count.
  else if (key.length * 3 > MAX_KEY_BYTES && Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES)
    problem = `a key must be at most ${MAX_KEY_BYTES} UTF-8 bytes`;
  if (problem) {
    const shown = typeof key === 'string' ? JSON.stringify(key.slice(0, 40)) : String(key);
    throw new ValidationError(`key ${shown}`, [{ message: problem }]);
  }
}
