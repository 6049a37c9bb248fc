/**
 * @internal One named pool of a store, as the three named locks use it: its identity (kind,
 * name, permits), its lease settings, and the two ways in — `take` (acquire / tryAcquire) and
 * `run` (hold while a callback runs, resolving only if the permit held until it ended).
 *
 * @example
 * ```ts
 * const pool = new PermitPool(bounded(backend), 'mutex', 'nightly', 1, { leaseMs: 30_000 });
 * const out = await pool.run(1, (ctx) => work(ctx.fence));
 * ```
 */
import { LeaseLostError, ValidationError } from '../errors.js';
import { runAsTask } from '../sync/deadlock.js';
import { type AcquireOptions, checkFunction, checkOptionsObject } from '../sync/permit.js';
import type { PermitKind } from './backend.js';
import type { Bounded } from './boundary.js';
import { checkPermitName } from './checks.js';
import { HeldPermit, type LeasePermit } from './lease-permit.js';
import { type LockContext, lockContext } from './lock-context.js';
import { permitName } from './names.js';

/** The lease a named lock takes when none is given (as `Model.lock`). */
export const DEFAULT_PERMIT_LEASE_MS = 30_000;

/**
 * Options of `store.mutex`, `store.rwlock` and `store.semaphore`.
 *
 * @example
 * ```ts
 * store.mutex('nightly', { leaseMs: 10_000 });
 * ```
 */
export interface NamedLockOptions {
  /**
   * How long a permit outlives a holder that stopped renewing it (crashed, stalled, cut off),
   * on the server's clock. Default 30 000 ms.
   */
  leaseMs?: number;
  /** Renew the lease while held (default true). With false it ends `leaseMs` after the grant. */
  renew?: boolean;
}

/** @internal See the file header. */
export class PermitPool {
  readonly #backend: Bounded;
  readonly kind: PermitKind;
  readonly name: string;
  readonly permits: number;
  readonly #leaseMs: number;
  readonly #renew: boolean;
  readonly label: string;

  constructor(
    backend: Bounded,
    kind: PermitKind,
    name: string,
    permits: number,
    options: NamedLockOptions | undefined,
  ) {
    const what = `store.${kind}`;
    checkPermitName(kind, name);
    this.label = permitName(kind, name);
    if (options !== undefined) checkOptionsObject(options, what, 'nothing was created');
    const leaseMs = options?.leaseMs ?? DEFAULT_PERMIT_LEASE_MS;
    if (typeof leaseMs !== 'number' || !(Number.isFinite(leaseMs) && leaseMs > 0)) {
      throw new ValidationError(this.label, [
        { message: `leaseMs must be a positive number of milliseconds, got ${String(leaseMs)}` },
      ]);
    }
    const renew = options?.renew ?? true;
    if (typeof renew !== 'boolean') {
      throw new ValidationError(this.label, [{ message: 'renew must be true or false' }]);
    }
    this.#backend = backend;
    this.kind = kind;
    this.name = name;
    this.permits = permits;
    this.#leaseMs = leaseMs;
    this.#renew = renew;
  }

  /** Waits for (or, with `nowait`, tries for) `weight` units. */
  take(weight: number, options: AcquireOptions | undefined, nowait: boolean, what: string) {
    try {
      if (options !== undefined) checkOptionsObject(options, what);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#backend
      .acquirePermit({
        kind: this.kind,
        name: this.name,
        permits: this.permits,
        weight,
        leaseMs: this.#leaseMs,
        renew: this.#renew,
        timeoutMs: options?.timeoutMs,
        signal: options?.signal,
        nowait,
      })
      .then((lease) => lease && new HeldPermit(lease));
  }

  /** Units held right now (live leases, server clock). */
  held(): Promise<number> {
    return this.#backend.permitsHeld(this.kind, this.name);
  }

  /**
   * Runs `fn` holding `weight` units; resolves `fn`'s result only if the permit held until it
   * ended (else LeaseLostError, even when `fn` succeeded: it acted without the lock at the end).
   * `fn`'s own error wins over a release problem. One task for deadlock detection.
   */
  run<T>(
    weight: number,
    fn: (ctx: LockContext) => T | Promise<T>,
    options: AcquireOptions | undefined,
    what: string,
  ): Promise<T> {
    try {
      checkFunction(fn, what);
    } catch (err) {
      return Promise.reject(err);
    }
    const go = async (): Promise<T> => {
      const permit = (await this.take(weight, options, false, what)) as HeldPermit;
      let out: T;
      try {
        out = await fn(lockContext(permit, [permit.fence]));
      } catch (err) {
        await permit.end().catch(() => false);
        throw err;
      }
      if (!(await permit.end())) {
        // The callback ran: whatever it wrote outside the store was written, but not
        // necessarily under the lock at its end. (A release whose reply was lost counts here
        // too: nothing confirms the permit still held.)
        throw new LeaseLostError(
          this.label,
          'it expired, or its connection was lost, before the callback ended, or its release could not be confirmed',
          'the callback ran to its end, but may not have held the lock throughout: check what it wrote (its fence tells the systems it wrote to)',
        );
      }
      return out;
    };
    return this.#backend.supports.inProcessDeadlocks ? runAsTask(go) : go();
  }
}

export type { LeasePermit };
