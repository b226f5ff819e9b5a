/**
 * `advparams` (AdvParams, Xue, Wu, Wang, Zhang & Liu 2021), vendor side: a few
 * dozen of the most influential weights are pushed along the loss gradient
 * until the model is useless; the key is their positions and original values,
 * sealed into the manifest. The device writes the originals back at load
 * (runtime/keys/advparams.ts), so with the key the model is bit-identical.
 *
 * Algorithm (the knobs in {@link ADVPARAMS_DEFAULTS} are in brackets):
 * 1. Candidate layers: the float32 weight initializers of Conv (W), Gemm (A, B)
 *    and MatMul nodes; biases are never candidates. Choose [layers] of them with
 *    mulberry32(seed): all of them when there are at most four, else a random half.
 *    Each layer's range [lo, hi] = [min W_l, max W_l] is taken once, from the
 *    ORIGINAL weights, so repeated steps cannot widen it.
 * 2. Encryption set: the first [samples] labelled samples of `--data`.
 * 3. Repeat: compute the mean cross-entropy loss and the accuracy on the
 *    encryption set, and the gradient of the loss w.r.t. the chosen layers (in
 *    batches of [batch]). Stop when accuracy <= [targetAccuracy] or loss >=
 *    [lossThreshold]. Otherwise, in each chosen layer, take the parameter with
 *    the largest |gradient| among those modified fewer than [maxPerParam] times
 *    that can still move in the gradient's direction, and propose
 *      w <- w + sign(g) · [theta] · (hi − lo)
 *    (sign(g): the loss-increasing direction, both ways, not only upwards). A step
 *    that would leave [lo, hi] lands instead at a seeded random fraction in
 *    [0.75·clip, clip] ([clip] < 1) of the way to the bound, so a locked weight
 *    is never exactly on (nor piled up just below) the layer's extremes. The first
 *    time a parameter is touched, its original bytes are recorded. Stop once
 *    [maxParams] distinct parameters have been modified.
 * 4. Only the modified tensors are written back (setInitializer), so every
 *    other byte of the model is untouched.
 *
 * Two refinements of keylock's, both on by default and both switchable back to
 * the published procedure ([correctOnly] 0, [minGain] 0). Measured on the MNIST
 * MLP, the published one stalls near 40 % accuracy at 50 parameters; with both,
 * it reaches <= 15 % with about 35:
 * - [correctOnly] 1: the gradient is taken over the samples still classified
 *   correctly. Softmax saturates: a confidently right sample has a vanishing
 *   gradient and a wrong one a large gradient, so the whole-set gradient keeps
 *   pushing samples that are already lost; the loss soars, accuracy stalls.
 * - [minGain]: a layer's proposal is applied only if its first-order loss gain
 *   |g| · |Δw| is at least this fraction of the best layer's in the same
 *   iteration, so the parameter budget is not spent on layers where one weight
 *   barely matters (an MLP's first layer: one pixel into one hidden unit).
 *
 * Pitfalls of naive reimplementations of AdvParams (Xue et al. 2021) avoided: max |g| rather than max g with positive
 * steps only; a per-parameter modification limit rather than re-selecting one
 * weight forever; no clamping onto the bounds.
 *
 * Order with other graph-stage locks: signflip may come before or after (a
 * row it negates after us gets a negated original in input mode, where stored
 * rows stay negated on the device; fold mode negates them back before we
 * restore, since locks are undone in reverse order); shuffle absorption must
 * not come after advparams, because permuting a weight after we recorded
 * positions would send the originals to the wrong elements (`finish` checks for
 * this), and before advparams the model expects shuffled inputs, which the
 * encryption set is not (the search then finds nothing to do and says so).
 * signflip in input mode must come after advparams, since the encryption set
 * carries no key inputs.
 */
