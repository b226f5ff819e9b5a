/**
 * `shuffle` (block-wise input shuffling, Pyone, Maung & Kiya 2020), vendor side.
 *
 * The device shuffles every input image block by block with the key
 * (runtime/keys/shuffle.ts). Either the vendor trained the model on shuffled
 * images (`trainedWithKey`: the graph stays as it is), or the inverse shuffle is
 * absorbed post hoc into a first layer that sees the image through a linear map
 * over whole blocks, so that f_locked(shuffle(x)) = f(x):
 *
 * - Flatten (or Reshape to [N, C·H·W]) then Gemm / MatMul with a weight
 *   initializer: the weight's input features are permuted;
 * - a Conv whose kernel equals its stride and is a multiple of the block
 *   (patch embedding): the kernel's (c, kh, kw) positions are permuted.
 *
 * Locked pixel o takes plain pixel gather[o], so a weight w[i] on plain pixel i
 * moves to locked position o with gather[o] = i. With negative/positive, locked
 * pixel o is 1 − x[gather[o]]: w·x = −w·y + w, so its weight is negated and w is
 * added to the bias. The index maps come from the device's own shuffle
 * (shuffleImageNCHW) run on index images, so both sides agree by construction.
 */
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import type { ShuffleLock } from '../../../runtime/klm.ts';
import { shuffleBlockKey, shuffleImageNCHW, wipeShuffleKey, type ShuffleBlockKey } from '../../../runtime/keys/shuffle-key.ts';
import { getAttribute, intAttribute, intsAttribute, setAttribute } from '../../onnx/attributes.ts';
import { makeNode, makeTensor } from '../../onnx/builder.ts';
import { DataType } from '../../onnx/dtypes.ts';
import { consumersOf, describeValue, isGraphOutput, runtimeInputs, uniqueName } from '../../onnx/graph.ts';
import { addInitializer, findInitializer, getInitializer, setInitializer } from '../../onnx/initializers.ts';
import type { NodeProto, OnnxModel } from '../../onnx/types.ts';
import { LockOptionError, type EntryOf, type LockContext, type LockOptions, type OnnxLocker } from '../types.ts';

/** The image input the lock applies to. */
interface ShuffleImage {
  name: string;
  /** Batch dimension as declared (number, symbol or null). */
  batch: number | string | null;
  channels: number;
  height: number;
  width: number;
}

/** Where the shuffle sends every pixel of a C×H×W image. */
export interface ShuffleMap {
  /** Locked pixel o holds plain pixel gather[o] (NCHW order within one image). */
  gather: Uint32Array;
  /** 1 where locked pixel o is 1 − value; null without negative/positive. */
  flip: Uint8Array | null;
}

/** What post-hoc absorption changed. */
interface Absorption {
  /** The first-layer node that now undoes the shuffle. */
  node: string;
  op: string;
  weight: string;
  /** Bias that took the negative/positive correction (null without negpos). */
  bias: string | null;
  /** Weight input positions negated (0 without negpos). */
  negated: number;
}

function refuseAbsorb(found: string): never {
  throw new UnsupportedModelError(
    `shuffle cannot be absorbed into this model's first layer (${found}); train the model with the key (--trained-with-key) instead`);
}

function nodeLabel(n: NodeProto): string {
  return `${n.op_type ?? '?'} '${n.name || n.output[0] || ''}'`;
}

/** Block size from the lock options. LockOptionError (a RangeError) unless a positive integer. */
export function shuffleBlock(opts: LockOptions): number {
  const m = opts.block;
  if (m === undefined) throw new LockOptionError('block', '--block', 'a positive integer', undefined, 'shuffle needs a block size (--block m)');
  if (!Number.isSafeInteger(m) || m < 1) throw new LockOptionError('block', '--block', 'a positive integer', String(m), `shuffle: block size must be a positive integer, got ${m}`);
  return m;
}

/**
 * The model's single float32 NCHW image input, with C, H, W known and H, W
 * divisible by `block`. UnsupportedModelError otherwise, saying what was found.
 */
