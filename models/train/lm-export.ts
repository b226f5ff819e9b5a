/**
 * Export of the reference language model (models/train/lm.ts) to ONNX and to
 * TFLite with keylock's own builders, and the way back (weights of an ONNX file
 * into the tfjs model, which is how an attacker fine-tunes a copied file).
 *
 * ONNX (opset 13, every op elementary, so any runtime runs it): Gather for the
 * token embedding, MatMul + Add for every linear layer (weights [in, out]),
 * LayerNorm as ReduceMean/Sub/Mul/Sqrt/Div, GELU's tanh form as Mul/Add/Tanh,
 * attention as Reshape/Transpose/MatMul/Softmax with the causal mask an Add of a
 * constant. Input `tokens` int32 [N, T], output `logits` float32 [N, T, vocab].
 *
 * TFLite (batch 1): GATHER, FULLY_CONNECTED (keep_num_dims) for linear layers
 * with weights transposed to [out, in], MEAN/SUB/MUL/SQRT/DIV for LayerNorm,
 * RESHAPE/TRANSPOSE/BATCH_MATMUL/SOFTMAX for attention, MUL/ADD/TANH for GELU.
 */
import { UnsupportedModelError } from '../../keystore/errors.ts';
import { decodeModel, encodeModel, getInitializer, makeModel, makeNode, makeTensor, makeValueInfo } from '../onnx/index.ts';
import type { NodeProto, TensorProto } from '../onnx/index.ts';
import { writeTflite, type TfliteOperatorSpec, type TfliteTensorSpec } from '../tflite/writer.ts';
import { causalMask, GELU_C, LN_EPS, lmShapes, VOCAB_SIZE, type LmConfig } from './lm.ts';

/** Graph input and output names. */
export const LM_INPUT = 'tokens';
export const LM_OUTPUT = 'logits';

function need(w: Map<string, Float32Array>, name: string): Float32Array {
  const a = w.get(name);
  if (!a) throw new RangeError(`lm export: expected weight ${name}, none given`);
  return a;
}

/** Output name of the next-character head (see {@link LmOnnxOptions}). */
export const LM_NEXT_OUTPUT = 'next_logits';

/**
 * Variants of the ONNX graph. `nextChar`: a next-character classifier over full
 * windows, the form a classifier's tooling expects: input `tokens` float32
 * [N, T] holding the ids (Cast to int32 before the embedding), output
 * `next_logits` float32 [N, vocab], the logits of the last position. Same
 * weights, same initializer names.
 */
export interface LmOnnxOptions { nextChar?: boolean }

