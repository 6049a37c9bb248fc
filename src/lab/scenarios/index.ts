/** Every scenario of the race lab, in the order the lab runs them. */
import type { Scenario } from '../types.js';
import { bank } from './bank.js';
import { campaign } from './campaign.js';
import { counter } from './counter.js';
import { learner } from './learner.js';
import { payments } from './payments.js';
import { queue } from './queue.js';
import { queueCrash } from './queue-crash.js';
import { ratelimit } from './ratelimit.js';

/**
 * The scenarios, in run order.
 *
 * @example
 * ```ts
 * scenarios.map((s) => s.name); // ['counter', 'bank', 'campaign', 'learner', 'queue', 'queue-crash', 'payments', 'ratelimit']
 * ```
 */
export const scenarios: readonly Scenario[] = [
  counter,
  bank,
  campaign,
  learner,
  queue,
  queueCrash,
  payments,
  ratelimit,
];

/** The names `npm run lab -- <names...>` accepts. */
export const scenarioNames: readonly string[] = scenarios.map((s) => s.name);
