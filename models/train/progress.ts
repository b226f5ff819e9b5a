/**
 * Training progress on stderr. On a terminal one line is redrawn in place
 * (throttled, so drawing never costs training time); when stderr is a file or
 * pipe, only whole-epoch lines are written so logs stay readable.
 */

/** One progress report. */
export interface ProgressState {
  model: string;
  epoch: number;
  epochs: number;
  batch: number;
  batches: number;
  loss: number;
  acc: number;
  seconds: number;
}

/** Draws {@link ProgressState}s; `epochEnd` finishes an epoch's line. */
export interface Progress {
  update(s: ProgressState): void;
  epochEnd(s: ProgressState, extra?: string): void;
}

const BAR = 24;

function line(s: ProgressState): string {
  const filled = Math.round((s.batch / s.batches) * BAR);
  const bar = '#'.repeat(filled) + '.'.repeat(BAR - filled);
  return `${s.model} epoch ${String(s.epoch).padStart(String(s.epochs).length)}/${s.epochs} [${bar}] ` +
    `batch ${String(s.batch).padStart(String(s.batches).length)}/${s.batches} ` +
    `loss ${s.loss.toFixed(4)} acc ${(s.acc * 100).toFixed(2)}% ${s.seconds.toFixed(1)}s`;
}

/** A progress writer for `stream` (default stderr). */
export function createProgress(stream: NodeJS.WriteStream = process.stderr): Progress {
  const tty = stream.isTTY === true;
  let last = 0;
  return {
    update(s) {
      if (!tty) return;
      const now = performance.now();
      if (now - last < 100 && s.batch !== s.batches) return;
      last = now;
      stream.write(`\r${line(s)}\x1b[K`);
    },
    epochEnd(s, extra) {
      const text = line(s) + (extra ? ` ${extra}` : '');
      stream.write(tty ? `\r${text}\x1b[K\n` : `${text}\n`);
    },
  };
}