import * as tf from '@tensorflow/tfjs';
import { encodeCbor } from '../../../keystore/cbor.ts';
import { randomBytes, seal, wipe } from '../../../keystore/nacl.ts';
import { InputMismatchError, UnsupportedModelError } from '../../../keystore/errors.ts';
import { advparamsNonce, advparamsSecretboxKey } from '../../../runtime/keys/derive.ts';
import type { AdvparamsLock } from '../../../runtime/klm.ts';
import type { Sample } from '../../../runtime/recorded.ts';
import { getInitializer, setInitializer } from '../../onnx/initializers.ts';
import type { OnnxModel } from '../../onnx/types.ts';
import { mulberry32, shuffleInPlace } from '../../prng.ts';
import { OnnxTfModel, softmaxCrossEntropy, type TensorFeeds } from '../../tfjs/onnx-exec.ts';
import { initTfjsWasm } from '../../tfjs/setup.ts';
import { rangeOf, type FinishEntry, type OnnxLocker } from '../types.ts';

/** Tuning knobs (`LockOptions.advparams`); see the module comment for their role. */
export interface AdvparamsKnobs {
  /** Layers to perturb; default: all candidates when there are at most 4, else half (rounded up). */
  layers?: number;
  /** Step size as a fraction of the layer's original value range. */
  theta: number;
  /** How often one parameter may be modified. */
  maxPerParam: number;
  /** Most distinct parameters to modify. */
  maxParams: number;
  /** Stop once accuracy on the encryption set is at or below this. */
  targetAccuracy: number;
  /** Stop once the loss on the encryption set reaches this (default: never; the accuracy target decides). */
  lossThreshold: number;
  /** Encryption-set size: the first this-many labelled samples of the data. */
  samples: number;
  /** Samples per forward/backward pass. */
  batch: number;
  /** A clipped step goes at most this fraction of the way to the bound (< 1: never onto it). */
  clip: number;
  /** 1: gradients from the still correctly classified samples only; 0: from the whole set (as published). */
  correctOnly: number;
  /**
   * A layer's step is taken only if its first-order loss gain is at least this
   * fraction of the best layer's in the same iteration (0: every chosen layer
   * steps every iteration, as published).
   */
  minGain: number;
}

/** Default knobs: on the MNIST reference models they reach <= 15 % with 15-40 parameters (test/lock-advparams.test.ts). */
export const ADVPARAMS_DEFAULTS: Readonly<AdvparamsKnobs> = Object.freeze({
  theta: 0.5,
  maxPerParam: 2,
  maxParams: 50,
  targetAccuracy: 0.15,
  lossThreshold: Infinity,
  samples: 512,
  batch: 256,
  clip: 0.999,
  correctOnly: 1,
  minGain: 0.3,
});

/** Checks and completes `LockOptions.advparams`. RangeError on unknown names or values out of range. */
export function advparamsKnobs(given: Readonly<Record<string, number>> = {}): AdvparamsKnobs {
  const k: AdvparamsKnobs = { ...ADVPARAMS_DEFAULTS };
  const known = ['layers', ...Object.keys(ADVPARAMS_DEFAULTS)];
  for (const [name, v] of Object.entries(given)) {
    if (!known.includes(name)) throw new RangeError(`advparams: unknown knob "${name}"; known: ${known.join(', ')}`);
    if (typeof v !== 'number' || Number.isNaN(v)) throw new RangeError(`advparams.${name}: expected a number, got ${String(v)}`);
    (k as unknown as Record<string, number>)[name] = v;
  }
  const int = (name: keyof AdvparamsKnobs, min: number): void => {
    const v = k[name];
    if (v !== undefined && (!Number.isSafeInteger(v) || v < min)) throw new RangeError(`advparams.${name}: expected an integer >= ${min}, got ${v}`);
  };
  int('layers', 1); int('maxPerParam', 1);
  if (k.maxPerParam > 255) throw new RangeError(`advparams.maxPerParam: expected at most 255, got ${k.maxPerParam}`); int('maxParams', 1); int('samples', 1); int('batch', 1);
  if (!(k.theta > 0 && Number.isFinite(k.theta))) throw new RangeError(`advparams.theta: expected a positive number, got ${k.theta}`);
  if (!(k.clip > 0 && k.clip < 1)) throw new RangeError(`advparams.clip: expected a number in (0, 1), got ${k.clip}`);
  if (!(k.targetAccuracy >= 0 && k.targetAccuracy <= 1)) throw new RangeError(`advparams.targetAccuracy: expected a number in [0, 1], got ${k.targetAccuracy}`);
  if (!(k.minGain >= 0 && k.minGain <= 1)) throw new RangeError(`advparams.minGain: expected a number in [0, 1], got ${k.minGain}`);
  if (k.correctOnly !== 0 && k.correctOnly !== 1) throw new RangeError(`advparams.correctOnly: expected 0 or 1, got ${k.correctOnly}`);
  if (!(k.lossThreshold > 0)) throw new RangeError(`advparams.lossThreshold: expected a positive number, got ${k.lossThreshold}`);
  return k;
}

