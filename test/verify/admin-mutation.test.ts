/**
 * The mutation mode under server and process faults, on throwaway servers the CLI starts: each
 * planted bug (a read-then-write increment, a lease commit that skips the fence check, a write
 * that landed reported as refused) must be caught on Redis and on PostgreSQL while the nemesis
 * runs, across 2 processes. The fence bug runs with the faults that stop (never kill) processes
 * and lock holders: a SIGSTOPped holder outlives its lease and commits late, which is exactly
 * what the fence must refuse (killed processes would only starve the lock workload; see
 * docs/verification.md, "What it found").
 */
import { describe, expect, it } from 'vitest';
import type { PlantedBug } from '../../src/verify/mutants.js';
import { labVerify, reports } from './cli-run.js';

/** A bug, the workload that must catch it, the anomaly kinds that show it, extra arguments. */
const cases: ReadonlyArray<[PlantedBug, string, readonly string[], readonly string[]]> = [
  ['read-then-write-increment', 'counter', ['counter-range', 'counter-duplicate'], []],
  [
    'commit-ignores-fence',
    'mutex',
    // A late holder's write landed: over another's section, out of fence order, or in its place.
    ['mutex-overlap', 'fence-order', 'stale-commit', 'lost-commit'],
    ['--fault-kinds', 'holder-stop,worker-stop,client-kill,client-pause,terminate-backend'],
  ],
  ['fail-but-landed', 'register', ['linearizability'], []],
];

describe.each([
  'redis',
  'postgres',
] as const)('planted bugs under admin faults on %s', (backend) => {
  it.each(cases)('%s is caught (%s: %j)', async (bug, workload, kinds, extra) => {
    const r = await labVerify([
      '--backend',
      backend,
      '--faults',
      'admin',
      '--processes',
      '2',
      '--fault-interval',
      '400',
      '--seconds',
      '3',
      '--clients',
      '2',
      '--plant',
      bug,
      '--json',
      ...extra,
    ]);
    const [report] = reports(r.stdout);
    expect(r.code, r.stderr).toBe(1);
    expect(report?.verdict, r.stderr).toBe('fail');
    expect(Object.values(report?.faults ?? {}).reduce((s, n) => s + n, 0)).toBeGreaterThan(0);
    const w = report?.workloads.find((x) => x.name === workload);
    const found = Object.keys(w?.anomalyCounts ?? {});
    expect(found.filter((k) => kinds.includes(k)).length, found.join(', ')).toBeGreaterThan(0);
  });
});
