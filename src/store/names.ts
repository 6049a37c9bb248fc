/**
 * Lock names in messages: how every error and event names a lock, the same on every backend
 * (`account "ann", "bob" (action "audit")`).
 *
 * @example
 * ```ts
 * lockName('account', ['ann'], 'default'); // 'account "ann"'
 * ```
 */

/** The action `Model.lock` uses when none is given. */
export const DEFAULT_ACTION = 'default';

/**
 * The display name of a lock on `keys` of `model` with `action`.
 *
 * @example
 * ```ts
 * lockName('account', ['a', 'b'], 'audit'); // 'account "a", "b" (action "audit")'
 * ```
 */
export function lockName(model: string, keys: readonly string[], action: string): string {
  const k = keys.map((x) => JSON.stringify(x)).join(', ');
  return `${model} ${k}${action === DEFAULT_ACTION ? '' : ` (action ${JSON.stringify(action)})`}`;
}

/** The display name of one document (`account "ann"`). */
export function docName(model: string, key: string): string {
  return `${model} ${JSON.stringify(key)}`;
}

/**
 * The display name of a named lock (`mutex "payments"`, `semaphore "api" (5 permits)`).
 *
 * @example
 * ```ts
 * permitName('semaphore', 'api'); // 'semaphore "api"'
 * ```
 */
export function permitName(kind: string, name: string): string {
  return `${kind} ${JSON.stringify(name)}`;
}
