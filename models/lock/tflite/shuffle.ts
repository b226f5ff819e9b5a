/**
 * `shuffle` for TFLite models, vendor side. TFLite images are NHWC, so the
 * manifest entry says `layout: "nhwc"` and the device shuffles NHWC
 * (runtime/keys/shuffle-nhwc.ts); the key and the shuffled image are the same
 * as for NCHW.
 *
 * Unless the model was trained with the key, the inverse shuffle is absorbed
 * in place into the first layer, when that layer sees the image through a
 * linear map over whole blocks:
 * - FULLY_CONNECTED reading the image (directly, or through one RESHAPE to
 *   [N, H·W·C]): TFLite flattens NHWC row-major, so the weights' input
 *   features are the NHWC pixel order and get permuted;
 * - CONV_2D whose kernel equals its stride and is a multiple of the block
 *   (patch embedding), no padding, dilation 1: each output position sees an
 *   aligned KH×KW×C patch, whose OHWI filter row is that patch in NHWC order.
 * With negative/positive, a flipped position's weight is negated and its sum
 * added to the bias, which must exist: in-place editing cannot add a bias
 * tensor. The weights must not be shared with another layer.
 */
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import { shuffleBlockKey, wipeShuffleKey, type ShuffleBlockKey } from '../../../runtime/keys/shuffle-key.ts';
import { nhwcPlan, wipeNhwcPlan } from '../../../runtime/keys/shuffle-nhwc.ts';
import type { ShuffleLock } from '../../../runtime/klm.ts';
import { BUILTIN } from '../../../runtime/tflite-schema.ts';
import type { TfliteOperator, TfliteSubgraph } from '../../tflite/codec.ts';
import { readFloat32, rewriteWeight, weightOf, type WeightInfo } from '../../tflite/weights.ts';
import { shuffleBlock, shuffleTrivial } from '../onnx/shuffle.ts';
import type { TfliteLockContext, TfliteLocker } from '../types.ts';

function refuse(found: string): never {
  throw new UnsupportedModelError(`shuffle cannot be absorbed into this TFLite model's first layer (${found}); train the model with the key (--trained-with-key) instead`);
}

function label(op: TfliteOperator): string {
  return `${op.op} #${op.index}`;
}

function readers(g: TfliteSubgraph, tensor: number): TfliteOperator[] {
  return g.operators.filter((o) => o.inputs.includes(tensor));
}

/** The image input: subgraph 0's single float32 NHWC input with known H, W, C divisible by the block. */
function imageInput(ctx: TfliteLockContext, block: number): { tensor: number; name: string; h: number; w: number; c: number } {
  const g = ctx.model.subgraphs[0];
  if (g.inputs.length !== 1) throw new UnsupportedModelError(`shuffle expects a TFLite model with a single image input, got ${g.inputs.length} input(s)`);
  const t = g.tensors[g.inputs[0]];
  const shape = `[${t.shape.join(',')}]`;
  if (t.dtype !== 'float32' || t.shape.length !== 4) throw new UnsupportedModelError(`shuffle expects TFLite input "${t.name}" to be a float32 NHWC image of rank 4, got ${t.dtype} ${shape}`);
  const [, h, w, c] = t.shape;
  if ((t.shapeSignature ?? []).slice(1).some((d) => d < 0) || h < 1 || w < 1 || c < 1) {
    throw new UnsupportedModelError(`shuffle expects TFLite input "${t.name}" to have fixed H, W and C (NHWC), got ${shape} (signature [${(t.shapeSignature ?? []).join(',')}])`);
  }
  if (h % block !== 0 || w % block !== 0) throw new UnsupportedModelError(`shuffle expects TFLite input "${t.name}" H and W divisible by block size ${block}, got ${shape} (NHWC: H=${h}, W=${w})`);
  return { tensor: g.inputs[0], name: t.name, h, w, c };
}

