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

/** A JSON value's text (the boundary refused everything that is not JSON). */
function json(v: unknown): string {
  return JSON.stringify(v) as string;
}

/** A document's data for the scripts: field literal -> value JSON. */
export function encodeData(data: Data): { [lit: string]: string } {
  const out: { [lit: string]: string } = {};
  for (const k in data) {
    if (Object.hasOwn(data, k)) out[JSON.stringify(k)] = json(data[k]);
  }
  return out;
}

/** One op for the scripts (`o` op, `f` field literal, values as JSON text). */
export function encodeOp(op: Op): { [k: string]: unknown } {
  const e: { [k: string]: unknown } = { o: op.op, f: JSON.stringify(op.field) };
  switch (op.op) {
    case 'set':
    case 'append':
    case 'remove':
    case 'merge':
      e.v = json(op.value);
      break;
    case 'incr':
      e.by = op.by;
      break;
    case 'extend':
      e.vs = op.values.map(json);
      break;
    case 'insert':
      e.i = op.index;
      e.v = json(op.value);
      break;
    case 'pop':
      e.i = op.index ?? -1;
      break;
    case 'setItem':
      e.it = op.item;
      e.v = json(op.value);
      break;
    case 'deleteItem':
      e.it = op.item;
      break;
  }
  return e;
}

/** One guard for the scripts; a `ref` (another field of the document) as its field literal. */
export function encodeGuard(g: Guard): { [k: string]: unknown } {
  const f = JSON.stringify(g.field);
  switch (g.guard) {
    case 'cmp':
      if (g.ref !== undefined) {
        return {
          g: 'cmp',
          f,
          c: g.cmp,
          r: JSON.stringify(g.ref.field),
          rl: g.ref.length === true,
          l: g.length === true,
        };
      }
      return { g: 'cmp', f, c: g.cmp, v: json(g.value), l: g.length === true };
    case 'contains':
    case 'notContains':
      return { g: g.guard, f, v: json(g.value) };
    case 'exists':
      return { g: 'exists', f, v: g.value !== false };
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
