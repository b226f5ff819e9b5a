/**
 * Exports a small ONNX classifier to TFLite with keylock's own writer: the
 * linear chains of the reference models (Conv, Relu, MaxPool, Flatten, Gemm;
 * float32, no padding). Layouts change on the way, since TFLite is NHWC:
 * - the input [N,C,H,W] becomes [1,H,W,C] (TFLite runs a fixed batch of 1 in
 *   tfjs-tflite; with C = 1 the pixel order is the same);
 * - conv weights OIHW become OHWI;
 * - Flatten becomes RESHAPE to [1, H·W·C], and the following Gemm's weight
 *   columns are permuted from ONNX's (c,h,w) order to TFLite's (h,w,c);
 * - a Relu right after Conv/Gemm becomes the fused activation.
 *
 *   node --import tsx models/tflite/export.ts IN.onnx OUT.tflite
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UnsupportedModelError } from '../../keystore/errors.ts';
import { intAttribute, intsAttribute, getAttribute } from '../onnx/attributes.ts';
import { decodeModel } from '../onnx/codec.ts';
import { findInitializer, getInitializer } from '../onnx/initializers.ts';
import type { NodeProto, OnnxModel } from '../onnx/types.ts';
import type { Activation } from './codec.ts';
import { writeTflite, type TfliteModelSpec, type TfliteOperatorSpec, type TfliteTensorSpec } from './writer.ts';

function f32(model: OnnxModel, name: string): { data: Float32Array; dims: number[] } {
  const t = findInitializer(model, name);
  if (!t || t.data_type !== 1) throw new UnsupportedModelError(`export: "${name}" is not a float32 initializer`);
  const d = getInitializer(model, name);
  return { data: d.data as Float32Array, dims: [...d.dims] };
}

const bytes = (a: Float32Array | Int32Array): Uint8Array => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));

/** Converts the ONNX model bytes; UnsupportedModelError for anything outside the supported chain. */
export function onnxToTflite(onnx: Uint8Array): Uint8Array {
  const model = decodeModel(onnx);
  const g = model.graph;
  const inits = new Set(g.initializer.map((t) => t.name));
  const inputs = g.input.filter((v) => !inits.has(v.name ?? ''));
  if (inputs.length !== 1 || g.output.length !== 1) throw new UnsupportedModelError('export: expected one input and one output');
  const dims = inputs[0].type?.tensor_type?.shape?.dim.map((d) => Number(d.dim_value ?? 0)) ?? [];
  if (dims.length !== 4 || dims.slice(1).some((d) => !(d > 0))) throw new UnsupportedModelError(`export: expected an NCHW input with known C, H, W, got [${dims.join(',')}]`);
  const [, c0, h0, w0] = dims;

  const tensors: TfliteTensorSpec[] = [];
  const operators: TfliteOperatorSpec[] = [];
  const add = (t: TfliteTensorSpec): number => tensors.push(t) - 1;
  const input = add({ name: inputs[0].name ?? 'input', dtype: 'float32', shape: [1, h0, w0, c0] });
  let cur = input;
  /** Shape of `cur`: [1,H,W,C] before Flatten, [1,N] after; `flatFrom` is the [H,W,C] that was flattened. */
  let shape = [1, h0, w0, c0];
  let flatFrom: number[] | undefined;
  const nodes = g.node;
  for (let i = 0; i < nodes.length; i++) {
    const n: NodeProto = nodes[i];
    const out = n.output[0]!;
    const fuse = nodes[i + 1]?.op_type === 'Relu' && nodes[i + 1]!.input[0] === out && (n.op_type === 'Conv' || n.op_type === 'Gemm');
    const act: Activation = fuse ? 'RELU' : 'NONE';
    const outName = fuse ? nodes[i + 1]!.output[0]! : out;
    switch (n.op_type) {
      case 'Conv': {
        const w = f32(model, n.input[1]!);
        const [o, ci, kh, kw] = w.dims;
        const pads = intsAttribute(n, 'pads', [0, 0, 0, 0]);
        const strides = intsAttribute(n, 'strides', [1, 1]);
        if (pads.some((p) => p !== 0) || intAttribute(n, 'group', 1) !== 1 || intsAttribute(n, 'dilations', [1, 1]).some((d) => d !== 1) || ci !== shape[3]) {
          throw new UnsupportedModelError(`export: Conv "${n.name}" needs no padding, group 1, dilation 1 and ${shape[3]} input channels`);
        }
        const ohwi = new Float32Array(w.data.length);
        for (let a = 0; a < o; a++) for (let c = 0; c < ci; c++) for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
          ohwi[((a * kh + y) * kw + x) * ci + c] = w.data[((a * ci + c) * kh + y) * kw + x];
        }
        const b = n.input[2] ? f32(model, n.input[2]).data : new Float32Array(o);
        const wt = add({ name: n.input[1]!, dtype: 'float32', shape: [o, kh, kw, ci], data: bytes(ohwi) });
        const bt = add({ name: n.input[2] || `${n.input[1]}.bias`, dtype: 'float32', shape: [o], data: bytes(b) });
        shape = [1, Math.floor((shape[1] - kh) / strides[0]) + 1, Math.floor((shape[2] - kw) / strides[1]) + 1, o];
        const y = add({ name: outName, dtype: 'float32', shape });
        operators.push({ op: 'CONV_2D', inputs: [cur, wt, bt], outputs: [y], options: { kind: 'conv', padding: 'VALID', strideW: strides[1], strideH: strides[0], activation: act, dilationW: 1, dilationH: 1 } });
        cur = y;
        break;
      }
      case 'MaxPool': {
        const k = intsAttribute(n, 'kernel_shape', []);
        const s = intsAttribute(n, 'strides', [1, 1]);
        if (k.length !== 2 || intsAttribute(n, 'pads', [0, 0, 0, 0]).some((p) => p !== 0)) throw new UnsupportedModelError(`export: MaxPool "${n.name}" needs a 2-D kernel and no padding`);
        shape = [1, Math.floor((shape[1] - k[0]) / s[0]) + 1, Math.floor((shape[2] - k[1]) / s[1]) + 1, shape[3]];
        const y = add({ name: out, dtype: 'float32', shape });
        operators.push({ op: 'MAX_POOL_2D', inputs: [cur], outputs: [y], options: { kind: 'pool', padding: 'VALID', strideW: s[1], strideH: s[0], filterWidth: k[1], filterHeight: k[0], activation: 'NONE' } });
        cur = y;
        break;
      }
      case 'Flatten': {
        if (intAttribute(n, 'axis', 1) !== 1 || shape.length !== 4) throw new UnsupportedModelError(`export: Flatten "${n.name}" must flatten an image with axis 1`);
        flatFrom = shape.slice(1);
        const size = flatFrom.reduce((a, b) => a * b, 1);
        const st = add({ name: `${out}/shape`, dtype: 'int32', shape: [2], data: bytes(Int32Array.from([1, size])) });
        shape = [1, size];
        const y = add({ name: out, dtype: 'float32', shape });
        operators.push({ op: 'RESHAPE', inputs: [cur, st], outputs: [y], options: { kind: 'reshape', newShape: [1, size] } });
        cur = y;
        break;
      }
      case 'Gemm': {
        if (shape.length !== 2) throw new UnsupportedModelError(`export: Gemm "${n.name}" needs a flattened input`);
        if (Number(getAttribute(n, 'alpha') ?? 1) !== 1 || Number(getAttribute(n, 'beta') ?? 1) !== 1 || intAttribute(n, 'transA', 0) !== 0) {
          throw new UnsupportedModelError(`export: Gemm "${n.name}" needs alpha = beta = 1 and transA = 0`);
        }
        const w = f32(model, n.input[1]!);
        const transB = intAttribute(n, 'transB', 0) !== 0;
        const [outs, ins] = transB ? w.dims : [w.dims[1], w.dims[0]];
        if (ins !== shape[1]) throw new UnsupportedModelError(`export: Gemm "${n.name}" takes ${ins} features, the input has ${shape[1]}`);
        // TFLite's weights are [out, in] with the input in (h,w,c) order; ONNX flattened (c,h,w).
        const [fh, fw, fc] = flatFrom ?? [1, 1, ins];
        const oi = new Float32Array(outs * ins);
        for (let o = 0; o < outs; o++) for (let y = 0; y < fh; y++) for (let x = 0; x < fw; x++) for (let c = 0; c < fc; c++) {
          const onnxIn = (c * fh + y) * fw + x;
          oi[o * ins + (y * fw + x) * fc + c] = transB ? w.data[o * ins + onnxIn] : w.data[onnxIn * outs + o];
        }
        flatFrom = undefined;
        const b = n.input[2] ? f32(model, n.input[2]).data : new Float32Array(outs);
        if (b.length !== outs) throw new UnsupportedModelError(`export: Gemm "${n.name}" bias must have ${outs} values`);
        const wt = add({ name: n.input[1]!, dtype: 'float32', shape: [outs, ins], data: bytes(oi) });
        const bt = add({ name: n.input[2] || `${n.input[1]}.bias`, dtype: 'float32', shape: [outs], data: bytes(b) });
        shape = [1, outs];
        const y = add({ name: outName, dtype: 'float32', shape });
        operators.push({ op: 'FULLY_CONNECTED', inputs: [cur, wt, bt], outputs: [y], options: { kind: 'fully-connected', activation: act, weightsFormat: 0, keepNumDims: false } });
        cur = y;
        break;
      }
      case 'Relu': {
        const y = add({ name: out, dtype: 'float32', shape: [...shape] });
        operators.push({ op: 'RELU', inputs: [cur], outputs: [y] });
        cur = y;
        break;
      }
      default:
        throw new UnsupportedModelError(`export: ONNX op ${n.op_type} ("${n.name}") is not supported; the exporter handles Conv, Relu, MaxPool, Flatten and Gemm chains`);
    }
    if (fuse) i++;
  }
  if (tensors[cur].name !== g.output[0].name) throw new UnsupportedModelError(`export: the chain ends at "${tensors[cur].name}", not at the graph output "${g.output[0].name}"`);
  const spec: TfliteModelSpec = { description: 'keylock export of an ONNX reference model', tensors, inputs: [input], outputs: [cur], operators };
  return writeTflite(spec);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [src, dst] = process.argv.slice(2);
  if (!src || !dst) {
    process.stderr.write('usage: node --import tsx models/tflite/export.ts IN.onnx OUT.tflite\n');
    process.exit(2);
  }
  const out = onnxToTflite(new Uint8Array(readFileSync(src)));
  writeFileSync(dst, out);
  process.stdout.write(`wrote ${dst} (${out.byteLength} bytes)\n`);
}
