/**
 * The invariant checkers, one per scenario. Pure functions over what the run acknowledged and
 * what storage holds at the end, so they can be unit-tested with hand-made violations.
 * Each returns the number of violations (0 = the invariant held) and a one-line note.
 */

/** A checker's verdict. */
export interface Verdict {
  /** 0 when the invariant held. */
  readonly violations: number;
  /** What was found, in one line. */
  readonly note: string;
}

/**
 * Counter: the final value equals the number of increments that were acknowledged (no lost
 * update, no phantom one). Violations = |final - acknowledged|.
 *
 * @example
 * ```ts
 * checkCounter({ acknowledged: 100, final: 73 }); // { violations: 27, note: '27 lost updates ...' }
 * ```
 */
export function checkCounter(input: { acknowledged: number; final: number }): Verdict {
  const diff = input.final - input.acknowledged;
  if (diff === 0) return { violations: 0, note: `counter = ${input.final} as acknowledged` };
  return {
    violations: Math.abs(diff),
    note:
      diff < 0
        ? `${-diff} lost updates (counter ${input.final}, ${input.acknowledged} increments acknowledged)`
        : `${diff} phantom updates (counter ${input.final}, ${input.acknowledged} acknowledged)`,
  };
}

/** One acknowledged bank transfer. */
export interface Transfer {
  readonly from: string;
  readonly to: string;
  readonly amount: number;
}

/**
 * Bank: every account holds exactly its opening balance plus the acknowledged transfers (so the
 * total is conserved and no money appeared or vanished), and no balance is negative.
 * Violations = accounts whose balance is wrong + accounts below zero.
 *
 * @example
 * ```ts
 * checkBank({ opening: { a: 10, b: 0 }, transfers: [{ from: 'a', to: 'b', amount: 5 }],
 *             final: { a: 5, b: 5 } }); // { violations: 0, ... }
 * ```
 */
export function checkBank(input: {
  opening: Readonly<Record<string, number>>;
  transfers: readonly Transfer[];
  final: Readonly<Record<string, number>>;
}): Verdict {
  const expected = new Map(Object.entries(input.opening));
  for (const t of input.transfers) {
    expected.set(t.from, (expected.get(t.from) ?? 0) - t.amount);
    expected.set(t.to, (expected.get(t.to) ?? 0) + t.amount);
  }
  const keys = new Set([...expected.keys(), ...Object.keys(input.final)]);
  let wrong = 0;
  let negative = 0;
  let openingTotal = 0;
  let finalTotal = 0;
  for (const v of Object.values(input.opening)) openingTotal += v;
  for (const k of keys) {
    const actual = input.final[k];
    if (actual === undefined || actual !== expected.get(k)) wrong++;
    if (actual !== undefined) {
      finalTotal += actual;
      if (actual < 0) negative++;
    }
  }
  const violations = wrong + negative;
  if (violations === 0) {
    return {
      violations,
      note: `total ${finalTotal} conserved over ${input.transfers.length} transfers`,
    };
  }
  const drift = finalTotal - openingTotal;
  return {
    violations,
    note: `${wrong} accounts wrong, ${negative} negative; total ${openingTotal} -> ${finalTotal} (${drift >= 0 ? '+' : ''}${drift})`,
  };
}

/**
 * Campaign: never more applicants than `max`, nobody twice, and nobody whose application was
 * acknowledged missing. Violations = overflow + duplicates + lost acknowledged applicants.
 *
 * @example
 * ```ts
 * checkCampaign({ max: 2, accepted: ['u1', 'u2'], final: ['u1', 'u2', 'u2'] }); // 2 violations
 * ```
 */
export function checkCampaign(input: {
  max: number;
  accepted: readonly string[];
  final: readonly string[];
}): Verdict {
  const overflow = Math.max(0, input.final.length - input.max);
  const unique = new Set(input.final);
  const duplicates = input.final.length - unique.size;
  const lost = new Set(input.accepted.filter((u) => !unique.has(u))).size;
  const violations = overflow + duplicates + lost;
  if (violations === 0) {
    return { violations, note: `${input.final.length}/${input.max} seats, no duplicate` };
  }
  return {
    violations,
    note: `${input.final.length}/${input.max} seats: ${overflow} over the maximum, ${duplicates} duplicates, ${lost} acknowledged applicants missing`,
  };
}

/**
 * Queue: every task is processed exactly once, or is still waiting in the queue (when the run
 * stopped early). Violations = extra processings + tasks lost (neither processed nor waiting) +
 * tasks both processed and still waiting.
 *
 * @example
 * ```ts
 * checkQueue({ tasks: ['t1', 't2'], processed: ['t1', 't1'], remaining: [] }); // 2 violations
 * ```
 */
