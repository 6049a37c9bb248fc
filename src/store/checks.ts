/**
 * Input checks of the boundary: every ref, write batch, lease request and write option that
 * reaches a backend passes here first, with the same rules and the same `ValidationError` on every
 * backend, so a backend may assume well-formed input (see "The boundary" in `backend.ts`).
 *
 * What is checked, once for all backends:
 * - names: model names and keys (`keys.ts`), field and item names (strings);
 * - values: JSON only — finite numbers, plain objects, arrays without holes or `undefined`
 *   elements, no cycles (an `undefined` object property is dropped, as JSON does);
 * - ops and guards: known kinds, operands of the right type, exactly one right-hand side;
 * - batches: one document at most once;
 * - lease requests: keys distinct and in canonical order, mode, action, `leaseMs`, `timeoutMs`,
 *   `signal`, the booleans.
 *
 * @example
 * ```ts
 * checkWrites([{ kind: 'patch', model: 'counter', key: 'c1', ops: [{ op: 'incr', field: 'n', by: 1 }] }]);
 * checkLeaseRequest(request); // throws ValidationError for bad input
 * ```
 */
import { ValidationError } from '../errors.js';
import {
  type ClaimRequest,
  type Consumption,
  type DocRef,
  type DocWrite,
  type EnqueueRequest,
  type Guard,
  type LeaseRequest,
  type LimitRef,
  type Op,
  type PermitKind,
  type PermitRequest,
  RWLOCK_PERMITS,
  type WriteOptions,
} from './backend.js';
import { checkKey, checkModelName, MAX_KEY_BYTES } from './keys.js';

/** Keys this short always fit MAX_KEY_BYTES (a UTF-16 unit is at most 3 UTF-8 bytes). */
const SHORT_KEY = Math.floor(MAX_KEY_BYTES / 3);

/** Model names already validated (bounded: names are few in practice). */
const goodModels = new Set<string>();

function bad(where: string, message: string): ValidationError {
  return new ValidationError(where, [{ message }]);
}

/** A model name and a key: cheap checks for the common case, the store's rules for the rest. */
export function checkName(model: unknown, key: unknown): void {
  if (typeof model !== 'string' || !goodModels.has(model)) {
    checkModelName(model);
    if (goodModels.size < 10_000) goodModels.add(model);
  }
  if (
    typeof key !== 'string' ||
    key.length === 0 ||
    key.length > SHORT_KEY ||
    key.includes('\u0000') ||
    !key.isWellFormed()
  ) {
    checkKey(key);
  }
}

/**
 * Why `v` is not a storable JSON value, with the path to the culprit, or undefined when it is.
 * Arrays must be dense and hold no `undefined`; objects must be plain (an `undefined` property is
 * dropped, as JSON does); numbers finite; no value may contain itself.
 *
 * @example
 * ```ts
 * nonJson([1, undefined]); // { message: 'an array element is undefined ...', path: [1] }
 * ```
 */
export function nonJson(v: unknown): { message: string; path: PropertyKey[] } | undefined {
  // Primitives first, without the walk's machinery: most values are.
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return undefined;
  if (typeof v === 'number' && Number.isFinite(v)) return undefined;
  const path: PropertyKey[] = [];
  const message = badJson(v, path, []);
  return message === undefined ? undefined : { message, path: path.reverse() };
}

/**
 * Why `v` is not JSON, or undefined. On a refusal `path` receives the culprit's path innermost
 * first; nothing is allocated on the way down (the walk runs on every document written).
 */
