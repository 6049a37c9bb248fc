/**
 * Rate limits (`store.rateLimiter`), identical on every backend: exact sliding windows (replayed:
 * no interval of `windowMs` holds more than `limit` admissions), token buckets, costs and their
 * refusal, concurrent consumers on both clients, `consumeOp` inside `store.apply` (admitted and
 * written together or neither), a client whose clock is ten minutes off admitting exactly the
 * same, and idle keys leaving nothing behind.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it as vitestIt } from 'vitest';
import { z } from 'zod';
import { type RateLimitResult, ValidationError } from '../api.js';
import type { Ctx } from '../harness.js';
import { noHang, rejectsWith, sleep, until } from '../harness.js';

const counter = z.object({ n: z.number().int() });

/** One admitted call: when it was sent and when its answer came (this process's clock). */
interface Span {
  readonly sent: number;
  readonly recv: number;
}

/**
 * The most admissions whose whole [sent, recv] span lies inside one interval of `windowMs`
 * starting at some admission's `sent`: those certainly reached the server within `windowMs` of
 * each other, so an exact sliding window admitted at most `limit` of them.
 */
export function mostInOneWindow(spans: readonly Span[], windowMs: number): number {
  const byStart = [...spans].sort((a, b) => a.sent - b.sent);
  let most = 0;
  for (let i = 0; i < byStart.length; i++) {
    const from = (byStart[i] as Span).sent;
    let n = 0;
    for (let j = i; j < byStart.length; j++) {
      const s = byStart[j] as Span;
      if (s.sent >= from + windowMs) break;
      if (s.recv < from + windowMs) n++;
    }
    if (n > most) most = n;
  }
  return most;
}

/** Runs the skewed child (see fixtures/skewed-limiter.ts) and returns its results. */
async function childConsumes(
  child: { module: string; factory: string; options: object },
  args: object,
): Promise<RateLimitResult[]> {
  const root = fileURLToPath(new URL('../../..', import.meta.url));
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      fileURLToPath(new URL('../fixtures/skewed-limiter.ts', import.meta.url)),
      JSON.stringify({ ...child, ...args }),
    ],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  proc.stdout.on('data', (c) => (out += String(c)));
  proc.stderr.on('data', (c) => (err += String(c)));
  const code = await noHang(
    new Promise<number | null>((resolve) => proc.on('exit', (c) => resolve(c))),
    'skewed child process',
    60_000,
  ).finally(() => proc.kill());
  if (code !== 0) throw new Error(`skewed child exited with ${code}: ${err}${out}`);
  const line = out.trim().split('\n').pop() ?? '';
  return (JSON.parse(line) as { results: RateLimitResult[] }).results;
}