function shuffleImageInput(model: OnnxModel, block: number): ShuffleImage {
  const inputs = runtimeInputs(model);
  if (inputs.length !== 1) {
    throw new UnsupportedModelError(`shuffle expects a model with a single image input, got ${inputs.length} input(s)${inputs.length ? ` (${inputs.map((i) => `'${i.name}'`).join(', ')})` : ''}`);
  }
  const v = inputs[0];
  const name = v.name ?? '';
  const d = describeValue(v);
  const shape = d?.dims ? `[${d.dims.map((x) => x ?? '?').join(',')}]` : 'of unknown shape';
  if (!d || d.dataType !== DataType.FLOAT || !d.dims || d.dims.length !== 4) {
    throw new UnsupportedModelError(`shuffle expects input '${name}' to be a float32 NCHW image of rank 4, got ${d?.dtype ?? 'a non-tensor'} ${shape}`);
  }
  const [batch, c, h, w] = d.dims;
  if (typeof c !== 'number' || typeof h !== 'number' || typeof w !== 'number' || c < 1 || h < 1 || w < 1) {
    throw new UnsupportedModelError(`shuffle expects input '${name}' to have known C, H and W (NCHW), got ${shape}`);
  }
  if (h % block !== 0 || w % block !== 0) {
    throw new UnsupportedModelError(`shuffle expects input '${name}' H and W divisible by block size ${block}, got ${shape} (H=${h}, W=${w})`);
  }
  return { name, batch: batch ?? null, channels: c, height: h, width: w };
}

/**
 * The image-level shuffle map for a C×H×W image (H, W multiples of the key's
 * block). Computed by running the device's shuffle on index images: the low
 * and high 12 bits of each index separately, so every value stays an exact
 * float32 whatever the image size.
 */
export function shuffleMap(key: ShuffleBlockKey, c: number, h: number, w: number): ShuffleMap {
  const n = c * h * w;
  // A private copy without flips: wiping it afterwards must not zero the caller's key.
  const plain: ShuffleBlockKey = { ...key, perm: key.perm.slice(), inverse: key.inverse.slice(), flip: null };
  const src = new Float32Array(n);
  const dst = new Float32Array(n);
  const gather = new Uint32Array(n);
  for (let i = 0; i < n; i++) src[i] = i & 0xfff;
  shuffleImageNCHW(src, dst, 1, c, h, w, plain);
  for (let o = 0; o < n; o++) gather[o] = dst[o];
  for (let i = 0; i < n; i++) src[i] = Math.floor(i / 0x1000);
  shuffleImageNCHW(src, dst, 1, c, h, w, plain);
  for (let o = 0; o < n; o++) gather[o] += dst[o] * 0x1000;
  let flip: Uint8Array | null = null;
  if (key.flip !== null) {
    src.fill(0);
    shuffleImageNCHW(src, dst, 1, c, h, w, key);
    flip = new Uint8Array(n);
    for (let o = 0; o < n; o++) flip[o] = dst[o] === 1 ? 1 : 0;
  }
  wipeShuffleKey(plain);
  src.fill(0);
  dst.fill(0);
  return { gather, flip };
}

/**
 * The initializer feeding `node.input[index]`, as a name only this node reads:
 * a weight shared with another node (or exposed as a graph input or output) is
 * copied first, so absorbing into it changes nothing else.
 */
function ownInitializer(model: OnnxModel, node: NodeProto, index: number): string {
  const name = node.input[index];
  const t = findInitializer(model, name);
  if (!t) throw new Error(`internal: '${name}' is not an initializer`);
  const shared = consumersOf(model, name).length > 1 || node.input.filter((x) => x === name).length > 1
    || isGraphOutput(model, name) || model.graph.input.some((v) => v.name === name);
  if (!shared) return name;
  const copy = uniqueName(model, `${name}_shuffle`);
  addInitializer(model, { ...t, name: copy, dims: [...t.dims], raw_data: t.raw_data?.slice() });
  node.input[index] = copy;
  return copy;
}

/** A float32 initializer's data, or undefined when `name` is not one. */
function floatInit(model: OnnxModel, name: string | undefined): { data: Float32Array; dims: number[] } | undefined {
  if (!name) return undefined;
  const t = findInitializer(model, name);
  if (!t || t.data_type !== DataType.FLOAT) return undefined;
  const d = getInitializer(model, name);
  return { data: d.data as Float32Array, dims: [...d.dims] };
}

