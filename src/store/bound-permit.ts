/**
 * A named-lock permit behind the boundary (`boundary.ts`): `extend(ms)` checked, and the permit
 * leaves the in-process wait-for graph when released or when the backend closes.
 *
 * @example
 * ```ts
 * const permit = await bounded(memory()).acquirePermit(request); // a BoundPermit
 * ```
 */
import { ValidationError } from '../errors.js';
import type { TrackedLease } from '../sync/tracked-leases.js';
import type { PermitLease } from './backend.js';

/** A permit behind the boundary: leaves the wait-for graph when released or closed. */
export class BoundPermit implements PermitLease {
  readonly #inner: PermitLease;
  #tracked: TrackedLease | undefined;
  readonly #live: Set<{ untrack(): void }> | undefined;

  constructor(inner: PermitLease, tracked?: TrackedLease, live?: Set<{ untrack(): void }>) {
    this.#inner = inner;
    this.#tracked = tracked;
    this.#live = live;
  }
  get fence(): number {
    return this.#inner.fence;
  }
  get lost(): boolean {
    return this.#inner.lost;
  }
  get signal(): AbortSignal {
    return this.#inner.signal;
  }
  extend(ms?: number): Promise<void> {
    if (ms !== undefined && !(typeof ms === 'number' && Number.isFinite(ms) && ms > 0)) {
      return Promise.reject(
        new ValidationError('permit.extend', [
          { message: `ms must be a positive number of milliseconds, got ${String(ms)}` },
        ]),
      );
    }
    return this.#inner.extend(ms);
  }
  /** @internal leaves the wait-for graph (release, or the backend's close). Idempotent. */
  untrack(): void {
    const t = this.#tracked;
    if (t === undefined) return;
    this.#tracked = undefined;
    this.#live?.delete(this);
    t.released();
  }
  release(): Promise<boolean> {
    if (this.#tracked === undefined) return this.#inner.release();
    return this.#inner.release().finally(() => this.untrack());
  }
}
