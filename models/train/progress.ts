/**
 * Progress on stderr, for training (a bar per epoch) and for the evaluation (a
 * bar over every section's steps), drawn with cli-progress.
 *
 * On a terminal the line is redrawn in place, with notes printed above it. When
 * the stream is a file or a pipe (CI, background runs) nothing is redrawn:
 * training writes one line per finished epoch and the evaluation one line per
 * step, so a log stays readable and shows what ran and when.
 *
 * It lives in models/train/ because training may not import eval/ (the layer
 * rules in .dependency-cruiser.cjs); eval/ imports it from here.
 */
import cliProgress from 'cli-progress';

/** One training progress report. */
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

/** Draws training {@link ProgressState}s; `epochEnd` finishes an epoch's line. */
export interface Progress {
  update(s: ProgressState): void;
  epochEnd(s: ProgressState, extra?: string): void;
}

/** Progress counted in steps, shared by all evaluation sections (eval/section.ts). */
export interface StepProgress {
  /** Announces `n` more steps; call once at a section's start with the ticks it will make. */
  plan(n: number): void;
  /** One step done; `label` says what was just finished (or is starting next). */
  tick(label: string): void;
  /** A line of text printed above the bar (warnings, per-run figures worth seeing live). */
  note(line: string): void;
}

/** A {@link StepProgress} whose owner ends it with `done()`. */
export interface StepBar extends StepProgress {
  /** Ends the bar's line; nothing is drawn after it. */
  done(): void;
}

/** `width` cells: `#` for the fraction done, `.` for the rest (cli-progress's own bar renderer). */
function barCells(frac: number, width: number): string {
  return cliProgress.Format.BarFormat(Math.min(1, Math.max(0, frac)), {
    barsize: width, barCompleteString: '#'.repeat(width), barIncompleteString: '.'.repeat(width), barGlue: '',
  });
}

