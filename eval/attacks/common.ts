/**
 * Helpers the attacks share: seeded random numbers per label, the first
 * digits of a set, the attacker's training budget, and the honest baseline
 * (the same network trained from scratch on the attacker's stolen digits).
 */
import * as tf from '@tensorflow/tfjs';
import { PIXELS, type MnistSet } from '../../models/train/mnist.ts';
import { mulberry32 } from '../../models/prng.ts';
import { TrainableOnnxModel } from '../../models/train/fine-tune.ts';

/** A seeded generator for one purpose: the same (seed, label) always gives the same stream. */
export function randFor(seed: number, label: string): () => number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
  return mulberry32(h >>> 0);
}

/** The first `n` digits of a set (views, no copy). */
export function headOf(set: MnistSet, n: number): MnistSet {
  const k = Math.min(n, set.n);
  return { x: set.x.subarray(0, k * PIXELS), y: set.y.subarray(0, k), n: k };
}

/** Glorot-uniform limit for an ONNX weight [out, in, ...kernel] (Gemm transB=1 or Conv OIHW); 0 for biases. */
function glorotLimit(shape: readonly number[]): number {
  if (shape.length < 2) return 0;
  const rf = shape.slice(2).reduce((a, b) => a * b, 1);
  return Math.sqrt(6 / (shape[1] * rf + shape[0] * rf));
}

/** The attacker's training budget (the same as eval/finetune.ts: Adam, 300 steps of 32). */
export const ATTACK_BUDGET = { steps: 300, batch: 32, lr: 1e-3 } as const;

/** Epochs that give about `steps` optimizer steps on `n` samples. */
export function epochsFor(n: number, budget: { steps: number; batch: number } = ATTACK_BUDGET): number {
  return Math.max(1, Math.round(budget.steps / Math.ceil(n / budget.batch)));
}

/**
 * The honest baseline: the plain architecture re-initialized (seeded
 * glorot-uniform weights, zero biases, the reference nets' init) and trained on
 * the stolen digits with the attacker's budget. Returns test accuracy.
 */
export function scratchAccuracy(plainOnnx: Uint8Array, data: MnistSet, test: MnistSet, seed: number, budget = ATTACK_BUDGET): number {
  const m = TrainableOnnxModel.fromBytes(plainOnnx);
  try {
    const rand = mulberry32(seed);
    for (const v of m.params.values()) {
      const limit = glorotLimit(v.shape);
      const d = new Float32Array(v.size);
      if (limit > 0) for (let i = 0; i < d.length; i++) d[i] = (rand() * 2 - 1) * limit;
      v.assign(tf.tensor(d, v.shape));
    }
    const opts = { inputName: 'input', sampleShape: [1, 28, 28] };
    m.fit(data.x, data.y, { ...opts, epochs: epochsFor(data.n, budget), batchSize: budget.batch, lr: budget.lr, seed });
    return m.accuracy(test.x, test.y, 500, opts);
  } finally {
    m.dispose();
  }
}
