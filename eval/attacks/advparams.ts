/**
 * Undoing `advparams` (AdvParams, Xue et al. 2021) without the key: find the
 * few perturbed weights, put them back near where trained weights live, then
 * fine-tune briefly on the stolen digits.
 *
 * The perturbed weights were chosen for their large loss gradient and pushed
 * by half the layer's value range, towards its extremes. Three detectors, all
 * run on the locked model with clean stolen data (never the key):
 * - `outlier`: distance from the layer's median in robust standard deviations
 *   (1.4826 · median absolute deviation);
 * - `gradient`: |dL/dw| on the stolen digits, in robust standard deviations
 *   of the layer's gradients;
 * - `greedy`: the first-order loss drop of resetting w to the layer median,
 *   g · (w − median), confirmed one weight at a time: a reset is kept only if
 *   the stolen set's mean cross-entropy falls by at least `minGain` (0.01 nat:
 *   smaller drops are mostly the small set being overfitted, resetting
 *   ordinary weights); stops when a round keeps nothing.
 * The first two flag their top `budget` weights; the greedy detector decides
 * how many by itself.
 */
import * as tf from '@tensorflow/tfjs';
import type { AdvparamsChange } from '../../models/lock/onnx/advparams.ts';
import type { MnistSet } from '../../models/train/mnist.ts';
import { OnnxTfModel, softmaxCrossEntropy } from '../../models/tfjs/onnx-exec.ts';

/** One located parameter. */
export interface Located {
  tensor: string;
  element: number;
}

/** Detector names. */
export type Detector = 'outlier' | 'gradient' | 'greedy';