function badJson(v: unknown, path: PropertyKey[], ancestors: unknown[]): string | undefined {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(v) ? undefined : `${v} cannot be stored (numbers must be finite)`;
    case 'object': {
      if (v === null) return undefined;
      if (ancestors.includes(v)) return 'a value that contains itself (a cycle) cannot be stored';
      ancestors.push(v);
      try {
        if (Array.isArray(v)) {
          for (let i = 0; i < v.length; i++) {
            if (!(i in v)) {
              path.push(i);
              return 'an array with holes cannot be stored (every index must hold a value)';
            }
            const x: unknown = v[i];
            if (x === undefined) {
              path.push(i);
              return 'an array element is undefined; use null, or remove the element';
            }
            if (typeof x === 'string' || typeof x === 'boolean') continue;
            const found = badJson(x, path, ancestors);
            if (found !== undefined) {
              path.push(i);
              return found;
            }
          }
          return undefined;
        }
        const proto = Object.getPrototypeOf(v);
        if (proto !== Object.prototype && proto !== null) {
          return `a ${proto?.constructor?.name ?? 'non-plain object'} cannot be stored; documents hold JSON values (use strings or numbers for dates)`;
        }
        const o = v as Record<string, unknown>;
        for (const k in o) {
          if (!Object.hasOwn(o, k)) continue;
          const x = o[k];
          if (x === undefined || typeof x === 'string' || typeof x === 'boolean') continue;
          const found = badJson(x, path, ancestors);
          if (found !== undefined) {
            path.push(k);
            return found;
          }
        }
        return undefined;
      } finally {
        ancestors.pop();
      }
    }
    case 'undefined':
      return 'undefined is not a JSON value (use unset() to remove a field)';
    default:
      return `a ${typeof v} cannot be stored; documents hold JSON values`;
  }
}

/** Throws unless `v` is JSON; `field` (an op's field), when given, starts the issue's path. */
function checkJson(where: string, v: unknown, field?: string): void {
  const found = nonJson(v);
  if (found) {
    const path = field === undefined ? found.path : [field, ...found.path];
    throw new ValidationError(where, [{ message: found.message, path }]);
  }
}

/** Throws unless `ref` is a valid `{ model, key }`. */
export function checkRef(ref: DocRef, where: string): void {
  if (typeof ref !== 'object' || ref === null) throw bad(where, 'expected { model, key }');
  checkName(ref.model, ref.key);
}

/** Throws unless `refs` is an array of valid refs. */
export function checkRefs(refs: readonly DocRef[]): void {
  if (!Array.isArray(refs)) throw bad('read', 'refs must be an array of { model, key }');
  for (const r of refs) checkRef(r, 'read');
}

function field(where: string, f: unknown): void {
  if (typeof f !== 'string' || f.length === 0) {
    throw bad(
      where,
      `a field name must be a non-empty string, got ${JSON.stringify(f) ?? typeof f}`,
    );
  }
}

function safeInt(where: string, what: string, n: unknown): void {
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) {
    throw bad(where, `${what} must be an integer, got ${String(n)}`);
  }
}

function checkOp(where: string, o: Op): void {
  if (typeof o !== 'object' || o === null) throw bad(where, 'an op must be an object');
  field(where, o.field);
  switch (o.op) {
    case 'set':
    case 'append':
    case 'remove':
      checkJson(where, o.value, o.field);
      return;
    case 'unset':
      return;
    case 'incr':
      if (typeof o.by !== 'number' || !Number.isFinite(o.by)) {
        throw bad(where, `incr needs a finite number, got ${String(o.by)}`);
      }
      return;
    case 'extend':
      if (!Array.isArray(o.values)) throw bad(where, 'extend needs an array of values');
      checkJson(where, o.values, o.field);
      return;
    case 'insert':
      safeInt(where, 'insert index', o.index);
      checkJson(where, o.value, o.field);
      return;
    case 'pop':
      safeInt(where, 'pop index', o.index);
      return;
    case 'setItem':
      if (typeof o.item !== 'string') throw bad(where, 'setItem needs a string item');
      checkJson(where, o.value, o.field);
      return;
    case 'deleteItem':
      if (typeof o.item !== 'string') throw bad(where, 'deleteItem needs a string item');
      return;
    case 'merge':
      if (typeof o.value !== 'object' || o.value === null || Array.isArray(o.value)) {
        throw bad(where, 'merge needs an object of entries');
      }
      checkJson(where, o.value, o.field);
      return;
    default:
      throw bad(where, `unknown op ${JSON.stringify((o as { op?: unknown }).op) ?? 'undefined'}`);
  }
}

const CMP = new Set(['eq', 'ne', 'lt', 'lte', 'gt', 'gte']);

