/**
 * The `lockstep/threads` entry point as a consumer imports it: the package's `exports` map sends
 * it to the build (dist/threads/index.js; run `npm run build` first, `npm test` does), which
 * works across a real worker with nothing but Node.
 */
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { root } from './support.js';

describe('lockstep/threads entry', () => {
  it('resolves to the build and shares a mutex with a worker', async () => {
    const script = `
      import { Worker } from 'node:worker_threads';
      import { Mutex, RWLock, Semaphore } from 'lockstep/threads';
      const where = import.meta.resolve('lockstep/threads');
      const m = new Mutex();
      const n = new Int32Array(new SharedArrayBuffer(4));
      const code = "const { workerData } = await import('node:worker_threads');" +
        "const { Mutex } = await import('lockstep/threads');" +
        "const m = Mutex.from(workerData.h);" +
        "for (let i = 0; i < 100; i++) await m.run(async () => { const v = workerData.n[0]; await null; workerData.n[0] = v + 1; });";
      const w = new Worker(code, { eval: true, workerData: { h: m.handle, n } });
      m.watch(w);
      for (let i = 0; i < 100; i++) await m.run(async () => { const v = n[0]; await null; n[0] = v + 1; });
      await new Promise((r) => w.once('exit', r));
      console.log(JSON.stringify({ where, n: n[0], kinds: [typeof RWLock, typeof Semaphore] }));
    `;
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        ['--input-type=module', '-e', script],
        { cwd: root, timeout: 60_000 },
        (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      );
    });
    const r = JSON.parse(out) as { where: string; n: number; kinds: string[] };
    expect(r.where).toMatch(/\/dist\/threads\/index\.js$/);
    expect(r.n).toBe(200);
    expect(r.kinds).toEqual(['function', 'function']);
  });
});
