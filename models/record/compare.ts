/**
 * Compares a run's outputs with golden (expected) outputs: what `keylock run
 * --expect GOLDEN.cbor` reports, and usable from code. Pure: no I/O.
 *
 * Tolerance rule (numpy's `allclose`): an element passes when
 * `|got - want| <= atol + rtol * |want|`; the defaults (0, 0) ask for exact
 * equality. Two NaNs pass (the golden run produced NaN too), NaN against a
 * number fails, an infinity passes only against the same infinity, and -0
 * passes against +0 (equal as numbers) while not counting as bit-identical.
 * Structural differences (sample count, output names, dtype, dims) are
 * reported as mismatches, never thrown.
 */
import type { Sample } from '../../runtime/recorded.ts';
import type { TensorArray, TensorData } from '../../runtime/tensor.ts';

/** Tolerances; both default to 0 (exact). */
export interface CompareOptions {
  /** Absolute tolerance, >= 0. */
  atol?: number;
  /** Relative tolerance (of |want|), >= 0. */
  rtol?: number;
}

/** Per output name, over every sample where its dtype and dims matched. */
export interface OutputSummary {
  name: string;
  /** The expected dtype (first sample that has the output). */
  dtype: string;
  /** The expected per-sample dims (first sample that has the output). */
  dims: number[];
  /** Samples whose tensors were compared element by element. */
  samples: number;
  /** Elements per sample when every compared sample has the same count, else undefined. */
  perSample: number | undefined;
  elements: number;
  /** Elements whose raw bits are equal (so NaN payloads must match and -0 differs from +0). */
  bitIdentical: number;
  /** Elements outside the tolerance. */
  failed: number;
  /** Elements where exactly one side is NaN (counted in `failed`, left out of the error maxima). */
  nan: number;
  maxAbsErr: number;
  /** max |got-want|/|want|; 0 when both are 0, Infinity when only want is 0. */
  maxRelErr: number;
}

/** The first element outside the tolerance, in sample order, then output order, then element order. */
export interface ElementFailure {
  sample: number;
  output: string;
  /** Flat (row-major) index within the sample's tensor. */
  index: number;
  got: number | bigint;
  want: number | bigint;
  absErr: number;
  /** atol + rtol * |want|. */
  allowed: number;
}

/** A structural difference between the two runs. */
export interface Mismatch {
  kind: 'sample-count' | 'missing-output' | 'extra-output' | 'dtype' | 'dims' | 'no-outputs';
  /** The output name, for per-output kinds. */
  output?: string;
  /** The first sample that shows it (absent for `sample-count`). */
  sample?: number;
  /** How many samples show it (identical mismatches are reported once). */
  count: number;
  expected: string;
  found: string;
}

/** Everything `compareOutputs` found. */
export interface CompareReport {
  /** No element outside the tolerance and no mismatch. */
  pass: boolean;
  atol: number;
  rtol: number;
  samples: { got: number; want: number; compared: number };
  outputs: OutputSummary[];
  /** Elements outside the tolerance, over every output. */
  failed: number;
  firstFailure?: ElementFailure;
  mismatches: Mismatch[];
  /** Argmax accuracy against each side's own labels, when every sample carries one. */
  accuracy: { got?: number; want?: number };
}

/** A tolerance that is not a finite number >= 0. */
export class ToleranceError extends RangeError {
  constructor(readonly option: 'atol' | 'rtol', readonly got: unknown) {
    super(`${option}: expected a finite number >= 0, got ${String(got)}`);
    this.name = 'ToleranceError';
  }
}

/**
 * Accuracy of argmax over the first output against labels, when every sample
 * has one and that output holds one row of at least two scores; else undefined.
 */
export function accuracy(outputs: readonly Sample[]): number | undefined {
  if (!outputs.length || outputs.some((s) => s.label === undefined || !s.outputs)) return undefined;
  let ok = 0;
  for (const s of outputs) {
    const t = Object.values(s.outputs!)[0];
    if (!t) return undefined;
    const per = t.data.length / (t.dims[0] || 1);
    if (per < 2 || t.dims[0] !== 1) return undefined;
    let best = 0;
    for (let i = 1; i < per; i++) if ((t.data[i] as number) > (t.data[best] as number)) best = i;
    if (best === s.label) ok++;
  }
  return ok / outputs.length;
}

