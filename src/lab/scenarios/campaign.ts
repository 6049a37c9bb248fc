/**
 * `campaign`: users apply to a campaign with a maximum number of participants, and some click
 * twice — the oversold campaign.
 *
 * - unsafe: read the campaign, check "not full and not already in", await the I/O, append: every
 *   task that checked before the last seat went sees room, so the campaign overflows, and a
 *   double click gets in twice.
 * - lock: the check and the append under one lease.
 * - optimistic: the check and the append in `Model.update` (compare-and-set on version, retried).
 * - atomic: one `Model.apply` that appends guarded by `length < max` and `notContains(user)`,
 *   evaluated on the server in the same step as the write (a plain read before it only saves
 *   the I/O when the campaign is visibly full; the guards decide).
 * - constraint: uniqueness does all the work. One application document per (campaign, user)
 *   created with `create` (a second click gets `AlreadyExistsError`), then a seat document
 *   `seat-0` .. `seat-(max-1)` created with `create` (there are only `max` seat keys, so there can
 *   never be more than `max` participants); a user who finds every seat taken withdraws their
 *   application.
 */
import { AlreadyExistsError, ConflictError } from '../../index.js';
import { checkCampaign } from '../checks.js';
import { drive, driveOptions, type OpResult, outcome } from '../runner.js';
import { shape } from '../schema.js';
import type { LabContext, Scenario, Strategy, StrategyOutcome } from '../types.js';
import { mapConcurrent, sleep } from '../util.js';

const KEY = 'launch';
const campaignShape = shape({ applicants: 'string[]' });
const seatShape = shape({ user: 'string' });

/**
 * The campaign's maximum for a run of `ops` applications (small, so it fills up early).
 *
 * @example
 * ```ts
 * campaignMax(400); // 20
 * ```
 */
export function campaignMax(ops: number): number {
  return Math.min(20, Math.max(2, Math.floor(ops / 5)));
}

/** Application i comes from user floor(i / 2): every user clicks twice, back to back. */
function userOf(i: number): string {
  return `user-${Math.floor(i / 2)}`;
}

function campaignModel(ctx: LabContext, name: string) {
  return ctx.store.model(`campaign_${name}`, campaignShape);
}
type CampaignModel = ReturnType<typeof campaignModel>;

interface CampaignRun {
  readonly ctx: LabContext;
  readonly Campaign: CampaignModel;
  readonly max: number;
  /** Users whose application was acknowledged as accepted. */
  readonly accepted: string[];
}

type Apply1 = (run: CampaignRun, user: string) => Promise<OpResult>;

function strategy(name: string, safe: boolean, description: string, apply: Apply1): Strategy {
  return {
    name,
    safe,
    description,
    async run(ctx: LabContext): Promise<StrategyOutcome> {
      const Campaign = campaignModel(ctx, name);
      await Campaign.put(KEY, { applicants: [] });
      const state: CampaignRun = { ctx, Campaign, max: campaignMax(ctx.ops), accepted: [] };
      const run = await drive(driveOptions(ctx), (i) => apply(state, userOf(i)));
      const final = (await Campaign.get(KEY)).data.applicants;
      return outcome(run, checkCampaign({ max: state.max, accepted: state.accepted, final }));
    },
  };
}

const unsafe: Apply1 = async ({ ctx, Campaign, max, accepted }, user) => {
  const c = await Campaign.get(KEY);
  if (c.data.applicants.length >= max || c.data.applicants.includes(user)) return undefined;
  await sleep(ctx.ioMs);
  await Campaign.apply(KEY, (x) => x.applicants.append(user));
  accepted.push(user);
  return undefined;
};

const lock: Apply1 = async ({ ctx, Campaign, max, accepted }, user) => {
  const ok = await Campaign.lock(KEY, async (c) => {
    if (c.applicants.length >= max || c.applicants.includes(user)) return false;
    await sleep(ctx.ioMs);
    c.applicants.push(user);
    return true;
  });
  if (ok) accepted.push(user);
  return undefined;
};

