/**
 * The lock callback's context and what a lock call promises: `ctx.signal` aborts the moment the
 * lease is known lost, `ctx.fences` are the fencing tokens per key in the order given, a lock
 * resolves only if its lease held until `fn` ended (a holder that wrote nothing included), and
 * multi-key drafts are a tuple.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { LeaseLostError } from '../api.js';
import type { Ctx } from '../harness.js';
import { deferred, noHang, rejectsWith, sleep } from '../harness.js';

const doc = z.object({ n: z.number().int() });

/** Registers the lock-context section. */
export function lockContextSection(ctx: Ctx): void {
  const both = (prefix: string) => {
    const name = ctx.name(prefix);
    return [ctx.client(0).model(name, doc), ctx.client(1).model(name, doc)] as const;
  };

  describe('the lock callback context', () => {
    it('ctx.fences: one per key in the order given, equal to the lease fences; ctx.fence is the first', async () => {
      const M = both('ctx_fences');
      await M[0].create('a', { n: 0 });
      await M[0].create('b', { n: 0 });
      const seen: { fences: readonly number[]; fence: number; aborted: boolean }[] = [];
      await M[0].lock(['b', 'a'], (_d, c) => {
        seen.push({ fences: c.fences, fence: c.fence, aborted: c.signal.aborted });
      });
      await M[1].lock('a', (_d, c) => {
        seen.push({ fences: c.fences, fence: c.fence, aborted: c.signal.aborted });
      });
      const [multi, single] = seen;
      expect(multi?.fences).toHaveLength(2);
      expect(multi?.fence).toBe(multi?.fences[0]);
      expect(multi?.aborted).toBe(false);
      expect(single?.fences).toHaveLength(1);
      // a later exclusive holder of "a" has a larger fence than the earlier one
      expect(single?.fence).toBeGreaterThan(multi?.fences[1] as number);
    });

    it('ctx.signal aborts with LeaseLostError when the lease expires, and the call rejects with LeaseLostError', async () => {
      const M = both('ctx_signal');
      await M[0].create('k', { n: 0 });
      let reason: unknown;
      const call = M[0].lock(
        'k',
        async (_d, c) => {
          await new Promise<void>((resolve) => {
            if (c.signal.aborted) resolve();
            c.signal.addEventListener('abort', () => resolve(), { once: true });
          });
          reason = c.signal.reason;
        },
        { leaseMs: 150, renew: false },
      );
      await rejectsWith(noHang(call, 'the expiring holder'), LeaseLostError, 'LEASE_LOST');
      expect(reason).toBeInstanceOf(LeaseLostError);
      expect((await M[1].get('k')).data.n).toBe(0);
    });

    it('a holder that wrote nothing but outlived its lease gets LeaseLostError, not a normal return', async () => {
      const M = both('ctx_readonly');
      await M[0].create('k', { n: 0 });
      await rejectsWith(
        M[0].lock(
          'k',
          async () => {
            await sleep(350);
            return 'read';
          },
          { leaseMs: 150, renew: false },
        ),
        LeaseLostError,
        'LEASE_LOST',
      );
      // a holder whose lease held returns its result
      expect(await M[1].lock('k', () => 'ok')).toBe('ok');
    });

    it('a read-only holder whose key another client took after its lease expired gets LeaseLostError', async () => {
      const M = both('ctx_taken');
      await M[0].create('k', { n: 0 });
      const inside = deferred();
      const resume = deferred();
      const stale = M[0].lock(
        'k',
        async (d) => {
          inside.resolve();
          await resume.promise;
          return d.n; // decided on what it read, writes nothing
        },
        { leaseMs: 150, renew: false },
      );
      stale.catch(() => {});
      await inside.promise;
      // the other client waits for the key, gets it once the stale lease expired, and writes
      await noHang(
        M[1].lock('k', (d) => {
          d.n = 1;
        }),
        'the next holder',
      );
      resume.resolve();
      await rejectsWith(noHang(stale, 'the stale holder'), LeaseLostError, 'LEASE_LOST');
      expect((await M[1].get('k')).data.n).toBe(1);
    });

    it('a renewing holder keeps its signal quiet past leaseMs and returns normally', async () => {
      const M = both('ctx_renew');
      await M[0].create('k', { n: 0 });
      const out = await M[0].lock(
        'k',
        async (d, c) => {
          await sleep(400);
          d.n = 1;
          return c.signal.aborted;
        },
        { leaseMs: 150 },
      );
      expect(out).toBe(false);
      expect((await M[1].get('k')).data.n).toBe(1);
    });

    it('multi-key drafts are a tuple of the keys’ length (compiles under noUncheckedIndexedAccess)', async () => {
      const M = both('ctx_tuple');
      await M[0].create('a', { n: 10 });
      await M[0].create('b', { n: 0 });
      await M[0].lock(['a', 'b'], ([a, b]) => {
        // no `!`: a and b are typed as drafts, not as `T | undefined`
        a.n -= 3;
        b.n += 3;
      });
      expect((await M[1].get('a')).data.n).toBe(7);
      expect((await M[1].get('b')).data.n).toBe(3);
    });
  });
}
