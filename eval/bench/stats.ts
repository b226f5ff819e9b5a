/**
 * Statistics of the benchmark: every figure is a median of per-round ratios
 * measured in one process, interleaved, so that a shared, noisy machine moves
 * both sides of a ratio together.
 */

/** Quantile `q` (0..1) of `xs` by linear interpolation; NaN when empty. */
export function quantile(xs: readonly number[], q: number): number {
  if (!xs.length) return NaN;
  const a = [...xs].sort((x, y) => x - y);
  const p = (a.length - 1) * q;
  const lo = Math.floor(p);
  const hi = Math.ceil(p);
  return a[lo] + (a[hi] - a[lo]) * (p - lo);
}

/** Median, quartiles and extremes of a sample. */
export interface Summary {
  median: number;
  p25: number;
  p75: number;
  min: number;
  max: number;
  n: number;
}

export function summarize(xs: readonly number[]): Summary {
  return {
    median: quantile(xs, 0.5), p25: quantile(xs, 0.25), p75: quantile(xs, 0.75),
    min: xs.length ? Math.min(...xs) : NaN, max: xs.length ? Math.max(...xs) : NaN, n: xs.length,
  };
}

/** Per-round times (ms per call) of two interleaved sides and their per-round ratios b / a. */
export interface Interleaved {
  /** Milliseconds per call of side A (the baseline, e.g. plain), one per round. */
  a: number[];
  /** Milliseconds per call of side B (e.g. locked), one per round. */
  b: number[];
  /** b[i] / a[i]. */
  ratios: number[];
  /** Calls per timed batch. */
  batch: number;
}

/** Times `batch` sequential calls of `f`, in ms per call. */
export async function timeBatch(f: () => Promise<unknown>, batch: number): Promise<number> {
  const t = performance.now();
  for (let i = 0; i < batch; i++) await f();
  return (performance.now() - t) / batch;
}

/**
 * Runs A and B in alternating batches (A B, then B A, ...: the order flips each
 * round so that a drift in machine load does not favour either side) and
 * returns per-round times and ratios B / A.
 */
export async function interleave(
  a: () => Promise<unknown>, b: () => Promise<unknown>, rounds: number, batch: number,
): Promise<Interleaved> {
  const r: Interleaved = { a: [], b: [], ratios: [], batch };
  for (let i = 0; i < rounds; i++) {
    let ta: number;
    let tb: number;
    if (i % 2 === 0) {
      ta = await timeBatch(a, batch);
      tb = await timeBatch(b, batch);
    } else {
      tb = await timeBatch(b, batch);
      ta = await timeBatch(a, batch);
    }
    r.a.push(ta);
    r.b.push(tb);
    r.ratios.push(tb / ta);
  }
  return r;
}

/** Seeded pseudo-random float32 data in [-1, 1) (LCG), so every run feeds the same inputs. */
export function seededFloats(size: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const d = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    d[i] = (s / 2 ** 32) * 2 - 1;
  }
  return d;
}

/** Least-squares slope of y over x. */
export function slope(x: readonly number[], y: readonly number[]): number {
  const n = x.length;
  if (n < 2) return NaN;
  const mx = x.reduce((s, v) => s + v, 0) / n;
  const my = y.reduce((s, v) => s + v, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (x[i] - mx) * (y[i] - my);
    den += (x[i] - mx) ** 2;
  }
  return num / den;
}

/** Per-call interleaving of several sides: per-round medians of each side's call times. */
export interface InterleavedCalls {
  /** sides[k][r]: median ms per call of side k in round r. */
  sides: number[][];
  /** Calls of each side per round. */
  calls: number;
}

/**
 * Calls the sides one after another, one call each, `calls` times per round
 * (plain, locked, plain, locked …, the order rotating every call), timing each
 * call. A call that the scheduler preempts is an outlier in its side's
 * per-round median and moves neither side, so short inferences are measured
 * well on a busy machine; ratios are then taken per round.
 */
export async function interleaveCalls(sides: readonly (() => Promise<unknown>)[], rounds: number, calls: number): Promise<InterleavedCalls> {
  const k = sides.length;
  const out: number[][] = sides.map(() => []);
  const times: Float64Array[] = sides.map(() => new Float64Array(calls));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < calls; i++) {
      for (let j = 0; j < k; j++) {
        const s = (i + j + r) % k;
        const t = performance.now();
        await sides[s]();
        times[s][i] = performance.now() - t;
      }
    }
    for (let s = 0; s < k; s++) out[s].push(quantile(Array.from(times[s]), 0.5));
  }
  return { sides: out, calls };
}

/** Per-round ratios num[r] / den[r]. */
export function ratios(num: readonly number[], den: readonly number[]): number[] {
  return num.map((v, i) => v / den[i]);
}

/**
 * As `interleaveCalls`, but the sides are called in a seeded random order per call
 * instead of a rotation. A rotation keeps the sides' cyclic order (with three sides
 * C always follows B): when one side leaves work behind on the machine (a worker
 * thread still winding down after its reply), the side after it would always pay
 * for it. Shuffled, every side follows every other equally often.
 */
export async function interleaveCallsShuffled(sides: readonly (() => Promise<unknown>)[], rounds: number, calls: number, seed = 1): Promise<InterleavedCalls> {
  const k = sides.length;
  const out: number[][] = sides.map(() => []);
  const times: Float64Array[] = sides.map(() => new Float64Array(calls));
  const order = Array.from({ length: k }, (_, i) => i);
  let s = seed >>> 0;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < calls; i++) {
      for (let j = k - 1; j > 0; j--) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        const q = s % (j + 1);
        [order[j], order[q]] = [order[q], order[j]];
      }
      for (const side of order) {
        const t = performance.now();
        await sides[side]();
        times[side][i] = performance.now() - t;
      }
    }
    for (let side = 0; side < k; side++) out[side].push(quantile(Array.from(times[side]), 0.5));
  }
  return { sides: out, calls };
}
