/**
 * What a consumer installs: the `lockstep` and `lockstep-lab` tarballs as `npm pack` makes them
 * from this checkout's build (run `npm run build` first; `npm test` does), installed with npm
 * into temporary apps. The library has no dependency and imports nothing but Node and its
 * optional peers (ioredis, pg, better-sqlite3); it works from ESM alone, then with the peers against the test
 * servers (under a unique prefix and schema, removed afterwards); `require('lockstep')` loads
 * the same ES module where Node can require ES modules, and fails with ERR_REQUIRE_ESM where it
 * cannot. The lab package brings the CLI's libraries and its `lockstep-lab` command runs.
 */
import { execFile } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
const CLI_LIBRARIES = ['commander', 'cli-progress', 'cli-table3'];
const RUN = `${process.pid}${Date.now().toString(36)}`;
const PREFIX = `lockstep-pkgtest-${RUN}`;
const SCHEMA = `lockstep_pkgtest_${RUN}`;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string, timeout = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd, timeout, env: { ...process.env, FORCE_COLOR: '0', NO_COLOR: '1' } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function ok(cmd: string, args: string[], cwd: string): Promise<string> {
  const r = await run(cmd, args, cwd);
  expect(r.code, `${cmd} ${args.join(' ')} failed:\n${r.stderr}\n${r.stdout}`).toBe(0);
  return r.stdout;
}

interface Packed {
  filename: string;
  files: { path: string }[];
}

async function pack(dir: string, into: string): Promise<Packed> {
  const out = await ok('npm', ['pack', '--json', '--pack-destination', into], dir);
  const [packed] = JSON.parse(out) as Packed[];
  return packed as Packed;
}

/** A fresh app folder with a package.json, where tarballs are installed with npm. */
function app(name: string): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, private: true }));
  return dir;
}

const install = (dir: string, ...what: string[]) =>
  ok('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', ...what], dir);

/** Every file under `dir`. */
const walk = (dir: string): string[] =>
  readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });

/**
 * The bare module specifiers a JavaScript or declaration file imports (static, dynamic and
 * `require`), as TypeScript's scanner finds them: examples in comments do not count.
 */
function bareImports(code: string): string[] {
  return ts
    .preProcessFile(code, true, true)
    .importedFiles.map((f) => f.fileName)
    .filter((s) => !s.startsWith('.'));
}

const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;

let tmp: string;
let library: string;
let lab: string;
let libraryFiles: string[];
let labFiles: string[];

beforeAll(async () => {
  for (const built of ['dist/index.js', 'packages/lab/dist/cli.js']) {
    if (!existsSync(join(ROOT, built))) throw new Error(`${built} is missing: run npm run build`);
  }
  tmp = mkdtempSync(join(tmpdir(), 'lockstep-pack-'));
  const [a, b] = await Promise.all([pack(ROOT, tmp), pack(join(ROOT, 'packages', 'lab'), tmp)]);
  library = join(tmp, a?.filename ?? '');
  lab = join(tmp, b?.filename ?? '');
  libraryFiles = (a?.files ?? []).map((f) => f.path);
  labFiles = (b?.files ?? []).map((f) => f.path);
}, 120_000);