function median(values: Float32Array): number {
  const s = Float32Array.from(values).sort();
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** Median and robust spread (1.4826 · MAD) of a tensor's values. */
export function robustStats(values: Float32Array): { median: number; sigma: number } {
  const m = median(values);
  const dev = values.map((v) => Math.abs(v - m));
  return { median: m, sigma: 1.4826 * median(dev) || 1e-12 };
}

/** Mean loss and summed-over-set gradients of `layers` on (x, y) in batches. */
function lossAndGrads(model: OnnxTfModel, data: MnistSet, layers: readonly string[]): { loss: number; grads: Map<string, Float32Array> } {
  const grads = new Map(layers.map((n) => [n, new Float32Array(model.params.get(n)!.size)]));
  let loss = 0;
  for (let i = 0; i < data.n; i += 500) {
    const k = Math.min(500, data.n - i);
    const x = tf.tensor4d(data.x.subarray(i * 784, (i + k) * 784), [k, 1, 28, 28]);
    try {
      const r = model.lossAndGrads({ input: x }, data.y.subarray(i, i + k), { wrt: 'params', trainable: (n) => layers.includes(n) });
      loss += (r.loss * k) / data.n;
      for (const n of layers) {
        const g = r.grads[n];
        if (!g) continue;
        const d = g.dataSync();
        const acc = grads.get(n)!;
        for (let j = 0; j < d.length; j++) acc[j] += (d[j] * k) / data.n;
      }
      for (const g of Object.values(r.grads)) g.dispose();
    } finally {
      x.dispose();
    }
  }
  return { loss, grads };
}

/** Mean cross-entropy on a set (one query of the whole set). */
export function setLoss(model: OnnxTfModel, x: tf.Tensor, y: tf.Tensor1D): number {
  const out = model.outputNames[0];
  const l = tf.tidy(() => softmaxCrossEntropy(model.predict({ input: x }, [out])[out], y));
  const v = l.dataSync()[0];
  l.dispose();
  return v;
}

/** What a detector located. */
export interface Detection {
  located: Located[];
  /** Forward passes over the whole stolen set (loss checks) and gradient passes. */
  queries: number;
  gradients: number;
  seconds: number;
}

function topK(scores: Map<string, Float32Array>, k: number, exclude?: Set<string>): Located[] {
  const all: { tensor: string; element: number; s: number }[] = [];
  for (const [tensor, s] of scores) {
    // Keep a running top-k per layer first: layers hold up to ~10^5 weights.
    const idx = Array.from({ length: s.length }, (_, i) => i).filter((i) => Number.isFinite(s[i]) && !exclude?.has(`${tensor}#${i}`));
    idx.sort((a, b) => s[b] - s[a]);
    for (const i of idx.slice(0, k)) all.push({ tensor, element: i, s: s[i] });
  }
  all.sort((a, b) => b.s - a.s);
  return all.slice(0, k).map(({ tensor, element }) => ({ tensor, element }));
}

/**
 * Runs a detector on the locked model. `layers`: the candidate weight tensors
 * (Conv/Gemm/MatMul weights: what AdvParams may perturb). The greedy detector
 * changes the model (its resets stay applied); the others leave it as is.
 */
export function detectAdvparams(model: OnnxTfModel, data: MnistSet, layers: readonly string[], detector: Detector, opts: { budget?: number; perRound?: number; maxRounds?: number; minGain?: number } = {}): Detection {
  const t0 = performance.now();
  const budget = opts.budget ?? 100;
  const values = new Map(layers.map((n) => [n, Float32Array.from(model.params.get(n)!.dataSync() as Float32Array)]));
  const stats = new Map(layers.map((n) => [n, robustStats(values.get(n)!)]));
  if (detector === 'outlier') {
    const scores = new Map(layers.map((n) => {
      const { median: m, sigma } = stats.get(n)!;
      return [n, values.get(n)!.map((v) => Math.abs(v - m) / sigma)];
    }));
    return { located: topK(scores, budget), queries: 0, gradients: 0, seconds: (performance.now() - t0) / 1000 };
  }
  if (detector === 'gradient') {
    const { grads } = lossAndGrads(model, data, layers);
    const scores = new Map(layers.map((n) => {
      const g = grads.get(n)!;
      const { median: m, sigma } = robustStats(g.map(Math.abs));
      return [n, g.map((v) => (Math.abs(v) - m) / sigma)];
    }));
    return { located: topK(scores, budget), queries: 0, gradients: 1, seconds: (performance.now() - t0) / 1000 };
  }
  // Greedy, verified by the stolen set's loss.
  const perRound = opts.perRound ?? 8;
  const maxRounds = opts.maxRounds ?? 40;
  const minGain = opts.minGain ?? 0.01;
  const x = tf.tensor4d(data.x, [data.n, 1, 28, 28]);
  const y = tf.tensor1d(Int32Array.from(data.y), 'int32');
  const located: Located[] = [];
  const tried = new Set<string>();
  let queries = 0, gradients = 0;
  try {
    let best = setLoss(model, x, y);
    queries++;
    for (let round = 0; round < maxRounds; round++) {
      const { grads } = lossAndGrads(model, data, layers);
      gradients++;
      const scores = new Map(layers.map((n) => {
        const g = grads.get(n)!, w = values.get(n)!, m = stats.get(n)!.median;
        return [n, g.map((gi, i) => gi * (w[i] - m))];
      }));
      let kept = 0;
      for (const c of topK(scores, perRound, tried)) {
        tried.add(`${c.tensor}#${c.element}`);
        const w = values.get(c.tensor)!;
        const old = w[c.element];
        w[c.element] = stats.get(c.tensor)!.median;
        const v = model.params.get(c.tensor)!;
        v.assign(tf.tensor(w, v.shape));
        const l = setLoss(model, x, y);
        queries++;
        if (l < best - minGain) { best = l; located.push(c); kept++; } else { w[c.element] = old; v.assign(tf.tensor(w, v.shape)); }
      }
      if (!kept) break;
    }
  } finally {
    x.dispose();
    y.dispose();
  }
  return { located, queries, gradients, seconds: (performance.now() - t0) / 1000 };
}

/** Sets located weights to their layer's median (what the greedy detector does as it goes). */
export function resetToMedian(model: OnnxTfModel, located: readonly Located[]): void {
  const by = new Map<string, number[]>();
  for (const l of located) by.set(l.tensor, [...(by.get(l.tensor) ?? []), l.element]);
  for (const [name, elems] of by) {
    const v = model.params.get(name)!;
    const w = Float32Array.from(v.dataSync() as Float32Array);
    const m = robustStats(w).median;
    for (const e of elems) w[e] = m;
    v.assign(tf.tensor(w, v.shape));
  }
}

/** Precision and recall of located weights against the true perturbed ones. */
export function precisionRecall(located: readonly Located[], truth: readonly AdvparamsChange[]): { precision: number; recall: number; found: number } {
  const t = new Set(truth.map((c) => `${c.tensor}#${c.element}`));
  const found = located.filter((l) => t.has(`${l.tensor}#${l.element}`)).length;
  return { precision: located.length ? found / located.length : 1, recall: truth.length ? found / truth.length : 1, found };
}
