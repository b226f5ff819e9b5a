/**
 * Key recovery against `shuffle` (block-wise pixel shuffling): the shuffle is
 * one permutation of the N = m·m·C positions of a block, applied to every
 * block, so a single N×N linear map (plus a bias, which also covers the
 * negative/positive variant x -> 1 - x) in front of the locked model can
 * represent it exactly.
 *
 * The attacker holds the locked model (trained with the key, or with the
 * inverse absorbed into its first layer) and a few plain labelled digits. They
 * put the learned map in front of the frozen model and train only the map by
 * gradient descent on cross-entropy (the tfjs ONNX executor differentiates
 * through the model). Rounding the learned map to the nearest permutation
 * (Hungarian assignment on its entries) then reads off the key itself.
 */
import * as tf from '@tensorflow/tfjs';
import type { MnistSet } from '../../models/train/mnist.ts';
import { mulberry32, shuffleInPlace } from '../../models/prng.ts';
import { OnnxTfModel, softmaxCrossEntropy } from '../../models/tfjs/onnx-exec.ts';

/** Side of an MNIST digit. */
const SIDE = 28;

/**
 * Applies a block map to NCHW digits (one channel): every m×m block is
 * flattened row by row (the lock's (p1 p2 c) order), y = A·x + b, and put back.
 */
export function applyBlockMap(x: tf.Tensor, a: tf.Tensor2D, b: tf.Tensor1D | null, m: number): tf.Tensor4D {
  return tf.tidy(() => {
    const n = x.shape[0]!;
    const B = SIDE / m;
    const blocks = tf.reshape(tf.transpose(tf.reshape(x, [n, B, m, B, m]), [0, 1, 3, 2, 4]), [n * B * B, m * m]);
    let y = tf.matMul(blocks, a, false, true);
    if (b) y = tf.add(y, b);
    return tf.reshape(tf.transpose(tf.reshape(y, [n, B, B, m, m]), [0, 1, 3, 2, 4]), [n, 1, SIDE, SIDE]) as tf.Tensor4D;
  });
}

/** The permutation matrix of `perm` (row k has its 1 at column perm[k]). */
export function permutationMatrix(perm: ArrayLike<number>): Float32Array {
  const n = perm.length;
  const a = new Float32Array(n * n);
  for (let k = 0; k < n; k++) a[k * n + perm[k]] = 1;
  return a;
}

/** What learning the block map gave. */
export interface LearnedMap {
  /** N×N row-major: locked position k = sum_i a[k·N + i] · plain position i. */
  a: Float32Array;
  bias: Float32Array;
  steps: number;
  seconds: number;
}

/** Options of `learnBlockMap`. */
export interface LearnOptions {
  m: number;
  steps: number;
  batch: number;
  lr: number;
  seed: number;
  /** Starting map: the identity (the attacker's "no shuffle" guess, default) or all entries 1/N. */
  init?: 'identity' | 'uniform';
}

