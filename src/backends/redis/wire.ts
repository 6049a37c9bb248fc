/**
 * Wire encoding between this backend and its Lua scripts: the document and reply shapes the
 * scripts send back, and the validation + encoding of writes, ops and guards into the JSON
 * envelope the scripts decode (field names as JSON string literals, values as JSON text).
 */
import { BackendError } from '../../errors.js';
import type { Data, Guard, Json, Op, RefusalReason, StoredDoc } from '../../store/backend.js';
import type { LocalWakeups } from './wakeups.js';

let idSeq = 0;

/**
 * A new id unique to this process and instance: batch tokens, lease owners, waiter ids.
 *
 * @example
 * ```ts
 * const token = nextId('k3Jd9a'); // "k3Jd9a.1"
 * ```
 */
export function nextId(instance: string, tag = ''): string {
  return `${instance}.${tag}${(++idSeq).toString(36)}`;
}

export interface WireDoc {
  /** version */
  v: number;
  /** last writer's token */
  w: string;
  /** incarnation: token of the batch that created it */
  c: string;
  /** data */
  f: Data;
}

export type Reply =
  | { ok: 1; docs: Array<WireDoc | null>; results: Json[][] }
  | { ok: 0; reason: RefusalReason; index: number; guard?: number; detail?: string }
  | { ok: 0; stale: { [d: string]: WireDoc | null } }
  /**
   * A plain write found a live exclusive lease of the default action on the document of write
   * `locked` and wrote nothing (see write_gate in lib.lua); look again in `retry` ms at the latest.
   */
  | { ok: 0; locked: number; retry: number };

/**
 * A checked patch whose outcome this process predicted exactly, chained on the write before it
 * (see `GroupCommit`): what its reply will be if the document's last writer is still `base`.
 */
export interface Speculation {
  /** The document hash. */
  readonly doc: string;
  /** The token the prediction expects as the document's last writer. */
  readonly base: string;
  /** This write's token. */
  readonly token: string;
  /** Top-level fields the write's ops touch. */
  readonly fields: readonly string[];
  /** The predicted post-image, version and op results. */
  readonly data: Data;
  readonly version: number;
  readonly results: Json[];
}

/**
 * Parses a write script's JSON reply. The script ran (it answered), so a reply that cannot be
 * read is an unknown outcome: BackendError with `outcomeUnknown`, never a plain SyntaxError
 * that reads as "nothing happened".
 *
 * @example
 * ```ts
 * const reply = readReply<Reply>(raw, 'write');
 * ```
 */
export function readReply<T>(raw: unknown, what: string): T {
  try {
    return JSON.parse(raw as string) as T;
  } catch (err) {
    throw new BackendError(
      `redis ${what}: the reply could not be read (${JSON.stringify(String(raw).slice(0, 200))}); the write may or may not have been applied — read the document before retrying`,
      { cause: err, outcomeUnknown: true },
    );
  }
}

export function isThenable<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | undefined)?.then === 'function';
}

export function toDoc(key: string, w: WireDoc): StoredDoc {
  return { key, version: w.v, data: w.f, incarnation: w.c };
}

export function checkInt(v: unknown, what: string, bad: (m: string) => Error): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw bad(`${what} must be an integer`);
  return v;
}

