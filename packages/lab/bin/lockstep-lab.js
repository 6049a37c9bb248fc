#!/usr/bin/env node
// The `lockstep-lab` command: runs the race lab built into ../dist/ (from src/lab/ by the
// repository's `npm run build`). A file of its own, so that npm links the command at install
// time, before the lab is built.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write('lockstep-lab: error: the lab is not built; run `npm run build` in the Lockstep repository\n');
  process.exit(2);
}
await import(cli.href);