/**
 * Rewrites a weight whose input features run along one axis: `layout` 'out-in'
 * is [out, in] (Gemm transB=1, OIHW conv flattened per output), 'in-out' is
 * [in, out] (MatMul, Gemm transB=0). Returns the per-output bias correction
 * (sum of the original weights at flipped positions), null without negpos.
 */
function permuteWeight(w: Float32Array, outs: number, layout: 'out-in' | 'in-out', map: ShuffleMap): { weight: Float32Array; shift: Float64Array | null; negated: number } {
  const { gather, flip } = map;
  const ins = gather.length;
  const weight = new Float32Array(w.length);
  const shift = flip ? new Float64Array(outs) : null;
  let negated = 0;
  for (let o = 0; o < ins; o++) {
    const i = gather[o];
    const neg = flip !== null && flip[o] === 1;
    if (neg) negated++;
    for (let j = 0; j < outs; j++) {
      const from = layout === 'out-in' ? j * ins + i : i * outs + j;
      const to = layout === 'out-in' ? j * ins + o : o * outs + j;
      const v = w[from];
      weight[to] = neg ? -v : v;
      if (neg) shift![j] += v;
    }
  }
  return { weight, shift, negated };
}

/** Adds `shift` to a bias initializer of `n` elements (shape [n] or [1,n]); false when it is not such a bias. */
function addToBias(model: OnnxModel, node: NodeProto, index: number, shift: Float64Array): boolean {
  const b = floatInit(model, node.input[index]);
  if (!b || b.data.length !== shift.length || !(b.dims.length === 1 || (b.dims.length === 2 && b.dims[0] === 1))) return false;
  const name = ownInitializer(model, node, index);
  const out = new Float32Array(shift.length);
  for (let j = 0; j < out.length; j++) out[j] = b.data[j] + shift[j];
  setInitializer(model, name, out);
  return true;
}

function newBias(model: OnnxModel, base: string, values: Float64Array): string {
  const name = uniqueName(model, `${base}_shuffle_bias`);
  addInitializer(model, makeTensor(name, 'float32', [values.length], Float32Array.from(values)));
  return name;
}

/** A bias that broadcasts over the outputs only (scalar, [out], [1,out]...): its values per output, or undefined. */
function outputBias(model: OnnxModel, name: string, outs: number): Float32Array | undefined {
  const b = floatInit(model, name);
  if (!b) return undefined;
  if (b.data.length === 1) return new Float32Array(outs).fill(b.data[0]);
  const lead = b.dims.slice(0, -1).every((d) => d === 1);
  return b.data.length === outs && b.dims.at(-1) === outs && lead ? b.data : undefined;
}

/** Gemm: Y = alpha·A·B + beta·C; the correction enters as alpha·shift. */
function absorbGemm(model: OnnxModel, gemm: NodeProto, map: ShuffleMap): Absorption {
  const transB = intAttribute(gemm, 'transB', 0);
  const alpha = Number(getAttribute(gemm, 'alpha') ?? 1);
  const beta = Number(getAttribute(gemm, 'beta') ?? 1);
  const w = floatInit(model, gemm.input[1])!;
  const outs = transB ? w.dims[0] : w.dims[1];
  const c = gemm.input.length > 2 && gemm.input[2] !== '' ? gemm.input[2] : undefined;
  const cv = c === undefined ? undefined : outputBias(model, c, outs);
  if (map.flip && c !== undefined && !cv) {
    refuseAbsorb(`${nodeLabel(gemm)} has a bias '${c}' that is not a float32 initializer broadcasting over the outputs only`);
  }
  const name = ownInitializer(model, gemm, 1);
  const p = permuteWeight(w.data, outs, transB ? 'out-in' : 'in-out', map);
  setInitializer(model, name, p.weight);
  let bias: string | null = null;
  if (p.shift) {
    const shift = p.shift.map((s) => alpha * s);
    if (c !== undefined && beta === 1 && addToBias(model, gemm, 2, shift)) {
      bias = gemm.input[2];
    } else {
      // No bias, a scaled one, or a broadcast one: a fresh [out] bias holds beta·C + correction.
      if (cv) for (let j = 0; j < outs; j++) shift[j] += beta * cv[j];
      bias = newBias(model, name, shift);
      gemm.input[2] = bias;
      if (beta !== 1) setAttribute(gemm, 'beta', { float: 1 });
    }
  }
  return { node: gemm.name || gemm.output[0], op: 'Gemm', weight: name, bias, negated: p.negated };
}