/** Trains a block map in front of the frozen locked model on the stolen digits. */
export function learnBlockMap(model: OnnxTfModel, data: MnistSet, opts: LearnOptions): LearnedMap {
  const t0 = performance.now();
  const N = opts.m * opts.m;
  const init = new Float32Array(N * N);
  for (let k = 0; k < N; k++) for (let i = 0; i < N; i++) init[k * N + i] = opts.init === 'uniform' ? 1 / N : k === i ? 1 : 0;
  const a = tf.variable(tf.tensor2d(init, [N, N]), true);
  const b = tf.variable(tf.zeros([N]), true) as tf.Variable<tf.Rank.R1>;
  const opt = tf.train.adam(opts.lr);
  const rand = mulberry32(opts.seed);
  const order = Uint32Array.from({ length: data.n }, (_, i) => i);
  const xb = new Float32Array(opts.batch * 784);
  const yb = new Int32Array(opts.batch);
  const out = model.outputNames[0];
  try {
    let at = data.n;
    for (let s = 0; s < opts.steps; s++) {
      const k = Math.min(opts.batch, data.n);
      if (at + k > data.n) { shuffleInPlace(order, rand); at = 0; }
      for (let r = 0; r < k; r++) {
        const i = order[at + r];
        xb.set(data.x.subarray(i * 784, (i + 1) * 784), r * 784);
        yb[r] = data.y[i];
      }
      at += k;
      tf.tidy(() => {
        const x = tf.tensor4d(xb.subarray(0, k * 784), [k, 1, SIDE, SIDE]);
        const y = tf.tensor1d(yb.subarray(0, k), 'int32');
        opt.minimize(() => softmaxCrossEntropy(model.predict({ input: applyBlockMap(x, a as tf.Tensor2D, b, opts.m) }, [out])[out], y), false, [a, b]);
      });
    }
    return { a: Float32Array.from(a.dataSync() as Float32Array), bias: Float32Array.from(b.dataSync() as Float32Array), steps: opts.steps, seconds: (performance.now() - t0) / 1000 };
  } finally {
    opt.dispose();
    a.dispose();
    b.dispose();
  }
}

/** Test accuracy of the locked model behind a block map (null bias: none). */
export function mapAccuracy(model: OnnxTfModel, a: Float32Array, bias: Float32Array | null, m: number, set: MnistSet): number {
  const N = m * m;
  const at = tf.tensor2d(a, [N, N]);
  const bt = bias ? tf.tensor1d(bias) : null;
  const out = model.outputNames[0];
  let ok = 0;
  try {
    for (let i = 0; i < set.n; i += 500) {
      const k = Math.min(500, set.n - i);
      const p = tf.tidy(() => tf.argMax(model.predict({ input: applyBlockMap(tf.tensor4d(set.x.subarray(i * 784, (i + k) * 784), [k, 1, SIDE, SIDE]), at, bt, m) }, [out])[out], 1));
      const d = p.dataSync();
      p.dispose();
      for (let r = 0; r < k; r++) if (d[r] === set.y[i + r]) ok++;
    }
  } finally {
    at.dispose();
    bt?.dispose();
  }
  return ok / set.n;
}

/**
 * Minimum-cost assignment (Hungarian method, O(n^3)): for an n×n cost matrix,
 * row r gets column result[r], every column used once.
 */
export function hungarian(cost: ArrayLike<number>, n: number): Int32Array {
  const INF = Infinity;
  const u = new Float64Array(n + 1), v = new Float64Array(n + 1);
  const p = new Int32Array(n + 1), way = new Int32Array(n + 1);
  for (let i = 1; i <= n; i++) {
    p[0] = i;
    let j0 = 0;
    const minv = new Float64Array(n + 1).fill(INF);
    const used = new Uint8Array(n + 1);
    do {
      used[j0] = 1;
      const i0 = p[j0];
      let delta = INF, j1 = 0;
      for (let j = 1; j <= n; j++) {
        if (used[j]) continue;
        const cur = cost[(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) { minv[j] = cur; way[j] = j0; }
        if (minv[j] < delta) { delta = minv[j]; j1 = j; }
      }
      for (let j = 0; j <= n; j++) {
        if (used[j]) { u[p[j]] += delta; v[j] -= delta; } else minv[j] -= delta;
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do { const j1 = way[j0]; p[j0] = p[j1]; j0 = j1; } while (j0);
  }
  const result = new Int32Array(n);
  for (let j = 1; j <= n; j++) result[p[j] - 1] = j - 1;
  return result;
}

/** The permutation closest to a learned map: maximizes the sum of a[k, perm[k]]. */
export function roundToPermutation(a: Float32Array, N: number): Uint32Array {
  const cost = new Float64Array(N * N);
  for (let i = 0; i < cost.length; i++) cost[i] = -a[i];
  return Uint32Array.from(hungarian(cost, N));
}

/** Fraction of block positions where two permutations agree. */
export function permAgreement(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let k = 0; k < a.length; k++) if (a[k] === b[k]) s++;
  return s / a.length;
}
