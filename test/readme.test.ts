/**
 * Runs every ```ts example of README.md exactly as written (with `from 'lockstep'` pointed at
 * this checkout's source) and checks that each `console.log(...); // expected` prints `expected`.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { dropPrefix } from './backends/redis/drop-prefix.js';
import { databaseUrl, redisUrl, uniquePrefix } from './support/env.js';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] as string);
const tmp = join(root, 'test', '.readme-tmp');

// The server examples run on the run's servers (REDIS_URL / DATABASE_URL from the globalSetup)
// under a prefix and schema of this run only (they read LOCKSTEP_PREFIX / LOCKSTEP_SCHEMA).
const prefix = uniquePrefix('lockstep-readme', '-');
const schema = uniquePrefix('lockstep_readme', '_');

describe('README examples', () => {
  afterAll(async () => {
    rmSync(tmp, { recursive: true, force: true });
    // Leave nothing behind.
    const { Redis } = await import('ioredis');
    const r = new Redis(redisUrl());
    await dropPrefix(r, prefix);
    await r.quit();
    const pg = await import('pg');
    const client = new pg.default.Client({ connectionString: databaseUrl() });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
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
        // (a worker's own `import('lockstep/threads')` resolves through the package's exports
        // to the build that `npm test` makes first)
        .replaceAll("from 'lockstep/threads'", `from '${join(root, 'src/threads/index.ts')}'`)
        .replaceAll(
          "from 'lockstep/sqlite'",
          `from '${join(root, 'src/backends/sqlite/index.ts')}'`,
        )
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
        env: {
          ...process.env,
          LOCKSTEP_PREFIX: prefix,
          LOCKSTEP_SCHEMA: schema,
          LOCKSTEP_SQLITE_PATH: join(tmp, `example-${i}.db`),
        },
      });
      expect(stdout.trimEnd().split('\n')).toEqual(expected);
    });
  });

  it("the server examples used this run's schema, not the fixed one", async () => {
    const pg = await import('pg');
    const client = new pg.default.Client({ connectionString: databaseUrl() });
    await client.connect();
    try {
      const r = await client.query<{ name: string }>(
        'SELECT schema_name AS name FROM information_schema.schemata WHERE schema_name IN ($1, $2)',
        [schema, 'lockstep_readme'],
      );
      expect(r.rows.map((x) => x.name)).toContain(schema);
      if (!process.env.LOCKSTEP_TEST_DATABASE_URL)
        expect(r.rows.map((x) => x.name)).not.toContain('lockstep_readme');
    } finally {
      await client.end();
    }
  });
});