afterAll(async () => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  const r = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `*${PREFIX}*`, 'COUNT', 1000);
    if (keys.length > 0) await r.del(...keys);
    cursor = next;
  } while (cursor !== '0');
  await r.quit();
  const c = new pg.Client({ connectionString: DATABASE_URL });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`);
  await c.end();
});

describe('the lockstep tarball', () => {
  it('carries the library, its LICENSE and README, and no lab', () => {
    expect(libraryFiles).toEqual(
      expect.arrayContaining([
        'LICENSE',
        'README.md',
        'package.json',
        'dist/index.js',
        'dist/index.d.ts',
        'dist/backends/redis/index.js',
        'dist/backends/postgres/index.js',
      ]),
    );
    expect(libraryFiles.some((f) => f.endsWith('.lua'))).toBe(true);
    expect(libraryFiles.filter((f) => f.startsWith('dist/lab/'))).toEqual([]);
  });

  it('installs alone: no dependency, no command, nothing but lockstep in node_modules', async () => {
    const dir = app('alone');
    await install(dir, library);
    const installed = readdirSync(join(dir, 'node_modules')).filter((n) => !n.startsWith('.'));
    expect(installed).toEqual(['lockstep']);
    const manifest = readJson(join(dir, 'node_modules', 'lockstep', 'package.json'));
    expect(manifest.dependencies).toBeUndefined();
    expect(manifest.bin).toBeUndefined();
    expect(manifest.license).toBe('MIT');
    expect(readFileSync(join(dir, 'node_modules', 'lockstep', 'LICENSE'), 'utf8')).toMatch(
      /^MIT License\n\nCopyright \(c\) \d{4} Lockstep contributors\n/,
    );
  });

  it('its files import nothing but node: modules and the optional peers ioredis, pg and better-sqlite3', async () => {
    const dir = app('scan');
    await install(dir, library);
    const home = join(dir, 'node_modules', 'lockstep');
    const imported = new Set<string>();
    for (const f of walk(home).filter((p) => /\.(js|d\.ts)$/.test(p))) {
      for (const s of bareImports(readFileSync(f, 'utf8'))) imported.add(s);
    }
    const outside = [...imported].filter((s) => !s.startsWith('node:'));
    expect(outside.sort()).toEqual(['better-sqlite3', 'ioredis', 'pg']);
    for (const lib of CLI_LIBRARIES) expect(imported.has(lib)).toBe(false);
  });

  it('works from an ES module with no other package installed', async () => {
    const dir = app('esm');
    await install(dir, library);
    writeFileSync(
      join(dir, 'main.mjs'),
      `import { createStore, Mutex, ValidationError } from 'lockstep';
const schema = { '~standard': { version: 1, vendor: 'test', validate: (value) => ({ value }) } };
const store = createStore();
const Counter = store.model('counter', schema);
await Counter.put('c', { n: 0 });
const mutex = new Mutex();
await Promise.all([1, 2, 3].map(() => mutex.run(() => Counter.apply('c', (c) => { c.n.incr(); }))));
let invalid = '';
try { new Mutex({ name: 1 }); } catch (err) { invalid = err instanceof ValidationError ? err.code : String(err); }
console.log(JSON.stringify({ n: (await Counter.get('c')).data.n, invalid }));
await store.close();
`,
    );
    const out = await ok(process.execPath, ['main.mjs'], dir);
    expect(JSON.parse(out)).toEqual({ n: 3, invalid: 'INVALID' });
  });

  it('works with ioredis and pg as its peers, on Redis and PostgreSQL', async () => {
    const dir = app('peers');
    await install(dir, library, 'ioredis@^5', 'pg@^8');
    writeFileSync(
      join(dir, 'main.mjs'),
      `import { createStore } from 'lockstep';
import { redis } from 'lockstep/redis';
import { postgres } from 'lockstep/postgres';
const schema = { '~standard': { version: 1, vendor: 'test', validate: (value) => ({ value }) } };
const out = {};
for (const [name, backend] of [
  ['redis', redis({ url: ${JSON.stringify(REDIS_URL)}, prefix: ${JSON.stringify(PREFIX)} })],
  ['postgres', postgres({ url: ${JSON.stringify(DATABASE_URL)}, schema: ${JSON.stringify(SCHEMA)} })],
]) {
  const store = createStore(backend);
  const Job = store.model('job', schema);
  await Job.put('j', { attempts: 0 });
  await Job.apply('j', (j) => { j.attempts.incr(); });
  await Job.lock('j', (j) => { j.attempts += 1; });
  out[name] = (await Job.get('j')).data.attempts;
  await Job.delete('j');
  await store.close();
}
console.log(JSON.stringify(out));
`,
    );
    const out = await ok(process.execPath, ['main.mjs'], dir);
    expect(JSON.parse(out)).toEqual({ redis: 2, postgres: 2 });
  });

  it('is ESM-only: require() gets the same ES module where Node can, else ERR_REQUIRE_ESM', async () => {
    const dir = app('cjs');
    await install(dir, library);
    writeFileSync(
      join(dir, 'main.cjs'),
      `const required = require('lockstep');