/** MatMul has no bias: fold the correction into a following Add's bias, or add one. */
function absorbMatMul(model: OnnxModel, mm: NodeProto, map: ShuffleMap): Absorption {
  const w = floatInit(model, mm.input[1])!;
  const outs = w.dims[1];
  const name = ownInitializer(model, mm, 1);
  const p = permuteWeight(w.data, outs, 'in-out', map);
  setInitializer(model, name, p.weight);
  let bias: string | null = null;
  if (p.shift) {
    const out = mm.output[0];
    const readers = consumersOf(model, out);
    const add = readers.length === 1 && !isGraphOutput(model, out) && readers[0].op_type === 'Add' && (readers[0].domain ?? '') === ''
      ? readers[0] : undefined;
    const slot = add ? (add.input[0] === out ? 1 : 0) : -1;
    if (add && add.input[1 - slot] === out && addToBias(model, add, slot, p.shift)) {
      bias = add.input[slot];
    } else {
      // Rename the MatMul's output and re-create it as MatMul + correction, so every reader (and graph output) is kept.
      const raw = uniqueName(model, `${out}_shuffle_raw`);
      mm.output[0] = raw;
      bias = newBias(model, name, p.shift);
      const at = model.graph.node.indexOf(mm);
      model.graph.node.splice(at + 1, 0, makeNode('Add', [raw, bias], [out], {}, uniqueName(model, `${mm.name || 'matmul'}_shuffle_bias_add`)));
    }
  }
  return { node: mm.name || mm.output[0], op: 'MatMul', weight: name, bias, negated: p.negated };
}

/** A Conv whose kernel equals its stride and is a multiple of the block: each output position sees whole blocks. */
function absorbConv(model: OnnxModel, conv: NodeProto, img: ShuffleImage, key: ShuffleBlockKey): Absorption {
  const w = floatInit(model, conv.input[1]);
  const m = key.m;
  const ks = w && w.dims.length === 4 ? [w.dims[2], w.dims[3]] : undefined;
  const strides = intsAttribute(conv, 'strides', [1, 1]);
  const pads = intsAttribute(conv, 'pads', [0, 0, 0, 0]);
  const dil = intsAttribute(conv, 'dilations', [1, 1]);
  const group = intAttribute(conv, 'group', 1);
  const autoPad = String(getAttribute(conv, 'auto_pad') ?? 'NOTSET');
  const kernel = intsAttribute(conv, 'kernel_shape', ks ?? []);
  const found = `input '${img.name}' feeds ${nodeLabel(conv)} with kernel ${kernel.join('x') || '?'}, stride ${strides.join('x')}, pads ${pads.join(',')}, dilation ${dil.join('x')}, group ${group}${autoPad !== 'NOTSET' ? `, auto_pad ${autoPad}` : ''}`;
  const ok = w !== undefined && ks !== undefined && w.dims[1] === img.channels && kernel.length === 2
    && kernel[0] === ks[0] && kernel[1] === ks[1] && strides.length === 2 && strides[0] === ks[0] && strides[1] === ks[1]
    && ks[0] % m === 0 && ks[1] % m === 0 && pads.every((x) => x === 0) && dil.every((x) => x === 1) && group === 1
    && (autoPad === 'NOTSET' || autoPad === 'VALID');
  if (!ok) {
    const weight = w ? `float32 weight [${w.dims.join(',')}]` : `weight '${conv.input[1]}' that is not a float32 initializer`;
    refuseAbsorb(`${found}, ${weight}; absorption needs a Conv with kernel = stride = a multiple of block ${m}, no padding, dilation 1, group 1`);
  }
  // One kernel sees a C×KH×KW patch aligned to the block grid; OIHW flattened per output is that patch's NCHW order.
  const b = conv.input.length > 2 && conv.input[2] !== '' ? conv.input[2] : undefined;
  const bv = b === undefined ? undefined : floatInit(model, b);
  if (key.flip !== null && b !== undefined && (!bv || bv.dims.length !== 1 || bv.data.length !== w.dims[0])) {
    refuseAbsorb(`${nodeLabel(conv)} has a bias '${b}' that is not a float32 [${w.dims[0]}] initializer`);
  }
  const map = shuffleMap(key, img.channels, ks[0], ks[1]);
  const name = ownInitializer(model, conv, 1);
  const p = permuteWeight(w.data, w.dims[0], 'out-in', map);
  setInitializer(model, name, p.weight);
  let bias: string | null = null;
  if (p.shift) {
    if (b !== undefined) {
      addToBias(model, conv, 2, p.shift);
      bias = conv.input[2];
    } else {
      bias = newBias(model, name, p.shift);
      conv.input[2] = bias;
    }
  }
  return { node: conv.name || conv.output[0], op: 'Conv', weight: name, bias, negated: p.negated };
}