/** Weight initializers a node reads by input position; biases (Conv 2, Gemm 2) are left out. */
const WEIGHT_INPUTS: Readonly<Record<string, readonly number[]>> = { Conv: [1], Gemm: [0, 1], MatMul: [0, 1] };

/** Names of the float32 weight initializers of Conv/Gemm/MatMul nodes, in graph order. */
export function advparamsCandidates(model: OnnxModel): string[] {
  const g = model.graph;
  const f32 = new Set(g.initializer.filter((t) => t.data_type === 1 && t.name).map((t) => t.name!));
  const out: string[] = [];
  for (const n of g.node) {
    if (n.domain && n.domain !== 'ai.onnx') continue;
    for (const i of WEIGHT_INPUTS[n.op_type ?? ''] ?? []) {
      const name = n.input[i];
      if (name && f32.has(name) && !out.includes(name)) out.push(name);
    }
  }
  return out;
}

/** One perturbed parameter. */
export interface AdvparamsChange {
  tensor: string;
  element: number;
  original: number;
  /** The original element's exact little-endian bytes (what the key list carries). */
  originalBytes: Uint8Array;
  locked: number;
  /** How often it was stepped (<= maxPerParam). */
  steps: number;
}

/** What `perturbAdvparams` did. */
export interface AdvparamsOutcome {
  /** Layers chosen, in graph order. */
  layers: string[];
  candidates: number;
  seed: number;
  /** Sorted by tensor (in `layers` order), then element. */
  changes: AdvparamsChange[];
  iterations: number;
  before: { loss: number; accuracy: number };
  after: { loss: number; accuracy: number };
  /** True when the accuracy or loss target was met (false: stopped by maxParams or no movable parameter). */
  reached: boolean;
}

/** A batch of the encryption set as tensors. */
interface Chunk {
  feeds: TensorFeeds;
  labels: tf.Tensor1D;
  size: number;
}

