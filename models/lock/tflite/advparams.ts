/**
 * `advparams` for TFLite models, vendor side: a gradient-free variant of the
 * search in models/lock/onnx/advparams.ts. keylock has no TFLite executor that
 * computes gradients, so the loss is measured by running the model itself
 * through the tflite backend (tfjs-tflite) on the encryption set, and
 * perturbations are kept only when they raise it.
 *
 * Algorithm (knobs as in models/lock/onnx/advparams.ts, in brackets):
 * 1. Candidate layers: the unshared float32 weights (input 1) of CONV_2D,
 *    DEPTHWISE_CONV_2D and FULLY_CONNECTED; biases never. Choose [layers] of
 *    them with mulberry32(seed): all when there are at most four, else half.
 *    Each layer's range [lo, hi] is taken once from the original weights.
 * 2. Encryption set: the first [samples] labelled samples of `--data`; the
 *    model's first output must be a classifier's logits [1, K].
 * 3. Each round proposes, in every chosen layer, its largest-|w| parameter not
 *    yet tried, moved against its sign: w <- w − sign(w) · theta · (hi − lo),
 *    with theta = [theta] when given and 1 otherwise, kept strictly inside
 *    [lo, hi] (a step past a bound lands at a seeded fraction in
 *    [0.75·clip, clip] of the way to it). Each proposal is measured alone (the
 *    cross-entropy on the encryption set); the best one is kept if it raises
 *    the loss, together with those whose gain is at least [minGain] of the
 *    best's (all of them re-measured together; if they do worse together, only
 *    the best stays). Stop when accuracy <= [targetAccuracy], [maxParams]
 *    parameters were changed, no layer has a parameter left to try, or after
 *    8 × [maxParams] rounds.
 * A measurement loads the model and runs the whole set, so a round costs
 * (layers + 1) sessions and as many passes over [samples] inputs: use a small
 * set for large models. [maxPerParam], [batch] and [correctOnly] do not apply.
 */
import { encodeCbor } from '../../../keystore/cbor.ts';
import { randomBytes, seal, wipe } from '../../../keystore/nacl.ts';
import { InputMismatchError, UnsupportedModelError } from '../../../keystore/errors.ts';
import { advparamsNonce, advparamsSecretboxKey } from '../../../runtime/keys/derive.ts';
import type { AdvparamsLock, ShuffleLock } from '../../../runtime/klm.ts';
import { shuffleBlockKey, wipeShuffleKey } from '../../../runtime/keys/shuffle-key.ts';
import { nhwcPlan, shuffleNHWC, wipeNhwcPlan } from '../../../runtime/keys/shuffle-nhwc.ts';
import type { TensorData } from '../../../runtime/tensor.ts';
import { createTfliteSession } from '../../../runtime/tflite.ts';
import { BUILTIN } from '../../../runtime/tflite-schema.ts';
import { mulberry32, shuffleInPlace } from '../../prng.ts';
import { weightOf, type WeightInfo } from '../../tflite/weights.ts';
import { advparamsKnobs } from '../onnx/advparams.ts';
import { tfliteRange, type TfliteLockContext, type TfliteLocker } from '../types.ts';

/** Rounds allowed per parameter of the budget. */
const ROUNDS_PER_PARAM = 8;

const LAYER_OPS = new Set<number>([BUILTIN.CONV_2D, BUILTIN.DEPTHWISE_CONV_2D, BUILTIN.FULLY_CONNECTED]);

/** The float32 weights advparams may perturb, in graph order. */
function tfliteAdvparamsCandidates(ctx: TfliteLockContext): WeightInfo[] {
  const out: WeightInfo[] = [];
  ctx.model.subgraphs.forEach((g, sg) => {
    for (const op of g.operators) {
      if (!LAYER_OPS.has(op.builtin)) continue;
      const w = weightOf(ctx.weights, sg, op.inputs[1] ?? -1);
      if (w && w.dtype === 'float32' && w.dense && w.uses.length === 1 && !out.includes(w)) out.push(w);
    }
  });
  return out;
}

interface Sample { feeds: Record<string, TensorData>; label: number }

/**
 * The labelled samples as feeds of the model's input (NCHW samples with one
 * channel are the same bytes as NHWC). When shuffle was absorbed first, the
 * model expects shuffled images, so the samples are shuffled with the key, as
 * the device will.
 */