function checkGuard(where: string, g: Guard): void {
  if (typeof g !== 'object' || g === null) throw bad(where, 'a guard must be an object');
  field(where, g.field);
  switch (g.guard) {
    case 'cmp': {
      if (!CMP.has(g.cmp)) throw bad(where, `unknown comparison ${JSON.stringify(g.cmp)}`);
      if (g.length !== undefined && typeof g.length !== 'boolean') {
        throw bad(where, 'length must be true or false');
      }
      const hasValue = 'value' in g && g.value !== undefined;
      const hasRef = 'ref' in g && g.ref !== undefined;
      if (hasValue === hasRef) {
        throw bad(where, 'a comparison needs exactly one right-hand side: value or ref');
      }
      if (hasRef) {
        const r = g.ref as { field?: unknown; length?: unknown };
        if (typeof r !== 'object' || r === null) throw bad(where, 'ref must be { field }');
        field(where, r.field);
        if (r.length !== undefined && typeof r.length !== 'boolean') {
          throw bad(where, 'ref.length must be true or false');
        }
      } else {
        checkJson(where, g.value);
      }
      return;
    }
    case 'contains':
    case 'notContains':
      checkJson(where, g.value);
      return;
    case 'exists':
      if (typeof g.value !== 'boolean') throw bad(where, 'exists needs true or false');
      return;
    default:
      throw bad(
        where,
        `unknown guard ${JSON.stringify((g as { guard?: unknown }).guard) ?? 'undefined'}`,
      );
  }
}

function checkData(where: string, data: unknown): void {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw bad(where, 'a document must be an object of fields');
  }
  checkJson(where, data);
}

/**
 * Throws ValidationError unless `writes` is a well-formed batch: known kinds, valid names, valid
 * ops, guards and data, each document at most once.
 *
 * @example
 * ```ts
 * checkWrites([{ kind: 'delete', model: 'account', key: 'ann' }]);
 * ```
 */
export function checkWrites(writes: readonly DocWrite[], what = 'write'): void {
  if (!Array.isArray(writes)) throw bad(what, 'writes must be an array of DocWrite');
  for (let i = 0; i < writes.length; i++) {
    try {
      checkWrite(writes[i] as DocWrite, what);
    } catch (err) {
      // The write's index goes into the message only when there is one to show: no string is
      // built per write on the way through.
      throw err instanceof ValidationError ? new ValidationError(`${what} #${i}`, err.issues) : err;
    }
  }
  checkDistinct(writes, what);
}

function checkWrite(w: DocWrite, where: string): void {
  if (typeof w !== 'object' || w === null) throw bad(where, 'expected a DocWrite object');
  checkName(w.model, w.key);
  switch (w.kind) {
    case 'patch': {
      if (!Array.isArray(w.ops)) throw bad(where, 'ops must be an array');
      for (const o of w.ops) checkOp(where, o);
      if (w.guards !== undefined) {
        if (!Array.isArray(w.guards)) throw bad(where, 'guards must be an array');
        for (const g of w.guards) checkGuard(where, g);
      }
      if (w.expectVersion !== undefined) safeInt(where, 'expectVersion', w.expectVersion);
      if (w.expectIncarnation !== undefined && typeof w.expectIncarnation !== 'string') {
        throw bad(where, 'expectIncarnation must be a string');
      }
      if (w.fieldsUnchangedSince !== undefined) {
        safeInt(where, 'fieldsUnchangedSince', w.fieldsUnchangedSince);
      }
      if (w.check !== undefined && typeof w.check !== 'function') {
        throw bad(where, 'check must be a function');
      }
      if (w.ttlMs !== undefined) checkTtl(where, w.ttlMs);
      break;
    }
    case 'create':
    case 'put':
      checkData(where, w.data);
      if (w.ttlMs !== undefined) checkTtl(where, w.ttlMs);
      break;
    case 'delete':
      if (w.expectVersion !== undefined) safeInt(where, 'expectVersion', w.expectVersion);
      break;
    default:
      throw bad(
        where,
        `unknown kind ${JSON.stringify((w as { kind?: unknown }).kind) ?? 'undefined'} (patch, create, put or delete)`,
      );
  }
}

