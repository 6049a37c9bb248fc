/**
 * Redis key layout of the Lockstep Redis backend.
 *
 * A document lives at `<prefix>:{<model>:<key>}` (the whole `{...}` is the Cluster hash tag), and
 * its fence, per-field versions, leases and wait queues at the same base plus a suffix, so they
 * all share one slot. Every user-supplied part is escaped so that distinct (prefix, model, key)
 * triples never collide and a key cannot break out of its hash tag: `%`, `{`, `}` and `:` become
 * `%XX`, and a lone UTF-16 surrogate becomes `%uXXXX`.
 *
 * A named permit pool (mutex, rwlock, semaphore) lives at `<prefix>:{!<kind>:<name>}` plus a
 * suffix: a hash tag starting with `!`, which no document's does (a model name starts with a
 * letter or `_`, and a `hashTag` text is escaped, so never holds a `:`), so `mutex "x"` and a
 * document `"x"` never share a key; all keys of one pool share one slot.
 */

/**
 * Escapes one key segment (see the module comment).
 *
 * @example
 * ```ts
 * escapeSegment('a:{b}'); // 'a%3A%7Bb%7D'
 * ```
 */
export function escapeSegment(s: string): string {
  let out = '';
  let plainFrom = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let rep: string | undefined;
    if (c === 0x25 || c === 0x7b || c === 0x7d || c === 0x3a) {
      rep = `%${c.toString(16).toUpperCase()}`;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const next = s.charCodeAt(i + 1);
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
      rep = `%u${c.toString(16).toUpperCase()}`;
    }
    if (rep !== undefined) {
      out += s.slice(plainFrom, i) + rep;
      plainFrom = i + 1;
    }
  }
  return plainFrom === 0 ? s : out + s.slice(plainFrom);
}

/** The keys of one document (all in one hash slot). */
export interface DocKeys {
  /** The document hash. */
  readonly doc: string;
  /** Fence counter. */
  readonly fence: string;
  /** The text inside the hash tag (what the slot is computed from). */
  readonly tag: string;
}

/** Lease keys of one (document, action). */
export interface LeaseKeys {
  readonly lease: string;
  readonly queue: string;
  readonly queueInfo: string;
}

/** The keys of one rate-limit key (all in one hash slot). */
export interface LimitKeys {
  readonly keys: readonly string[];
  readonly tag: string;
}

/** The keys of one named permit pool (all in one hash slot; see permit-lib.lua). */
export interface PermitKeys {
  /** Holders (and the pool's capacity). */
  readonly holders: string;
  /** FIFO wait queue (waiter ids). */
  readonly queue: string;
  /** Waiter id -> its entry. */
  readonly queueInfo: string;
  /** Fence counter. */
  readonly fence: string;
  /** The four, in the order the permit scripts take them. */
  readonly all: readonly string[];
  /** The text inside the hash tag. */
  readonly tag: string;
}

/** The keys of one job queue (one hash tag: every script of a queue touches one slot). */
export interface QueueKeys {
  /** Ready jobs: score priority, member "<run at>|<id>" (zero-padded). */
  readonly ready: string;
  /** Delayed jobs by run time. */
  readonly delayed: string;
  /** Active claims by expiry. */
  readonly active: string;
  /** Key -> id of its live job. */
  readonly keys: string;
  /** Failed job ids. */
  readonly failed: string;
  /** The id counter. */
  readonly counter: string;
  /** The wake-up channel (pub/sub). */
  readonly channel: string;
  /** A job's hash is this prefix followed by its id. */
  readonly job: string;
}

/** Builds keys for one backend instance (one prefix). */
export class KeyLayout {
  readonly #prefix: string;
  readonly #hashTag: ((model: string, key: string) => string) | undefined;

  constructor(prefix: string, hashTag?: (model: string, key: string) => string) {
    this.#prefix = escapeSegment(prefix);
    this.#hashTag = hashTag;
  }

  /** The key pattern matching everything this layout writes (for SCAN-based cleanup). */
  get pattern(): string {
    return `${this.#prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}:*`;
  }

  /** The wake-up channel of one backend instance. */
  channel(instance: string): string {
    return `${this.#prefix}:wake:${instance}`;
  }

  /** Recently built document keys (bounded): hot documents reuse one set of key strings. */
  readonly #docs = new Map<string, DocKeys>();