const optimistic: Apply1 = async ({ ctx, Campaign, max, accepted }, user) => {
  try {
    const ok = await Campaign.update(
      KEY,
      async (c) => {
        if (c.applicants.length >= max || c.applicants.includes(user)) return false;
        await sleep(ctx.ioMs);
        c.applicants.push(user);
        return true;
      },
      { retries: 500 },
    );
    if (ok) accepted.push(user);
    return undefined;
  } catch (err) {
    if (err instanceof ConflictError) return 'skipped';
    throw err;
  }
};

const atomic: Apply1 = async ({ ctx, Campaign, max, accepted }, user) => {
  // A plain read first, as a hint only: skip the I/O when the campaign is visibly full. The
  // guards below are what make it correct.
  const hint = await Campaign.get(KEY);
  if (hint.data.applicants.length >= max || hint.data.applicants.includes(user)) return undefined;
  await sleep(ctx.ioMs);
  const r = await Campaign.apply(KEY, (c) => c.applicants.append(user), {
    when: (c) => [c.applicants.length.lt(max), c.applicants.notContains(user)],
  });
  if (r.applied) accepted.push(user);
  return undefined;
};

/** Seat keys are `seat-0` .. `seat-(max-1)`. */
function seatKey(i: number): string {
  return `seat-${i}`;
}

const constraintStrategy: Strategy = {
  name: 'constraint',
  safe: true,
  description: 'create() one application per user and one of max seat documents',
  async run(ctx: LabContext): Promise<StrategyOutcome> {
    const Application = ctx.store.model('campaign_application', seatShape);
    const Seat = ctx.store.model('campaign_seat', seatShape);
    const max = campaignMax(ctx.ops);
    const accepted: string[] = [];
    // Seats are only ever taken, never given back, so "the lowest seat that may be free" only
    // moves up: a shared hint saves trying seats known to be taken. Correctness comes from create.
    let firstFree = 0;
    const run = await drive(driveOptions(ctx), async (i) => {
      const user = userOf(i);
      if (firstFree >= max) return undefined; // visibly full (a hint: create decides)
      await sleep(ctx.ioMs);
      try {
        await Application.create(`${KEY}:${user}`, { user });
      } catch (err) {
        if (err instanceof AlreadyExistsError) return undefined; // the second click
        throw err;
      }
      for (let s = firstFree; s < max; s++) {
        try {
          await Seat.create(seatKey(s), { user });
          accepted.push(user);
          return undefined;
        } catch (err) {
          if (!(err instanceof AlreadyExistsError)) throw err;
          firstFree = Math.max(firstFree, s + 1);
        }
      }
      await Application.delete(`${KEY}:${user}`); // full: withdraw, so the user may try another campaign
      return undefined;
    });
    // Read more keys than there are seats: a bug that created seat-max or beyond would show.
    const seatKeys = Array.from({ length: max + ctx.workers }, (_, s) => seatKey(s));
    const seats = await mapConcurrent(seatKeys, ctx.workers, (k) => Seat.find(k));
    const final = seats.flatMap((seat) => (seat ? [seat.data.user] : []));
    return outcome(run, checkCampaign({ max, accepted, final }));
  },
};

/**
 * The campaign scenario. Run it with `npm run lab -- campaign`.
 *
 * @example
 * ```ts
 * for (const s of campaign.strategies) console.log(s.name, s.safe, s.description);
 * ```
 */
export const campaign: Scenario = {
  name: 'campaign',
  description: 'applicants for a campaign with a maximum, everyone clicking twice',
  invariant: 'never over the maximum, nobody twice, no accepted applicant lost',
  defaultOps: 400,
  strategies: [
    strategy('unsafe', false, 'get, check, await I/O, append: check-then-insert', unsafe),
    strategy('lock', true, 'Model.lock: check and append under one lease', lock),
    strategy('optimistic', true, 'Model.update: check and append, compare-and-set', optimistic),
    strategy('atomic', true, 'Model.apply: append when length < max and not already in', atomic),
    constraintStrategy,
  ],
};