/** The first `n` labelled samples as batches of `batch`, shaped as the model's inputs want. */
function encryptionSet(exec: OnnxTfModel, data: readonly Sample[], n: number, batch: number): Chunk[] {
  const picked = data.filter((s) => s.label !== undefined && s.inputs).slice(0, n);
  if (!picked.length) throw new InputMismatchError(`advparams: expected labelled input samples in the encryption set, got none of ${data.length}`);
  const names = Object.keys(picked[0].inputs!).sort();
  const want = [...exec.inputNames].sort();
  if (names.join('\u0000') !== want.join('\u0000')) {
    throw new InputMismatchError(`advparams: the encryption set feeds [${names.join(', ')}], the model takes [${want.join(', ')}]`
      + ' (key inputs of signflip in input mode cannot be fed: put advparams before signflip)');
  }
  const shapes = new Map<string, number[]>();
  for (const name of names) {
    const d = picked[0].inputs![name].dims;
    const declared = exec.inputDims(name);
    // A sample is one example: either with a batch axis of 1 or without one.
    const shape = declared && d.length === declared.length - 1 ? [...d] : d[0] === 1 ? d.slice(1) : undefined;
    if (!shape) throw new InputMismatchError(`advparams: input '${name}' of a sample has dims [${d.join(', ')}]; expected one example (batch axis 1 or none)`);
    shapes.set(name, shape);
  }
  const chunks: Chunk[] = [];
  for (let at = 0; at < picked.length; at += batch) {
    const part = picked.slice(at, at + batch);
    const feeds: TensorFeeds = {};
    for (const name of names) {
      const shape = shapes.get(name)!;
      const per = shape.reduce((a, b) => a * b, 1);
      const buf = new Float32Array(per * part.length);
      part.forEach((s, i) => {
        const t = s.inputs![name];
        if (!t) throw new InputMismatchError(`advparams: sample ${at + i} has no input '${name}'`);
        if (t.dtype !== 'float32') throw new InputMismatchError(`advparams: input '${name}' of sample ${at + i}: expected float32, got ${t.dtype}`);
        if (t.data.length !== per) throw new InputMismatchError(`advparams: input '${name}' of sample ${at + i}: expected ${per} values, got ${t.data.length}`);
        buf.set(t.data as Float32Array, i * per);
      });
      feeds[name] = tf.tensor(buf, [part.length, ...shape], 'float32');
    }
    chunks.push({ feeds, labels: tf.tensor1d(Int32Array.from(part, (s) => s.label!), 'int32'), size: part.length });
  }
  return chunks;
}

function disposeChunks(chunks: readonly Chunk[]): void {
  for (const c of chunks) {
    for (const t of Object.values(c.feeds)) t.dispose();
    c.labels.dispose();
  }
}

/**
 * Mean loss and accuracy over the encryption set, and the summed gradients of
 * `layers`: over every sample, or with `correctOnly` over the samples the model
 * still classifies correctly. (Softmax saturates: a confidently right sample
 * has a vanishing gradient, a wrong one a large one, so the whole-set gradient
 * keeps pushing samples that are already lost and accuracy stalls while the
 * loss soars.)
 */
function evaluate(exec: OnnxTfModel, chunks: readonly Chunk[], layers: readonly string[], correctOnly: boolean):
  { loss: number; accuracy: number; grads: Map<string, Float32Array> } {
  const total = chunks.reduce((a, c) => a + c.size, 0);
  const output = exec.outputNames[0];
  const grads = new Map<string, Float32Array>(layers.map((n) => [n, new Float32Array(exec.params.get(n)!.size)]));
  let loss = 0;
  let correct = 0;
  for (const c of chunks) {
    const [ce, right] = tf.tidy(() => {
      const logits = exec.predict(c.feeds, [output])[output];
      if (logits.rank !== 2) {
        throw new UnsupportedModelError(`advparams: output "${output}" has shape [${logits.shape}]; advparams perturbs a classifier and needs class scores [batch, classes] `
          + '(per-position scores, e.g. a sequence recogniser, are not supported: lock it with sealed or signflip)');
      }
      return [tf.mul(softmaxCrossEntropy(logits, c.labels), c.size), tf.equal(tf.argMax(logits, 1), c.labels)];
    });
    loss += ce.dataSync()[0] / total;
    const hits = right.dataSync();
    ce.dispose();
    right.dispose();
    const rows: number[] = [];
    for (let i = 0; i < hits.length; i++) if (hits[i]) rows.push(i);
    correct += rows.length;
    if (correctOnly && rows.length === 0) continue;
    const sub = correctOnly && rows.length < c.size;
    const idx = sub ? tf.tensor1d(rows, 'int32') : undefined;
    const feeds: TensorFeeds = idx ? Object.fromEntries(Object.entries(c.feeds).map(([k, t]) => [k, tf.gather(t, idx)])) : c.feeds;
    const labels = idx ? tf.gather(c.labels, idx) : c.labels;
    try {
      const r = exec.lossAndGrads(feeds, labels, { wrt: 'params', outputName: output, trainable: (n) => layers.includes(n) });
      const weight = idx ? rows.length : c.size;
      for (const name of layers) {
        const g = r.grads[name];
        if (!g) continue; // not on the output's path: its gradient is zero
        const data = g.dataSync();
        const acc = grads.get(name)!;
        for (let i = 0; i < data.length; i++) acc[i] += data[i] * weight;
      }
      for (const g of Object.values(r.grads)) g.dispose();
    } finally {
      if (idx) {
        idx.dispose();
        labels.dispose();
        for (const t of Object.values(feeds)) t.dispose();
      }
    }
  }
  return { loss, accuracy: correct / total, grads };
}

