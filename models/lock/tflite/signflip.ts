/**
 * `signflip` for TFLite models, vendor side, fold mode: the keyed output
 * channels of every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED are negated
 * in place (weights and bias); the runtime negates them back at load. float32
 * by sign bit; int8 weights (zero point 0) and int32 biases by two's complement
 * (runtime/keys/signflip.ts explains the -128 edge case). Weights (and biases)
 * computed by a DEQUANTIZE of a constant, as float16 exports and int8
 * weight-only quantization write them, are negated in that constant: float16
 * by sign bit, int8 (zero point 0) by two's complement. Input mode would need
 * a key input and a MUL in the graph, which in-place editing cannot add: refused.
 */
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import { signflipUnitBits } from '../../../runtime/keys/derive.ts';
import { layerBits, negateChannels } from '../../../runtime/keys/signflip.ts';
import type { ChannelRange, SignflipLayer, SignflipLock } from '../../../runtime/klm.ts';
import { BUILTIN } from '../../../runtime/tflite-schema.ts';
import type { TfliteModel, TfliteOperator } from '../../tflite/codec.ts';
import type { WeightInfo } from '../../tflite/weights.ts';
import { signflipTrivial } from '../onnx/signflip.ts';
import { LockOptionError, tfliteRange, type TfliteLocker } from '../types.ts';

/** Ops whose input 2 is a per-output-channel bias. */
const BIASED = new Set<number>([BUILTIN.CONV_2D, BUILTIN.DEPTHWISE_CONV_2D, BUILTIN.FULLY_CONNECTED]);
/** A layer signflip can lock, or why not. */
interface SignflipCandidate {
  op: TfliteOperator;
  subgraph: number;
  weight: WeightInfo;
  bias?: WeightInfo;
  channels: number;
  layout: ChannelRange['layout'];
  /** The DEQUANTIZE the weights pass through, when they do. */
  via?: string;
}

function opLabel(op: TfliteOperator, sg: number): string {
  return `${op.op} #${op.index}${sg ? ` (subgraph ${sg})` : ''}`;
}

/**
 * The constant buffer behind input `ti` of `op`: the tensor's own buffer, or,
 * when the tensor is computed by a DEQUANTIZE of a constant (float16 weights
 * exported the mobile way, int8 weight-only quantization), that constant's
 * buffer. DEQUANTIZE is linear with zero point 0 (float16 always; int8 when
 * its zero points are 0), so negating rows of its input negates the same rows
 * of its output. Undefined with the reason when neither applies or either
 * tensor has another reader.
 */
function constantBehind(model: TfliteModel, weights: readonly WeightInfo[], sg: number, op: TfliteOperator, ti: number): { w: WeightInfo; via?: string } | { why: string } {
  const own = weights.find((x) => x.tensors.some((t) => t.subgraph === sg && t.tensor === ti));
  if (own) return { w: own };
  const g = model.subgraphs[sg];
  const producer = g.operators.find((o) => o.outputs.includes(ti));
  if (!producer) return { why: `tensor "${g.tensors[ti]?.name}" is neither a constant nor computed` };
  if (producer.op !== 'DEQUANTIZE') return { why: `it is computed at run time by ${opLabel(producer, sg)}, not read from a constant (only a DEQUANTIZE of a constant is followed)` };
  const readers = g.operators.reduce((n, o) => n + o.inputs.filter((x) => x === ti).length, 0) + (g.outputs.includes(ti) ? 1 : 0);
  if (readers !== 1) return { why: `the output of ${opLabel(producer, sg)} has ${readers} readers; shared weights stay plain` };
  const src = weights.find((x) => x.tensors.some((t) => t.subgraph === sg && t.tensor === producer.inputs[0]));
  if (!src) return { why: `the input of ${opLabel(producer, sg)} is not a constant buffer` };
  return { w: src, via: opLabel(producer, sg) };
}