/** The ONNX model of `config` with weights `w` (names of lmShapes). */
export function lmToOnnx(config: LmConfig, w: Map<string, Float32Array>, docString: string, opts: LmOnnxOptions = {}): Uint8Array {
  const { context: t, width: d, heads, layers } = config;
  const dh = d / heads;
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  for (const [name, shape] of lmShapes(config)) inits.push(makeTensor(name, 'float32', shape, need(w, name)));
  const konst = (name: string, dims: number[], data: Float32Array | number[]): string => {
    inits.push(makeTensor(name, 'float32', dims, data instanceof Float32Array ? data : Float32Array.from(data)));
    return name;
  };
  const shape = (name: string, dims: number[]): string => {
    inits.push(makeTensor(name, 'int64', [dims.length], dims.map((x) => BigInt(x))));
    return name;
  };
  const eps = konst('ln.eps', [], [LN_EPS]);
  const half = konst('gelu.half', [], [0.5]);
  const one = konst('gelu.one', [], [1]);
  const ga = konst('gelu.a', [], [GELU_C.a]);
  const gb = konst('gelu.b', [], [GELU_C.b]);
  const scale = konst('attn.scale', [], [1 / Math.sqrt(dh)]);
  const mask = konst('attn.mask', [t, t], causalMask(t));
  const split = shape('attn.split_shape', [0, t, heads, dh]);
  const merge = shape('attn.merge_shape', [0, t, d]);
  const op = (type: string, inputs: string[], out: string, attrs: Record<string, number | number[]> = {}): string => {
    nodes.push(makeNode(type, inputs, [out], attrs, out));
    return out;
  };
  const ln = (x: string, p: string): string => {
    const mu = op('ReduceMean', [x], `${p}/mean`, { axes: [-1], keepdims: 1 });
    const c = op('Sub', [x, mu], `${p}/centered`);
    const v = op('ReduceMean', [op('Mul', [c, c], `${p}/sq`)], `${p}/var`, { axes: [-1], keepdims: 1 });
    const sd = op('Sqrt', [op('Add', [v, eps], `${p}/var_eps`)], `${p}/std`);
    return op('Add', [op('Mul', [op('Div', [c, sd], `${p}/norm`), `${p}.weight`], `${p}/scaled`), `${p}.bias`], `${p}/out`);
  };
  const linear = (x: string, p: string): string => op('Add', [op('MatMul', [x, `${p}.weight`], `${p}/matmul`), `${p}.bias`], `${p}/out`);
  const gelu = (x: string, p: string): string => {
    const x3 = op('Mul', [op('Mul', [x, x], `${p}/x2`), x], `${p}/x3`);
    const inner = op('Mul', [op('Add', [x, op('Mul', [x3, gb], `${p}/bx3`)], `${p}/sum`), ga], `${p}/inner`);
    const th = op('Tanh', [inner], `${p}/tanh`);
    return op('Mul', [op('Mul', [x, half], `${p}/halfx`), op('Add', [th, one], `${p}/onep`)], `${p}/out`);
  };
  const ids = opts.nextChar ? op('Cast', [LM_INPUT], 'embed/ids', { to: 6 }) : LM_INPUT;
  let h = op('Add', [op('Gather', ['tok.weight', ids], 'embed/tok', { axis: 0 }), 'pos.weight'], 'embed/out');
  for (let l = 0; l < layers; l++) {
    const p = `h${l}`;
    const a = ln(h, `${p}.ln1`);
    const heads4 = (x: string, perm: number[], n: string): string => op('Transpose', [op('Reshape', [x, split], `${n}/split`)], `${n}/heads`, { perm });
    const q = heads4(linear(a, `${p}.attn.q`), [0, 2, 1, 3], `${p}.attn.q`);
    const k = heads4(linear(a, `${p}.attn.k`), [0, 2, 3, 1], `${p}.attn.k`);
    const v = heads4(linear(a, `${p}.attn.v`), [0, 2, 1, 3], `${p}.attn.v`);
    const s = op('Add', [op('Mul', [op('MatMul', [q, k], `${p}.attn/qk`), scale], `${p}.attn/scaled`), mask], `${p}.attn/masked`);
    const pr = op('Softmax', [s], `${p}.attn/probs`, { axis: -1 });
    const o = op('Reshape', [op('Transpose', [op('MatMul', [pr, v], `${p}.attn/pv`)], `${p}.attn/merge_t`, { perm: [0, 2, 1, 3] }), merge], `${p}.attn/merged`);
    h = op('Add', [h, linear(o, `${p}.attn.o`)], `${p}/res1`);
    const b = ln(h, `${p}.ln2`);
    h = op('Add', [h, linear(gelu(linear(b, `${p}.mlp.fc`), `${p}.mlp.gelu`), `${p}.mlp.proj`)], `${p}/res2`);
  }
  const f = ln(h, 'lnf');
  nodes.push(makeNode('MatMul', [f, 'head.weight'], ['head/matmul'], {}, 'head/matmul'));
  if (opts.nextChar) {
    // Slice + Reshape rather than Gather: tfjs differentiates them on wasm (advparams takes gradients through this graph).
    shape('head.last_start', [t - 1]);
    shape('head.last_end', [t]);
    shape('head.last_axis', [1]);
    shape('head.next_shape', [-1, VOCAB_SIZE]);
    nodes.push(makeNode('Add', ['head/matmul', 'head.bias'], ['head/out'], {}, 'head/out'));
    nodes.push(makeNode('Slice', ['head/out', 'head.last_start', 'head.last_end', 'head.last_axis'], ['head/last'], {}, 'head/last'));
    nodes.push(makeNode('Reshape', ['head/last', 'head.next_shape'], [LM_NEXT_OUTPUT], {}, 'head/next'));
  } else {
    nodes.push(makeNode('Add', ['head/matmul', 'head.bias'], [LM_OUTPUT], {}, 'head/out'));
  }
  return encodeModel(makeModel({
    name: opts.nextChar ? 'char_transformer_next' : 'char_transformer', nodes, initializers: inits, opset: 13, docString,
    inputs: [makeValueInfo(LM_INPUT, opts.nextChar ? 'float32' : 'int32', ['N', t])],
    outputs: [opts.nextChar ? makeValueInfo(LM_NEXT_OUTPUT, 'float32', ['N', VOCAB_SIZE]) : makeValueInfo(LM_OUTPUT, 'float32', ['N', t, VOCAB_SIZE])],
  }));
}

