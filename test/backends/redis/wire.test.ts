/**
 * The lock commit's short form, both ways (src/backends/redis/wire.ts): which envelopes may be
 * sent as plain script arguments, and how the compact reply reads back.
 */
import { describe, expect, it } from 'vitest';
import { compactCommitReply, shortCommit } from '../../../src/backends/redis/wire.js';
import { BackendError } from '../../../src/errors.js';

const patch = (extra: Record<string, unknown> = {}) => ({
  t: 'a.2',
  w: [
    {
      k: 'patch',
      d: 1,
      ops: [
        { o: 'set', f: '"n"', v: '1' },
        { o: 'unset', f: '"note"' },
      ],
      fs: 7,
      inc: 'a.1',
      ck: { t: 'a.1', ok: true },
      ...extra,
    },
  ],
});

describe('shortCommit', () => {
  it('carries a predicted patch of set/unset ops on distinct fields', () => {
    expect(shortCommit(patch())).toEqual([
      'a.2',
      'a.1',
      '7',
      'a.1',
      's',
      '"n"',
      '1',
      'u',
      '"note"',
      '',
    ]);
  });

  it('refuses anything it cannot carry, so that the general path honours it', () => {
    // Guards, an expected version or incarnation, a field the short form does not know.
    for (const extra of [
      { g: [{ g: 'exists', f: '"n"', v: true }] },
      { ev: 3 },
      { ei: 'a.0' },
      { vb: 2 },
      { somethingNew: 1 },
    ]) {
      expect(shortCommit(patch(extra))).toBeUndefined();
    }
    expect(shortCommit(patch({ ck: { t: 'a.1', ok: 'u' } }))).toBeUndefined();
    expect(shortCommit(patch({ ops: [{ o: 'incr', f: '"n"', by: 1 }] }))).toBeUndefined();
    const twice = patch({
      ops: [
        { o: 'set', f: '"n"', v: '1' },
        { o: 'set', f: '"n"', v: '2' },
      ],
    });
    expect(shortCommit(twice)).toBeUndefined();
    expect(shortCommit({ t: 'a.2', w: [...patch().w, ...patch().w] })).toBeUndefined();
  });
});

describe('compactCommitReply', () => {
  it('reads the version, token, incarnation and every grant', () => {
    const r = compactCommitReply('x|8|a.9|a.1|a.w4|12|a.w5|13', [null]);
    expect(r).toEqual({
      ok: 1,
      x: 1,
      docs: [{ v: 8, w: 'a.9', c: 'a.1', f: {} }],
      results: [[null]],
      grants: [
        ['a.w4', { ok: 1, fences: [12], docs: [{ v: 8, w: 'a.9', c: 'a.1', f: {} }], p: 1 }],
        ['a.w5', { ok: 1, fences: [13], docs: [{ v: 8, w: 'a.9', c: 'a.1', f: {} }], p: 1 }],
      ],
    });
    expect(compactCommitReply('x|8|a.9|a.1', [null])?.grants).toBeUndefined();
  });

  it('leaves a JSON reply to JSON.parse, and refuses a malformed compact one', () => {
    expect(compactCommitReply('{"ok":1,"x":1}', [])).toBeUndefined();
    expect(() => compactCommitReply('x|8|a.9', [])).toThrow(BackendError);
  });
});