function signflipCandidate(model: TfliteModel, weights: readonly WeightInfo[], sg: number, op: TfliteOperator): SignflipCandidate | { skip: string } | undefined {
  if (!BIASED.has(op.builtin)) return undefined;
  const g = model.subgraphs[sg];
  const wi = op.inputs[1] ?? -1;
  const found = wi >= 0 ? constantBehind(model, weights, sg, op, wi) : { why: 'it has no weights input' };
  if ('why' in found) return { skip: `its weights: ${found.why}` };
  const w = found.w;
  const dequantized = found.via !== undefined;
  if (w.uses.length !== 1 || w.tensors.length !== 1) return { skip: `its weight buffer "${w.name}" is shared (${w.uses.length} reader(s)); shared weights stay plain` };
  if (!w.dense) return { skip: `its weights "${w.name}" are sparse` };
  const shape = g.tensors[wi].shape;
  let channels: number;
  let layout: ChannelRange['layout'];
  if (op.builtin === BUILTIN.CONV_2D) {
    if (shape.length !== 4) return { skip: `its filter has rank ${shape.length}, expected 4 (OHWI)` };
    channels = shape[0]; layout = 'outer';
  } else if (op.builtin === BUILTIN.DEPTHWISE_CONV_2D) {
    if (shape.length !== 4) return { skip: `its filter has rank ${shape.length}, expected 4 ([1,H,W,C])` };
    channels = shape[3]; layout = 'inner';
  } else {
    if (shape.length !== 2) return { skip: `its weights have rank ${shape.length}, expected 2 ([out,in])` };
    if (op.options?.kind === 'fully-connected' && op.options.weightsFormat !== 0) return { skip: 'its weights use a packed (shuffled) int8 format' };
    channels = shape[0]; layout = 'outer';
  }
  if (w.dtype === 'int8') {
    const zp = w.quantization?.zeroPoint ?? [];
    if (zp.some((z) => z !== 0)) return { skip: `its int8 weights have a non-zero zero point (${zp.find((z) => z !== 0)}); -q would not be the negated value` };
  } else if (w.dtype !== 'float32' && !(dequantized && (w.dtype === 'float16' || w.dtype === 'bfloat16'))) {
    return { skip: `its weights are ${w.dtype}; signflip negates float32, int8 (zero point 0) and, behind a DEQUANTIZE, float16 weights` };
  }
  const bi = op.inputs[2] ?? -1;
  let bias: WeightInfo | undefined;
  if (bi >= 0) {
    const b = constantBehind(model, weights, sg, op, bi);
    if ('why' in b) return { skip: `its bias: ${b.why}` };
    bias = b.w;
    if (bias.uses.length !== 1 || bias.tensors.length !== 1) return { skip: `its bias buffer "${bias.name}" is shared` };
    // The layer's arithmetic decides the bias type: float when the weights are float or dequantized, int32 with int8 kernels.
    const want = w.dtype === 'int8' && !dequantized ? ['int32'] : b.via ? ['float16', 'bfloat16', 'int8'] : ['float32'];
    if (!want.includes(bias.dtype)) return { skip: `its bias is ${bias.dtype}${b.via ? ` behind ${b.via}` : ''}; expected ${want.join(' or ')} with ${w.dtype} weights${dequantized ? ` behind ${found.via}` : ''}` };
    if (bias.dtype === 'int8' && (bias.quantization?.zeroPoint ?? []).some((z) => z !== 0)) return { skip: 'its dequantized int8 bias has a non-zero zero point' };
    if (bias.elementCount !== channels) return { skip: `its bias has ${bias.elementCount} values, expected ${channels}` };
  }
  if (channels < 1 || w.elementCount % channels !== 0) return { skip: `its weights (${w.elementCount} values) do not split into ${channels} channels` };
  return { op, subgraph: sg, weight: w, bias, channels, layout, via: found.via };
}