/**
 * The raw bits of each element as comparable values. For integer and bool
 * dtypes the values are the bits; for floats they are not (NaN != NaN, -0 == 0),
 * so floats are read through an unsigned view of the same bytes.
 */
function bitsOf(t: TensorData): ArrayLike<number | bigint> {
  const a = t.data;
  // Float32Array/Float64Array offsets are always multiples of their element size, so these views are aligned.
  if (t.dtype === 'float32') return new Uint32Array(a.buffer, a.byteOffset, a.length);
  if (t.dtype === 'float64') return new BigUint64Array(a.buffer, a.byteOffset, a.length);
  return a as ArrayLike<number | bigint>;
}

const dimsText = (d: readonly number[]): string => `[${d.join(',')}]`;
const sameDims = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

function checkTolerance(option: 'atol' | 'rtol', v: unknown): number {
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ToleranceError(option, v);
  return v;
}

/**
 * Compares `got` with `want` sample by sample, output by output, element by
 * element (see the module comment for the rule).
 * @throws ToleranceError when atol or rtol is not a finite number >= 0.
 */
export function compareOutputs(got: readonly Sample[], want: readonly Sample[], opts: CompareOptions = {}): CompareReport {
  const atol = checkTolerance('atol', opts.atol);
  const rtol = checkTolerance('rtol', opts.rtol);
  const compared = Math.min(got.length, want.length);
  const mismatches: Mismatch[] = [];
  const seen = new Map<string, Mismatch>();
  const mismatch = (m: Omit<Mismatch, 'count'>): void => {
    const key = `${m.kind}\u0000${m.output ?? ''}\u0000${m.expected}\u0000${m.found}`;
    const old = seen.get(key);
    if (old) { old.count++; return; }
    const fresh = { ...m, count: 1 };
    seen.set(key, fresh);
    mismatches.push(fresh);
  };
  if (got.length !== want.length) mismatch({ kind: 'sample-count', expected: `${want.length} sample(s)`, found: `${got.length} sample(s)` });

  const summaries = new Map<string, OutputSummary>();
  const summaryOf = (name: string, t: TensorData): OutputSummary => {
    let s = summaries.get(name);
    if (!s) {
      s = { name, dtype: t.dtype, dims: [...t.dims], samples: 0, perSample: undefined, elements: 0, bitIdentical: 0, failed: 0, nan: 0, maxAbsErr: 0, maxRelErr: 0 };
      summaries.set(name, s);
    }
    return s;
  };
  let failed = 0;
  let firstFailure: ElementFailure | undefined;

  for (let i = 0; i < compared; i++) {
    const g = got[i].outputs;
    const w = want[i].outputs;
    if (!w || !g) {
      mismatch({ kind: 'no-outputs', sample: i, expected: w ? 'an outputs map' : 'none', found: g ? 'an outputs map' : 'none' });
      continue;
    }
    for (const name of Object.keys(g)) {
      if (!Object.hasOwn(w, name)) mismatch({ kind: 'extra-output', output: name, sample: i, expected: `outputs [${Object.keys(w).join(', ')}]`, found: `also "${name}"` });
    }
    for (const [name, wt] of Object.entries(w)) {
      const s = summaryOf(name, wt);
      const gt = Object.hasOwn(g, name) ? g[name] : undefined;
      if (!gt) {
        mismatch({ kind: 'missing-output', output: name, sample: i, expected: `output "${name}"`, found: `outputs [${Object.keys(g).join(', ')}]` });
        continue;
      }
      if (gt.dtype !== wt.dtype) {
        mismatch({ kind: 'dtype', output: name, sample: i, expected: wt.dtype, found: gt.dtype });
        continue;
      }
      if (!sameDims(gt.dims, wt.dims) || gt.data.length !== wt.data.length) {
        mismatch({ kind: 'dims', output: name, sample: i, expected: dimsText(wt.dims), found: dimsText(gt.dims) });
        continue;
      }
      const n = wt.data.length;
      s.perSample = s.samples === 0 || s.perSample === n ? n : undefined;
      s.samples++;
      s.elements += n;
      const f = compareTensor(gt.data, wt.data, bitsOf(gt), bitsOf(wt), atol, rtol, s);
      failed += f.failed;
      if (f.first !== undefined && !firstFailure) {
        firstFailure = { sample: i, output: name, index: f.first, got: gt.data[f.first], want: wt.data[f.first], absErr: f.firstAbs, allowed: f.firstAllowed };
      }
    }
  }
  return {
    pass: failed === 0 && mismatches.length === 0,
    atol, rtol,
    samples: { got: got.length, want: want.length, compared },
    outputs: [...summaries.values()],
    failed, firstFailure, mismatches,
    accuracy: { got: accuracy(got), want: accuracy(want) },
  };
}

