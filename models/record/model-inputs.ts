/**
 * A model's declared inputs, read from a `.klm` manifest (no key needed), an
 * ONNX graph or a TFLite subgraph, or given by hand (`--shape`).
 */
import { extname } from 'node:path';
import { UnsupportedModelError } from '../../keystore/errors.ts';
import { openKlm, type IOSpec } from '../../runtime/klm.ts';
import { isDType } from '../../runtime/tensor.ts';
import { decodeModel } from '../onnx/codec.ts';
import { describeValue, runtimeInputs } from '../onnx/graph.ts';
import { isTflite, readTflite } from '../tflite/codec.ts';
import { RecordOptionError } from './options.ts';
import type { Dim, InputSpec } from './spec.ts';

/** Turns a declared IO entry into an InputSpec, refusing dtypes a recorded file cannot carry. */
function toSpec(io: IOSpec, where: string): InputSpec {
  if (!isDType(io.dtype)) {
    throw new UnsupportedModelError(`${where}: input "${io.name}" is ${io.dtype}; recorded files carry float32, float64, int8..int64, uint8..uint64 or bool`);
  }
  return { name: io.name, dtype: io.dtype, shape: [...io.shape] };
}

function onnxInputs(bytes: Uint8Array, where: string): InputSpec[] {
  const model = decodeModel(bytes);
  return runtimeInputs(model).map((v) => {
    const d = describeValue(v);
    if (!d || !d.dims) throw new UnsupportedModelError(`${where}: input "${v.name}" declares no tensor shape; give one with --shape`);
    // ONNX writes an unknown dim as no value (null here) or 0; both are dynamic, as in the lock manifest.
    const shape: Dim[] = d.dims.map((x, i) => (x === null || x === 0 ? `d${i}` : x));
    return toSpec({ name: v.name ?? '', dtype: d.dtype, shape }, where);
  });
}

function tfliteInputs(bytes: Uint8Array, where: string): InputSpec[] {
  const g = readTflite(bytes).subgraphs[0];
  if (!g) throw new UnsupportedModelError(`${where}: the TFLite model has no subgraph`);
  return g.inputs.map((i) => {
    const t = g.tensors[i];
    // shape_signature marks dynamic dims with -1; `shape` holds 1 there.
    return toSpec({ name: t.name, dtype: t.dtype, shape: [...(t.shapeSignature ?? t.shape)] }, where);
  });
}

/**
 * The user-facing inputs of a model file: `.klm` (manifest; the signature is
 * checked against the key it names, no model key is needed), `.onnx` (graph
 * inputs that are not initializers) or `.tflite` (first subgraph). The kind
 * comes from the extension, else from the bytes.
 */
export function modelInputs(bytes: Uint8Array, path = 'model'): InputSpec[] {
  const ext = extname(path).toLowerCase();
  let specs: InputSpec[];
  if (ext === '.klm') specs = openKlm(bytes).manifest.inputs.map((io) => toSpec(io, path));
  else if (ext === '.tflite' || isTflite(bytes)) specs = tfliteInputs(bytes, path);
  else if (ext === '.onnx' || bytes[0] !== 0xa5) specs = onnxInputs(bytes, path);
  else specs = openKlm(bytes).manifest.inputs.map((io) => toSpec(io, path)); // a 5-field CBOR map: a .klm by another name
  if (!specs.length) throw new UnsupportedModelError(`${path}: the model declares no inputs`);
  return specs;
}

/** Parses `1,1,28,28` (a dim may be `-1`, `?` or a name for a dynamic dim). */
export function parseShape(text: string): Dim[] {
  const dims = text.split(/[,x×]/).map((s) => s.trim());
  return dims.map((s) => {
    if (/^\d+$/.test(s)) return Number(s);
    if (s === '-1' || s === '?') return -1;
    if (/^[A-Za-z_][\w]*$/.test(s)) return s;
    throw new RecordOptionError(`--shape "${text}": expected comma-separated sizes (-1 or a name for a dynamic dim), got "${s}"`, 'e.g. --shape 1,1,28,28 or --shape N,16000');
  });
}

/** An input given by hand: name, shape text and dtype (without a model file). */
export function shapeInputs(name: string, shape: string, dtype = 'float32'): InputSpec[] {
  if (!isDType(dtype)) throw new RecordOptionError(`--dtype: expected float32, float64, int8, uint8, int16, uint16, int32, uint32, int64, uint64 or bool, got "${dtype}"`);
  return [{ name, dtype, shape: parseShape(shape) }];
}