/** The next float32 after `x` in direction `dir` (+1 up, -1 down). */
function nextFloat32(x: number, dir: 1 | -1): number {
  if (x === 0) return dir * 1.401298464324817e-45; // the smallest subnormal
  const f = new Float32Array([x]);
  const bits = new Int32Array(f.buffer);
  // For a positive x a larger bit pattern is a larger value; for a negative x, a smaller one.
  bits[0] += (x > 0) === (dir > 0) ? 1 : -1;
  return f[0];
}

/**
 * `target` rounded to float32 but kept strictly between `from` (excluded
 * only when it cannot move) and `bound` (always excluded).
 */
function strictlyInside(target: number, from: number, bound: number): number {
  const dir = bound > from ? 1 : -1;
  let f = Math.fround(target);
  if (dir * (f - bound) >= 0) f = nextFloat32(bound, dir === 1 ? -1 : 1);
  return dir * (f - from) > 0 ? f : from;
}

/** Per-layer state of the search. */
interface Layer {
  name: string;
  values: Float32Array;
  lo: number;
  hi: number;
  count: Uint8Array;
  /** Element -> its original bytes. */
  originals: Map<number, Uint8Array>;
}

/** A step one layer offers in one iteration. */
interface Proposal {
  layer: Layer;
  element: number;
  next: number;
  /** First-order loss increase |g| · |next − w|. */
  gain: number;
}

/**
 * The layer's movable parameter with the largest |gradient| (fewer than
 * maxPerParam changes, not yet at the bound it would move towards) and where
 * a step takes it; undefined when none can move.
 */
function propose(l: Layer, g: Float32Array, knobs: AdvparamsKnobs, rand: () => number): Proposal | undefined {
  const step = knobs.theta * (l.hi - l.lo);
  for (;;) {
    let best = -1;
    let bestAbs = 0;
    for (let i = 0; i < g.length; i++) {
      const a = Math.abs(g[i]);
      if (a <= bestAbs || l.count[i] >= knobs.maxPerParam) continue;
      if (g[i] > 0 ? l.values[i] >= l.hi : l.values[i] <= l.lo) continue;
      best = i;
      bestAbs = a;
    }
    if (best < 0) return undefined;
    const w = l.values[best];
    const bound = g[best] > 0 ? l.hi : l.lo;
    let target = w + Math.sign(g[best]) * step;
    if (g[best] > 0 ? target >= l.hi : target <= l.lo) target = w + knobs.clip * (0.75 + 0.25 * rand()) * (bound - w);
    const next = strictlyInside(target, w, bound);
    if (next !== w) return { layer: l, element: best, next, gain: bestAbs * Math.abs(next - w) };
    l.count[best] = knobs.maxPerParam; // it cannot move: never offer it again
  }
}

/**
 * Runs the AdvParams search on `model` (changed in place: only the perturbed
 * tensors are rewritten) with `data` as the encryption set.
 */
