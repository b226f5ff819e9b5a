/**
 * Adversarial examples against MNIST classifiers: FGSM and PGD under an
 * L-infinity budget on [0, 1] pixels, with input gradients from the tfjs ONNX
 * executor. A classifier here is any differentiable map from digits to logits,
 * so a locked model with its key (e.g. shuffle, then the keyed network) is
 * attacked as one function, and a surrogate can differ from the target.
 */
import * as tf from '@tensorflow/tfjs';
import { OnnxTfModel, softmaxCrossEntropy } from '../../models/tfjs/onnx-exec.ts';
import { applyBlockMap, permutationMatrix } from './shuffle.ts';

/** Digits [n,1,28,28] -> logits [n,10], differentiable. */
export type Classifier = (x: tf.Tensor) => tf.Tensor;

/** The model's first output on `input` (extra inputs such as key tensors come from `feeds`). */
export function onnxClassifier(model: OnnxTfModel, feeds: Record<string, tf.Tensor> = {}): Classifier {
  const out = model.outputNames[0];
  return (x) => model.predict({ ...feeds, input: x }, [out])[out];
}

/**
 * The classifier behind the shuffle lock's device step (block size m, one
 * channel, locked block position k = plain position perm[k]), written as the
 * block map of the permutation matrix so that gradients flow back to the plain
 * pixels (tfjs-wasm has no gradient for gather).
 */
export function shuffledClassifier(inner: Classifier, perm: ArrayLike<number>, m: number): Classifier {
  const p = tf.keep(tf.tensor2d(permutationMatrix(perm), [m * m, m * m]));
  return (x) => inner(applyBlockMap(x, p, null, m));
}

/** Which loss the attacks climb. */
export type AttackLoss = 'ce' | 'margin';

/**
 * Summed Carlini–Wagner margin max_(j != y) z_j − z_y: unlike cross-entropy it
 * never saturates, so a confidently classified digit still has a gradient (in
 * float32, softmax cross-entropy's gradient is exactly 0 once the logit gap
 * passes ~90).
 */
export function marginLoss(logits: tf.Tensor, y: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const onehot = tf.oneHot(tf.cast(y, 'int32'), logits.shape[1]!);
    const true_ = tf.sum(tf.mul(logits, onehot), 1);
    const other = tf.max(tf.sub(logits, tf.mul(onehot, 1e9)), 1);
    return tf.sum(tf.sub(other, true_)) as tf.Scalar;
  });
}

function lossGrad(f: Classifier, x: tf.Tensor, y: tf.Tensor1D, loss: AttackLoss): tf.Tensor {
  return tf.grad((xi: tf.Tensor) => (loss === 'ce' ? softmaxCrossEntropy(f(xi), y) : marginLoss(f(xi), y)))(x);
}

/** FGSM: one signed-gradient step of size eps, clipped to [0, 1]. */
export function fgsm(f: Classifier, x: tf.Tensor, y: tf.Tensor1D, eps: number, loss: AttackLoss = 'margin'): tf.Tensor {
  return tf.tidy(() => tf.clipByValue(tf.add(x, tf.mul(tf.sign(lossGrad(f, x, y, loss)), eps)), 0, 1));
}

/**
 * PGD without random start (deterministic): `steps` signed-gradient steps of
 * `alpha` (default 2.5·eps/steps), each projected back into the eps-ball
 * around x and into [0, 1].
 */
export function pgd(f: Classifier, x: tf.Tensor, y: tf.Tensor1D, eps: number, steps: number, loss: AttackLoss = 'margin', alpha = (2.5 * eps) / steps): tf.Tensor {
  const lo = tf.tidy(() => tf.clipByValue(tf.sub(x, eps), 0, 1));
  const hi = tf.tidy(() => tf.clipByValue(tf.add(x, eps), 0, 1));
  let adv = tf.clone(x);
  try {
    for (let s = 0; s < steps; s++) {
      const next = tf.tidy(() => tf.minimum(tf.maximum(tf.add(adv, tf.mul(tf.sign(lossGrad(f, adv, y, loss)), alpha)), lo), hi));
      adv.dispose();
      adv = next;
    }
    return adv;
  } finally {
    lo.dispose();
    hi.dispose();
  }
}

/** Accuracy of `f` on (x, labels), in batches of 500. */
export function accuracyUnder(f: Classifier, x: tf.Tensor, labels: Uint8Array): number {
  const n = x.shape[0]!;
  let ok = 0;
  for (let i = 0; i < n; i += 500) {
    const k = Math.min(500, n - i);
    const p = tf.tidy(() => tf.argMax(f(tf.slice(x, [i, 0, 0, 0], [k, 1, 28, 28])), 1));
    const d = p.dataSync();
    p.dispose();
    for (let r = 0; r < k; r++) if (d[r] === labels[i + r]) ok++;
  }
  return ok / n;
}