/**
 * The weights of an ONNX file of this architecture, read by initializer name:
 * what anyone holding the file (locked or not) can take from it. Entries whose
 * bytes do not decode as float32 of the expected size are left out.
 */
export function lmWeightsFromOnnx(config: LmConfig, onnx: Uint8Array): Map<string, Float32Array> {
  const model = decodeModel(onnx);
  const out = new Map<string, Float32Array>();
  for (const [name, shape] of lmShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let t;
    try { t = getInitializer(model, name); } catch { continue; }
    if (t.data instanceof Float32Array && t.data.length === n) out.set(name, Float32Array.from(t.data));
  }
  return out;
}

const bytes = (a: Float32Array | Int32Array): Uint8Array => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));

/** The TFLite model (batch 1) of `config` with weights `w`. */
export function lmToTflite(config: LmConfig, w: Map<string, Float32Array>, description: string): Uint8Array {
  const { context: t, width: d, heads, layers, hidden } = config;
  if (d % heads !== 0) throw new UnsupportedModelError(`lm export: width ${d} is not a multiple of ${heads} heads`);
  const dh = d / heads;
  const tensors: TfliteTensorSpec[] = [];
  const operators: TfliteOperatorSpec[] = [];
  const add = (s: TfliteTensorSpec): number => tensors.push(s) - 1;
  const cf = (name: string, shape: number[], data: Float32Array): number => add({ name, dtype: 'float32', shape, data: bytes(data) });
  const ci = (name: string, shape: number[], data: number[]): number => add({ name, dtype: 'int32', shape, data: bytes(Int32Array.from(data)) });
  const act = (name: string, shape: number[]): number => add({ name, dtype: 'float32', shape });
  const emit = (opName: TfliteOperatorSpec['op'], inputs: number[], name: string, shape: number[], options?: TfliteOperatorSpec['options']): number => {
    const y = act(name, shape);
    operators.push({ op: opName, inputs, outputs: [y], ...(options ? { options } : {}) });
    return y;
  };
  const scalar = (name: string, v: number): number => cf(name, [], Float32Array.of(v));
  const eps = scalar('ln.eps', LN_EPS);
  const half = scalar('gelu.half', 0.5);
  const one = scalar('gelu.one', 1);
  const ga = scalar('gelu.a', GELU_C.a);
  const gb = scalar('gelu.b', GELU_C.b);
  const scale = scalar('attn.scale', 1 / Math.sqrt(dh));
  const mask = cf('attn.mask', [t, t], causalMask(t));
  const lastAxis = ci('ln.axis', [1], [-1]);
  const input = add({ name: LM_INPUT, dtype: 'int32', shape: [1, t] });
  const transposed = (name: string, inDim: number, outDim: number): Float32Array => {
    const src = need(w, name);
    const dst = new Float32Array(src.length);
    for (let i = 0; i < inDim; i++) for (let o = 0; o < outDim; o++) dst[o * inDim + i] = src[i * outDim + o];
    return dst;
  };
  const linear = (x: number, p: string, inDim: number, outDim: number): number => {
    const wt = cf(`${p}.weight`, [outDim, inDim], transposed(`${p}.weight`, inDim, outDim));
    const bt = cf(`${p}.bias`, [outDim], need(w, `${p}.bias`));
    return emit('FULLY_CONNECTED', [x, wt, bt], `${p}/out`, [1, t, outDim], { kind: 'fully-connected', activation: 'NONE', weightsFormat: 0, keepNumDims: true });
  };
  const ln = (x: number, p: string): number => {
    const g = cf(`${p}.weight`, [d], need(w, `${p}.weight`));
    const b = cf(`${p}.bias`, [d], need(w, `${p}.bias`));
    const mu = emit('MEAN', [x, lastAxis], `${p}/mean`, [1, t, 1], { kind: 'reducer', keepDims: true });
    const c = emit('SUB', [x, mu], `${p}/centered`, [1, t, d]);
    const v = emit('MEAN', [emit('MUL', [c, c], `${p}/sq`, [1, t, d]), lastAxis], `${p}/var`, [1, t, 1], { kind: 'reducer', keepDims: true });
    const sd = emit('SQRT', [emit('ADD', [v, eps], `${p}/var_eps`, [1, t, 1])], `${p}/std`, [1, t, 1]);
    return emit('ADD', [emit('MUL', [emit('DIV', [c, sd], `${p}/norm`, [1, t, d]), g], `${p}/scaled`, [1, t, d]), b], `${p}/out`, [1, t, d]);
  };
  const gelu = (x: number, p: string, n: number): number => {
    const s = [1, t, n];
    const x3 = emit('MUL', [emit('MUL', [x, x], `${p}/x2`, s), x], `${p}/x3`, s);
    const inner = emit('MUL', [emit('ADD', [x, emit('MUL', [x3, gb], `${p}/bx3`, s)], `${p}/sum`, s), ga], `${p}/inner`, s);
    const th = emit('TANH', [inner], `${p}/tanh`, s);
    return emit('MUL', [emit('MUL', [x, half], `${p}/halfx`, s), emit('ADD', [th, one], `${p}/onep`, s)], `${p}/out`, s);
  };
  const tok = cf('tok.weight', [VOCAB_SIZE, d], need(w, 'tok.weight'));
  const pos = cf('pos.weight', [t, d], need(w, 'pos.weight'));
  let h = emit('ADD', [emit('GATHER', [tok, input], 'embed/tok', [1, t, d], { kind: 'gather', axis: 0 }), pos], 'embed/out', [1, t, d]);
  const splitShape = ci('attn.split_shape', [4], [1, t, heads, dh]);
  const mergeShape = ci('attn.merge_shape', [3], [1, t, d]);
  const permHeads = ci('attn.perm_heads', [4], [0, 2, 1, 3]);
  const permKeys = ci('attn.perm_keys', [4], [0, 2, 3, 1]);
  for (let l = 0; l < layers; l++) {
    const p = `h${l}`;
    const a = ln(h, `${p}.ln1`);
    const split = (x: number, n: string, perm: number, shape: number[]): number => {
      const r = emit('RESHAPE', [x, splitShape], `${n}/split`, [1, t, heads, dh], { kind: 'reshape', newShape: [1, t, heads, dh] });
      return emit('TRANSPOSE', [r, perm], `${n}/heads`, shape);
    };
    const q = split(linear(a, `${p}.attn.q`, d, d), `${p}.attn.q`, permHeads, [1, heads, t, dh]);
    const k = split(linear(a, `${p}.attn.k`, d, d), `${p}.attn.k`, permKeys, [1, heads, dh, t]);
    const v = split(linear(a, `${p}.attn.v`, d, d), `${p}.attn.v`, permHeads, [1, heads, t, dh]);
    const s4 = [1, heads, t, t];
    const sc = emit('ADD', [emit('MUL', [emit('BATCH_MATMUL', [q, k], `${p}.attn/qk`, s4), scale], `${p}.attn/scaled`, s4), mask], `${p}.attn/masked`, s4);
    const pr = emit('SOFTMAX', [sc], `${p}.attn/probs`, s4, { kind: 'softmax', beta: 1 });
    const pv = emit('BATCH_MATMUL', [pr, v], `${p}.attn/pv`, [1, heads, t, dh]);
    const mt = emit('TRANSPOSE', [pv, permHeads], `${p}.attn/merge_t`, [1, t, heads, dh]);
    const o = emit('RESHAPE', [mt, mergeShape], `${p}.attn/merged`, [1, t, d], { kind: 'reshape', newShape: [1, t, d] });
    h = emit('ADD', [h, linear(o, `${p}.attn.o`, d, d)], `${p}/res1`, [1, t, d]);
    const b = ln(h, `${p}.ln2`);
    h = emit('ADD', [h, linear(gelu(linear(b, `${p}.mlp.fc`, d, hidden), `${p}.mlp.gelu`, hidden), `${p}.mlp.proj`, hidden, d)], `${p}/res2`, [1, t, d]);
  }
  const out = linear(ln(h, 'lnf'), 'head', d, VOCAB_SIZE);
  tensors[out] = { ...tensors[out], name: LM_OUTPUT };
  return writeTflite({ description, tensors, inputs: [input], outputs: [out], operators });
}