/** True when a Flatten/Reshape node turns [N,C,H,W] into [N, C·H·W]. */
function flattensImage(model: OnnxModel, n: NodeProto, img: ShuffleImage): boolean {
  const chw = img.channels * img.height * img.width;
  if (n.op_type === 'Flatten') return intAttribute(n, 'axis', 1) === 1;
  const t = findInitializer(model, n.input[1] ?? '');
  if (!t || (t.data_type !== DataType.INT64 && t.data_type !== DataType.INT32)) return false;
  const s = Array.from(getInitializer(model, n.input[1]).data as ArrayLike<number | bigint>, Number);
  if (s.length !== 2) return false;
  if (intAttribute(n, 'allowzero', 0) === 1 && s.includes(0)) return false;
  const batchOk = (d: number): boolean => d === 0 || (typeof img.batch === 'number' && d === img.batch);
  return (s[1] === chw && (batchOk(s[0]) || s[0] === -1)) || (s[1] === -1 && batchOk(s[0]));
}

/** Finds the first layer behind `img` and rewrites it; refuses with what it found otherwise. */
function absorbShuffle(model: OnnxModel, img: ShuffleImage, key: ShuffleBlockKey): Absorption {
  const readers = consumersOf(model, img.name);
  if (isGraphOutput(model, img.name)) refuseAbsorb(`input '${img.name}' is also a graph output`);
  if (readers.length !== 1) refuseAbsorb(`input '${img.name}' feeds ${readers.length} nodes${readers.length ? ` (${readers.map(nodeLabel).join(', ')})` : ''}, expected exactly one first layer`);
  const first = readers[0];
  if ((first.domain ?? '') !== '') refuseAbsorb(`input '${img.name}' feeds ${nodeLabel(first)} of domain '${first.domain}'`);
  if (first.input[0] !== img.name || first.input.indexOf(img.name) !== first.input.lastIndexOf(img.name)) {
    refuseAbsorb(`input '${img.name}' is not the data input of ${nodeLabel(first)}`);
  }
  if (first.op_type === 'Conv') return absorbConv(model, first, img, key);
  if (first.op_type !== 'Flatten' && first.op_type !== 'Reshape') {
    refuseAbsorb(`input '${img.name}' feeds ${nodeLabel(first)}; absorption needs Flatten/Reshape → Gemm/MatMul, or a patch-embedding Conv`);
  }
  const chw = img.channels * img.height * img.width;
  if (!flattensImage(model, first, img)) refuseAbsorb(`input '${img.name}' feeds ${nodeLabel(first)}, which does not flatten it to [N, ${chw}]`);
  const flat = first.output[0];
  const next = consumersOf(model, flat);
  if (isGraphOutput(model, flat) || next.length !== 1) {
    refuseAbsorb(`the flattened input '${flat}' feeds ${next.length} node(s)${isGraphOutput(model, flat) ? ' and is a graph output' : ''}, expected exactly one Gemm/MatMul`);
  }
  const layer = next[0];
  const op = layer.op_type ?? '';
  if ((layer.domain ?? '') !== '' || (op !== 'Gemm' && op !== 'MatMul')) refuseAbsorb(`the flattened input feeds ${nodeLabel(layer)}, expected Gemm or MatMul`);
  if (layer.input[0] !== flat || layer.input.slice(1).includes(flat)) refuseAbsorb(`the flattened input is not the left operand (A) of ${nodeLabel(layer)}`);
  const w = floatInit(model, layer.input[1]);
  const transB = op === 'Gemm' ? intAttribute(layer, 'transB', 0) : 0;
  if (op === 'Gemm' && intAttribute(layer, 'transA', 0) !== 0) refuseAbsorb(`${nodeLabel(layer)} has transA=1`);
  if (!w || w.dims.length !== 2) refuseAbsorb(`${nodeLabel(layer)} has weight '${layer.input[1]}' that is not a float32 rank-2 initializer`);
  const ins = transB ? w.dims[1] : w.dims[0];
  if (ins !== chw) refuseAbsorb(`${nodeLabel(layer)} has weight [${w.dims.join(',')}] with ${ins} input features, expected ${chw} (C·H·W)`);
  const map = shuffleMap(key, img.channels, img.height, img.width);
  return op === 'Gemm' ? absorbGemm(model, layer, map) : absorbMatMul(model, layer, map);
}

