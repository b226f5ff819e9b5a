/**
 * Ground-truth labels for file sources (images, WAV): from the parent folder's
 * name (`digits/7/a.png` -> 7, the torchvision ImageFolder / Keras
 * `image_dataset_from_directory` convention with numeric class folders), or
 * from a `file,label` CSV that wins over folder names.
 */
import { readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { parse } from 'csv-parse/sync';
import { FormatError } from '../../keystore/errors.ts';
import { RecordOptionError } from './options.ts';

/** A source file and the name a labels CSV may know it by. */
export interface SourceFile {
  path: string;
  /** Path relative to the folder it was found in, `/`-separated; for a file named directly, the path as given. */
  rel: string;
}

function slash(p: string): string {
  return p.replace(/\\/g, '/').replace(/^\.\//, '');
}

/** The label a numeric parent folder gives (`7/x.png` -> 7), else undefined. */
export function folderLabel(path: string): number | undefined {
  const name = basename(dirname(path));
  if (!/^\d+$/.test(name)) return undefined;
  const n = Number(name);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Labels read from a CSV, looked up by relative path or basename. */
export class LabelTable {
  private readonly rows = new Map<string, number>();
  private readonly used = new Set<string>();

  private constructor(readonly path: string) {}

  /**
   * Reads `file,label` rows; a first row naming the columns (`file`, `label`,
   * in any order, other columns ignored) is a header. FormatError, with the
   * line, for a label that is not a non-negative integer or a file listed twice
   * with different labels.
   */
  static read(path: string): LabelTable {
    const t = new LabelTable(path);
    let rows: string[][];
    try {
      rows = parse(readFileSync(path, 'utf8'), { skip_empty_lines: true, trim: true, comment: '#' }) as string[][];
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new RecordOptionError(`--labels: no such file: ${path}`);
      throw new FormatError(`${path}: not a readable CSV (${(e as Error).message})`, { cause: e });
    }
    let fileCol = 0;
    let labelCol = 1;
    let first = 0;
    const head = rows[0]?.map((c) => c.toLowerCase());
    if (head && head.includes('file') && head.includes('label')) {
      fileCol = head.indexOf('file');
      labelCol = head.indexOf('label');
      first = 1;
    }
    for (let i = first; i < rows.length; i++) {
      const r = rows[i];
      const where = `${path} row ${i + 1}`;
      if (r.length <= Math.max(fileCol, labelCol)) throw new FormatError(`${where}: expected columns file,label, got ${r.length} column(s)`);
      const file = slash(r[fileCol]);
      const text = r[labelCol];
      if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw new FormatError(`${where}: label "${text}" for "${file}": expected a non-negative integer`);
      const label = Number(text);
      const had = t.rows.get(file);
      if (had !== undefined && had !== label) throw new FormatError(`${where}: "${file}" is labelled ${had} above and ${label} here`);
      t.rows.set(file, label);
    }
    return t;
  }

  /**
   * The label of `f`: by its relative path, else by its basename when no other
   * source file has that basename. RecordOptionError when the CSV has neither,
   * or when the basename is shared (a label would be a guess).
   */
  label(f: SourceFile, basenameCount: ReadonlyMap<string, number>): number {
    const rel = slash(f.rel);
    for (const k of [rel, slash(f.path)]) {
      const l = this.rows.get(k);
      if (l !== undefined) { this.used.add(k); return l; }
    }
    const base = basename(f.path);
    const l = this.rows.get(base);
    if (l !== undefined) {
      if ((basenameCount.get(base) ?? 0) > 1) {
        throw new RecordOptionError(`${this.path}: "${base}" matches ${basenameCount.get(base)} source files (e.g. ${rel}); expected one`, 'name files by their path relative to the folder, e.g. 7/a.png');
      }
      this.used.add(base);
      return l;
    }
    throw new RecordOptionError(`${this.path} has no row for ${rel} (nor for ${base}); with --labels every file needs a label`, 'add a row, or leave --labels out to take labels from numeric folder names');
  }

  /** Rows that matched no source file (usually a typo or a file left out). */
  unused(): string[] {
    return [...this.rows.keys()].filter((k) => !this.used.has(k));
  }
}