/** Refuses a batch that names one document twice (its ops belong in one write). */
function checkDistinct(writes: readonly DocWrite[], what: string): void {
  // Batches are small: pairwise comparison allocates nothing; a Set only for large ones.
  if (writes.length <= 16) {
    for (let i = 1; i < writes.length; i++) {
      const w = writes[i] as DocWrite;
      for (let j = 0; j < i; j++) {
        const v = writes[j] as DocWrite;
        if (v.key === w.key && v.model === w.model) throw twice(what, w);
      }
    }
    return;
  }
  const seen = new Set<string>();
  for (const w of writes) {
    const id = `${w.model}\u0000${w.key}`;
    if (seen.has(id)) throw twice(what, w);
    seen.add(id);
  }
}

function twice(what: string, w: { model: string; key: string }): ValidationError {
  return bad(
    what,
    `${w.model} ${JSON.stringify(w.key)} appears twice in one batch; put all its ops in one write (one Model.ops call)`,
  );
}

function checkTimeout(where: string, t: unknown): void {
  if (t !== undefined && !(typeof t === 'number' && t >= 0 && !Number.isNaN(t))) {
    throw bad(where, `timeoutMs must be a number >= 0 (or left out to wait), got ${String(t)}`);
  }
}

function checkSignal(where: string, s: unknown): void {
  if (s !== undefined && !(s instanceof AbortSignal)) {
    throw bad(where, 'signal must be an AbortSignal');
  }
}

/**
 * Throws ValidationError unless `o` are valid write options.
 *
 * @example
 * ```ts
 * checkWriteOptions({ timeoutMs: 100 });
 * ```
 */
export function checkWriteOptions(o: WriteOptions | undefined): void {
  if (o === undefined) return;
  if (typeof o !== 'object' || o === null) throw bad('write options', 'expected an object');
  checkTimeout('write options', o.timeoutMs);
  checkSignal('write options', o.signal);
}

/**
 * Throws ValidationError unless `r` is a well-formed lease request (keys distinct and in canonical
 * order, and every option of the right type).
 *
 * @example
 * ```ts
 * checkLeaseRequest({ model: 'account', keys: ['a', 'b'], action: 'default', mode: 'exclusive',
 *   leaseMs: 30_000, renew: true, nowait: false, skipLocked: false });
 * ```
 */
export function checkLeaseRequest(r: LeaseRequest): void {
  const where = 'lease request';
  if (typeof r !== 'object' || r === null) throw bad(where, 'expected a LeaseRequest object');
  if (!Array.isArray(r.keys) || r.keys.length === 0) throw bad(where, 'give at least one key');
  for (const k of r.keys) checkName(r.model, k);
  for (let i = 1; i < r.keys.length; i++) {
    const a = r.keys[i - 1] as string;
    const b = r.keys[i] as string;
    if (a === b) throw bad(where, `key ${JSON.stringify(b)} is listed twice`);
    if (a > b) {
      throw bad(
        where,
        'keys must be in canonical order ([...keys].sort()), so that every process takes them in one order',
      );
    }
  }
  if (typeof r.action !== 'string' || r.action.length === 0) {
    throw bad(where, 'action must be a non-empty string');
  }
  if (r.mode !== 'exclusive' && r.mode !== 'shared') {
    throw bad(where, `mode must be "exclusive" or "shared", got ${JSON.stringify(r.mode)}`);
  }
  if (typeof r.leaseMs !== 'number' || !(Number.isFinite(r.leaseMs) && r.leaseMs > 0)) {
    throw bad(where, `leaseMs must be a positive number of milliseconds, got ${String(r.leaseMs)}`);
  }
  checkTimeout(where, r.timeoutMs);
  checkSignal(where, r.signal);
  for (const flag of ['renew', 'nowait', 'skipLocked'] as const) {
    if (typeof r[flag] !== 'boolean') throw bad(where, `${flag} must be true or false`);
  }
}

const PERMIT_KINDS: ReadonlySet<string> = new Set<PermitKind>(['mutex', 'rwlock', 'semaphore']);

/**
 * A permit pool's name: the rules of a document key (non-empty, no NUL, well-formed, at most
 * MAX_KEY_BYTES), with a message that names the pool.
 *
 * @example
 * ```ts
 * checkPermitName('semaphore', ''); // throws ValidationError: a name must not be empty
 * ```
 */