function encryptionSet(ctx: TfliteLockContext, n: number): Sample[] {
  const shuffle = ctx.applied.find((l): l is ShuffleLock => l.scheme === 'shuffle');
  const g = ctx.model.subgraphs[0];
  if (g.inputs.length !== 1) throw new UnsupportedModelError(`advparams on TFLite needs a model with one input, got ${g.inputs.length}`);
  const inp = g.tensors[g.inputs[0]];
  const size = inp.shape.reduce((a, b) => a * b, 1);
  const data = (ctx.opts.data ?? []).filter((s) => s.label !== undefined && s.inputs).slice(0, n);
  if (!data.length) throw new UnsupportedModelError('advparams needs an encryption set: --data REC.cbor (recorded inputs with labels)');
  const key = shuffle && shuffleBlockKey(ctx.modelKey, shuffle.block, shuffle.channels, shuffle.negpos);
  const plan = key && nhwcPlan(key, inp.shape[1], inp.shape[2]);
  const set = data.map((s, i): Sample => {
    const ts = Object.values(s.inputs!);
    const t = ts[0];
    if (ts.length !== 1 || t.dtype !== inp.dtype) throw new InputMismatchError(`advparams: sample ${i} must hold one ${inp.dtype} input for "${inp.name}", got ${ts.map((x) => x.dtype).join(', ')}`);
    const sameDims = t.dims.length === inp.shape.length && t.dims.every((d, k) => d === inp.shape[k]);
    const [, c, h, w] = t.dims;
    const nchw1 = t.dims.length === 4 && c === 1 && inp.shape.length === 4 && inp.shape[1] === h && inp.shape[2] === w && inp.shape[3] === 1;
    if (t.data.length !== size || !(sameDims || nchw1)) {
      throw new InputMismatchError(`advparams: sample ${i} has dims [${t.dims.join(',')}]; the TFLite model takes "${inp.name}" [${inp.shape.join(',')}] (NHWC; NCHW samples are accepted with one channel only)`);
    }
    let x = t.data as Float32Array;
    if (plan) {
      const y = new Float32Array(x.length);
      shuffleNHWC(x, y, inp.shape[0], plan);
      x = y;
    }
    return { feeds: { [inp.name]: { dtype: t.dtype, dims: [...inp.shape], data: x } }, label: s.label! };
  });
  if (plan) wipeNhwcPlan(plan);
  if (key) wipeShuffleKey(key);
  return set;
}

/** Mean softmax cross-entropy and accuracy of the model bytes on the set. */
async function evaluate(bytes: Uint8Array, set: readonly Sample[], output: string): Promise<{ loss: number; accuracy: number }> {
  const s = await createTfliteSession(bytes);
  try {
    let loss = 0;
    let right = 0;
    for (const x of set) {
      const out = (await s.run(x.feeds))[output];
      const z = out?.data as Float32Array | undefined;
      if (!z || out.dtype !== 'float32' || z.length < 2) throw new UnsupportedModelError(`advparams on TFLite needs float32 logits [1, K] as the first output, got ${out?.dtype} [${out?.dims.join(',')}]`);
      if (x.label >= z.length) throw new InputMismatchError(`advparams: label ${x.label} is out of range for ${z.length} classes`);
      let max = -Infinity;
      let arg = 0;
      for (let k = 0; k < z.length; k++) if (z[k] > max) { max = z[k]; arg = k; }
      let sum = 0;
      for (let k = 0; k < z.length; k++) sum += Math.exp(z[k] - max);
      // A NaN loss (weights far off) counts as the worst possible.
      const ce = Math.log(sum) + max - z[x.label];
      loss += Number.isFinite(ce) ? ce : 1e30;
      if (arg === x.label) right++;
    }
    return { loss: loss / set.length, accuracy: right / set.length };
  } finally {
    await s.release();
  }
}

/** The next float32 strictly between `from` and `bound`, nearest to `target`. */
function inside(target: number, from: number, bound: number): number {
  const dir = bound > from ? 1 : -1;
  let f = Math.fround(target);
  if (dir * (f - bound) >= 0) {
    const a = new Float32Array([bound]);
    const i = new Int32Array(a.buffer);
    i[0] += (bound > 0) === (dir > 0) ? -1 : 1;
    f = bound === 0 ? -dir * 1.401298464324817e-45 : a[0];
  }
  return dir * (f - from) > 0 ? f : from;
}

interface Layer {
  w: WeightInfo;
  values: Float32Array;
  lo: number;
  hi: number;
  /** Elements by decreasing |w|; `next` is the first not yet tried. */
  order: Uint32Array;
  next: number;
  originals: Map<number, Uint8Array>;
}

