export type {
  Backend,
  BackendCapabilities,
  CheckIssue,
  CmpOp,
  Data,
  DocRef,
  DocWrite,
  FieldRef,
  Guard,
  Json,
  Lease,
  LeaseRequest,
  Op,
  PatchWrite,
  PostCheck,
  RefusalReason,
  StoredDoc,
  WriteOptions,
  WriteResult,
} from './backend.js';
export { Bounded, bounded } from './boundary.js';
export { cloneJson, deepEqual } from './json.js';
export { checkKey, checkModelName, MAX_KEY_BYTES } from './keys.js';
export { type LockContext, lockContext } from './lock-context.js';
export {
  type ApplyOptions,
  type ApplyResult,
  type Doc,
  type Drafts,
  Model,
  type ModelLockOptions,
  type OpBatch,
  type UpdateOptions,
  type WriteCallOptions,
} from './model.js';
export { DEFAULT_ACTION, lockName } from './names.js';
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
export type { InferInput, InferOutput, StandardResult, StandardSchemaV1 } from './schema.js';
export {
  createStore,
  type Store,
  type StoreApplyOptions,
  type StoreApplyResult,
} from './store.js';
