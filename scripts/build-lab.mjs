// Builds the `lockstep-lab` package (packages/lab/dist/) from the library build (dist/lab/,
// compiled from src/lab/ by `npm run build`): the lab's JavaScript, with each import that
// leaves src/lab/ pointed at the library entry point a user imports (`lockstep`,
// `lockstep/redis`, `lockstep/postgres`, `lockstep/sqlite`, `lockstep/verify`), so that the lab runs against the installed library
// and the library never carries the CLI's dependencies. An import of any other library module
// stops the build: the lab may use only what the package exports.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const from = join(dist, 'lab');
const to = join(root, 'packages', 'lab', 'dist');

/** dist-relative module -> the specifier a user imports it by. */
const ENTRY_POINTS = {
  'index.js': 'lockstep',
  'backends/redis/index.js': 'lockstep/redis',
  'backends/postgres/index.js': 'lockstep/postgres',
  'backends/sqlite/index.js': 'lockstep/sqlite',
  'verify/index.js': 'lockstep/verify',
};

const walk = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  );

// The lab's modules are its sources, not whatever an older build left in dist/lab/.
const modules = walk(join(root, 'src', 'lab'))
  .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
  .map((f) => relative(join(root, 'src', 'lab'), f).replace(/\.ts$/, '.js'));

// `from '…'`, `import '…'`, `import('…')`: the module specifiers of compiled ESM.
const SPECIFIER = /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.\.?\/[^'"]+)\2/g;

rmSync(to, { recursive: true, force: true });
for (const rel of modules) {
  const file = join(from, rel);
  let code;
  try {
    code = readFileSync(file, 'utf8');
  } catch {
    throw new Error(`build-lab: ${relative(root, file)} is missing; run tsc first (npm run build)`);
  }
  code = code.replace(SPECIFIER, (whole, head, quote, spec) => {
    const target = resolve(dirname(file), spec);
    if (!relative(from, target).startsWith('..')) return whole; // inside the lab
    const entry = ENTRY_POINTS[relative(dist, target).split('\\').join('/')];
    if (entry === undefined) {
      throw new Error(
        `build-lab: src/lab/${rel.replace(/\.js$/, '.ts')} imports ${spec}, which is not a public entry point; import it from 'lockstep', 'lockstep/redis', 'lockstep/postgres', 'lockstep/sqlite' or 'lockstep/verify' (src/index.ts, src/backends/*/index.ts, src/verify/index.ts)`,
      );
    }
    return `${head}${quote}${entry}${quote}`;
  });
  // The source maps point at src/, which the package does not carry.
  code = code.replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n');
  const out = join(to, rel);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, code);
}