export function checkPermitName(kind: string, name: unknown): asserts name is string {
  try {
    checkKey(name);
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    const message = (err.issues[0]?.message ?? 'invalid').replace(/^a key/, 'a name');
    throw bad(`${kind} name`, message);
  }
}

/**
 * A pool's capacity: a positive safe integer, at most {@link RWLOCK_PERMITS}.
 *
 * @example
 * ```ts
 * checkPermits('semaphore "api"', 0); // throws ValidationError
 * ```
 */
export function checkPermits(where: string, permits: unknown): asserts permits is number {
  if (
    typeof permits !== 'number' ||
    !Number.isSafeInteger(permits) ||
    permits <= 0 ||
    permits > RWLOCK_PERMITS
  ) {
    throw bad(
      where,
      `permits must be a positive integer (at most ${RWLOCK_PERMITS}), got ${describe(permits)}`,
    );
  }
}

/**
 * A permit request: kind, name, permits, a weight in [1, permits] (more can never be granted,
 * so it is refused at once rather than left to hang), leaseMs, timeoutMs, signal, flags.
 *
 * @example
 * ```ts
 * checkPermitRequest({ kind: 'semaphore', name: 'api', permits: 5, weight: 6, leaseMs: 30_000,
 *   renew: true, nowait: false }); // throws ValidationError: weight 6 exceeds permits 5
 * ```
 */
export function checkPermitRequest(r: PermitRequest): void {
  const where = 'permit request';
  if (typeof r !== 'object' || r === null) throw bad(where, 'expected a PermitRequest object');
  if (!PERMIT_KINDS.has(r.kind)) {
    throw bad(where, `kind must be "mutex", "rwlock" or "semaphore", got ${describe(r.kind)}`);
  }
  checkPermitName(r.kind, r.name);
  const at = `${r.kind} ${JSON.stringify(r.name)}`;
  checkPermits(at, r.permits);
  if (typeof r.weight !== 'number' || !Number.isSafeInteger(r.weight) || r.weight <= 0) {
    throw bad(at, `weight must be a positive integer, got ${describe(r.weight)}`);
  }
  if (r.weight > r.permits) {
    throw bad(
      at,
      `weight ${r.weight} exceeds the ${r.permits} permits there are: it could never be granted; ask for at most ${r.permits}`,
    );
  }
  if (typeof r.leaseMs !== 'number' || !(Number.isFinite(r.leaseMs) && r.leaseMs > 0)) {
    throw bad(at, `leaseMs must be a positive number of milliseconds, got ${describe(r.leaseMs)}`);
  }
  checkTimeout(at, r.timeoutMs);
  checkSignal(at, r.signal);
  for (const flag of ['renew', 'nowait'] as const) {
    if (typeof r[flag] !== 'boolean') throw bad(at, `${flag} must be true or false`);
  }
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v == null) return String(v);
  return typeof v;
}

// ── Queues ─────────────────────────────────────────────────────────────────────────────────────

/** Longest error message a job keeps (longer ones are refused: the store truncates its own). */
export const MAX_JOB_ERROR = 4096;

function queueName(where: string, q: unknown): void {
  if (typeof q !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(q)) {
    throw bad(
      where,
      `queue name ${JSON.stringify(q) ?? String(q)}: use 1-63 letters, digits or underscores, starting with a letter or underscore`,
    );
  }
}

function nonNegative(where: string, name: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw bad(where, `${name} must be a finite number >= 0 of milliseconds, got ${String(v)}`);
  }
}

function positiveMs(where: string, name: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw bad(where, `${name} must be a positive number of milliseconds, got ${String(v)}`);
  }
}

/**
 * Throws ValidationError unless `jobs` are well-formed enqueue requests: queue names, JSON
 * payloads, `delayMs >= 0`, `runAt` a finite epoch time, integer priorities, keys as document
 * keys, `maxAttempts` a positive integer.
 *
 * @example
 * ```ts
 * checkEnqueue([{ queue: 'mail', data: { to: 'ann' }, delayMs: 0, priority: 0, maxAttempts: 3 }]);
 * ```
 */
