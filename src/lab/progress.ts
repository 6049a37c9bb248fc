/**
 * Progress while the lab runs: cli-progress bars when stderr is a terminal, one plain line per
 * finished strategy when it is not, nothing at all when asked to be quiet.
 */
import cliProgress from 'cli-progress';

/** Progress of one strategy run. */
export interface ProgressTask {
  /** Operations done so far. */
  update(done: number): void;
  /** The strategy finished; `summary` is one short line. */
  finish(summary: string): void;
}

/** Where the lab reports progress. */
export interface Progress {
  start(label: string, total: number): ProgressTask;
  /** Stops drawing (before the table is printed). */
  stop(): void;
}

/**
 * Picks the progress display: bars on a TTY, plain lines otherwise, or nothing (`quiet`).
 *
 * @example
 * ```ts
 * const progress = createProgress({ quiet: false });
 * const task = progress.start('counter/lock', 1000);
 * task.update(500); task.finish('0 violations');
 * progress.stop();
 * ```
 */
export function createProgress(options: { quiet: boolean; stream?: NodeJS.WriteStream }): Progress {
  const stream = options.stream ?? process.stderr;
  if (stream.isTTY) return barProgress(stream);
  if (options.quiet) return { start: () => ({ update() {}, finish() {} }), stop() {} };
  return lineProgress(stream);
}

function lineProgress(stream: NodeJS.WritableStream): Progress {
  return {
    start(label) {
      const t0 = performance.now();
      return {
        update() {},
        finish(summary) {
          const s = ((performance.now() - t0) / 1000).toFixed(1);
          stream.write(`${label.padEnd(26)} ${s.padStart(5)} s  ${summary}\n`);
        },
      };
    },
    stop() {},
  };
}

function barProgress(stream: NodeJS.WriteStream): Progress {
  const bars = new cliProgress.MultiBar(
    {
      stream,
      format: ' {label} [{bar}] {value}/{total} ops | {status}',
      barsize: 24,
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      fps: 10,
      autopadding: true,
    },
    cliProgress.Presets.shades_classic,
  );
  return {
    start(label, total) {
      const bar = bars.create(total, 0, { label: label.padEnd(24), status: 'running' });
      return {
        update(done) {
          bar.update(Math.min(done, total));
        },
        finish(summary) {
          bar.update({ status: summary });
          bar.stop();
        },
      };
    },
    stop() {
      bars.stop();
    },
  };
}
