export type {
  Admission,
  Backend,
  BackendCapabilities,
  CheckIssue,
  ClaimedJob,
  ClaimRequest,
  CmpOp,
  ConsumeResult,
  Consumption,
  Data,
  DocRef,
  DocWrite,
  EnqueuedJob,
  EnqueueRequest,
  EnqueueResult,
  FieldRef,
  Guard,
  JobState,
  Json,
  Lease,
  LeaseRequest,
  LimitRef,
  Op,
  PatchWrite,
  PermitKind,
  PermitLease,
  PermitRequest,
  PostCheck,
  QueueBackend,
  QueueStats,
  RateLimitAlgorithm,
  RefusalReason,
  StoredDoc,
  StoredJob,
  WriteOptions,
  WriteResult,
} from './backend.js';
export { RWLOCK_PERMITS } from './backend.js';
export { Bounded, bounded } from './boundary.js';
export { type Backoff, backoffDelay, Job, type RetryOptions } from './job.js';
export { cloneJson, deepEqual } from './json.js';
export { checkKey, checkModelName, MAX_KEY_BYTES } from './keys.js';
export type { LeasePermit } from './lease-permit.js';
export { type LockContext, lockContext } from './lock-context.js';
export {
  type ApplyOptions,
  type ApplyResult,
  type Doc,
  type Drafts,
  Model,
  type ModelLockOptions,
  type OpBatch,
  type PutOptions,
  type UpdateOptions,
  type WholeOpOptions,
  type WriteCallOptions,
} from './model.js';
export { DistributedMutex } from './mutex.js';
export { DEFAULT_ACTION, lockName, permitName } from './names.js';
export type {
  ArrayGuards,
  ArrayOps,
  BaseGuards,
  FieldGuards,
  FieldOperand,
  FieldOps,
  GuardBuilder,
  GuardsInput,
  LengthGuards,
  NumberGuards,
  NumberOperand,
  NumberOps,
  OpsBuilder,
  RecordGuards,
  RecordOps,
  ScalarOps,
  StringGuards,
} from './ops.js';
export type { NamedLockOptions } from './permit-pool.js';
export {
  type ClaimOptions,
  type EnqueueOptions,
  type JobInfo,
  type JobRef,
  Queue,
  type QueueOptions,
} from './queue.js';
export {
  type ConsumeOptions,
  RateLimiter,
  type RateLimiterOptions,
  type RateLimitRefusedEvent,
  type RateLimitResult,
} from './rate-limiter.js';
export { DistributedRWLock } from './rwlock.js';
export type { InferInput, InferOutput, StandardResult, StandardSchemaV1 } from './schema.js';
export {
  DistributedSemaphore,
  type SemaphoreAcquireOptions as DistributedSemaphoreAcquireOptions,
  type SemaphoreOptions as DistributedSemaphoreOptions,
} from './semaphore.js';
export {
  createStore,
  type Store,
  type StoreApplyOptions,
  type StoreApplyResult,
} from './store.js';
export { type JobHandler, Worker, type WorkOptions } from './worker.js';
