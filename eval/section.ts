/**
 * The contract between the evaluation runner (eval/run.ts) and its sections.
 * A section measures one thing, returns its part of docs/RESULTS.md (the text
 * between `<!-- id:begin -->` and `<!-- id:end -->`), the SVG plots it drew,
 * and the invariants it checked. The runner decides what gets written: a
 * section never writes into docs/ itself.
 */
import type { StepProgress } from '../models/train/progress.ts';

/** The progress bar shared by all sections (drawn on stderr by models/train/progress.ts). */
export type Progress = StepProgress;

/** What every section gets. */
export interface SectionContext {
  /** The small CI version: a few seconds to a minute per section; checks must still be meaningful. */
  quick: boolean;
  /** Base seed; every random choice in a section derives from it (plus labels), so reruns are identical. */
  seed: number;
  progress: Progress;
  /** Folder for trained artifacts that later runs may reuse (eval/.cache, gitignored). Create subfolders as needed. */
  cache: string;
}

/** One asserted invariant (quick mode fails when any is not ok). */
export interface Check {
  name: string;
  ok: boolean;
  /** Measured value(s) against the bound, e.g. "no key 9.60% <= 20%". */
  detail: string;
}

/** A section's output. */
export interface SectionResult {
  /** Marker name in docs/RESULTS.md. */
  id: string;
  title: string;
  /** Body written between the markers (heading, command line, table, discussion). */
  markdown: string;
  /** File name under docs/img/ → SVG text. */
  svgs?: Record<string, string>;
  checks?: Check[];
}

/** A section of the evaluation. */
export type Section = (ctx: SectionContext) => Promise<SectionResult>;

/** A check helper: `check('x', a <= b, \`${a} <= ${b}\`)`. */
export function check(name: string, ok: boolean, detail: string): Check {
  return { name, ok, detail };
}
