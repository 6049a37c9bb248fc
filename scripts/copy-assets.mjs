// Copies non-TypeScript assets (Lua scripts) from src/ to dist/ after tsc.
import { cpSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const walk = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });

for (const file of walk('src')) {
  if (file.endsWith('.lua') || file.endsWith('.sql')) {
    cpSync(file, join('dist', relative('src', file)));
  }
}