/** One tensor pair of the same dtype and length; updates `s` and returns its failures. */
function compareTensor(
  g: TensorArray, w: TensorArray, gBits: ArrayLike<number | bigint>, wBits: ArrayLike<number | bigint>,
  atol: number, rtol: number, s: OutputSummary,
): { failed: number; first?: number; firstAbs: number; firstAllowed: number } {
  let failed = 0;
  let first: number | undefined;
  let firstAbs = 0;
  let firstAllowed = 0;
  for (let k = 0; k < w.length; k++) {
    if (gBits[k] === wBits[k]) { s.bitIdentical++; continue; }
    const a = g[k];
    const b = w[k];
    let abs: number;
    let wantMag: number;
    let ok: boolean;
    if (typeof a === 'bigint' || typeof b === 'bigint') {
      // int64/uint64: subtract exactly as bigints, then measure as doubles.
      const d = BigInt(a) - BigInt(b);
      abs = Number(d < 0n ? -d : d);
      wantMag = Math.abs(Number(b));
      ok = abs <= atol + rtol * wantMag;
    } else if (Number.isNaN(a) || Number.isNaN(b)) {
      ok = Number.isNaN(a) && Number.isNaN(b);
      if (!ok) s.nan++;
      abs = ok ? 0 : NaN;
      wantMag = Math.abs(b);
    } else if (a === b) {
      abs = 0; // -0 against +0: equal numbers, different bits
      wantMag = 0;
      ok = true;
    } else {
      abs = Math.abs(a - b);
      wantMag = Math.abs(b);
      // An infinity matches only itself (handled above); rtol * Infinity would let any value through.
      ok = Number.isFinite(a) && Number.isFinite(b) && abs <= atol + rtol * wantMag;
    }
    if (!Number.isNaN(abs)) {
      if (abs > s.maxAbsErr) s.maxAbsErr = abs;
      // Against 0 or an infinity any difference is infinitely relative (and Infinity/Infinity would be NaN).
      const rel = abs === 0 ? 0 : wantMag === 0 || !Number.isFinite(wantMag) ? Infinity : abs / wantMag;
      if (rel > s.maxRelErr) s.maxRelErr = rel;
    }
    if (!ok) {
      failed++;
      s.failed++;
      if (first === undefined) {
        first = k;
        firstAbs = abs;
        firstAllowed = atol + rtol * wantMag;
      }
    }
  }
  return { failed, first, firstAbs, firstAllowed };
}

/** An error size for people: 0, Infinity, or three significant digits in exponent form. */
function sci(x: number): string {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  return x.toExponential(2);
}

/** An element as typed: the shortest decimal that reads back to the same float32, -0 kept. */
function value(v: number | bigint, dtype: string): string {
  if (typeof v === 'bigint') return String(v);
  if (Object.is(v, -0)) return '-0';
  if (dtype === 'float32' && Number.isFinite(v)) {
    for (let p = 1; p < 9; p++) {
      const s = v.toPrecision(p);
      if (Math.fround(Number(s)) === v) return String(Number(s));
    }
    return String(Number(v.toPrecision(9)));
  }
  return String(v);
}