export function checkEnqueue(jobs: readonly EnqueueRequest[]): void {
  if (!Array.isArray(jobs)) throw bad('enqueue', 'jobs must be an array of EnqueueRequest');
  for (let i = 0; i < jobs.length; i++) {
    const j = jobs[i] as EnqueueRequest;
    const where = `enqueue #${i}`;
    if (typeof j !== 'object' || j === null) throw bad(where, 'expected an EnqueueRequest object');
    queueName(where, j.queue);
    const why = nonJson(j.data);
    if (why)
      throw new ValidationError(where, [{ message: `payload: ${why.message}`, path: why.path }]);
    if (j.data === undefined) throw bad(where, 'the payload must be a JSON value');
    nonNegative(where, 'delayMs', j.delayMs);
    if (j.runAt !== undefined && (typeof j.runAt !== 'number' || !Number.isFinite(j.runAt))) {
      throw bad(where, `runAt must be a valid time, got ${String(j.runAt)}`);
    }
    if (!Number.isSafeInteger(j.priority)) {
      throw bad(where, `priority must be an integer, got ${String(j.priority)}`);
    }
    if (j.key !== undefined) checkKey(j.key);
    if (!(Number.isSafeInteger(j.maxAttempts) && j.maxAttempts >= 1)) {
      throw bad(where, `maxAttempts must be a positive integer, got ${String(j.maxAttempts)}`);
    }
  }
}

/**
 * Throws ValidationError unless `r` is a well-formed claim request.
 *
 * @example
 * ```ts
 * checkClaim({ queue: 'mail', leaseMs: 30_000, timeoutMs: 1000 });
 * ```
 */
export function checkClaim(r: ClaimRequest): void {
  const where = 'claim';
  if (typeof r !== 'object' || r === null) throw bad(where, 'expected a ClaimRequest object');
  queueName(where, r.queue);
  positiveMs(where, 'leaseMs', r.leaseMs);
  checkTimeout(where, r.timeoutMs);
  checkSignal(where, r.signal);
}

/**
 * Throws ValidationError unless `(queue, id)` names a job: a queue name and a non-empty id.
 *
 * @example
 * ```ts
 * checkJobRef('get', 'mail', '17');
 * ```
 */
export function checkJobRef(where: string, queue: unknown, id: unknown): void {
  queueName(where, queue);
  if (typeof id !== 'string' || id.length === 0 || id.length > 128) {
    throw bad(
      where,
      `a job id must be a non-empty string, got ${JSON.stringify(id) ?? String(id)}`,
    );
  }
}

/**
 * Throws ValidationError unless `(queue, id, fence)` names a claim: a job and a positive
 * integer fence.
 *
 * @example
 * ```ts
 * checkClaimRef('complete', 'mail', '17', 1);
 * ```
 */
export function checkClaimRef(where: string, queue: unknown, id: unknown, fence: unknown): void {
  checkJobRef(where, queue, id);
  if (!(Number.isSafeInteger(fence) && (fence as number) >= 1)) {
    throw bad(where, `fence must be a positive integer, got ${String(fence)}`);
  }
}

/**
 * Throws ValidationError unless `ms` is a usable delay (`>= 0`) or, with `positive`, a lease
 * extension (`> 0`), and `error` (when given) a string of at most {@link MAX_JOB_ERROR} characters.
 *
 * @example
 * ```ts
 * checkJobStep('retry', 500, 'timeout'); // ok
 * ```
 */
export function checkJobStep(where: string, ms: unknown, error?: unknown, positive = false): void {
  if (positive) positiveMs(where, 'ms', ms);
  else nonNegative(where, 'delayMs', ms);
  if (error !== undefined && (typeof error !== 'string' || error.length > MAX_JOB_ERROR)) {
    throw bad(where, `error must be a string of at most ${MAX_JOB_ERROR} characters`);
  }
}

// ------------------------------------------------------- rate limits and expiring documents

/** The longest TTL and window accepted: about 285 years (beyond it, ms stop being exact in a double). */
export const MAX_MS = 2 ** 53 / 1000;

