/**
 * The error every call of a closed memory backend gets. (Input checks live in the boundary,
 * `src/store/boundary.ts`, in front of every backend.)
 *
 * @example
 * ```ts
 * if (closed) throw closedError();
 * ```
 */
import { BackendError } from '../../errors.js';

/**
 * The error every call gets once the backend is closed.
 *
 * @example
 * ```ts
 * await backend.close();
 * await backend.read([]); // rejects with closedError()
 * ```
 */
export function closedError(): BackendError {
  return new BackendError('the memory backend is closed; create a new store to keep working');
}