import('lockstep').then((imported) => {
  console.log(JSON.stringify({ same: imported.Mutex === required.Mutex, createStore: typeof required.createStore }));
});
`,
    );
    const features = process.features as { require_module?: boolean };
    if (features.require_module) {
      // Node 20.19+ / 22.12+: one module instance for both, so instanceof holds across them.
      const out = await ok(process.execPath, ['main.cjs'], dir);
      expect(JSON.parse(out)).toEqual({ same: true, createStore: 'function' });
    }
    // What older Node versions do (here by turning the feature off when it is on by default):
    const args = features.require_module ? ['--no-experimental-require-module'] : [];
    const r = await run(process.execPath, [...args, 'main.cjs'], dir);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('ERR_REQUIRE_ESM');
  });
});

describe('the lockstep-lab tarball', () => {
  it('carries the command and the lab, and names lockstep as a peer of the same version', () => {
    expect(labFiles).toEqual(
      expect.arrayContaining([
        'LICENSE',
        'README.md',
        'package.json',
        'bin/lockstep-lab.js',
        'dist/cli.js',
      ]),
    );
    const root = readJson(join(ROOT, 'package.json'));
    const manifest = readJson(join(ROOT, 'packages', 'lab', 'package.json'));
    expect(manifest.version).toBe(root.version);
    expect(manifest.peerDependencies).toMatchObject({ lockstep: `^${root.version as string}` });
    expect(Object.keys(manifest.dependencies as object).sort()).toEqual([...CLI_LIBRARIES].sort());
    expect(manifest.bin).toEqual({ 'lockstep-lab': './bin/lockstep-lab.js' });
    expect(readFileSync(join(ROOT, 'packages', 'lab', 'LICENSE'), 'utf8')).toBe(
      readFileSync(join(ROOT, 'LICENSE'), 'utf8'),
    );
  });

  it('installs with lockstep and the CLI libraries, and `lockstep-lab --quick` runs on memory', async () => {
    const dir = app('lab');
    await install(dir, library, lab);
    const installed = readdirSync(join(dir, 'node_modules'));
    for (const lib of ['lockstep', 'lockstep-lab', ...CLI_LIBRARIES]) {
      expect(installed).toContain(lib);
    }
    const r = await run(
      join(dir, 'node_modules', '.bin', 'lockstep-lab'),
      ['counter', 'campaign', '--quick', '--json', '--seed', '7'],
      dir,
    );
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const report = JSON.parse(lines[0] as string) as {
      backend: string;
      scenarios: {
        name: string;
        strategies: { name: string; safe: boolean; violations: number }[];
      }[];
    };
    expect(report.backend).toBe('memory');
    expect(report.scenarios.map((s) => s.name)).toEqual(['counter', 'campaign']);
    for (const s of report.scenarios) {
      for (const st of s.strategies.filter((x) => x.safe)) expect(st.violations, st.name).toBe(0);
    }
    // Usage errors still exit 2 with one line, through the installed command.
    const bad = await run(
      join(dir, 'node_modules', '.bin', 'lockstep-lab'),
      ['--workers', '0'],
      dir,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('the repository', () => {
  it('links the workspace command, which runs the built lab', async () => {
    const r = await run(
      join(ROOT, 'node_modules', '.bin', 'lockstep-lab'),
      ['counter', '--quick', '--json', '--seed', '7'],
      ROOT,
    );
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { backend: string }).backend).toBe('memory');
  });
});
