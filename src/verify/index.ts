/**
 * `lockstep/verify`: check a deployment the way Jepsen does — record a history of concurrent
 * operations (ok / fail / info), check it for linearizability per key and for the workloads'
 * invariants, and prove the check can fail with planted bugs.
 *
 * @example
 * ```ts
 * import { createStore } from 'lockstep';
 * import { redis } from 'lockstep/redis';
 * import { runVerify } from 'lockstep/verify';
 * const report = await runVerify(createStore(redis({ url: 'redis://127.0.0.1:6379', prefix: 'verify' })), { durationMs: 10_000 });
 * console.log(report.verdict); // 'pass'
 * ```
 */
export {
  connectionTag,
  type InjectedFault,
  type ServerFaultKind,
  type ServerNemesis,
  serverNemesis,
  tagServerUrl,
} from './admin-faults.js';
export {
  type Classify,
  classifyError,
  formatOp,
  History,
  type HistoryPart,
  mergeHistories,
  type Operation,
  type OpStatus,
} from './history.js';
export {
  type Anomaly,
  type CriticalSection,
  checkBank,
  checkCounter,
  checkMutex,
} from './invariants.js';
export {
  type CheckOptions,
  canonicalJson,
  checkLinearizable,
  counterModel,
  type KeyVerdict,
  type LinearizabilityResult,
  type Model as SequentialModel,
  registerModel,
  type Verdict,
} from './linearizable.js';
export {
  ignoreFences,
  type PlantedBug,
  plantBug,
  plantedBugs,
  reportLandedAsFailed,
} from './mutants.js';
export { type FaultProxy, resetPeriodically, startFaultProxy } from './nemesis.js';
export {
  type ClientOptions,
  checkVerify,
  NEMESIS,
  runClients,
  runVerify,
  setupVerify,
  type VerifyOptions,
  type VerifyReport,
  type WorkloadReport,
} from './run.js';
export {
  MissingServerBinaryError,
  type PostgresServer,
  type RedisServer,
  startPostgres,
  startRedis,
} from './servers.js';
export { type WorkloadName, workloadNames } from './workloads.js';
