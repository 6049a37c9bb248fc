/**
 * Named permit pools on Redis (`acquirePermit`, `permitsHeld`): the one primitive behind
 * `store.mutex`, `store.rwlock` and `store.semaphore`. A pool is a FIFO weighted semaphore kept in
 * four keys of one hash tag (see permit-lib.lua): holders with their expiry on the server's clock,
 * a wait queue, the waiters' entries (refreshed every few seconds, so a dead waiter's lapses) and
 * a fence counter.
 *
 * Waiting: a request that cannot be granted at once queues itself in the same script call, then
 * waits for its wake-up: a release (or a waiter leaving, or anyone's call that finds room freed by
 * an expiry) grants the units to the head of the queue inside its own script and tells the waiter
 * so with its fence, by pub/sub, or in that script's reply when the waiter is in the same process
 * (which then starts before the releasing caller resumes). No polling: the only timer is the
 * fallback at the earliest holder's expiry (a holder that died says nothing), capped at half the
 * waiter entry's life, which is also the waiter's heartbeat. After a reconnect every waiter looks
 * again (wake-ups published meanwhile are lost; "already yours" answers a lost hand-off).
 * A waiter that times out, is aborted or fails leaves the queue at once (giving back units handed
 * to it meanwhile) and that same call serves whoever it was blocking.
 */
import { LockTimeoutError, ValidationError } from '../../errors.js';
import type { PermitKind, PermitLease, PermitRequest } from '../../store/backend.js';
import { permitName } from '../../store/names.js';
import type { KeyLayout, PermitKeys } from './keys.js';
import { RedisPermit } from './permit-lease.js';
import type { Renewals } from './renewals.js';
import type { ScriptName } from './scripts.js';
import type { Grant, LocalWakeups, Wakeups } from './wakeups.js';
import { nextId } from './wire.js';

/** What the permit pools need from their backend. */
export interface PermitHost {
  readonly layout: KeyLayout;
  readonly wakeups: Wakeups;
  /** This backend's wake-up channel. */
  readonly channel: string;
  readonly instance: string;
  readonly renewals: Renewals;
  /** A queued waiter's entry lives this long unless refreshed. */
  readonly waiterTtlMs: number;
  /** Runs a script (driver failures become BackendError). */
  script(name: ScriptName, keys: readonly string[], args: (string | number)[]): Promise<unknown>;
  /**
   * Runs a script whose reply may carry wake-ups for this process's waiters; if it fails, every
   * waiter looks again (the lost reply may have held a grant for one of them).
   */
  serving(name: ScriptName, keys: readonly string[], args: (string | number)[]): Promise<string>;
  /** Starts the waiters a script's reply served (before the caller resumes). */
  handOver(wakeups: LocalWakeups | undefined): Promise<void> | undefined;
  /**
   * Registers `cancel` with close(), which calls it and then waits for the returned `left` to
   * be called (once the waiter has left its queue).
   */
  cancellable(cancel: (error: unknown) => void): { left(): void };
}

type Attempt = Grant | { ok: 0; retry: number; permits?: undefined } | { ok: 0; permits: number };

/**
 * The permit pools of one Redis backend.
 *
 * @example
 * ```ts
 * const pools = new RedisPermits(host);
 * const permit = await pools.acquire({ kind: 'mutex', name: 'orders', permits: 1, weight: 1,
 *   leaseMs: 30_000, renew: true, nowait: false });
 * await permit?.release();
 * ```
 */
export class RedisPermits {
  readonly #host: PermitHost;
  /** Held permits (close() marks them lost: nobody renews them any more). */
  readonly #held = new Set<RedisPermit>();

  constructor(host: PermitHost) {
    this.#host = host;
  }

