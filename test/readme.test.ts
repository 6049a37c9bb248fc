/**
 * Runs every ```ts example of README.md exactly as written (with `from 'lockstep'` pointed at
 * this checkout's source) and checks that each `console.log(...); // expected` prints `expected`.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] as string);
const tmp = join(root, 'test', '.readme-tmp');

describe('README examples', () => {
  afterAll(async () => {
    rmSync(tmp, { recursive: true, force: true });
    // The server examples write under their own prefix and schema: leave nothing behind.
    const { Redis } = await import('ioredis');
    const r = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
    const keys = await r.keys('lockstep-readme:*');
    if (keys.length > 0) await r.del(...keys);
    await r.quit();
    const pg = await import('pg');
    const client = new pg.default.Client({
      connectionString: process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test',
    });
    await client.connect();
    await client.query('DROP SCHEMA IF EXISTS lockstep_readme CASCADE');
    await client.end();
  });

  it('has examples', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(4);
  });

  blocks.forEach((code, i) => {
    const title = code.split('\n').find((l) => l.includes('console.log')) ?? `block ${i}`;
    it(`example ${i + 1} runs and prints what it says (${title.trim().slice(0, 60)})`, async () => {
      mkdirSync(tmp, { recursive: true });
      const file = join(tmp, `example-${i}.ts`);
      const src = code
        .replaceAll("from 'lockstep/redis'", `from '${join(root, 'src/backends/redis/index.ts')}'`)
        .replaceAll(
          "from 'lockstep/postgres'",
          `from '${join(root, 'src/backends/postgres/index.ts')}'`,
        )
        .replaceAll("from 'lockstep'", `from '${join(root, 'src/index.ts')}'`);
      writeFileSync(file, `${src}\nexport {};\n`);
      const expected = [...code.matchAll(/console\.log\(.*\);[ \t]*\/\/ (.*)$/gm)].map(
        (m) => m[1] as string,
      );
      // Every console.log in an example states what it prints.
      expect(code.match(/console\.log\(/g)?.length ?? 0).toBe(expected.length);
      const { stdout } = await run(join(root, 'node_modules/.bin/tsx'), [file], {
        cwd: root,
        timeout: 60_000,
      });
      expect(stdout.trimEnd().split('\n')).toEqual(expected);
    });
  });
});