/**
 * Why a shuffle entry locks nothing under `modelKey`, for both formats: a key
 * is drawn uniformly among the m*m*C! block permutations, so for a small block
 * the identity comes up (1 in 24 keys for a 2x2x1 block), and the "locked"
 * model would equal the plain one.
 * @throws UnsupportedModelError for a block of one element without
 * negative/positive, which has no key but the identity.
 */
export function shuffleTrivial(modelKey: Uint8Array, entry: EntryOf<'shuffle'>): string | undefined {
  const size = entry.block * entry.block * entry.channels;
  if (size === 1 && !entry.negpos) {
    throw new UnsupportedModelError('shuffle: a 1x1 block of 1 channel has one permutation, the identity; use a block size above 1 or negative/positive (--negpos)');
  }
  const key = shuffleBlockKey(modelKey, entry.block, entry.channels, entry.negpos);
  try {
    const identity = key.perm.every((v, i) => v === i);
    const flips = key.flip?.includes(1) ?? false;
    if (identity && !flips) {
      return `shuffle: the key's permutation of the ${entry.block}x${entry.block}x${entry.channels} block (${size} positions) is the identity${entry.negpos ? ' and it flips no position' : ''}`;
    }
    return undefined;
  } finally {
    wipeShuffleKey(key);
  }
}

/**
 * The `shuffle` locker (graph stage): checks the image input, absorbs the inverse
 * shuffle into the first layer unless the model was trained with the key, and
 * returns the manifest entry.
 */
export const onnxShuffle: OnnxLocker<'shuffle'> = {
  scheme: 'shuffle',
  // With advparams, in the order asked (models/lock/onnx/advparams.ts says what
  // each order does); before signflip.
  phase: 0,
  trivial: shuffleTrivial,
  graph(model: OnnxModel, ctx: LockContext) {
    const block = shuffleBlock(ctx.opts);
    const negpos = ctx.opts.negpos === true;
    const img = shuffleImageInput(model, block);
    const entry: ShuffleLock = {
      scheme: 'shuffle', input: img.name, block, channels: img.channels, negpos, absorbed: ctx.opts.trainedWithKey !== true,
    };
    const what = `block ${block}, C=${img.channels}, ${img.height}x${img.width}${negpos ? ', negative/positive' : ''}`;
    if (ctx.opts.trainedWithKey === true) {
      ctx.report(`shuffle: input '${img.name}' (${what}); graph unchanged: the vendor asserts the model was trained on inputs shuffled with this key`);
      return () => entry;
    }
    const key = shuffleBlockKey(ctx.modelKey, block, img.channels, negpos);
    try {
      const a = absorbShuffle(model, img, key);
      ctx.report(`shuffle: input '${img.name}' (${what}); inverse absorbed into ${a.op} '${a.node}' (weight '${a.weight}' permuted`
        + (a.bias ? `, ${a.negated} input position(s) negated, bias '${a.bias}' corrected` : '')
        + '); outputs match the plain model up to float32 rounding (summation order changes)');
    } finally {
      wipeShuffleKey(key);
    }
    return () => entry;
  },
};
