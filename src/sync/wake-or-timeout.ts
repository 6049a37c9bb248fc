/**
 * Waiting for a wake-up without polling: resolves when `wake` settles or after `ms` (a fallback
 * timer for what sends no wake-up, such as a silent expiry), and rejects with `signal.reason`
 * when `signal` aborts. Leaves no timer or listener behind, whichever comes first. Used by the
 * backends' claim and lease loops.
 *
 * @example
 * ```ts
 * await wakeOrTimeout(wakeups.next(), nextExpiryMs, request.signal);
 * ```
 */

/** setTimeout's largest delay; longer waits are capped to it (about 24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Resolves when `wake` settles (fulfilled or rejected) or `ms` passed (`Infinity`: no timer);
 * rejects with `signal.reason` if `signal` aborts first (at once if already aborted).
 *
 * @example
 * ```ts
 * await wakeOrTimeout(woken, 250, signal); // woken, or 250 ms passed
 * ```
 */
export function wakeOrTimeout(
  wake: Promise<unknown>,
  ms: number,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = Number.isFinite(ms)
      ? setTimeout(done, Math.min(MAX_TIMER_MS, Math.max(0, ms)))
      : undefined;
    function cleanup() {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    function onAbort() {
      cleanup();
      reject(signal?.reason);
    }
    function done() {
      cleanup();
      resolve();
    }
    wake.then(done, done);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}