  /** Units of `(kind, name)` held by live leases (server clock). */
  async held(kind: PermitKind, name: string): Promise<number> {
    const keys = this.#host.layout.permit(kind, name);
    return Number(await this.#host.script('permit-held', [keys.holders], []));
  }

  /** Takes `weight` units (see PermitRequest in src/store/backend.ts). */
  async acquire(r: PermitRequest): Promise<PermitLease | undefined> {
    const host = this.#host;
    const keys = host.layout.permit(r.kind, r.name);
    const owner = nextId(host.instance);
    const leaseMs = Math.ceil(r.leaseMs);
    const name = () => permitName(r.kind, r.name);
    // When the last attempt was sent: a grant it got started on the server after this moment.
    let sentAt = 0;
    const attempt = (wid: string, channel: string): Promise<Attempt> => {
      sentAt = performance.now();
      return host
        .script('permit-acquire', keys.all, [
          owner,
          wid,
          r.weight,
          r.permits,
          leaseMs,
          host.waiterTtlMs,
          channel,
        ])
        .then((raw) => JSON.parse(raw as string) as Attempt);
    };
    const mismatch = (permits: number) =>
      new ValidationError(`${name()} request`, [
        {
          message: `this pool is in use with permits ${permits}, not ${r.permits}: ask every holder and waiter of one name for the same permits (or wait until it is idle)`,
        },
      ]);

    if (r.nowait) {
      const g = await attempt('', '').catch(async (err: unknown) => {
        // The reply was lost: the script may have granted us the units. Give them back rather
        // than leave them held until leaseMs (nothing is queued with nowait).
        await this.#leave(keys, '', owner).catch(() => {});
        throw err;
      });
      if (g.ok === 1) return this.#make(r, keys, owner, name, g, sentAt);
      if (g.permits !== undefined) throw mismatch(g.permits);
      return undefined;
    }

    const subscribing = host.wakeups.subscribe();
    if (subscribing) await subscribing;
    const wid = nextId(host.instance, 'w');
    const channel = host.channel;
    const started = performance.now();
    let woken = false;
    let granted: Grant | undefined;
    /** When a hand-off's grant arrived (the script that granted it ran a little earlier). */
    let grantArrived = 0;
    let notify: (() => void) | undefined;
    const state: { cancelled?: { error: unknown } } = {};
    const stop = (): void => {
      if (state.cancelled) throw state.cancelled.error;
    };
    const wake = (grant?: Grant) => {
      if (grant && !granted) {
        granted = grant;
        grantArrived = performance.now();
      }
      woken = true;
      notify?.();
    };
    const cancel = (error: unknown) => {
      state.cancelled ??= { error };
      notify?.();
    };
    host.wakeups.waiters.set(wid, wake);
    const registration = host.cancellable(cancel);
    const onAbort = () => cancel(r.signal?.reason);
    r.signal?.addEventListener('abort', onAbort, { once: true });
    const deadline =
      r.timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => cancel(new LockTimeoutError(name(), performance.now() - started)),
            r.timeoutMs,
          );
    let queued = false;
    try {
      for (;;) {
        stop();
        woken = false;
        const handed = granted;
        // From the first attempt on, a failure must leave: an attempt whose reply was lost may
        // have queued us, or granted us the units (leave gives both back).
        if (!handed) queued = true;
        const g = handed ?? (await attempt(wid, channel));
        if (g.ok === 1) {
          const permit = this.#make(
            r,
            keys,
            owner,
            name,
            g,
            handed ? grantArrived : granted ? Math.min(grantArrived, sentAt) : sentAt,
          );
          try {
            stop();
          } catch (err) {
            await permit.release();
            throw err;
          }
          return permit;
        }
        if (g.permits !== undefined) throw mismatch(g.permits);
        stop();
        if (woken || granted) continue;
        const ttl = host.waiterTtlMs;
        const fallbackMs = Math.min(g.retry >= 0 ? g.retry + 2 : ttl, ttl / 2);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, fallbackMs);
          notify = () => {
            clearTimeout(t);
            resolve();
          };
        });
        notify = undefined;
      }
    } catch (err) {
      if (queued) {
        await this.#leave(keys, wid, owner).catch(() => {
          /* the entry lapses on its own after waiterTtlMs; handed units after leaseMs */
        });
      }
      throw err;
    } finally {
      host.wakeups.waiters.delete(wid);
      registration.left();
      if (deadline) clearTimeout(deadline);
      r.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Leaves the queue (and gives back units handed to `owner`), serving whoever that admits. */
  async #leave(keys: PermitKeys, wid: string, owner: string): Promise<void> {
    const raw = await this.#host.serving('permit-leave', keys.all, [
      wid,
      owner,
      this.#host.channel,
    ]);
    const handing = this.#host.handOver(JSON.parse(raw) as LocalWakeups);
    if (handing) await handing;
  }

  #make(
    r: PermitRequest,
    keys: PermitKeys,
    owner: string,
    name: () => string,
    g: Grant,
    grantedAt: number,
  ): RedisPermit {
    const permit = new RedisPermit(
      {
        renewals: this.#host.renewals,
        renew: (ms, how) =>
          this.#host
            .script('permit-renew', [keys.holders], [owner, ms, how])
            .then((ok) => ok === 1),
        forget: () => this.#held.delete(permit),
        release: async () => {
          const raw = await this.#host.serving('permit-release', keys.all, [
            owner,
            this.#host.channel,
          ]);
          const handing = this.#host.handOver(JSON.parse(raw.slice(1)) as LocalWakeups);
          if (handing) await handing;
          return raw.charCodeAt(0) === 49; // "1"
        },
      },
      {
        request: r,
        lockName: name,
        fence: g.fences[0] as number,
        grantedAt,
      },
    );
    this.#held.add(permit);
    return permit;
  }

  /** The backend is closing: every held permit is lost (nobody renews it; it lapses in Redis). */
  close(): void {
    for (const p of [...this.#held]) p._closed();
    this.#held.clear();
  }
}