/** Gather table (and flips) of the shuffle over an H×W×C NHWC image. */
function shuffleMap(key: ShuffleBlockKey, h: number, w: number): { gather: Uint32Array; flip: Uint8Array | null } {
  const plan = nhwcPlan(key, h, w);
  const gather = plan.gather.slice();
  let flip: Uint8Array | null = null;
  if (key.flip !== null) {
    flip = new Uint8Array(gather.length);
    for (const o of plan.flipAt) flip[o] = 1;
  }
  wipeNhwcPlan(plan);
  return { gather, flip };
}

/**
 * Permutes a weight laid out [out, in] (FULLY_CONNECTED, and OHWI filters
 * flattened per output) so that locked input o reads plain input gather[o];
 * flipped inputs are negated and their original weights summed per output.
 */
function permute(w: Float32Array, outs: number, map: { gather: Uint32Array; flip: Uint8Array | null }): { weight: Float32Array; shift: Float64Array | null } {
  const ins = map.gather.length;
  const weight = new Float32Array(w.length);
  const shift = map.flip ? new Float64Array(outs) : null;
  for (let j = 0; j < outs; j++) {
    for (let o = 0; o < ins; o++) {
      const v = w[j * ins + map.gather[o]];
      if (map.flip && map.flip[o]) {
        weight[j * ins + o] = -v;
        shift![j] += v;
      } else {
        weight[j * ins + o] = v;
      }
    }
  }
  return { weight, shift };
}

/** The unshared float32 weight (slot 1) and bias (slot 2) of `op`, or a refusal. */
function layerWeights(ctx: TfliteLockContext, op: TfliteOperator, negpos: boolean): { weight: WeightInfo; bias?: WeightInfo } {
  const weight = weightOf(ctx.weights, 0, op.inputs[1] ?? -1);
  if (!weight || weight.dtype !== 'float32' || !weight.dense) refuse(`${label(op)} has weights that are not a dense float32 constant`);
  if (weight.uses.length !== 1 || weight.tensors.length !== 1) refuse(`${label(op)} shares its weights "${weight.name}" with another layer`);
  const bias = (op.inputs[2] ?? -1) >= 0 ? weightOf(ctx.weights, 0, op.inputs[2]) : undefined;
  if (negpos) {
    if (!bias) refuse(`${label(op)} has no constant bias, and negative/positive needs one to take the correction (in-place editing cannot add a tensor)`);
    if (bias.dtype !== 'float32' || bias.uses.length !== 1 || bias.tensors.length !== 1) refuse(`${label(op)} has a bias "${bias.name}" that is not an unshared float32 constant`);
  }
  return { weight, bias };
}

function absorb(bytes: Uint8Array, ctx: TfliteLockContext, op: TfliteOperator, map: { gather: Uint32Array; flip: Uint8Array | null }, outs: number): string {
  const { weight, bias } = layerWeights(ctx, op, map.flip !== null);
  const p = permute(readFloat32(bytes, weight), outs, map);
  rewriteWeight(bytes, weight, p.weight);
  let what = `${label(op)} weights "${weight.name}" permuted`;
  if (p.shift) {
    const b = readFloat32(bytes, bias!);
    for (let j = 0; j < outs; j++) b[j] = b[j] + p.shift[j];
    rewriteWeight(bytes, bias!, b);
    what += `, ${map.flip!.reduce((a, x) => a + x, 0)} input position(s) negated, bias "${bias!.name}" corrected`;
  }
  return what;
}

