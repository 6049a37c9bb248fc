/**
 * The batch evaluator and installer of the memory backend: a batch is evaluated synchronously on
 * copies (slots), stops at the first refusal, and an accepted plan is installed all at once.
 *
 * @example
 * ```ts
 * const plan = evaluate(docs, writes, undefined);
 * if (plan.pending === undefined && plan.refusal === undefined) install(plan);
 * ```
 */
import { applyOps, describeGuard, firstFalseGuard } from '../../store/apply-ops.js';
import type {
  CheckIssue,
  Data,
  DocWrite,
  Json,
  Op,
  StoredDoc,
  WriteResult,
} from '../../store/backend.js';
import { docName } from '../../store/names.js';
import {
  copyData,
  type Documents,
  type Entry,
  fieldVersion,
  recordPatches,
  snapshot,
} from './documents.js';
import { now } from './expiry.js';

/** A refused write result. */
export type Refusal = Extract<WriteResult, { applied: false }>;
/** What a post-check returns. */
export type Issues = readonly CheckIssue[] | undefined;

/** One document touched by a batch: what was read, and its state as the batch goes. */
interface Slot {
  readonly table: Map<string, Entry>;
  readonly model: string;
  readonly key: string;
  /** When the document expires after the batch (undefined: never). */
  expiresAt: number | undefined;
  readonly base: Entry | undefined;
  readonly baseVersion: number;
  exists: boolean;
  version: number;
  data: Data;
  replacedAt: number;
  incarnation: string;
  /** Replaced (create/put) in this batch: the base's field versions no longer count. */
  replaced: boolean;
  /** Patches applied in this batch, as flat pairs: ops, then the version they wrote. */
  patches: Array<readonly Op[] | number> | undefined;
}

/** An evaluated batch, ready to install (or refused). */
export interface Plan {
  readonly slots: Slot[];
  readonly docs: Array<StoredDoc | undefined>;
  readonly results: Json[][];
  /** Post-checks that returned a Promise, in batch order. */
  pending: Array<{ index: number; promise: Promise<Issues> }> | undefined;
  refusal: Refusal | undefined;
}

/** What a lease commit adds to a plain write. */
export interface CommitContext {
  /** Checked in the same synchronous step as the install: a refusal (fence) or undefined. */
  precondition(): Refusal | undefined;
  /**
   * The incarnation read when the lease was taken, per key (undefined: the key was missing).
   * Absent for commits made under no read (a job's completion): no incarnation is compared.
   */
  incarnationAtRead?(model: string, key: string): string | undefined;
  /** Called in the same synchronous step, right after the batch was installed. */
  installed?(): void;
}

/** A refusal of write `index`. */
export function refuse(
  index: number,
  reason: Refusal['reason'],
  detail: string,
  issues?: readonly CheckIssue[],
): Refusal {
  return issues
    ? { applied: false, reason, index, detail, issues }
    : { applied: false, reason, index, detail };
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === 'object' || typeof v === 'function') &&
    v !== null &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

/** The version of the last patch in `patches` that wrote `field`, if any. */
function patchedIn(patches: Slot['patches'], field: string): number | undefined {
  if (patches === undefined) return undefined;
  for (let j = patches.length - 2; j >= 0; j -= 2) {
    for (const op of patches[j] as readonly Op[]) {
      if (op.field === field) return patches[j + 1] as number;
    }
  }
  return undefined;
}

function slotOf(docs: Documents, model: string, key: string): Slot {
  const table = docs.table(model);
  const base = docs.live(table, key);
  return base
    ? {
        table,
        model,
        key,
        expiresAt: base.expiresAt,
        base,
        baseVersion: base.version,
        exists: true,
        version: base.version,
        data: base.data,
        replacedAt: base.replacedAt,
        incarnation: base.incarnation,
        replaced: false,
        patches: undefined,
      }
    : {
        table,
        model,
        key,
        expiresAt: undefined,
        base,
        baseVersion: 0,
        exists: false,
        version: 0,
        data: {},
        replacedAt: 0,
        incarnation: '',
        replaced: false,
        patches: undefined,
      };
}

/**
 * Synchronously evaluates the whole batch on copies; stops at the first refusal. Throws whatever
 * a post-check throws (nothing is installed then).
 */