function clock(s: number): string {
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

function epochLine(s: ProgressState, extra?: string): string {
  return `${s.model} epoch ${String(s.epoch).padStart(String(s.epochs).length)}/${s.epochs} [${barCells(s.batch / s.batches, 24)}] ` +
    `batch ${String(s.batch).padStart(String(s.batches).length)}/${s.batches} ` +
    `loss ${s.loss.toFixed(4)} acc ${(s.acc * 100).toFixed(2)}% ${s.seconds.toFixed(1)}s` + (extra ? ` ${extra}` : '');
}

function stepLine(done: number, total: number, seconds: number, label: string): string {
  return `[${barCells(total ? done / total : 0, 28)}] ${String(done).padStart(String(total).length)}/${total} ` +
    `${clock(seconds)} ${label}`;
}

/**
 * One line redrawn in place on a terminal by cli-progress, with notes above it.
 * Every change is drawn at once rather than on cli-progress's timer: training
 * and the attacks run long synchronous loops in which no timer fires.
 */
class TerminalLine {
  private readonly multi: cliProgress.MultiBar;
  private bar: cliProgress.SingleBar | undefined;

  /** `text(width)` is the line, at most `width - 1` characters so that it never wraps. */
  constructor(private readonly stream: NodeJS.WriteStream, text: (width: number) => string) {
    this.multi = new cliProgress.MultiBar({
      stream,
      format: (_options, params) => text(params.maxWidth).slice(0, params.maxWidth - 1),
      // Redraw even an unchanged line: printing a note above it has cleared it.
      forceRedraw: true,
      // Notes keep wrapping (no DECAWM toggling); the bar line is cut to the width instead.
      linewrap: true,
      hideCursor: false,
    });
  }

  /** Draws the line now, `value` of `total` done. */
  draw(value: number, total: number): void {
    if (!this.bar) this.bar = this.multi.create(total, value);
    else {
      this.bar.setTotal(total);
      this.bar.update(value);
    }
    this.multi.update();
  }

  /** Prints `line` above the bar (or alone, before the bar is first drawn). */
  note(line: string): void {
    // Before the first bar nothing is drawn to print above; cli-progress's update() would also start a
    // redraw timer there that create() then loses track of, and that would keep the process alive.
    if (!this.bar) {
      this.stream.write(`${line}\n`);
      return;
    }
    this.multi.log(`${line}\n`);
    this.multi.update();
  }

  /** Draws the line a last time, ends it with a newline and stops cli-progress's redraw timer. */
  end(): void {
    this.multi.stop();
  }
}

/** A training progress writer for `stream` (default stderr), redrawn at most every 100 ms so drawing never costs training time. */
export function createProgress(stream: NodeJS.WriteStream = process.stderr): Progress {
  if (stream.isTTY !== true) {
    return {
      update() {},
      epochEnd(s, extra) { stream.write(`${epochLine(s, extra)}\n`); },
    };
  }
  let line: TerminalLine | undefined;
  let shown: { s: ProgressState; extra?: string } | undefined;
  let last = 0;
  const draw = (s: ProgressState, extra?: string): TerminalLine => {
    shown = { s, extra };
    line ??= new TerminalLine(stream, () => epochLine(shown!.s, shown!.extra));
    line.draw(s.batch, s.batches);
    return line;
  };
  return {
    update(s) {
      const now = performance.now();
      if (now - last < 100 && s.batch !== s.batches) return;
      last = now;
      draw(s);
    },
    epochEnd(s, extra) {
      // Each epoch keeps its finished line; the next one starts a bar of its own.
      draw(s, extra).end();
      line = undefined;
    },
  };
}

/**
 * The evaluation's step bar for `stream` (default stderr): on a terminal one
 * line redrawn in place, with the time since it was made; otherwise one line
 * per tick. `done()` ends it.
 */
export function createStepBar(stream: NodeJS.WriteStream = process.stderr): StepBar {
  const t0 = performance.now();
  let total = 0;
  let done = 0;
  let label = '';
  const text = (): string => stepLine(done, total, (performance.now() - t0) / 1000, label);
  const line = stream.isTTY === true ? new TerminalLine(stream, text) : undefined;
  return {
    plan(n) { total += n; },
    tick(l) {
      done++;
      if (done > total) total = done;
      label = l;
      if (line) line.draw(done, total);
      else stream.write(`${text()}\n`);
    },
    note(l) {
      if (line) line.note(l);
      else stream.write(`${l}\n`);
    },
    done() { line?.end(); },
  };
}

/** A count of items done (e.g. grants issued for a fleet); `done()` ends it. */
export interface CountBar {
  /** `done` of `total` (0: not known) finished; `label` follows the count. Redrawn at most every 100 ms. */
  update(done: number, total: number, label: string): void;
  /** A line of text printed above the bar. */
  note(line: string): void;
  /** Draws the last count and ends the line (terminal only). */
  done(): void;
}

/**
 * A count bar for `stream` (default stderr): on a terminal one line redrawn in
 * place, at most every 100 ms so that a loop of thousands of items per second
 * does not spend its time drawing; otherwise nothing but the notes (the caller
 * prints its own summary line).
 */
export function createCountBar(stream: NodeJS.WriteStream = process.stderr): CountBar {
  const t0 = performance.now();
  let state = { done: 0, total: 0, label: '' };
  const text = (): string => {
    const { done, total, label } = state;
    return total > 0 ? stepLine(done, total, (performance.now() - t0) / 1000, label) : `${done} ${clock((performance.now() - t0) / 1000)} ${label}`;
  };
  const line = stream.isTTY === true ? new TerminalLine(stream, text) : undefined;
  let last = -Infinity;
  let drawn = false;
  return {
    update(done, total, label) {
      state = { done, total, label };
      const now = performance.now();
      if (!line || now - last < 100) return;
      last = now;
      drawn = true;
      line.draw(done, Math.max(total, done));
    },
    note(l) {
      if (line) line.note(l);
      else stream.write(`${l}\n`);
    },
    done() {
      if (!line) return;
      if (state.done > 0 || drawn) {
        line.draw(state.done, Math.max(state.total, state.done));
        line.end();
      }
    },
  };
}
