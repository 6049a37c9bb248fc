/**
 * The worker processes of one `lab verify --processes N` run, and the process faults done to
 * them: each worker is forked, opened on the run's backend, its clock's offset measured, then
 * started; the nemesis may SIGSTOP one (and SIGCONT it later), or SIGKILL one and fork a
 * replacement for the rest of the run. Each worker's history is read from the journal it wrote
 * as it went (src/lab/verify-worker.ts), so a killed worker's operations are still in the
 * history: the ones it never completed stay pending, checked as unknown.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HistoryPart, Operation, PlantedBug } from '../verify/index.js';
import { LabError } from './backends.js';
import { sharedClock, type WorkerGo, type WorkerOpen, type WorkerReply } from './verify-worker.js';

/** Pings per worker to measure its clock's offset (the fastest round trip bounds it). */
const CLOCK_PINGS = 20;

/** The worker's file: compiled JavaScript in the package, TypeScript under tsx. */
function workerFile(): string {
  const js = fileURLToPath(new URL('./verify-worker.js', import.meta.url));
  return existsSync(js) ? js : js.replace(/\.js$/, '.ts');
}

/** One worker process. */
export class VerifyWorker {
  readonly tag: string;
  readonly journal: string;
  readonly child: ChildProcess;
  /** Its clock against the parent's: its reading minus ours, and how uncertain that is. */
  clock = { offsetMs: 0, marginMs: Number.POSITIVE_INFINITY };
  /** Its mutex holders inside their critical section now (as last reported). */
  inside = 0;
  /** `running` once started; `stopped` while SIGSTOPped; `killed`; `done` once it reported. */
  state: 'opening' | 'running' | 'stopped' | 'killed' | 'done' = 'opening';
  runMs = 0;
  /** Resolves when it reported its end (undefined) or failed to (the reason), once started. */
  finished: Promise<LabError | undefined> = Promise.resolve(undefined);
  readonly #replies: WorkerReply[] = [];
  readonly #waiters: Array<() => void> = [];
  readonly exited: Promise<void>;

  constructor(tag: string, journal: string) {
    this.tag = tag;
    this.journal = journal;
    this.child = fork(workerFile(), ['--lockstep-verify-worker'], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (m: WorkerReply) => {
      if (m.type === 'section') {
        this.inside = Math.max(0, this.inside + (m.inside ? 1 : -1));
        return;
      }
      this.#replies.push(m);
      this.#wake();
    });
    this.exited = new Promise<void>((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.inside = 0;
        this.#replies.push({
          type: 'error',
          message: `exited (${signal ?? `code ${code}`}) before it reported`,
        });
        this.#wake();
        resolve();
      });
    });
  }

  #wake(): void {
    for (const f of this.#waiters.splice(0)) f();
  }

  /** The next reply of `type` (an `error` reply rejects). */
  next(type: WorkerReply['type']): Promise<WorkerReply> {
    return new Promise<WorkerReply>((resolve, reject) => {
      const check = () => {
        const i = this.#replies.findIndex((m) => m.type === type || m.type === 'error');
        if (i < 0) return false;
        const [r] = this.#replies.splice(i, 1);
        if (r?.type === 'error') {
          this.#replies.unshift(r); // every later wait sees it too
          reject(new LabError(`verify worker ${this.tag}: ${r.message}`, 3));
        } else resolve(r as WorkerReply);
        return true;
      };
      if (!check()) this.#waiters.push(() => void check());
    });
  }

  send(m: WorkerOpen | { type: 'ping' } | WorkerGo): void {
    this.child.send(m);
  }

  /** Its history so far, from the journal (the last line of each operation wins). */
  operations(): Operation[] {
    let text = '';
    try {
      text = readFileSync(this.journal, 'utf8');
    } catch {
      return [];
    }
    const byId = new Map<number, Operation>();
    for (const line of text.split('\n')) {
      if (line === '') continue;
      try {
        const op = JSON.parse(line) as Operation;
        byId.set(op.id, op);
      } catch {
        // A line cut by a kill: the invocation it records was never sent (it is written first).
      }
    }
    return [...byId.values()].sort((a, b) => a.id - b.id);
  }
}

