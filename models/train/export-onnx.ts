/**
 * ONNX export of the reference networks: plain opset-13 graphs (Flatten, Gemm,
 * Conv, Relu, MaxPool) that any ONNX tool can read and lock.
 *
 * Both models take `input` float32 [N,1,28,28] in [0,1] and give `logits`
 * float32 [N,10]. tfjs trains NHWC with HWIO conv kernels; ONNX Conv is NCHW
 * with OIHW kernels, so kernels are permuted here, and the dense weights after
 * the conv stack are permuted from tfjs's (h,w,c) flatten order to ONNX's
 * (c,h,w) so the graph needs no Transpose.
 */
import { encodeModel, makeModel, makeNode, makeTensor, makeValueInfo } from '../onnx/index.ts';
import type { NodeProto, TensorProto } from '../onnx/index.ts';
import { CNN_FEATURE_SIDE, type Net } from './nets.ts';

/** Weights as plain arrays with their tfjs shapes. */
export type Weights = Record<string, { shape: number[]; data: Float32Array }>;

/** Reads a network's current weights out of tfjs. */
export function readWeights(net: Net): Weights {
  const w: Weights = {};
  for (const [name, v] of Object.entries(net.params)) w[name] = { shape: [...v.shape], data: v.dataSync() as Float32Array };
  return w;
}

function get(w: Weights, name: string, rank: number): { shape: number[]; data: Float32Array } {
  const t = w[name];
  if (!t || t.shape.length !== rank) throw new Error(`export: expected weight ${name} of rank ${rank}, got ${t ? `[${t.shape.join(',')}]` : 'none'}`);
  return t;
}

/** [in,out] dense kernel → Gemm B [out,in] for transB=1. */
function denseToGemm(name: string, k: { shape: number[]; data: Float32Array }): TensorProto {
  const [n, m] = k.shape;
  const out = new Float32Array(n * m);
  for (let i = 0; i < n; i++) for (let o = 0; o < m; o++) out[o * n + i] = k.data[i * m + o];
  return makeTensor(name, 'float32', [m, n], out);
}

/** HWIO conv kernel → OIHW. */
function hwioToOihw(name: string, k: { shape: number[]; data: Float32Array }): TensorProto {
  const [kh, kw, ci, co] = k.shape;
  const out = new Float32Array(k.data.length);
  for (let h = 0; h < kh; h++) for (let x = 0; x < kw; x++) for (let i = 0; i < ci; i++) for (let o = 0; o < co; o++) {
    out[((o * ci + i) * kh + h) * kw + x] = k.data[((h * kw + x) * ci + i) * co + o];
  }
  return makeTensor(name, 'float32', [co, ci, kh, kw], out);
}

/**
 * Dense kernel [side·side·c, out] fed by an NHWC flatten → Gemm B [out, c·side·side]
 * for an NCHW flatten: B[o, (c·side + h)·side + w] = K[(h·side + w)·C + c, o].
 */
function nhwcDenseToNchwGemm(name: string, k: { shape: number[]; data: Float32Array }, side: number): TensorProto {
  const [n, m] = k.shape;
  const c = n / (side * side);
  if (!Number.isInteger(c)) throw new Error(`export: dense input ${n} is not ${side}×${side}×channels`);
  const out = new Float32Array(n * m);
  for (let h = 0; h < side; h++) for (let x = 0; x < side; x++) for (let ch = 0; ch < c; ch++) {
    const tfRow = (h * side + x) * c + ch;
    const onnxCol = (ch * side + h) * side + x;
    for (let o = 0; o < m; o++) out[o * n + onnxCol] = k.data[tfRow * m + o];
  }
  return makeTensor(name, 'float32', [m, n], out);
}

function bias(name: string, b: { data: Float32Array }): TensorProto {
  return makeTensor(name, 'float32', [b.data.length], b.data);
}

const IO = {
  inputs: [makeValueInfo('input', 'float32', ['N', 1, 28, 28])],
  outputs: [makeValueInfo('logits', 'float32', ['N', 10])],
};

/** MLP: Flatten → Gemm(fc1) → Relu → Gemm(fc2) → logits. */
export function mlpToOnnx(w: Weights, docString: string): Uint8Array {
  const nodes: NodeProto[] = [
    makeNode('Flatten', ['input'], ['flat'], { axis: 1 }, 'flatten'),
    makeNode('Gemm', ['flat', 'fc1.weight', 'fc1.bias'], ['fc1_out'], { transB: 1 }, 'fc1'),
    makeNode('Relu', ['fc1_out'], ['relu1_out'], {}, 'relu1'),
    makeNode('Gemm', ['relu1_out', 'fc2.weight', 'fc2.bias'], ['logits'], { transB: 1 }, 'fc2'),
  ];
  const initializers = [
    denseToGemm('fc1.weight', get(w, 'fc1.weight', 2)), bias('fc1.bias', get(w, 'fc1.bias', 1)),
    denseToGemm('fc2.weight', get(w, 'fc2.weight', 2)), bias('fc2.bias', get(w, 'fc2.bias', 1)),
  ];
  return encodeModel(makeModel({ name: 'mnist_mlp', nodes, initializers, ...IO, opset: 13, docString }));
}

/** CNN: (Conv → Relu → MaxPool) × 2 → Flatten → Gemm(fc) → logits. */
export function cnnToOnnx(w: Weights, docString: string): Uint8Array {
  const conv = { kernel_shape: [3, 3], pads: [0, 0, 0, 0], strides: [1, 1], dilations: [1, 1], group: 1 };
  const pool = { kernel_shape: [2, 2], strides: [2, 2], pads: [0, 0, 0, 0] };
  const nodes: NodeProto[] = [
    makeNode('Conv', ['input', 'conv1.weight', 'conv1.bias'], ['conv1_out'], conv, 'conv1'),
    makeNode('Relu', ['conv1_out'], ['relu1_out'], {}, 'relu1'),
    makeNode('MaxPool', ['relu1_out'], ['pool1_out'], pool, 'pool1'),
    makeNode('Conv', ['pool1_out', 'conv2.weight', 'conv2.bias'], ['conv2_out'], conv, 'conv2'),
    makeNode('Relu', ['conv2_out'], ['relu2_out'], {}, 'relu2'),
    makeNode('MaxPool', ['relu2_out'], ['pool2_out'], pool, 'pool2'),
    makeNode('Flatten', ['pool2_out'], ['flat'], { axis: 1 }, 'flatten'),
    makeNode('Gemm', ['flat', 'fc.weight', 'fc.bias'], ['logits'], { transB: 1 }, 'fc'),
  ];
  const initializers = [
    hwioToOihw('conv1.weight', get(w, 'conv1.weight', 4)), bias('conv1.bias', get(w, 'conv1.bias', 1)),
    hwioToOihw('conv2.weight', get(w, 'conv2.weight', 4)), bias('conv2.bias', get(w, 'conv2.bias', 1)),
    nhwcDenseToNchwGemm('fc.weight', get(w, 'fc.weight', 2), CNN_FEATURE_SIDE), bias('fc.bias', get(w, 'fc.bias', 1)),
  ];
  return encodeModel(makeModel({ name: 'mnist_cnn', nodes, initializers, ...IO, opset: 13, docString }));
}