export function checkQueue(input: {
  tasks: readonly string[];
  processed: readonly string[];
  remaining: readonly string[];
}): Verdict {
  const counts = new Map<string, number>();
  for (const t of input.processed) counts.set(t, (counts.get(t) ?? 0) + 1);
  const waiting = new Set(input.remaining);
  let twice = 0;
  let lost = 0;
  let both = 0;
  for (const t of input.tasks) {
    const n = counts.get(t) ?? 0;
    if (n > 1) twice += n - 1;
    if (n === 0 && !waiting.has(t)) lost++;
    if (n > 0 && waiting.has(t)) both++;
  }
  const unknown = input.processed.filter((t) => !input.tasks.includes(t)).length;
  const violations = twice + lost + both + unknown;
  if (violations === 0) {
    return {
      violations,
      note: `${input.processed.length} processed once each, ${input.remaining.length} still queued`,
    };
  }
  return {
    violations,
    note: `${twice} duplicate processings, ${lost} tasks lost, ${both} processed but still queued${unknown ? `, ${unknown} unknown` : ''}`,
  };
}

/**
 * Learner: a prediction saw consistent weights when every layer it read carried the same
 * training generation. Returns true for a torn read (half-updated weights).
 *
 * @example
 * ```ts
 * isTorn([[3, 3], [3, 3]]); // false
 * isTorn([[4, 4], [3, 3]]); // true: layer 0 is from step 4, layer 1 from step 3
 * ```
 */
export function isTorn(layers: readonly (readonly number[])[]): boolean {
  const first = layers[0]?.[0];
  return layers.some((layer) => layer.some((w) => w !== first));
}

/** Learner verdict: torn predictions are the violations. */
export function checkLearner(input: { predictions: number; torn: number }): Verdict {
  if (input.torn === 0) {
    return { violations: 0, note: `${input.predictions} predictions, all on consistent weights` };
  }
  return {
    violations: input.torn,
    note: `${input.torn} of ${input.predictions} predictions saw half-updated weights`,
  };
}

/**
 * Payments: never more than `limit` calls in flight at the external API at once. Violations =
 * calls that started while `limit` others were already in flight.
 *
 * @example
 * ```ts
 * checkPayments({ limit: 5, overLimit: 3, peak: 7 }); // { violations: 3, note: '3 calls ...' }
 * ```
 */
export function checkPayments(input: { limit: number; overLimit: number; peak: number }): Verdict {
  if (input.overLimit === 0) {
    return {
      violations: 0,
      note: `at most ${input.peak} of ${input.limit} calls in flight at once`,
    };
  }
  return {
    violations: input.overLimit,
    note: `${input.overLimit} calls started over the limit of ${input.limit} (peak ${input.peak} in flight)`,
  };
}

/** One admission as the client saw it: sent at `start`, answered at `end` (ms, one clock). */
export interface Admission {
  readonly start: number;
  readonly end: number;
}

/**
 * Rate limit: in no interval of `windowMs` are more than `limit` calls admitted. Only certain
 * excess counts: admissions whose whole request-reply spans fit inside one window (so their
 * true, server-side instants do too). Violations = the largest such excess.
 *
 * @example
 * ```ts
 * checkRateLimit({ limit: 1, windowMs: 100, admitted: [{ start: 0, end: 1 }, { start: 2, end: 3 }] });
 * // { violations: 1, note: '2 admitted within 100 ms (limit 1): 1 too many' }
 * ```
 */
export function checkRateLimit(input: {
  limit: number;
  windowMs: number;
  admitted: readonly Admission[];
}): Verdict {
  const a = [...input.admitted].sort((x, y) => x.start - y.start);
  let most = 0;
  for (let i = 0; i < a.length; i++) {
    const from = (a[i] as Admission).start;
    let n = 0;
    for (let j = i; j < a.length && (a[j] as Admission).start < from + input.windowMs; j++) {
      if ((a[j] as Admission).end < from + input.windowMs) n += 1;
    }
    most = Math.max(most, n);
  }
  const excess = Math.max(0, most - input.limit);
  if (excess === 0) {
    return {
      violations: 0,
      note: `at most ${most} admitted in any ${input.windowMs} ms (limit ${input.limit}; ${a.length} admitted in all)`,
    };
  }
  return {
    violations: excess,
    note: `${most} admitted within ${input.windowMs} ms (limit ${input.limit}): ${excess} too many`,
  };
}
