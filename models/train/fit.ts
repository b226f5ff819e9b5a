/**
 * The training loop shared by both reference networks: Adam on softmax
 * cross-entropy, mini-batches in an order drawn from a seeded PRNG, so a run
 * is reproducible on the (single-threaded) tfjs wasm backend.
 */
import * as tf from '@tensorflow/tfjs';
import type { MnistSet } from './mnist.ts';
import type { Net } from './nets.ts';
import { mulberry32, shuffleInPlace } from '../prng.ts';
import type { Progress } from './progress.ts';

/** Training hyper-parameters. */
export interface FitOptions {
  epochs: number;
  batchSize: number;
  /** Adam step size per epoch (index = epoch − 1); the last entry holds for later epochs. */
  learningRates: readonly number[];
  /** Seed of the batch order. */
  seed: number;
  /** Largest random shift in pixels (each axis, zero fill) applied to training digits; 0 = none. */
  maxShift?: number;
  progress?: Progress;
  /** Evaluated (in tfjs) after each epoch, for the progress line only. */
  validation?: MnistSet;
}

/** What a run measured. */
export interface FitResult {
  seconds: number;
  trainLoss: number;
  trainAcc: number;
  validationAcc?: number;
}

const PIXELS = 784;

/** Fraction of `set` that `net` classifies right, evaluated in tfjs in chunks. */
export function accuracy(net: Net, set: MnistSet, chunk = 500): number {
  let correct = 0;
  for (let i = 0; i < set.n; i += chunk) {
    const m = Math.min(chunk, set.n - i);
    const pred = tf.tidy(() => tf.argMax(net.forward(tf.tensor2d(set.x.subarray(i * PIXELS, (i + m) * PIXELS), [m, PIXELS])), 1));
    const p = pred.dataSync();
    pred.dispose();
    for (let k = 0; k < m; k++) if (p[k] === set.y[i + k]) correct++;
  }
  return correct / set.n;
}

/** Copies a 28×28 digit into `dst` moved by (dy, dx) pixels; uncovered pixels become 0. */
function shiftInto(src: Float32Array, dst: Float32Array, dy: number, dx: number): void {
  dst.fill(0);
  const x0 = Math.max(0, dx);
  const x1 = Math.min(28, 28 + dx);
  for (let r = Math.max(0, dy); r < Math.min(28, 28 + dy); r++) {
    const from = (r - dy) * 28 - dx;
    dst.set(src.subarray(from + x0, from + x1), r * 28 + x0);
  }
}

/** Trains `net` in place on `train`. */
export function fit(net: Net, train: MnistSet, opts: FitOptions): FitResult {
  const rand = mulberry32(opts.seed);
  const order = new Uint32Array(train.n);
  for (let i = 0; i < order.length; i++) order[i] = i;
  const batches = Math.ceil(train.n / opts.batchSize);
  const xb = new Float32Array(opts.batchSize * PIXELS);
  const yb = new Int32Array(opts.batchSize);
  const vars = Object.values(net.params);
  const shift = opts.maxShift ?? 0;
  const optimizer = tf.train.adam(opts.learningRates[0]);
  const t0 = performance.now();
  let result: FitResult = { seconds: 0, trainLoss: NaN, trainAcc: NaN };

  for (let epoch = 1; epoch <= opts.epochs; epoch++) {
    // Adam reads its step size on every update, so changing it between epochs is a schedule.
    (optimizer as unknown as { learningRate: number }).learningRate =
      opts.learningRates[Math.min(epoch, opts.learningRates.length) - 1];
    shuffleInPlace(order, rand);
    let lossSum = 0;
    let correct = 0;
    let seen = 0;
    for (let b = 0; b < batches; b++) {
      const start = b * opts.batchSize;
      const m = Math.min(opts.batchSize, train.n - start);
      for (let k = 0; k < m; k++) {
        const i = order[start + k];
        const src = train.x.subarray(i * PIXELS, (i + 1) * PIXELS);
        const dst = xb.subarray(k * PIXELS, (k + 1) * PIXELS);
        if (shift > 0) {
          const dy = Math.floor(rand() * (2 * shift + 1)) - shift;
          const dx = Math.floor(rand() * (2 * shift + 1)) - shift;
          shiftInto(src, dst, dy, dx);
        } else dst.set(src);
        yb[k] = train.y[i];
      }
      let hits: tf.Tensor | undefined;
      const loss = tf.tidy(() => {
        const x = tf.tensor2d(xb.subarray(0, m * PIXELS), [m, PIXELS]);
        const y = tf.tensor1d(yb.subarray(0, m), 'int32');
        return optimizer.minimize(() => {
          const logits = net.forward(x);
          hits = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), y), 'int32')));
          return tf.losses.softmaxCrossEntropy(tf.oneHot(y, 10), logits) as tf.Scalar;
        }, true, vars) as tf.Scalar;
      });
      lossSum += loss.dataSync()[0] * m;
      loss.dispose();
      correct += hits!.dataSync()[0];
      hits!.dispose();
      seen += m;
      const state = {
        model: net.name, epoch, epochs: opts.epochs, batch: b + 1, batches,
        loss: lossSum / seen, acc: correct / seen, seconds: (performance.now() - t0) / 1000,
      };
      if (b + 1 < batches) opts.progress?.update(state);
      else {
        const validationAcc = opts.validation ? accuracy(net, opts.validation) : undefined;
        result = { seconds: state.seconds, trainLoss: state.loss, trainAcc: state.acc, validationAcc };
        opts.progress?.epochEnd(state, validationAcc === undefined ? undefined : `test ${(validationAcc * 100).toFixed(2)}%`);
      }
    }
  }
  optimizer.dispose();
  result.seconds = (performance.now() - t0) / 1000;
  return result;
}