export function evaluate(
  docs: Documents,
  writes: readonly DocWrite[],
  ctx: CommitContext | undefined,
): Plan {
  const n = writes.length;
  const plan: Plan = {
    slots: [],
    docs: new Array(n),
    results: new Array(n),
    pending: undefined,
    refusal: undefined,
  };
  let byId: Map<string, Slot> | undefined;
  for (let i = 0; i < n; i++) {
    const w = writes[i] as DocWrite;
    let slot: Slot | undefined;
    if (n === 1) {
      slot = slotOf(docs, w.model, w.key);
      plan.slots[0] = slot;
    } else {
      byId ??= new Map();
      const id = `${w.model}\u0000${w.key}`; // model names hold no NUL: unambiguous
      slot = byId.get(id);
      if (!slot) {
        slot = slotOf(docs, w.model, w.key);
        byId.set(id, slot);
        plan.slots.push(slot);
      }
    }
    let refusal: Refusal | undefined;
    try {
      refusal = applyWrite(docs, i, w, slot, plan, ctx);
    } catch (err) {
      // A post-check threw: nothing is installed; earlier async checks must not go unhandled.
      for (const p of plan.pending ?? []) p.promise.catch(() => {});
      throw err;
    }
    if (refusal) {
      plan.refusal = refusal;
      break;
    }
  }
  return plan;
}

/** Applies write `i` to its slot; a refusal, or undefined when it applied. */
function applyWrite(
  docs: Documents,
  i: number,
  w: DocWrite,
  s: Slot,
  plan: Plan,
  ctx: CommitContext | undefined,
): Refusal | undefined {
  switch (w.kind) {
    case 'create':
    case 'put': {
      if (w.kind === 'create' && s.exists)
        return refuse(i, 'exists', `${docName(w.model, w.key)} already exists`);
      const data = copyData(w.data, 'data');
      if (typeof data === 'string')
        return refuse(i, 'invalid', `${w.kind} ${docName(w.model, w.key)}: ${data}`);
      if (s.exists) {
        s.version += 1;
      } else {
        s.exists = true;
        s.version = 1;
        s.incarnation = docs.newIncarnation();
      }
      s.data = data;
      s.expiresAt = w.ttlMs === undefined ? undefined : now() + w.ttlMs;
      s.replacedAt = s.version;
      s.replaced = true;
      s.patches = undefined;
      plan.docs[i] = snapshot(w.key, s.version, data, s.incarnation);
      plan.results[i] = [];
      return undefined;
    }
    case 'delete': {
      const expect = w.expectVersion;
      if (!s.exists) {
        if (expect !== undefined)
          return refuse(i, 'missing', `${docName(w.model, w.key)} does not exist`);
        plan.docs[i] = undefined;
        plan.results[i] = [false];
        return undefined;
      }
      if (expect !== undefined && expect !== s.version) {
        return refuse(
          i,
          'version',
          `${docName(w.model, w.key)} is at version ${s.version}, not ${expect}`,
        );
      }
      s.exists = false;
      s.version = 0;
      s.expiresAt = undefined;
      s.data = {};
      s.patches = undefined;
      plan.docs[i] = undefined;
      plan.results[i] = [true];
      return undefined;
    }
    case 'patch': {
      if (!s.exists) return refuse(i, 'missing', `${docName(w.model, w.key)} does not exist`);
      if (w.expectVersion !== undefined && w.expectVersion !== s.version) {
        return refuse(
          i,
          'version',
          `${docName(w.model, w.key)} is at version ${s.version}, not ${w.expectVersion}`,
        );
      }
      if (w.expectIncarnation !== undefined && w.expectIncarnation !== s.incarnation) {
        return refuse(
          i,
          'version',
          `${docName(w.model, w.key)} was deleted and created again since it was read`,
        );
      }
      const guards = w.guards;
      if (guards !== undefined && guards.length > 0) {
        const failed = firstFalseGuard(s.data, guards);
        if (failed >= 0) {
          return {
            applied: false,
            reason: 'guard',
            index: i,
            guard: failed,
            detail: `${docName(w.model, w.key)}: guard #${failed} (${describeGuard(guards[failed] as (typeof guards)[number])}) is false`,
          };
        }
      }
      const since = w.fieldsUnchangedSince;
      if (since !== undefined) {
        const c = conflict(w, s, since, ctx);
        if (c) return refuse(i, 'conflict', `${docName(w.model, w.key)}: ${c}`);
      }
      if (w.ttlMs !== undefined) s.expiresAt = now() + w.ttlMs;
      if (w.ops.length === 0) {
        // No ops: nothing is written (no version bump, no post-check); the guards decided.
        plan.results[i] = [];
        plan.docs[i] = snapshot(w.key, s.version, s.data, s.incarnation);
        return undefined;
      }
      const r = applyOps(s.data, w.ops);
      if (!r.ok) return refuse(i, 'invalid', `${docName(w.model, w.key)}: ${r.detail}`);
      s.version += 1;
      s.data = r.data;
      if (s.patches === undefined) s.patches = [w.ops, s.version];
      else s.patches.push(w.ops, s.version);
      plan.results[i] = r.results;
      // The caller's copy; the post-check sees the very same copy (never stored state).
      const doc = snapshot(w.key, s.version, r.data, s.incarnation);
      plan.docs[i] = doc;
      if (w.check) {
        const out = w.check(doc.data);
        if (isThenable(out)) {
          (plan.pending ??= []).push({
            index: i,
            promise: Promise.resolve(out as Promise<Issues>),
          });
        } else if (out && out.length > 0) {
          return refuse(
            i,
            'invalid',
            `the post-image of ${docName(w.model, w.key)} fails the schema`,
            out,
          );
        }
      }
      return undefined;
    }
  }
}