/** The `advparams` locker for TFLite. */
export const tfliteAdvparams: TfliteLocker<'advparams'> = {
  scheme: 'advparams',
  // After shuffle (a permutation after us would move the perturbed elements away
  // from the positions the key list records; the encryption set is shuffled with
  // the key instead), before the byte locks: the search runs the plain weights.
  phase: 1,
  async lock(bytes, ctx): Promise<AdvparamsLock> {
    const knobs = advparamsKnobs(ctx.opts.advparams);
    const set = encryptionSet(ctx, knobs.samples);
    const candidates = tfliteAdvparamsCandidates(ctx);
    if (!candidates.length) throw new UnsupportedModelError('advparams: the TFLite model has no unshared float32 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weights to perturb');
    const g = ctx.model.subgraphs[0];
    const output = g.tensors[g.outputs[0]].name;
    const count = knobs.layers ?? (candidates.length <= 4 ? candidates.length : Math.ceil(candidates.length / 2));
    if (count > candidates.length) throw new RangeError(`advparams.layers: expected at most ${candidates.length} (the candidate layers), got ${count}`);
    const seed = ctx.opts.seed ?? new DataView(randomBytes(4).buffer).getUint32(0);
    const rand = mulberry32(seed);
    const picked = Array.from(shuffleInPlace(Uint32Array.from(candidates, (_, i) => i), rand).subarray(0, count)).sort((a, b) => a - b);
    const layers: Layer[] = picked.map((i) => {
      const w = candidates[i];
      const values = new Float32Array(bytes.slice(w.offset, w.offset + w.length).buffer);
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
      const order = Uint32Array.from(values.keys()).sort((a, b) => Math.abs(values[b]) - Math.abs(values[a]) || a - b);
      return { w, values, lo, hi, order, next: 0, originals: new Map() };
    });
    const write = (l: Layer, e: number, v: number): void => {
      new DataView(bytes.buffer, bytes.byteOffset + l.w.offset).setFloat32(4 * e, v, true);
    };
    // Without a gradient the direction is a guess: against the weight's sign, by
    // the whole range unless theta was given (a half-range step from a large
    // weight mostly lands near zero, which changes little).
    const theta = ctx.opts.advparams?.theta ?? 1;
    const propose = (l: Layer): { e: number; old: number; now: number } | undefined => {
      while (l.next < l.order.length) {
        const e = l.order[l.next++];
        const w = l.values[e];
        const dir = w > 0 ? -1 : w < 0 ? 1 : rand() < 0.5 ? -1 : 1;
        const bound = dir > 0 ? l.hi : l.lo;
        let target = w + dir * theta * (l.hi - l.lo);
        if (dir * (target - bound) >= 0) target = w + knobs.clip * (0.75 + 0.25 * rand()) * (bound - w);
        const now = inside(target, w, bound);
        if (now !== w) return { e, old: w, now };
      }
      return undefined;
    };

    let state = await evaluate(bytes, set, output);
    const before = state;
    let modified = 0;
    let rounds = 0;
    let evals = 1;
    const budget = ROUNDS_PER_PARAM * knobs.maxParams;
    while (state.accuracy > knobs.targetAccuracy && modified < knobs.maxParams && rounds < budget) {
      // One proposal per layer, each measured on its own; the best is kept, with
      // those within minGain of it, if the loss rises.
      const tried: { l: Layer; e: number; old: number; now: number; loss: number }[] = [];
      for (const l of layers) {
        const p = propose(l);
        if (!p) continue;
        write(l, p.e, p.now);
        const r = await evaluate(bytes, set, output);
        evals++;
        write(l, p.e, p.old);
        tried.push({ l, ...p, loss: r.loss });
      }
      if (!tried.length) break;
      rounds++;
      const best = Math.max(...tried.map((t) => t.loss));
      if (!(best > state.loss)) continue;
      const gain = best - state.loss;
      const keep = tried.filter((t) => t.loss - state.loss >= knobs.minGain * gain).sort((a, b) => b.loss - a.loss).slice(0, knobs.maxParams - modified);
      for (const t of keep) write(t.l, t.e, t.now);
      let next = await evaluate(bytes, set, output);
      evals++;
      if (keep.length > 1 && !(next.loss > state.loss)) {
        // Together they did worse than alone: keep only the best one.
        for (const t of keep.slice(1)) write(t.l, t.e, t.old);
        keep.length = 1;
        next = await evaluate(bytes, set, output);
        evals++;
      }
      for (const t of keep) {
        const orig = new Uint8Array(4);
        new DataView(orig.buffer).setFloat32(0, t.old, true);
        t.l.originals.set(t.e, orig);
        t.l.values[t.e] = t.now;
      }
      modified += keep.length;
      state = next;
    }
    const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
    ctx.report(`advparams: gradient-free search through the tflite backend on ${layers.length} of ${candidates.length} candidate layer(s) (${layers.map((l) => l.w.name).join(', ')}; seed ${seed})`);
    ctx.report(`advparams: modified ${modified} parameter(s) in ${rounds} round(s), ${evals} model evaluations (theta ${theta}); encryption set (${set.length} samples): accuracy ${pct(before.accuracy)} -> ${pct(state.accuracy)}, loss ${before.loss.toFixed(3)} -> ${state.loss.toFixed(3)}`);
    if (state.accuracy > knobs.targetAccuracy) ctx.report(`advparams: WARNING: stopped before reaching accuracy <= ${pct(knobs.targetAccuracy)} (maxParams ${knobs.maxParams}); raise theta or maxParams`);
    if (!modified) throw new UnsupportedModelError(`advparams: no perturbation raised the loss (accuracy ${pct(before.accuracy)} on the encryption set before any change). Wrong labels or inputs?`);

    const used = layers.filter((l) => l.originals.size);
    const list = used.flatMap((l, ti) => [...l.originals.keys()].sort((a, b) => a - b).map((e) => [ti, e, l.originals.get(e)!]));
    const key = advparamsSecretboxKey(ctx.modelKey);
    try {
      const plain = encodeCbor(list);
      const sealedKey = seal(plain, advparamsNonce(ctx.modelId), key);
      wipe(plain);
      return { scheme: 'advparams', tensors: used.map((l) => tfliteRange(l.w)), sealedKey };
    } finally {
      wipe(key);
    }
  },
};
