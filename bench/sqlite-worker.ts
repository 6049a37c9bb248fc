/**
 * A contending process of the SQLite bench (bench/sqlite.ts, section 3): opens the database file
 * argv[2] and, for argv[3] ms, locks document `hot` of model `counter` over and over (one
 * increment, and the machine-clock time of its commit in `at`), pausing 0-2 ms between locks.
 * It measures its event-loop delay (monitorEventLoopDelay) and, for every lease it had to wait
 * for, the wake-up latency: from the previous holder's commit (`at`, written in the same
 * transaction that ended its lease) to this process holding the lease. Prints one JSON line.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { z } from 'zod';
import { sqlite } from '../src/backends/sqlite/index.js';
import { createStore } from '../src/index.js';

const [path, ms, sync, role] = process.argv.slice(2);
if (role === 'idle') {
  // the control: a process that only measures its event-loop delay on this machine right now
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  await new Promise((r) => setTimeout(r, Number(ms)));
  h.disable();
  process.stdout.write(
    `${JSON.stringify({ locks: 0, wakeups: [], loopP99Ms: h.percentile(99) / 1e6, loopMaxMs: h.max / 1e6 })}\n`,
  );
  process.exit(0);
}
const now = () => performance.timeOrigin + performance.now();
const store = createStore(
  sqlite({ path: path as string, synchronous: sync === 'normal' ? 'normal' : 'full' }),
);
const Counter = store.model('counter', z.object({ n: z.number(), at: z.number(), by: z.number() }));
const wakeups: number[] = [];
let locks = 0;
const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
const end = now() + Number(ms);
while (now() < end) {
  const asked = now();
  await Counter.lock('hot', (d) => {
    const got = now();
    // waited: someone else held it when we asked, and committed after that
    if (d.by !== process.pid && d.at > asked) wakeups.push(got - d.at);
    d.n += 1;
    d.by = process.pid;
    d.at = now();
  });
  locks += 1;
  await new Promise((r) => setTimeout(r, Math.random() * 2));
}
h.disable();
await store.close();
process.stdout.write(
  `${JSON.stringify({ locks, wakeups, loopP99Ms: h.percentile(99) / 1e6, loopMaxMs: h.max / 1e6 })}\n`,
);