/** Why a patch with `fieldsUnchangedSince` conflicts, or undefined. */
function conflict(
  w: Extract<DocWrite, { kind: 'patch' }>,
  s: Slot,
  since: number,
  ctx: CommitContext | undefined,
): string | undefined {
  if (s.version < since) return `it was deleted and created again since version ${since}`;
  if (ctx?.incarnationAtRead) {
    const inc = ctx.incarnationAtRead(w.model, w.key);
    if (inc !== s.incarnation) return 'it was deleted and created again since it was read';
  }
  for (const op of w.ops) {
    const f = op.field;
    const patched =
      patchedIn(s.patches, f) ?? (s.replaced || s.base === undefined ? 0 : fieldVersion(s.base, f));
    const last = Math.max(patched, s.replacedAt);
    if (last > since) {
      return `field ${JSON.stringify(f)} was written at version ${last}, after version ${since} when it was read`;
    }
  }
  return undefined;
}

/** True when every document the plan read is still exactly as it was read. */
export function unchanged(plan: Plan): boolean {
  for (const s of plan.slots) {
    const e = s.table.get(s.key);
    if (e !== s.base || (e !== undefined && e.version !== s.baseVersion)) return false;
    if (e?.expiresAt !== undefined && e.expiresAt <= now()) return false;
  }
  return true;
}

/** Makes an evaluated plan visible, all at once (synchronously). */
export function install(plan: Plan, docs?: Documents): void {
  for (const s of plan.slots) {
    const base = s.base;
    if (!s.exists) {
      if (base) {
        s.table.delete(s.key);
        if (base.expiresAt !== undefined) docs?.expiring(s.model, s.key, undefined);
      }
      continue;
    }
    if (s.expiresAt !== undefined || base?.expiresAt !== undefined) {
      docs?.expiring(s.model, s.key, s.expiresAt);
    }
    if (base && base.incarnation === s.incarnation) {
      base.expiresAt = s.expiresAt;
      base.version = s.version;
      base.data = s.data;
      base.replacedAt = s.replacedAt;
      if (s.replaced) {
        base.fieldVersions = undefined;
        base.lastField = undefined;
      }
      if (s.patches) recordPatches(base, s.patches);
    } else {
      const entry: Entry = {
        version: s.version,
        data: s.data,
        replacedAt: s.replacedAt,
        fieldVersions: undefined,
        lastField: undefined,
        lastAt: 0,
        incarnation: s.incarnation,
        expiresAt: s.expiresAt,
      };
      if (s.patches) recordPatches(entry, s.patches);
      s.table.set(s.key, entry);
    }
  }
}