/** The `shuffle` locker for TFLite (NHWC). */
export const tfliteShuffle: TfliteLocker<'shuffle'> = {
  scheme: 'shuffle',
  // First: absorption permutes the first layer's weights, so a lock that records
  // weight positions (advparams) or values must come after it.
  phase: 0,
  trivial: shuffleTrivial,
  lock(bytes, ctx): ShuffleLock {
    const block = shuffleBlock(ctx.opts);
    const negpos = ctx.opts.negpos === true;
    const img = imageInput(ctx, block);
    const entry: ShuffleLock = { scheme: 'shuffle', input: img.name, block, channels: img.c, negpos, absorbed: ctx.opts.trainedWithKey !== true, layout: 'nhwc' };
    const what = `block ${block}, NHWC ${img.h}x${img.w}x${img.c}${negpos ? ', negative/positive' : ''}`;
    if (ctx.opts.trainedWithKey === true) {
      ctx.report(`shuffle: input "${img.name}" (${what}); model unchanged: the vendor asserts it was trained on inputs shuffled with this key`);
      return entry;
    }
    const g = ctx.model.subgraphs[0];
    if (g.outputs.includes(img.tensor)) refuse(`input "${img.name}" is also an output`);
    const first = readers(g, img.tensor);
    if (first.length !== 1) refuse(`input "${img.name}" feeds ${first.length} operators${first.length ? ` (${first.map(label).join(', ')})` : ''}, expected exactly one first layer`);
    let op = first[0];
    if (op.inputs[0] !== img.tensor || op.inputs.indexOf(img.tensor) !== op.inputs.lastIndexOf(img.tensor)) refuse(`input "${img.name}" is not the data input of ${label(op)}`);
    const hwc = img.h * img.w * img.c;
    const key = shuffleBlockKey(ctx.modelKey, block, img.c, negpos);
    try {
      let done: string;
      if (op.builtin === BUILTIN.CONV_2D) {
        const o = op.options;
        const ws = g.tensors[op.inputs[1] ?? -1]?.shape ?? [];
        const [outs, kh, kw, cin] = ws;
        const ok = o?.kind === 'conv' && ws.length === 4 && cin === img.c && o.strideH === kh && o.strideW === kw && kh % block === 0 && kw % block === 0
          && o.dilationH === 1 && o.dilationW === 1 && (o.padding === 'VALID' || (img.h % kh === 0 && img.w % kw === 0));
        if (!ok) {
          refuse(`input "${img.name}" feeds ${label(op)} with filter [${ws.join(',')}] (OHWI), stride ${o?.kind === 'conv' ? `${o.strideH}x${o.strideW}, padding ${o.padding}, dilation ${o.dilationH}x${o.dilationW}` : '?'};`
            + ` absorption needs kernel = stride = a multiple of block ${block} and no padding`);
        }
        done = absorb(bytes, ctx, op, shuffleMap(key, kh, kw), outs);
      } else {
        if (op.builtin === BUILTIN.RESHAPE) {
          const out = g.tensors[op.outputs[0]];
          const flat = out.shape.length === 2 && out.shape[1] === hwc;
          const next = readers(g, op.outputs[0]);
          if (!flat) refuse(`input "${img.name}" feeds ${label(op)}, which does not flatten it to [N, ${hwc}] (got [${out.shape.join(',')}])`);
          if (g.outputs.includes(op.outputs[0]) || next.length !== 1) refuse(`the flattened input feeds ${next.length} operator(s), expected exactly one FULLY_CONNECTED`);
          op = next[0];
          if (op.inputs[0] !== first[0].outputs[0]) refuse(`the flattened input is not the data input of ${label(op)}`);
        }
        if (op.builtin !== BUILTIN.FULLY_CONNECTED) {
          refuse(`the image reaches ${label(op)}; absorption needs FULLY_CONNECTED (directly or after RESHAPE) or a patch-embedding CONV_2D`);
        }
        const ws = g.tensors[op.inputs[1] ?? -1]?.shape ?? [];
        if (op.options?.kind === 'fully-connected' && (op.options.keepNumDims || op.options.weightsFormat !== 0)) refuse(`${label(op)} keeps its input dims or uses packed weights`);
        if (ws.length !== 2 || ws[1] !== hwc) refuse(`${label(op)} has weights [${ws.join(',')}], expected [out, ${hwc}] (H·W·C)`);
        done = absorb(bytes, ctx, op, shuffleMap(key, img.h, img.w), ws[0]);
      }
      ctx.report(`shuffle: input "${img.name}" (${what}); inverse absorbed in place: ${done}; outputs match the plain model up to float32 rounding (summation order changes)`);
    } finally {
      wipeShuffleKey(key);
    }
    return entry;
  },
};
