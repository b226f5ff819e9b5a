/**
 * float16 TFLite models, the way mobile exporters write them (TensorFlow Lite's
 * post-training float16 quantization): every float32 weight is stored as a
 * float16 constant and a DEQUANTIZE op turns it back into float32 before the
 * layer reads it, halving the file. `tfliteToFloat16` rewrites a float32 model
 * so with keylock's own writer (models/tflite/writer.ts); the lockers and tests
 * use it to get a real model's weights into that layout.
 *
 *   node --import tsx models/tflite/float16.ts IN.tflite OUT.tflite
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UnsupportedModelError } from '../../keystore/errors.ts';
import { readTflite } from './codec.ts';
import { writeTflite, type TfliteModelSpec, type TfliteOperatorSpec, type TfliteTensorSpec } from './writer.ts';
import { BUILTIN } from '../../runtime/tflite-schema.ts';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The IEEE 754 binary16 bits nearest to `x` (ties to even; overflow to ±Infinity; NaN stays NaN). */
export function float16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf / NaN
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // too large: Inf
  if (e <= 0) {
    // Subnormal (or zero) in half precision.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) { m = 0; e++; if (e >= 0x1f) return sign | 0x7c00; }
  }
  return sign | (e << 10) | m;
}

/** The float32 value of binary16 bits `h` (exact). */
export function float16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** float32 little-endian bytes -> float16 little-endian bytes. */
export function toFloat16Bytes(data: Uint8Array): Uint8Array {
  const src = new Float32Array(data.slice().buffer);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = float16Bits(src[i]!);
  return new Uint8Array(out.buffer);
}

/**
 * A float32 TFLite model with every float32 constant an operator reads stored
 * as float16 behind a DEQUANTIZE (the DEQUANTIZE outputs keep the original
 * tensor names, so the layers read what they read before). One subgraph; every
 * operator must be one the writer can write with its options.
 * @throws UnsupportedModelError naming the op the writer cannot carry over.
 */
export function tfliteToFloat16(bytes: Uint8Array): Uint8Array {
  const model = readTflite(bytes);
  if (model.subgraphs.length !== 1) throw new UnsupportedModelError(`float16 export: the model has ${model.subgraphs.length} subgraphs; the writer writes one`);
  const g = model.subgraphs[0]!;
  const names = Object.keys(BUILTIN) as (keyof typeof BUILTIN)[];
  const tensors: TfliteTensorSpec[] = [];
  const dequantize: TfliteOperatorSpec[] = [];
  const map = new Map<number, number>();
  const constant = (t: (typeof g.tensors)[number]): Uint8Array | undefined => {
    const b = model.buffers[t.buffer];
    return b && b.length ? bytes.slice(b.offset, b.offset + b.length) : undefined;
  };
  for (const t of g.tensors) {
    const data = constant(t);
    const spec: TfliteTensorSpec = { name: t.name, dtype: t.dtype, shape: [...t.shape], shapeSignature: t.shapeSignature, quantization: t.quantization };
    if (data && t.dtype === 'float32' && !t.isVariable) {
      // The float16 constant, then the float32 tensor its DEQUANTIZE writes under the original name.
      tensors.push({ name: `${t.name}_float16`, dtype: 'float16', shape: [...t.shape], data: toFloat16Bytes(data) });
      const half = tensors.length - 1;
      tensors.push(spec);
      map.set(t.index, tensors.length - 1);
      dequantize.push({ op: 'DEQUANTIZE', inputs: [half], outputs: [tensors.length - 1] });
    } else {
      if (data) spec.data = data;
      tensors.push(spec);
      map.set(t.index, tensors.length - 1);
    }
  }
  const at = (i: number): number => (i < 0 ? -1 : map.get(i)!);
  const operators: TfliteOperatorSpec[] = [...dequantize];
  for (const op of g.operators) {
    const name = names.find((n) => BUILTIN[n] === op.builtin);
    if (!name || op.op.startsWith('CUSTOM')) throw new UnsupportedModelError(`float16 export: operator ${op.op} #${op.index} is not one the writer can write`);
    if (op.optionsType !== 0 && !op.options) throw new UnsupportedModelError(`float16 export: the writer cannot carry over the options of ${op.op} #${op.index}`);
    operators.push({ op: name, inputs: op.inputs.map(at), outputs: op.outputs.map(at), options: op.options });
  }
  const spec: TfliteModelSpec = {
    description: `keylock float16 export (weights float16 behind DEQUANTIZE) of: ${model.description}`,
    tensors, inputs: g.inputs.map(at), outputs: g.outputs.map(at), operators,
  };
  return writeTflite(spec);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [input, output] = process.argv.slice(2);
  if (!input || !output) {
    process.stderr.write('usage: node --import tsx models/tflite/float16.ts IN.tflite OUT.tflite\n');
    process.exit(2);
  }
  const out = tfliteToFloat16(new Uint8Array(readFileSync(input)));
  writeFileSync(output, out);
  process.stdout.write(`wrote ${output} (${out.byteLength} bytes)\n`);
}
