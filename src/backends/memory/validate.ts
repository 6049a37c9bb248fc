/**
 * Input checks of the memory backend: refs, write batches and lease requests are validated
 * before anything is touched, so bad input gets a clear `ValidationError` and changes nothing.
 *
 * @example
 * ```ts
 * checkWrites([{ kind: 'patch', model: 'counter', key: 'c1', ops: [] }], 'write'); // ok
 * ```
 */
import { BackendError, ValidationError } from '../../errors.js';
import type { DocRef, DocWrite, LeaseRequest } from '../../store/backend.js';
import { checkKey, checkModelName, MAX_KEY_BYTES } from '../../store/keys.js';

/** Keys this short always fit MAX_KEY_BYTES (a UTF-16 unit is at most 3 UTF-8 bytes). */
const SHORT_KEY = Math.floor(MAX_KEY_BYTES / 3);

/** Model names already validated (bounded: names are few in practice). */
const goodModels = new Set<string>();

/** Validation of a ref: cheap checks for the common case, the store's rules for the rest. */
export function checkName(model: string, key: string): void {
  if (!goodModels.has(model)) {
    checkModelName(model);
    if (goodModels.size < 10_000) goodModels.add(model);
  }
  if (
    typeof key !== 'string' ||
    key.length === 0 ||
    key.length > SHORT_KEY ||
    key.includes('\u0000') ||
    !key.isWellFormed()
  ) {
    checkKey(key);
  }
}

/** Throws ValidationError unless `ref` is a valid `{ model, key }`. */
export function checkRef(ref: DocRef, where: string): void {
  if (typeof ref !== 'object' || ref === null) {
    throw new ValidationError(where, [{ message: 'expected { model, key }' }]);
  }
  checkName(ref.model, ref.key);
}

/** Throws ValidationError unless `writes` is an array of well-formed writes (shape only). */
export function checkWrites(writes: readonly DocWrite[], where: string): void {
  if (!Array.isArray(writes)) {
    throw new ValidationError(where, [{ message: 'writes must be an array of DocWrite' }]);
  }
  for (let i = 0; i < writes.length; i++) {
    const w = writes[i] as DocWrite;
    // Inline checkRef: the `where` text is only built for an error.
    if (typeof w !== 'object' || w === null) checkRef(w, `${where} write #${i}`);
    checkName(w.model, w.key);
    const kind: string = w.kind;
    if (kind !== 'patch' && kind !== 'create' && kind !== 'put' && kind !== 'delete') {
      throw new ValidationError(`${where} write #${i}`, [
        {
          message: `unknown kind ${JSON.stringify(kind as unknown)} (patch, create, put or delete)`,
        },
      ]);
    }
    if (w.kind === 'patch' && w.check !== undefined && typeof w.check !== 'function') {
      throw new ValidationError(`${where} write #${i}`, [{ message: 'check must be a function' }]);
    }
  }
}

function bad(message: string): ValidationError {
  return new ValidationError('lease request', [{ message }]);
}

/** The request itself when it is well-formed; ValidationError otherwise. */
export function checkRequest(r: LeaseRequest): LeaseRequest {
  if (typeof r !== 'object' || r === null) throw bad('expected a LeaseRequest object');
  if (!Array.isArray(r.keys) || r.keys.length === 0) throw bad('keys must be a non-empty array');
  for (const k of r.keys) checkName(r.model, k);
  if (r.keys.length > 1 && new Set(r.keys).size !== r.keys.length) {
    throw bad('keys must be distinct');
  }
  if (typeof r.action !== 'string') throw bad('action must be a string');
  if (r.mode !== 'exclusive' && r.mode !== 'shared') {
    throw bad(`mode must be "exclusive" or "shared", got ${JSON.stringify(r.mode)}`);
  }
  if (typeof r.leaseMs !== 'number' || !(r.leaseMs > 0)) {
    throw bad(`leaseMs must be a positive number, got ${String(r.leaseMs)}`);
  }
  return r;
}

/** The error every call gets once the backend is closed. */
export function closedError(): BackendError {
  return new BackendError('the memory backend is closed; create a new store to keep working');
}