/** Registers the rate-limits section. */
export function rateLimitsSection(ctx: Ctx): void {
  // A backend without rate limits has no expiring documents either (see backend.ts): skipped.
  const it = (name: string, fn: () => unknown) =>
    vitestIt(name, async (t) => {
      if (typeof ctx.backend(0).consume !== 'function') t.skip();
      await fn();
    });
  describe('rate limits', () => {
    it('sliding window: `limit` pass, then refused with when to retry; peek takes nothing; reset', async () => {
      const rl = ctx.client(0).rateLimiter(ctx.name('rl_sw'), { limit: 5, windowMs: 60_000 });
      const seen: RateLimitResult[] = [];
      for (let i = 0; i < 6; i++) seen.push(await rl.consume('k'));
      expect(seen.map((r) => r.allowed)).toEqual([true, true, true, true, true, false]);
      expect(seen.map((r) => r.remaining)).toEqual([4, 3, 2, 1, 0, 0]);
      for (const r of seen.slice(0, 5)) expect(r.retryAfterMs).toBe(0);
      const refused = seen[5] as RateLimitResult;
      expect(refused.retryAfterMs).toBeGreaterThan(0);
      expect(refused.retryAfterMs).toBeLessThanOrEqual(60_000);
      expect(refused.resetMs).toBeGreaterThanOrEqual(refused.retryAfterMs);
      expect(refused.resetMs).toBeLessThanOrEqual(60_000);
      // Another client sees the same key; peek takes nothing.
      const other = ctx.client(1).rateLimiter(rl.name, { limit: 5, windowMs: 60_000 });
      const p = await other.peek('k');
      expect(p).toMatchObject({ allowed: false, remaining: 0 });
      expect((await other.peek('fresh')).remaining).toBe(5);
      expect((await other.peek('fresh')).remaining).toBe(5);
      await other.reset('k');
      expect(await rl.consume('k')).toMatchObject({ allowed: true, remaining: 4 });
    });

    it('token bucket: capacity `limit`, refilled over `windowMs`', async () => {
      const rl = ctx
        .client(0)
        .rateLimiter(ctx.name('rl_tb'), { limit: 2, windowMs: 200, algorithm: 'token-bucket' });
      const a = await rl.consume('k');
      const b = await rl.consume('k');
      expect([a.allowed, b.allowed]).toEqual([true, true]);
      const c = await rl.consume('k');
      expect(c.allowed).toBe(false);
      expect(c.retryAfterMs).toBeGreaterThan(0);
      expect(c.retryAfterMs).toBeLessThanOrEqual(100);
      // Once the time it named has passed, the same call passes (the server's clock refilled it).
      await sleep(c.retryAfterMs + 25);
      expect((await rl.consume('k')).allowed).toBe(true);
    });

    it('a sliding window admits again once the oldest entry left the window', async () => {
      const rl = ctx.client(1).rateLimiter(ctx.name('rl_slide'), { limit: 2, windowMs: 250 });
      expect((await rl.consume('k')).allowed).toBe(true);
      expect((await rl.consume('k')).allowed).toBe(true);
      const r = await rl.consume('k');
      expect(r.allowed).toBe(false);
      await sleep(r.retryAfterMs + 25);
      expect((await rl.consume('k')).allowed).toBe(true);
    });

    it('cost weighs a call; a cost above the limit, or not a whole number, is a ValidationError and takes nothing', async () => {
      const store = ctx.client(0);
      for (const algorithm of ['sliding-window', 'token-bucket'] as const) {
        const rl = store.rateLimiter(ctx.name('rl_cost'), {
          limit: 5,
          windowMs: 60_000,
          algorithm,
        });
        expect(await rl.consume('k', { cost: 3 })).toMatchObject({ allowed: true, remaining: 2 });
        const r = await rl.consume('k', { cost: 3 });
        expect(r).toMatchObject({ allowed: false, remaining: 2 });
        expect(r.retryAfterMs).toBeGreaterThan(0);
        for (const cost of [6, 0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
          await rejectsWith(rl.consume('k', { cost }), ValidationError, 'INVALID');
          expect(() => rl.consumeOp('k', { cost })).toThrow(ValidationError);
        }
        expect((await rl.peek('k')).remaining).toBe(2);
        expect(await rl.consume('k', { cost: 2 })).toMatchObject({ allowed: true, remaining: 0 });
      }
    });

    it('bad limiter options are ValidationErrors', () => {
      const store = ctx.client(0);
      const bad: Array<Record<string, unknown>> = [
        { limit: 0, windowMs: 1000 },
        { limit: -1, windowMs: 1000 },
        { limit: 1.5, windowMs: 1000 },
        { limit: Number.NaN, windowMs: 1000 },
        { limit: 5, windowMs: 0 },
        { limit: 5, windowMs: -10 },
        { limit: 5, windowMs: Number.POSITIVE_INFINITY },
        { limit: 5, windowMs: 1000, algorithm: 'fixed-window' },
      ];
      for (const o of bad) {
        expect(() =>
          store.rateLimiter(
            ctx.name('rl_bad'),
            o as unknown as { limit: number; windowMs: number },
          ),
        ).toThrow(ValidationError);
      }
      expect(() => store.rateLimiter('not a name!', { limit: 1, windowMs: 1 })).toThrow(
        ValidationError,
      );
    });

    it('many concurrent consumers on both clients: exactly `limit` admitted (both algorithms)', async () => {
      for (const algorithm of ['sliding-window', 'token-bucket'] as const) {
        const name = ctx.name('rl_conc');
        // A window so long that a token bucket refills nothing while the test runs.
        const o = { limit: 37, windowMs: 3_600_000, algorithm };
        const limiters = [ctx.client(0).rateLimiter(name, o), ctx.client(1).rateLimiter(name, o)];
        const calls = Array.from({ length: 200 }, (_, i) =>
          (limiters[i % 2] as (typeof limiters)[number]).consume('hot'),
        );
        const results = await noHang(Promise.all(calls), 'concurrent consumes');
        expect(results.filter((r) => r.allowed).length).toBe(37);
        const remaining = results
          .filter((r) => r.allowed)
          .map((r) => r.remaining)
          .sort((a, b) => a - b);
        expect(remaining).toEqual(Array.from({ length: 37 }, (_, i) => i));
      }
    });

    it('exactness replay: no interval of windowMs ever holds more than `limit` admissions', async () => {
      const name = ctx.name('rl_replay');
      const o = { limit: 10, windowMs: 300 };
      const limiters = [ctx.client(0).rateLimiter(name, o), ctx.client(1).rateLimiter(name, o)];
      const admitted: Span[] = [];
      let calls = 0;
      const end = performance.now() + 1_200;
      const worker = async (w: number) => {
        const rl = limiters[w % 2] as (typeof limiters)[number];
        while (performance.now() < end) {
          const sent = performance.now();
          const r = await rl.consume('k');
          const recv = performance.now();
          calls++;
          if (r.allowed) admitted.push({ sent, recv });
        }
      };
      await noHang(Promise.all(Array.from({ length: 8 }, (_, w) => worker(w))), 'replay workers');
      expect(calls).toBeGreaterThan(admitted.length);
      expect(admitted.length).toBeGreaterThanOrEqual(o.limit);
      expect(mostInOneWindow(admitted, o.windowMs)).toBeLessThanOrEqual(o.limit);
    });

    it('consumeOp in store.apply: a refused guard takes no units; a refused admission writes nothing', async () => {
      const store = ctx.client(0);
      const M = store.model(ctx.name('rl_op'), counter);
      const rl = store.rateLimiter(ctx.name('rl_op'), { limit: 1, windowMs: 60_000 });
      await M.create('d', { n: 0 });
      const guarded = await store.apply([
        rl.consumeOp('k'),
        M.ops(
          'd',
          (d) => d.n.incr(1),
          (d) => d.n.lt(0),
        ),
      ]);
      expect(guarded).toEqual({ applied: false, refusedBy: { index: 1, guard: 0 } });
      expect((await rl.peek('k')).remaining).toBe(1);
      expect((await M.get('d')).data.n).toBe(0);
      // A refused create (the key exists) takes no units either.
      await expect(
        store.apply([rl.consumeOp('k'), M.createOp('d', { n: 9 })]),
      ).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
      expect((await rl.peek('k')).remaining).toBe(1);
      // Admitted and written together.
      expect(await store.apply([M.ops('d', (d) => d.n.incr(1)), rl.consumeOp('k')])).toEqual({
        applied: true,
      });
      expect((await M.get('d')).data.n).toBe(1);
      expect((await rl.peek('k')).remaining).toBe(0);
      // Refused admission: nothing written.
      const limited = await ctx
        .client(1)
        .apply([M.ops('d', (d) => d.n.incr(1)), M.createOp('e', { n: 1 }), rl.consumeOp('k')]);
      expect(limited.applied).toBe(false);
      expect(limited.limitedBy?.index).toBe(2);
      expect(limited.limitedBy?.retryAfterMs).toBeGreaterThan(0);
      expect((await M.get('d')).data.n).toBe(1);
      expect(await M.find('e')).toBeUndefined();
    });

    it('consumeOp under contention on both clients: units taken == batches written', async () => {
      const name = ctx.name('rl_opc');
      const model = ctx.name('rl_opc');
      const o = { limit: 10, windowMs: 3_600_000 };
      const sides = [0, 1].map((i) => {
        const s = ctx.client(i);
        return { s, M: s.model(model, counter), rl: s.rateLimiter(name, o) };
      });
      await (sides[0] as (typeof sides)[number]).M.create('c', { n: 0 });
      const results = await noHang(
        Promise.all(
          Array.from({ length: 40 }, (_, i) => {
            const { s, M, rl } = sides[i % 2] as (typeof sides)[number];
            return s.apply([rl.consumeOp('u'), M.ops('c', (d) => d.n.incr(1))]);
          }),
        ),
        'consumeOp batches',
      );
      const applied = results.filter((r) => r.applied).length;
      expect(applied).toBe(10);
      expect(results.filter((r) => r.limitedBy !== undefined).length).toBe(30);
      expect((await (sides[1] as (typeof sides)[number]).M.get('c')).data.n).toBe(10);
    });

    it('a client whose clock is ten minutes behind admits exactly the same', async () => {
      const name = ctx.name('rl_skew');
      const o = { limit: 5, windowMs: 60_000 };
      const rl = ctx.client(0).rateLimiter(name, o);
      const skewMs = -600_000;
      let skewed: RateLimitResult[];
      const child = ctx.target().child;
      if (child) {
        skewed = await childConsumes(child, {
          skewMs,
          name,
          ...o,
          algorithm: 'sliding-window',
          key: 'k',
          n: 5,
        });
      } else {
        // The data space lives in this process: skew this process's clock while it consumes.
        const realNow = Date.now;
        Date.now = () => realNow() + skewMs;
        try {
          skewed = [];
          for (let i = 0; i < 5; i++) skewed.push(await rl.consume('k'));
        } finally {
          Date.now = realNow;
        }
      }
      expect(skewed.map((r) => r.allowed)).toEqual([true, true, true, true, true]);
      expect(skewed.map((r) => r.remaining)).toEqual([4, 3, 2, 1, 0]);
      // The skewed client's admissions are inside this window, on the server's clock.
      const now = await rl.consume('k');
      expect(now.allowed).toBe(false);
      expect(now.retryAfterMs).toBeGreaterThan(0);
      expect(now.retryAfterMs).toBeLessThanOrEqual(60_000);
    });

    it('idle keys leave nothing behind once their window has passed', async () => {
      const store = ctx.client(1);
      const name = ctx.name('rl_idle');
      const sw = store.rateLimiter(name, { limit: 3, windowMs: 150 });
      const tb = store.rateLimiter(name, {
        limit: 3,
        windowMs: 150,
        algorithm: 'token-bucket',
      });
      for (let i = 0; i < 10; i++) {
        await sw.consume(`k${i}`, { cost: 2 });
        await tb.consume(`k${i}`);
      }
      await sw.peek('never-consumed');
      const state = ctx.target().limitState;
      if (!state) throw new Error('this runner gives no limitState(name)');
      expect(await state(name)).toBeGreaterThan(0);
      await until(
        async () => (await state(name)) === 0,
        'every idle rate-limit key reclaimed',
        20_000,
      );
      expect((await sw.peek('k0')).remaining).toBe(3);
    });
  });
}