export async function perturbAdvparams(model: OnnxModel, data: readonly Sample[], knobs: AdvparamsKnobs, seed: number): Promise<AdvparamsOutcome> {
  const candidates = advparamsCandidates(model);
  if (!candidates.length) throw new UnsupportedModelError('advparams: the model has no float32 Conv/Gemm/MatMul weight initializers to perturb');
  const count = knobs.layers ?? (candidates.length <= 4 ? candidates.length : Math.ceil(candidates.length / 2));
  if (count > candidates.length) throw new RangeError(`advparams.layers: expected at most ${candidates.length} (the candidate layers), got ${count}`);
  const rand = mulberry32(seed);
  const order = shuffleInPlace(Uint32Array.from(candidates, (_, i) => i), rand);
  const chosen = Array.from(order.subarray(0, count)).sort((a, b) => a - b).map((i) => candidates[i]);

  await initTfjsWasm();
  const exec = new OnnxTfModel(model);
  let chunks: Chunk[] = [];
  try {
    chunks = encryptionSet(exec, data, knobs.samples, knobs.batch);
    const layers: Layer[] = chosen.map((name) => {
      const values = new Float32Array(getInitializer(model, name).data as Float32Array);
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
      return { name, values, lo, hi, count: new Uint8Array(values.length), originals: new Map() };
    });
    let modified = 0;
    let iterations = 0;
    let state = evaluate(exec, chunks, chosen, knobs.correctOnly === 1);
    const before = { loss: state.loss, accuracy: state.accuracy };
    const met = (): boolean => state.accuracy <= knobs.targetAccuracy || state.loss >= knobs.lossThreshold;
    let stuck = false;
    while (!met() && modified < knobs.maxParams && !stuck) {
      // One proposal per chosen layer, then the worthwhile ones are applied, best first.
      const proposals: Proposal[] = [];
      for (const l of layers) {
        const p = propose(l, state.grads.get(l.name)!, knobs, rand);
        if (p) proposals.push(p);
      }
      stuck = proposals.length === 0;
      const top = Math.max(0, ...proposals.map((p) => p.gain));
      proposals.sort((a, b) => b.gain - a.gain);
      for (const p of proposals) {
        if (p.gain < knobs.minGain * top) break;
        const { layer: l, element, next } = p;
        if (!l.originals.has(element)) {
          if (modified >= knobs.maxParams) continue;
          l.originals.set(element, new Uint8Array(l.values.buffer, l.values.byteOffset + 4 * element, 4).slice());
          modified++;
        }
        l.values[element] = next;
        l.count[element]++;
        const v = exec.params.get(l.name)!;
        tf.tidy(() => v.assign(tf.tensor(l.values, v.shape, 'float32')));
      }
      iterations++;
      state = evaluate(exec, chunks, chosen, knobs.correctOnly === 1);
    }
    const reached = met();
    const changes: AdvparamsChange[] = [];
    for (const l of layers) {
      if (!l.originals.size) continue;
      setInitializer(model, l.name, l.values);
      for (const e of [...l.originals.keys()].sort((a, b) => a - b)) {
        const originalBytes = l.originals.get(e)!;
        const original = new DataView(originalBytes.buffer).getFloat32(0, true);
        changes.push({ tensor: l.name, element: e, original, originalBytes, locked: l.values[e], steps: l.count[e] });
      }
    }
    return {
      layers: chosen, candidates: candidates.length, seed, changes, iterations, before,
      after: { loss: state.loss, accuracy: state.accuracy }, reached,
    };
  } finally {
    disposeChunks(chunks);
    exec.dispose();
  }
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

/** The `advparams` locker for ONNX (graph stage). */
export const onnxAdvparams: OnnxLocker<'advparams'> = {
  scheme: 'advparams',
  // Before signflip (phase 1): the search measures the model's accuracy, so it must
  // see the weights before signflip negates them. Against shuffle, as asked (see
  // "Order with other graph-stage locks" above).
  phase: 0,
  async graph(model, ctx): Promise<FinishEntry> {
    const data = ctx.opts.data;
    if (!data?.length) throw new UnsupportedModelError('advparams needs an encryption set: --data REC.cbor (recorded inputs with labels)');
    const knobs = advparamsKnobs(ctx.opts.advparams);
    const seed = ctx.opts.seed ?? new DataView(randomBytes(4).buffer).getUint32(0);
    const out = await perturbAdvparams(model, data, knobs, seed);
    const n = Math.min(knobs.samples, data.filter((s) => s.label !== undefined).length);
    ctx.report(`advparams: perturbed layer(s) ${out.layers.join(', ')} (${out.layers.length} of ${out.candidates} candidates; seed ${seed})`);
    const perLayer = out.layers.map((l) => `${l}: ${out.changes.filter((c) => c.tensor === l).length}`).join(', ');
    ctx.report(`advparams: modified ${out.changes.length} parameter(s) in ${out.iterations} step(s) (${perLayer}); theta ${knobs.theta}, at most ${knobs.maxPerParam} change(s) each`);
    ctx.report(`advparams: encryption set (${n} samples): accuracy ${pct(out.before.accuracy)} -> ${pct(out.after.accuracy)}, loss ${out.before.loss.toFixed(3)} -> ${out.after.loss.toFixed(3)}`);
    if (!out.reached) {
      ctx.report(`advparams: WARNING: stopped before reaching accuracy <= ${pct(knobs.targetAccuracy)}`
        + `${Number.isFinite(knobs.lossThreshold) ? ` or loss >= ${knobs.lossThreshold}` : ''} (maxParams ${knobs.maxParams}); raise theta or maxParams`);
    }
    if (!out.changes.length) {
      throw new UnsupportedModelError(`advparams: no parameter was modified: the model scores ${pct(out.before.accuracy)} on the encryption set before any change`
        + ` (target ${pct(knobs.targetAccuracy)}). Wrong labels or inputs? After shuffle the model expects shuffled inputs, which the encryption set is not`);
    }

    const tensors = [...new Set(out.changes.map((c) => c.tensor))];
    return (ranges, bytes): AdvparamsLock => {
      const infos = tensors.map((name) => {
        const i = ranges.get(name);
        if (!i || !i.inRawData || i.dtype !== 'float32') throw new UnsupportedModelError(`advparams: tensor '${name}' has no float32 raw_data range in the encoded model`);
        return i;
      });
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const list = out.changes.map((c) => {
        const ti = tensors.indexOf(c.tensor);
        const info = infos[ti];
        if ((c.element + 1) * 4 > info.byteLength) throw new UnsupportedModelError(`advparams: tensor '${c.tensor}' shrank after perturbation (element ${c.element} of ${info.byteLength / 4})`);
        const now = view.getUint32(info.byteOffset + 4 * c.element, true);
        const bits = new DataView(new ArrayBuffer(4));
        bits.setFloat32(0, c.locked, true);
        const locked = bits.getUint32(0, true);
        if (now === locked) return [ti, c.element, c.originalBytes];
        // A later signflip negated the element's row. Fold mode negates it back at
        // load before we restore (locks are undone in reverse), so the original
        // stays; input mode keeps stored rows negated, so the original must be too.
        if (now === (locked ^ 0x80000000) >>> 0) {
          if ((ctx.opts.signflipMode ?? 'input') === 'fold') return [ti, c.element, c.originalBytes];
          const neg = c.originalBytes.slice();
          neg[3] ^= 0x80;
          return [ti, c.element, neg];
        }
        throw new UnsupportedModelError(`advparams: element ${c.element} of '${c.tensor}' is no longer the perturbed ${c.locked}: a lock listed after advparams moved weights (shuffle absorption permutes the first layer), so the key list's positions would be wrong`);
      });
      const key = advparamsSecretboxKey(ctx.modelKey);
      try {
        const plain = encodeCbor(list);
        const sealedKey = seal(plain, advparamsNonce(ctx.modelId), key);
        wipe(plain);
        return { scheme: 'advparams', tensors: infos.map(rangeOf), sealedKey };
      } finally {
        wipe(key);
      }
    };
  },
};