  /**
   * The keys of queue `name`: `<prefix>:{$q:<name>}:…` (`$` never occurs in a model name, so no
   * document's hash tag is a queue's).
   */
  queue(name: string): QueueKeys {
    const b = `${this.#prefix}:{$q:${name}}`;
    return {
      ready: `${b}:r`,
      delayed: `${b}:d`,
      active: `${b}:a`,
      keys: `${b}:k`,
      failed: `${b}:x`,
      counter: `${b}:n`,
      channel: `${b}:w`,
      job: `${b}:j:`,
    };
  }

  doc(model: string, key: string): DocKeys {
    const id = `${model}\u0000${key}`;
    let d = this.#docs.get(id);
    if (d === undefined) {
      d = this.#build(model, key);
      if (this.#docs.size >= 4096) this.#docs.clear();
      this.#docs.set(id, d);
    }
    return d;
  }

  #build(model: string, key: string): DocKeys {
    let base: string;
    let tag: string;
    if (this.#hashTag) {
      tag = escapeSegment(this.#hashTag(model, key));
      base = `${this.#prefix}:{${tag}}#${model}:${escapeSegment(key)}`;
    } else {
      tag = `${model}:${escapeSegment(key)}`;
      base = `${this.#prefix}:{${tag}}`;
    }
    return { doc: base, fence: `${base}:f`, tag };
  }

  /**
   * The keys of one rate-limit key (see consume.lua): a sliding window's entry list and running
   * sum, or a token bucket's hash. With `hashTag`, the tag is `hashTag(name, key)`, so limits can
   * share a Cluster slot with documents in one `store.apply`.
   */
  limit(name: string, algorithm: 'sliding-window' | 'token-bucket', key: string): LimitKeys {
    const id = `${name}\u0000${algorithm}\u0000${key}`;
    let k = this.#limits.get(id);
    if (k === undefined) {
      k = this.#buildLimit(name, algorithm, key);
      if (this.#limits.size >= 4096) this.#limits.clear();
      this.#limits.set(id, k);
    }
    return k;
  }

  /** Recently built limit keys (bounded, like {@link doc}'s). */
  readonly #limits = new Map<string, LimitKeys>();

  #buildLimit(name: string, algorithm: 'sliding-window' | 'token-bucket', key: string): LimitKeys {
    const a = algorithm === 'token-bucket' ? 'tb' : 'sw';
    let base: string;
    let tag: string;
    if (this.#hashTag) {
      tag = escapeSegment(this.#hashTag(name, key));
      base = `${this.#prefix}:{${tag}}#rl:${a}:${name}:${escapeSegment(key)}`;
    } else {
      tag = `rl:${a}:${name}:${escapeSegment(key)}`;
      base = `${this.#prefix}:{${tag}}`;
    }
    return { keys: a === 'tb' ? [`${base}:b`] : [`${base}:l`, `${base}:m`], tag };
  }

  /** Recently built pool keys (bounded, like documents'). */
  readonly #pools = new Map<string, PermitKeys>();

  /** The keys of the permit pool `(kind, name)`; `kind` is a PermitKind (letters only). */
  permit(kind: string, name: string): PermitKeys {
    const id = `${kind}\u0000${name}`;
    let p = this.#pools.get(id);
    if (p === undefined) {
      const tag = `!${kind}:${escapeSegment(name)}`;
      const base = `${this.#prefix}:{${tag}}`;
      const holders = `${base}:h`;
      const queue = `${base}:q`;
      const queueInfo = `${base}:qa`;
      const fence = `${base}:f`;
      p = { holders, queue, queueInfo, fence, all: [holders, queue, queueInfo, fence], tag };
      if (this.#pools.size >= 4096) this.#pools.clear();
      this.#pools.set(id, p);
    }
    return p;
  }

  lease(doc: DocKeys, action: string): LeaseKeys {
    const a = escapeSegment(action);
    return {
      lease: `${doc.doc}:l:${a}`,
      queue: `${doc.doc}:q:${a}`,
      queueInfo: `${doc.doc}:qa:${a}`,
    };
  }
}

const CRC16_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let j = 0; j < 8; j++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    t[i] = crc;
  }
  return t;
})();

/**
 * The Redis Cluster slot of a hash tag's text (CRC16/XMODEM of its UTF-8 bytes, mod 16384).
 *
 * @example
 * ```ts
 * clusterSlot('123456789'); // 12739
 * ```
 */
export function clusterSlot(tag: string): number {
  let crc = 0;
  for (const b of Buffer.from(tag, 'utf8')) {
    crc = ((crc << 8) & 0xffff) ^ (CRC16_TABLE[((crc >> 8) ^ b) & 0xff] as number);
  }
  return crc % 16384;
}