/** A document's `ttlMs`: a whole number of milliseconds >= 1 (0 or less would be a TTL in the past). */
function checkTtl(where: string, t: unknown): void {
  if (!(typeof t === 'number' && Number.isInteger(t) && t >= 1 && t <= MAX_MS)) {
    throw bad(
      where,
      `ttlMs must be a whole number of milliseconds >= 1 (the document expires that long after the write; leave it out for no expiry), got ${String(t)}`,
    );
  }
}

/**
 * Checks a rate-limit key: a limiter name (model-name rules), an algorithm, a key.
 *
 * @example
 * ```ts
 * checkLimitRef({ name: 'api', algorithm: 'sliding-window', key: 'user:ann' });
 * ```
 */
export function checkLimitRef(r: LimitRef, where = 'rate limit'): void {
  if (typeof r !== 'object' || r === null) throw bad(where, 'expected { name, algorithm, key }');
  checkName(r.name, r.key);
  if (r.algorithm !== 'sliding-window' && r.algorithm !== 'token-bucket') {
    throw bad(
      where,
      `algorithm must be 'sliding-window' or 'token-bucket', got ${JSON.stringify(r.algorithm) ?? 'undefined'}`,
    );
  }
}

/**
 * Checks a limiter's `limit` and `windowMs` (positive whole numbers).
 *
 * @example
 * ```ts
 * checkLimits('rateLimiter api', 100, 60_000);
 * ```
 */
export function checkLimits(where: string, limit: unknown, windowMs: unknown): void {
  if (!(typeof limit === 'number' && Number.isInteger(limit) && limit >= 1 && limit <= 2 ** 31)) {
    throw bad(where, `limit must be a whole number of units >= 1, got ${String(limit)}`);
  }
  if (
    !(
      typeof windowMs === 'number' &&
      Number.isInteger(windowMs) &&
      windowMs >= 1 &&
      windowMs <= MAX_MS
    )
  ) {
    throw bad(
      where,
      `windowMs must be a whole number of milliseconds >= 1, got ${String(windowMs)}`,
    );
  }
}

/**
 * Checks a cost against its limiter: a whole number in [1, limit]. A cost above the limit could
 * never be admitted, so it is refused here instead of being refused forever.
 *
 * @example
 * ```ts
 * checkCost('api.consume', 2, 100);
 * ```
 */
export function checkCost(where: string, cost: unknown, limit: number): void {
  if (!(typeof cost === 'number' && Number.isInteger(cost) && cost >= 1)) {
    throw bad(where, `cost must be a whole number of units >= 1, got ${String(cost)}`);
  }
  if (cost > limit) {
    throw bad(
      where,
      `cost ${cost} is above the limit ${limit}: it could never be admitted; raise the limit or split the call`,
    );
  }
}

/**
 * Checks the consumptions of one {@link Backend.consume} call: each well-formed, and one
 * (name, algorithm, key) at most once.
 *
 * @example
 * ```ts
 * checkConsumptions([{ name: 'api', algorithm: 'token-bucket', key: 'ann', limit: 10, windowMs: 1000, cost: 1, record: true }]);
 * ```
 */
export function checkConsumptions(cs: readonly Consumption[], what = 'consume'): void {
  if (!Array.isArray(cs)) throw bad(what, 'consumptions must be an array');
  for (let i = 0; i < cs.length; i++) {
    const c = cs[i] as Consumption;
    try {
      checkLimitRef(c, what);
      checkLimits(what, c.limit, c.windowMs);
      checkCost(what, c.cost, c.limit);
      if (typeof c.record !== 'boolean') throw bad(what, 'record must be a boolean');
    } catch (err) {
      // The index goes into the message only when there is one to show.
      throw err instanceof ValidationError ? new ValidationError(`${what} #${i}`, err.issues) : err;
    }
    const where = what;
    for (let j = 0; j < i; j++) {
      const d = cs[j] as Consumption;
      if (d.name === c.name && d.algorithm === c.algorithm && d.key === c.key) {
        throw bad(
          where,
          `rate limit ${c.name} ${JSON.stringify(c.key)} appears twice in one batch; give one consumeOp with the total cost`,
        );
      }
    }
  }
}
