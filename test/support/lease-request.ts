/**
 * The lease request tests hand to `backend.acquire` directly: exclusive, renewing, default
 * action, waiting, with `extra` overriding any of it.
 *
 * @example
 * ```ts
 * await backend.acquire(leaseRequest('account', ['ann'], { leaseMs: 150, renew: false }));
 * ```
 */
import type { LeaseRequest } from '../../src/store/backend.js';

/** A request for `keys` of `model` (keys in canonical order, as the boundary requires). */
export function leaseRequest(
  model: string,
  keys: readonly string[],
  extra: Partial<LeaseRequest> = {},
): LeaseRequest {
  return {
    model,
    keys,
    action: 'default',
    mode: 'exclusive',
    leaseMs: 30_000,
    renew: true,
    nowait: false,
    skipLocked: false,
    ...extra,
  };
}
