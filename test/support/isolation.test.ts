/**
 * A guard over the test tree: commands that act on a whole server (CLIENT PAUSE/KILL, SCRIPT
 * FLUSH, FUNCTION DELETE, ACL, CONFIG, FLUSHALL, DEBUG, pg_terminate_backend, ALTER SYSTEM...)
 * appear only in files that start a server of their own (startRedis() / startPostgres()), and
 * KEYS appears nowhere (SCAN instead). It reads the source, so it is a heuristic: a file that
 * starts a private server but sends its faults to REDIS_URL would pass it; review still matters.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const testRoot = join(import.meta.dirname, '..');
const self = join(import.meta.dirname, 'isolation.test.ts');

const q = `['"\`]`;
const redisWide: RegExp[] = [
  new RegExp(`\\.client\\(\\s*${q}(PAUSE|UNPAUSE|KILL|NO-EVICT)`, 'i'),
  new RegExp(`${q}CLIENT${q}\\s*,\\s*${q}(PAUSE|UNPAUSE|KILL)`, 'i'),
  new RegExp(`\\.script\\(\\s*${q}(FLUSH|KILL)`, 'i'),
  new RegExp(`${q}(SCRIPT|FUNCTION)${q}\\s*,\\s*${q}(FLUSH|KILL|DELETE|RESTORE)`, 'i'),
  /\.(flushall|flushdb|shutdown|debug|acl|function|slaveof|replicaof|failover)\(/i,
  // Sent by name: client.call('ACL', ...), or in a redis-cli argument list.
  new RegExp(
    `\\.(call|sendCommand)\\(\\s*${q}(FLUSHALL|FLUSHDB|SHUTDOWN|DEBUG|ACL|CONFIG|FUNCTION|SCRIPT|CLIENT|SLAVEOF|REPLICAOF|FAILOVER)${q}`,
    'i',
  ),
  new RegExp(`${q}(FLUSHALL|FLUSHDB|SHUTDOWN)${q}`, 'i'),
  new RegExp(`${q}DEBUG${q}\\s*,\\s*${q}(SLEEP|SEGFAULT|RELOAD|SET-ACTIVE-EXPIRE)`, 'i'),
  new RegExp(`${q}(CONFIG${q}\\s*,\\s*${q}(SET|RESETSTAT|REWRITE)|ACL${q}\\s*,\\s*${q}\\w+)`, 'i'),
  new RegExp(`\\.config\\(\\s*${q}(SET|RESETSTAT|REWRITE)`, 'i'),
];
const pgWide: RegExp[] = [
  /pg_terminate_backend|pg_cancel_backend|pg_reload_conf/i,
  /ALTER\s+SYSTEM/i,
];
const keysCommand = new RegExp(`\\.keys\\(\\s*${q}|${q}KEYS${q}\\s*,`);

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return e.name.startsWith('.') ? [] : testFiles(p);
    return /\.(ts|mts|js|mjs)$/.test(e.name) && p !== self ? [p] : [];
  });
}

function hits(src: string, patterns: RegExp[]): string[] {
  return src
    .split('\n')
    .map((line, i) => ({ line, n: i + 1 }))
    .filter(({ line }) => patterns.some((p) => p.test(line)))
    .map(({ line, n }) => `${n}: ${line.trim()}`);
}

describe('no test disturbs a server other files share', () => {
  const files = testFiles(testRoot).map((p) => ({
    name: relative(testRoot, p),
    src: readFileSync(p, 'utf8'),
  }));

  it('finds the test files', () => {
    expect(files.length).toBeGreaterThan(20);
  });

  it('server-wide Redis commands only where the file starts its own Redis', () => {
    const bad = files
      .filter((f) => !/startRedis\(/.test(f.src))
      .flatMap((f) => hits(f.src, redisWide).map((h) => `${f.name}:${h}`));
    expect(bad).toEqual([]);
  });

  it('server-wide PostgreSQL commands only where the file starts its own PostgreSQL', () => {
    const bad = files
      .filter((f) => !/startPostgres\(/.test(f.src))
      .flatMap((f) => hits(f.src, pgWide).map((h) => `${f.name}:${h}`));
    expect(bad).toEqual([]);
  });

  it('no KEYS (it blocks the server while it walks every key): SCAN', () => {
    const bad = files.flatMap((f) => hits(f.src, [keysCommand]).map((h) => `${f.name}:${h}`));
    expect(bad).toEqual([]);
  });
});