export function json(v: unknown, bad: (m: string) => Error): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(v, (_k, x: unknown) => {
      if (typeof x === 'number' && !Number.isFinite(x)) throw new Error('non-finite number');
      return x;
    });
  } catch (err) {
    throw bad(`value is not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (s === undefined) throw bad('value is not JSON (undefined)');
  return s;
}

export function encodeData(data: Data, bad: (m: string) => Error): { [lit: string]: string } {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw bad('data must be an object');
  }
  const out: { [lit: string]: string } = {};
  for (const [k, v] of Object.entries(data)) {
    if (v === undefined) continue;
    out[JSON.stringify(k)] = json(v, bad);
  }
  return out;
}

const OPS = new Set([
  'set',
  'unset',
  'incr',
  'append',
  'extend',
  'insert',
  'remove',
  'pop',
  'setItem',
  'deleteItem',
  'merge',
]);

export function encodeOp(op: Op, bad: (m: string) => Error): { [k: string]: unknown } {
  if (typeof op !== 'object' || op === null || !OPS.has(op.op)) {
    throw bad(`unknown op ${JSON.stringify((op as { op?: unknown })?.op)}`);
  }
  if (typeof op.field !== 'string') throw bad('field must be a string');
  const e: { [k: string]: unknown } = { o: op.op, f: JSON.stringify(op.field) };
  switch (op.op) {
    case 'set':
    case 'append':
    case 'remove':
      e.v = json(op.value, bad);
      break;
    case 'incr':
      if (typeof op.by !== 'number' || !Number.isFinite(op.by)) throw bad('incr by must be finite');
      e.by = op.by;
      break;
    case 'extend':
      if (!Array.isArray(op.values)) throw bad('extend values must be an array');
      e.vs = op.values.map((v) => json(v, bad));
      break;
    case 'insert':
      if (typeof op.index !== 'number' || !Number.isFinite(op.index))
        throw bad('index must be a number');
      e.i = op.index;
      e.v = json(op.value, bad);
      break;
    case 'pop':
      e.i = op.index ?? -1;
      if (typeof e.i !== 'number' || !Number.isFinite(e.i)) throw bad('index must be a number');
      break;
    case 'setItem':
      if (typeof op.item !== 'string') throw bad('item must be a string');
      e.it = op.item;
      e.v = json(op.value, bad);
      break;
    case 'deleteItem':
      if (typeof op.item !== 'string') throw bad('item must be a string');
      e.it = op.item;
      break;
    case 'merge':
      if (typeof op.value !== 'object' || op.value === null || Array.isArray(op.value)) {
        throw bad('merge needs an object');
      }
      e.v = json(op.value, bad);
      break;
  }
  return e;
}

export function encodeGuard(g: Guard, bad: (m: string) => Error): { [k: string]: unknown } {
  if (typeof g !== 'object' || g === null || typeof g.field !== 'string') {
    throw bad('guard must be an object with a field');
  }
  const f = JSON.stringify(g.field);
  switch (g.guard) {
    case 'cmp':
      if (!['eq', 'ne', 'lt', 'lte', 'gt', 'gte'].includes(g.cmp)) throw bad(`bad cmp ${g.cmp}`);
      if (g.ref !== undefined) {
        // Compared with another field of the document: its literal, and whether its length.
        if (typeof g.ref !== 'object' || g.ref === null || typeof g.ref.field !== 'string') {
          throw bad('ref must be { field, length? }');
        }
        return {
          g: 'cmp',
          f,
          c: g.cmp,
          r: JSON.stringify(g.ref.field),
          rl: g.ref.length === true,
          l: g.length === true,
        };
      }
      return { g: 'cmp', f, c: g.cmp, v: json(g.value, bad), l: g.length === true };
    case 'contains':
    case 'notContains':
      return { g: g.guard, f, v: json(g.value, bad) };
    case 'exists':
      return { g: 'exists', f, v: g.value !== false };
    default:
      throw bad(`unknown guard ${JSON.stringify((g as { guard?: unknown }).guard)}`);
  }
}

/**
 * The short form of a lock commit (`fast_commit` in commit.lua): the envelope of one patch of
 * `set`/`unset` ops on distinct fields, with the token its prediction started from, as plain
 * script arguments `[token, base, fieldsUnchangedSince | '', incarnation | '', ('s' | 'u',
 * field literal, value JSON | '')...]`, so that the script needs no JSON decoding. Undefined
 * when the envelope is anything else (the script then decodes it and takes the general path).
 *
 * @example
 * ```ts
 * shortCommit({ t: 'a.2', w: [{ k: 'patch', d: 1, ops: [{ o: 'set', f: '"n"', v: '1' }], ck: { t: 'a.1', ok: true } }] });
 * // ['a.2', 'a.1', '', '', 's', '"n"', '1']
 * ```
 */
export function shortCommit(env: { t: string; w: readonly unknown[] }): string[] | undefined {
  if (env.w.length !== 1) return undefined;
  const w = env.w[0] as {
    k?: string;
    d?: number;
    ops?: Array<{ o: string; f: string; v?: string }>;
    ck?: { t?: string; ok?: boolean };
    fs?: number;
    inc?: string;
  };
  // Only fields the short form carries: a write with anything else (guards, expected version,
  // a field added to the envelope later) must take the general path, which honours it.
  for (const k in w) if (!SHORT_FIELDS.has(k)) return undefined;
  if (w.k !== 'patch' || w.d !== 1) return undefined;
  const ck = w.ck;
  if (!ck || ck.ok !== true || typeof ck.t !== 'string' || !w.ops || w.ops.length === 0) {
    return undefined;
  }
  const args = [env.t, ck.t, w.fs === undefined ? '' : String(w.fs), w.inc ?? ''];
  const seen = new Set<string>();
  for (const op of w.ops) {
    if ((op.o !== 'set' && op.o !== 'unset') || seen.has(op.f)) return undefined;
    seen.add(op.f);
    args.push(op.o === 'set' ? 's' : 'u', op.f, op.o === 'set' ? (op.v as string) : '');
  }
  return args;
}

/** The envelope write fields {@link shortCommit} carries. */
const SHORT_FIELDS = new Set(['k', 'd', 'ops', 'ck', 'fs', 'inc']);

/**
 * Reads the compact reply of a lock commit's short form (see `fast_commit` in commit.lua):
 * `x|<version>|<token>|<incarnation>`, then `|<waiter id>|<fence>` per grant to a waiter of
 * this process, as the same object the JSON reply would give (documents without their fields,
 * flagged `x`; grants flagged `p`: the caller fills in its predicted post-image). Undefined when
 * `raw` is a JSON reply.
 *
 * @example
 * ```ts
 * compactCommitReply('x|8|a.9|a.1|a.w4|12', [null]);
 * // { ok: 1, x: 1, docs: [{ v: 8, w: 'a.9', c: 'a.1', f: {} }], results: [[null]],
 * //   grants: [['a.w4', { ok: 1, fences: [12], docs: [{ v: 8, w: 'a.9', c: 'a.1', f: {} }], p: 1 }]] }
 * ```
 */
export function compactCommitReply(
  raw: string,
  results: readonly Json[],
): (Reply & { x: 1; grants?: LocalWakeups }) | undefined {
  if (raw.charCodeAt(0) !== 120 || raw.charCodeAt(1) !== 124) return undefined; // "x|"
  const p = raw.split('|');
  if (p.length < 4 || p.length % 2 !== 0) {
    // The commit script answered "x": it ran and stored the commit; unreadable is not "refused".
    throw new BackendError(
      `redis commit: malformed reply ${JSON.stringify(raw.slice(0, 200))}; the commit may have been applied — read the document`,
      { outcomeUnknown: true },
    );
  }
  const doc = (): WireDoc => ({ v: Number(p[1]), w: p[2] as string, c: p[3] as string, f: {} });
  const reply: Reply & { x: 1; grants?: LocalWakeups } = {
    ok: 1,
    x: 1,
    docs: [doc()],
    results: [[...results]],
  };
  if (p.length > 4) {
    const grants: LocalWakeups = [];
    for (let i = 4; i < p.length; i += 2) {
      grants.push([p[i] as string, { ok: 1, fences: [Number(p[i + 1])], docs: [doc()], p: 1 }]);
    }
    reply.grants = grants;
  }
  return reply;
}