/** int8 elements equal to -128 in keyed channels: they map to themselves under two's complement negation. */
function countMinInt8(bytes: Uint8Array, r: ChannelRange, channels: number, bits: Uint8Array): number {
  const per = r.length / channels;
  let n = 0;
  for (let i = 0; i < r.length; i++) {
    const c = r.layout === 'outer' ? Math.floor(i / per) : i % channels;
    if (bits[c] && bytes[r.offset + i] === 0x80) n++;
  }
  return n;
}

/** The `signflip` locker for TFLite (fold mode only). */
export const tfliteSignflip: TfliteLocker<'signflip'> = {
  scheme: 'signflip',
  // With the byte locks, after advparams, whose search must see the plain weights
  // (a model the flips already wreck leaves it nothing to do).
  phase: 2,
  trivial: signflipTrivial,
  lock(bytes, ctx): SignflipLock {
    const mode = ctx.opts.signflipMode ?? 'fold';
    if (mode !== 'fold') {
      throw new UnsupportedModelError('signflip input mode on TFLite needs a key input and a MUL op added to the graph, which keylock\'s in-place TFLite editing cannot do; use fold mode (--mode fold)');
    }
    const units = ctx.opts.units ?? 0;
    if (!Number.isSafeInteger(units) || units < 0) throw new LockOptionError('units', '--units', 'a non-negative integer', String(units), `signflip units must be a non-negative integer (0: one bit per channel), got ${units}`);
    const found: SignflipCandidate[] = [];
    const skipped: string[] = [];
    ctx.model.subgraphs.forEach((g, sg) => {
      for (const op of g.operators) {
        const c = signflipCandidate(ctx.model, ctx.weights, sg, op);
        if (!c) continue;
        if ('skip' in c) skipped.push(`${opLabel(op, sg)}: ${c.skip}`);
        else found.push(c);
      }
    });
    if (!found.length) {
      throw new UnsupportedModelError(`signflip: the TFLite model has no CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED with unshared float32, int8 or (behind a DEQUANTIZE) float16 weights to lock`
        + (skipped.length ? `; skipped ${skipped.slice(0, 3).join('; ')}${skipped.length > 3 ? `; and ${skipped.length - 3} more` : ''}` : ''));
    }
    for (const s of skipped) ctx.report(`signflip: skipped ${s}`);
    const stub: SignflipLock = { scheme: 'signflip', mode: 'fold', units, layers: [] };
    const unitBits = units ? signflipUnitBits(ctx.modelKey, units) : undefined;
    const layers: SignflipLayer[] = [];
    let stuck = 0;
    try {
      for (const c of found) {
        const layer: SignflipLayer = { weight: c.weight.name, channels: c.channels, ranges: [{ ...tfliteRange(c.weight), layout: c.layout }] };
        if (c.bias) layer.ranges.push({ ...tfliteRange(c.bias), layout: 'outer' });
        const bits = layerBits(stub, layer, ctx.modelKey, unitBits);
        const keyed = bits.reduce((a, b) => a + b, 0);
        const min = c.weight.dtype === 'int8' ? countMinInt8(bytes, layer.ranges[0], c.channels, bits) : 0;
        stuck += min;
        for (const r of layer.ranges) negateChannels(bytes, r, c.channels, bits);
        bits.fill(0);
        ctx.report(`signflip: ${opLabel(c.op, c.subgraph)} weights "${c.weight.name}" (${c.weight.dtype}${c.via ? ` behind ${c.via}` : ''}${c.bias ? `, bias ${c.bias.dtype}` : ', no bias'}): ${c.channels} channels, ${keyed} keyed`
          + (min ? `; ${min} weight(s) of -128 in keyed channels stay -128 (128 does not fit int8): while locked, such a channel differs from the exact negation by 256·scale·x per such weight (x its input); unlocking is exact` : ''));
        layers.push(layer);
      }
    } finally {
      unitBits?.fill(0);
    }
    ctx.report(`signflip: fold mode, ${layers.length} layer(s); the runtime negates the keyed channels back at load${stuck ? ` (${stuck} int8 -128 weight(s) stayed as they were)` : ''}`);
    return { scheme: 'signflip', mode: 'fold', units, layers };
  },
};