/** What every worker of the run is told (its tag, index and duration are added per worker). */
export interface PoolRun {
  readonly spec: string;
  readonly runId: string;
  readonly options: Omit<WorkerOpen['options'], 'tag' | 'processIndex'>;
  readonly plant?: PlantedBug;
}

/** The run's workers, every one ever started (killed ones included). */
export class WorkerPool {
  readonly workers: VerifyWorker[] = [];
  readonly #dir = mkdtempSync(join(tmpdir(), 'lockstep-verify-'));
  readonly #run: PoolRun;
  #started = 0;

  constructor(run: PoolRun) {
    this.#run = run;
  }

  /**
   * Forks one worker, opens it on the backend and measures its clock; it runs for
   * `durationMs` once {@link go} is called.
   */
  async open(durationMs: number): Promise<VerifyWorker> {
    const index = ++this.#started;
    const w = new VerifyWorker(`p${index}`, join(this.#dir, `p${index}.jsonl`));
    this.workers.push(w);
    w.send({
      type: 'open',
      spec: this.#run.spec,
      runId: this.#run.runId,
      journal: w.journal,
      options: { ...this.#run.options, durationMs, tag: w.tag, processIndex: index },
      ...(this.#run.plant === undefined ? {} : { plant: this.#run.plant }),
    });
    await w.next('ready');
    // Its clock against ours: offset = its reading minus the midpoint of the round trip, known
    // to within half the round trip (the fastest of CLOCK_PINGS).
    for (let i = 0; i < CLOCK_PINGS; i++) {
      const t0 = sharedClock();
      w.send({ type: 'ping' });
      const pong = await w.next('pong');
      const t1 = sharedClock();
      const half = (t1 - t0) / 2;
      if (pong.type === 'pong' && half < w.clock.marginMs) {
        w.clock = { offsetMs: pong.t - (t0 + t1) / 2, marginMs: half };
      }
    }
    return w;
  }

  /** Starts `w`'s clients (for `durationMs` if given, else as opened). */
  go(w: VerifyWorker, durationMs?: number): void {
    w.state = 'running';
    w.send(durationMs === undefined ? { type: 'go' } : { type: 'go', durationMs });
    w.finished = w.next('done').then(
      (r) => {
        if (r.type === 'done') w.runMs = r.runMs;
        if (w.state !== 'killed') w.state = 'done';
        return undefined;
      },
      (err: unknown) =>
        err instanceof LabError ? err : new LabError(`verify worker ${w.tag}: ${String(err)}`, 3),
    );
  }

  /** Workers whose clients are running (neither stopped, killed nor done). */
  running(): VerifyWorker[] {
    return this.workers.filter((w) => w.state === 'running');
  }

  /** SIGSTOPs `w` for `ms`, then SIGCONTs it; resolves once it runs again. */
  async stop(w: VerifyWorker, ms: number): Promise<void> {
    w.state = 'stopped';
    w.child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, ms));
    if (w.state === 'stopped') {
      w.child.kill('SIGCONT');
      w.state = 'running';
    }
  }

  /** SIGKILLs `w`; resolves once it is gone. */
  async kill(w: VerifyWorker): Promise<void> {
    w.state = 'killed';
    w.child.kill('SIGKILL');
    await w.exited;
  }

  /** Waits until every worker reported or is gone; a stopped one is let go on first. */
  async finish(): Promise<void> {
    for (const w of this.workers) {
      if (w.state === 'stopped') {
        w.child.kill('SIGCONT');
        w.state = 'running';
      }
    }
    const ends = await Promise.all(this.workers.map((w) => w.finished));
    const failed = ends.find((e, k) => e !== undefined && this.workers[k]?.state !== 'killed');
    if (failed !== undefined) throw failed;
  }

  /** Every worker's part of the history, corrected by its clock. */
  parts(): HistoryPart[] {
    return this.workers.map((w) => ({ ops: w.operations(), ...w.clock }));
  }

  /** Longest run of a worker, ms. */
  runMs(): number {
    return Math.max(0, ...this.workers.map((w) => w.runMs));
  }

  /** Kills whatever still runs and removes the journals. */
  async close(): Promise<void> {
    for (const w of this.workers) {
      if (w.child.exitCode === null && w.child.signalCode === null) {
        w.child.kill('SIGCONT');
        w.child.kill('SIGKILL');
      }
    }
    await Promise.all(this.workers.map((w) => w.exited));
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
