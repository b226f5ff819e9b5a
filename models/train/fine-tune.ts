/**
 * Training an ONNX model in tfjs: the batched accuracy and the Adam
 * fine-tuning loop on top of the differentiable executor
 * (models/tfjs/onnx-exec.ts). The fine-tuning attacks of the evaluation and
 * the tests use it; the lockers need only the executor, so the loop lives
 * here, apart from them (.dependency-cruiser.cjs: lockers-do-not-carry-training).
 */
import * as tf from '@tensorflow/tfjs';
import { InputMismatchError } from '../../keystore/errors.ts';
import { mulberry32, shuffleInPlace } from '../prng.ts';
import { OnnxTfModel, softmaxCrossEntropy, type TensorFeeds } from '../tfjs/onnx-exec.ts';

/** Options shared by batch helpers that take a flat sample array. */
export interface BatchOptions {
  /** Input the samples go to (default: {@link OnnxTfModel.defaultInput}). */
  inputName?: string;
  /** Logits output (default: the first graph output). */
  outputName?: string;
  /** Batch-independent extra inputs (e.g. ±1 key tensors of a locked model). Not disposed. */
  feeds?: TensorFeeds;
  /** Shape of one sample; default: the input's declared dims after the batch axis. */
  sampleShape?: readonly number[];
}

/** Fine-tuning options. */
export interface FineTuneOptions extends BatchOptions {
  epochs: number;
  batchSize: number;
  /** Adam learning rate. */
  lr: number;
  /** Seed of the batch order (mulberry32; one generator for the whole run, a fresh shuffle per epoch). */
  seed: number;
  /** Which initializers to train (default: all float32 ones). */
  trainable?: (name: string) => boolean;
  /** Called after each epoch with its 1-based number and mean training loss. */
  onEpoch?: (epoch: number, loss: number) => void;
}

/** What `fit` measured. */
export interface FineTuneReport {
  /** Mean training loss of each epoch (sample-weighted). */
  losses: number[];
  steps: number;
  seconds: number;
}

/**
 * An {@link OnnxTfModel} that can also be scored and fine-tuned on flat
 * sample arrays. Build it like the executor (`new`, `fromBytes`); dispose it
 * when done.
 */
export class TrainableOnnxModel extends OnnxTfModel {
  private sampleShape(inputName: string, opts: BatchOptions, total: number, n: number): number[] {
    let shape = opts.sampleShape ? [...opts.sampleShape] : undefined;
    if (!shape) {
      const dims = this.inputDims(inputName)?.slice(1);
      if (!dims || dims.some((d) => d === null)) {
        throw new InputMismatchError(`input '${inputName}': its declared shape does not fix a sample's shape; pass sampleShape`);
      }
      shape = dims as number[];
    }
    const per = shape.reduce((a, b) => a * b, 1);
    if (per * n !== total) throw new InputMismatchError(`samples: expected ${n} × ${per} = ${per * n} values for ${n} labels, got ${total}`);
    return shape;
  }

  /** Fraction of samples whose arg-max logit equals the label, evaluated in batches of `batch`. */
  accuracy(x: Float32Array, y: Uint8Array, batch = 256, opts: BatchOptions = {}): number {
    const inputName = opts.inputName ?? this.defaultInput(Object.keys(opts.feeds ?? {}));
    const outputName = opts.outputName ?? this.outputNames[0];
    const n = y.length;
    if (n === 0) throw new RangeError('accuracy: expected at least one sample, got none');
    const shape = this.sampleShape(inputName, opts, x.length, n);
    const per = x.length / n;
    let correct = 0;
    for (let i = 0; i < n; i += batch) {
      const m = Math.min(batch, n - i);
      const pred = tf.tidy(() => {
        const xb = tf.tensor(x.subarray(i * per, (i + m) * per), [m, ...shape]);
        return tf.argMax(this.logits({ ...opts.feeds, [inputName]: xb }, outputName), 1);
      });
      const p = pred.dataSync();
      pred.dispose();
      for (let k = 0; k < m; k++) if (p[k] === y[i + k]) correct++;
    }
    return correct / n;
  }

  /**
   * Fine-tunes the (selected) variables with Adam on softmax cross-entropy.
   * The batch order comes from mulberry32(seed), so a run repeats exactly on
   * the same backend. The last batch of an epoch may be smaller.
   */
  fit(x: Float32Array, y: Uint8Array, opts: FineTuneOptions): FineTuneReport {
    const { epochs, batchSize, lr, seed } = opts;
    if (!Number.isInteger(epochs) || epochs < 0) throw new RangeError(`epochs must be a non-negative integer, got ${epochs}`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
    if (!(lr > 0)) throw new RangeError(`lr must be positive, got ${lr}`);
    const inputName = opts.inputName ?? this.defaultInput(Object.keys(opts.feeds ?? {}));
    const outputName = opts.outputName ?? this.outputNames[0];
    const n = y.length;
    const shape = this.sampleShape(inputName, opts, x.length, n);
    const per = x.length / n;
    const vars = this.selectVars(opts.trainable);
    const rand = mulberry32(seed);
    const optimizer = tf.train.adam(lr);
    const started = performance.now();
    const losses: number[] = [];
    let steps = 0;
    const xb = new Float32Array(batchSize * per);
    const yb = new Int32Array(batchSize);
    try {
      for (let ep = 1; ep <= epochs; ep++) {
        const order = new Uint32Array(n);
        for (let i = 0; i < n; i++) order[i] = i;
        shuffleInPlace(order, rand);
        let sum = 0;
        for (let i = 0; i < n; i += batchSize) {
          const m = Math.min(batchSize, n - i);
          for (let k = 0; k < m; k++) {
            const s = order[i + k];
            xb.set(x.subarray(s * per, (s + 1) * per), k * per);
            yb[k] = y[s];
          }
          const cost = tf.tidy(() => {
            const xt = tf.tensor(xb.subarray(0, m * per), [m, ...shape]);
            const yt = tf.tensor1d(yb.subarray(0, m), 'int32');
            return optimizer.minimize(() => softmaxCrossEntropy(this.logits({ ...opts.feeds, [inputName]: xt }, outputName), yt), true, vars)!;
          });
          sum += cost.dataSync()[0] * m;
          cost.dispose();
          steps++;
        }
        const loss = sum / n;
        losses.push(loss);
        opts.onEpoch?.(ep, loss);
      }
    } finally {
      optimizer.dispose();
    }
    return { losses, steps, seconds: (performance.now() - started) / 1000 };
  }
}
