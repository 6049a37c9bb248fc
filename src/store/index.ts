export type {
  Backend,
  CheckIssue,
  CmpOp,
  Data,
  DocRef,
  DocWrite,
  Guard,
  Json,
  Lease,
  LeaseRequest,
  Op,
  PatchWrite,
  PostCheck,
  RefusalReason,
  StoredDoc,
  WriteResult,
} from './backend.js';
export { cloneJson, deepEqual } from './json.js';
export { checkKey, checkModelName, MAX_KEY_BYTES } from './keys.js';
export {
  type ApplyOptions,
  type ApplyResult,
  type Doc,
  Model,
  type ModelLockOptions,
  type OpBatch,
  type UpdateOptions,
} from './model.js';
export type {
  ArrayGuards,
  ArrayOps,
  BaseGuards,
  FieldGuards,
  FieldOps,
  GuardBuilder,
  GuardsInput,
  LengthGuards,
  NumberGuards,
  NumberOps,
  OpsBuilder,
  RecordGuards,
  RecordOps,
  ScalarOps,
  StringGuards,
} from './ops.js';
export type { InferInput, InferOutput, StandardResult, StandardSchemaV1 } from './schema.js';
export { createStore, type Store } from './store.js';
