/**
 * Rate limits on Redis: `consume.lua` evaluates consumptions on the server's clock (TIME) and
 * runs the batch in the same script, so admission and writes are one atomic step; this module
 * builds the call (keys, envelope) and reads the admissions out of the reply. `unlimit.lua`
 * forgets a key. Idle keys expire by themselves (PEXPIRE `windowMs` after a sliding window's
 * latest entry, or when a token bucket is full again): nothing is left once a window has passed.
 */
import { ValidationError } from '../../errors.js';
import type {
  Admission,
  ConsumeResult,
  Consumption,
  LimitRef,
  WriteResult,
} from '../../store/backend.js';
import { clusterSlot, type KeyLayout } from './keys.js';
import type { ScriptName } from './scripts.js';
import { type Reply, readReply } from './wire.js';
import type { LockWait, Plan, WritePath } from './writes.js';

/** What the rate-limit calls use of the Redis backend. */
export interface LimitHost {
  readonly layout: KeyLayout;
  readonly cluster: boolean;
  readonly writes: WritePath;
  script(
    name: ScriptName,
    keys: string[],
    args: (string | number)[],
    writes: boolean,
  ): Promise<unknown>;
}

/** The reply a refused admission stands in for (runBatch's result is then dropped). */
const LIMITED: Reply = { ok: 0, reason: 'guard', index: 0 };

/**
 * Consumptions and a batch in one `consume.lua` call (through the write path, so checked patches
 * and lease waits behave as in `write`).
 *
 * @example
 * ```ts
 * const r = await consume(host, consumptions, plan, () => new WriteWait(...));
 * ```
 */
export async function consume(
  host: LimitHost,
  consumptions: readonly Consumption[],
  plan: Plan,
  waitFor: () => LockWait,
): Promise<ConsumeResult> {
  const limitKeys: string[] = [];
  const args: Array<string | number> = [];
  let oneSlot = true;
  let slot: number | undefined;
  const same = (tag: string) => {
    if (!host.cluster) return;
    const s = clusterSlot(tag);
    if (slot === undefined) slot = s;
    else if (s !== slot) oneSlot = false;
  };
  for (const d of plan.docs) same(d.tag);
  for (const c of consumptions) {
    const k = host.layout.limit(c.name, c.algorithm, c.key);
    for (const key of k.keys) limitKeys.push(key);
    same(k.tag);
    args.push(
      c.algorithm === 'token-bucket' ? 'b' : 's',
      c.limit,
      c.windowMs,
      c.cost,
      c.record ? '1' : '0',
    );
  }
  if (!oneSlot) {
    throw new ValidationError('consume', [
      {
        message:
          'the rate limits and documents of this batch live in different Redis Cluster slots, so one ' +
          'atomic script cannot touch them all; co-locate them with redis({ cluster: true, hashTag }) ' +
          '(a limit key is tagged hashTag(limiterName, key))',
      },
    ]);
  }
  let admissions: Admission[] = [];
  let limited = false;
  /** Reads "<admissions>\n<batch reply>"; the batch reply, or undefined when limited. */
  const read = (raw: unknown): string | undefined => {
    const text = String(raw);
    const nl = text.indexOf('\n');
    const rows = readReply<Array<[number, number, number, number]>>(text.slice(0, nl), 'consume');
    admissions = rows.map(([allowed, remaining, retryAfterMs, resetMs]) => ({
      allowed: allowed === 1,
      remaining,
      retryAfterMs,
      resetMs,
    }));
    const rest = text.slice(nl + 1);
    limited = rest === 'L';
    return limited ? undefined : rest;
  };
  if (plan.keys.length === 0) {
    // No batch: one script call, no envelope.
    read(await host.script('consume', limitKeys, ['', 0, ...args], true));
    return limited ? { admissions } : { admissions, write: NO_WRITES };
  }
  const write: WriteResult = await host.writes.runBatch(
    plan,
    async (keys, env) => {
      const raw = await host.script(
        'consume',
        [...keys, ...limitKeys],
        [JSON.stringify(env), keys.length, ...args],
        true,
      );
      // "locked": the batch waits for a lease; nothing was evaluated.
      if (typeof raw !== 'string' || !raw.includes('\n')) return readReply<Reply>(raw, 'consume');
      const rest = read(raw);
      return rest === undefined ? LIMITED : readReply<Reply>(rest, 'consume');
    },
    waitFor,
  );
  return limited ? { admissions } : { admissions, write };
}

/** The outcome of an empty batch. */
const NO_WRITES: WriteResult = { applied: true, docs: [], results: [] };

/**
 * Forgets one rate-limit key.
 *
 * @example
 * ```ts
 * await resetLimit(host, { name: 'api', algorithm: 'token-bucket', key: 'ann' });
 * ```
 */
export async function resetLimit(host: LimitHost, ref: LimitRef): Promise<void> {
  const k = host.layout.limit(ref.name, ref.algorithm, ref.key);
  await host.script('unlimit', [...k.keys], [], true);
}
