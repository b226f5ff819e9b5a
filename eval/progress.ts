/**
 * The evaluation's progress bar on stderr. On a terminal one line is redrawn
 * in place; when stderr is a file or a pipe (CI, background runs), each tick
 * prints one line, so a log shows what ran and when.
 */
import type { Progress } from './section.ts';

function clock(s: number): string {
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

/** A bar for `stream` (default stderr). `done()` ends the line. */
export function createBar(stream: NodeJS.WriteStream = process.stderr): Progress & { done(): void } {
  const tty = stream.isTTY === true;
  const t0 = performance.now();
  let total = 0;
  let done = 0;
  let last = '';
  const render = (label: string): string => {
    const width = 28;
    const frac = total ? Math.min(1, done / total) : 0;
    const filled = Math.round(frac * width);
    return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(done).padStart(String(total).length)}/${total} ` +
      `${clock((performance.now() - t0) / 1000)} ${label}`;
  };
  const draw = (label: string): void => {
    last = label;
    const line = render(label);
    if (tty) stream.write(`\r${line.slice(0, (stream.columns ?? 120) - 1)}\x1b[K`);
    else stream.write(`${line}\n`);
  };
  return {
    plan(n) { total += n; },
    tick(label) {
      done++;
      if (done > total) total = done;
      draw(label);
    },
    note(line) {
      if (tty) stream.write(`\r\x1b[K${line}\n`);
      else stream.write(`${line}\n`);
      if (tty && last) draw(last);
    },
    done() {
      if (tty) stream.write('\n');
    },
  };
}

/** A progress sink that prints nothing (tests). */
export const silentProgress: Progress = { plan() {}, tick() {}, note() {} };