function mismatchText(m: Mismatch): string {
  const where = m.sample === undefined ? '' : ` (sample ${m.sample}${m.count > 1 ? ` and ${m.count - 1} more` : ''})`;
  switch (m.kind) {
    case 'sample-count': return `sample count: expected ${m.expected}, found ${m.found}`;
    case 'no-outputs': return `no outputs to compare${where}: expected ${m.expected}, found ${m.found}`;
    case 'missing-output': return `output "${m.output}" missing${where}: expected ${m.expected}, found ${m.found}`;
    case 'extra-output': return `output "${m.output}" not in the expected outputs${where}: expected ${m.expected}, found ${m.found}`;
    case 'dtype': return `output "${m.output}" dtype${where}: expected ${m.expected}, found ${m.found}`;
    case 'dims': return `output "${m.output}" dims${where}: expected ${m.expected}, found ${m.found}`;
  }
}

const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;

/**
 * The report as short readable lines: one per output, accuracy, mismatches,
 * then `PASS (...)` or `FAIL: ...` last.
 */
export function formatCompareReport(r: CompareReport): string {
  const lines: string[] = [];
  for (const o of r.outputs) {
    const count = o.perSample === undefined ? `${o.samples} samples, ${o.elements} elements` : `${o.samples} samples × ${o.perSample} = ${o.elements} elements`;
    lines.push(`${o.name}: ${count}, ${o.bitIdentical} bit-identical, max abs err ${sci(o.maxAbsErr)}, max rel err ${sci(o.maxRelErr)}`
      + `${o.failed ? `, ${o.failed} outside tolerance` : ''}${o.nan ? ` (${o.nan} NaN against a number)` : ''}`);
  }
  if (r.accuracy.got !== undefined || r.accuracy.want !== undefined) {
    lines.push(`accuracy: ${r.accuracy.got === undefined ? 'n/a' : pct(r.accuracy.got)}${r.accuracy.want === undefined ? '' : ` (expected outputs: ${pct(r.accuracy.want)})`}`);
  }
  for (const m of r.mismatches) lines.push(`mismatch: ${mismatchText(m)}`);
  const tol = `atol ${r.atol}, rtol ${r.rtol}`;
  if (r.pass) {
    lines.push(`PASS (${tol})`);
  } else if (r.firstFailure) {
    const f = r.firstFailure;
    const dtype = r.outputs.find((o) => o.name === f.output)?.dtype ?? 'float32';
    const err = Number.isNaN(f.absErr) ? 'NaN against a number' : `abs err ${sci(f.absErr)} > atol+rtol*|want| = ${sci(f.allowed)}`;
    lines.push(`FAIL: sample ${f.sample} ${f.output}[${f.index}] = ${value(f.got, dtype)} expected ${value(f.want, dtype)} (${err}); `
      + `${r.failed} element(s) outside tolerance${r.mismatches.length ? `, ${r.mismatches.length} mismatch(es)` : ''} (${tol})`);
  } else {
    lines.push(`FAIL: ${mismatchText(r.mismatches[0])}${r.mismatches.length > 1 ? `; ${r.mismatches.length - 1} more mismatch(es)` : ''} (${tol})`);
  }
  return lines.join('\n');
}

/**
 * The report as plain JSON data: bigints and non-finite numbers (NaN,
 * Infinity, which JSON cannot hold) become strings, -0 becomes "-0", and a
 * `message` gives each mismatch's and the first failure's text.
 */
export function compareReportJson(r: CompareReport): unknown {
  const plain = (v: number | bigint): number | string => (typeof v === 'bigint' ? String(v) : Object.is(v, -0) ? '-0' : Number.isFinite(v) ? v : String(v));
  const num = (v: number): number | string => (Number.isFinite(v) ? v : String(v));
  return {
    pass: r.pass,
    atol: r.atol,
    rtol: r.rtol,
    samples: r.samples,
    outputs: r.outputs.map((o) => ({ ...o, maxAbsErr: num(o.maxAbsErr), maxRelErr: num(o.maxRelErr), perSample: o.perSample ?? null })),
    failed: r.failed,
    firstFailure: r.firstFailure
      ? { ...r.firstFailure, got: plain(r.firstFailure.got), want: plain(r.firstFailure.want), absErr: num(r.firstFailure.absErr), allowed: num(r.firstFailure.allowed) }
      : null,
    mismatches: r.mismatches.map((m) => ({ ...m, message: mismatchText(m) })),
    accuracy: { got: r.accuracy.got ?? null, want: r.accuracy.want ?? null },
    summary: formatCompareReport(r).split('\n').at(-1),
  };
}
