/**
 * Reading and replacing graph initializers (the model's weights) of a decoded model.
 */
import { type TensorArray, type TensorData } from '../../runtime/tensor.ts';
import { dataTypeInfo, dataTypeName, rawByteLength } from './dtypes.ts';
import { tensorData, tensorDims, tensorRawBytes } from './tensor-data.ts';
import type { GraphProto, OnnxModel, TensorProto, ValueInfoProto } from './types.ts';

/** The initializer named `name`, or undefined. */
export function findInitializer(model: OnnxModel, name: string): TensorProto | undefined {
  return model.graph.initializer.find((t) => t.name === name);
}

function mustFind(model: OnnxModel, name: string): TensorProto {
  const t = findInitializer(model, name);
  if (!t) throw new RangeError(`the graph has no initializer named '${name}'`);
  return t;
}

/**
 * An initializer's elements as a typed array (a copy: editing it does not change
 * the model). RangeError when there is no such initializer; UnsupportedModelError
 * for element types without a JS typed array (float16, bfloat16, float8, 4-bit,
 * complex, string) or unknown ones.
 */
export function getInitializer(model: OnnxModel, name: string): TensorData {
  return tensorData(mustFind(model, name), `initializer '${name}'`);
}

/** An initializer's elements as little-endian bytes (a copy), for any fixed-width element type. */
export function getInitializerBytes(model: OnnxModel, name: string): Uint8Array {
  return tensorRawBytes(mustFind(model, name), `initializer '${name}'`).slice();
}

const ARRAY_OF: Readonly<Record<string, string>> = {
  float32: 'Float32Array', float64: 'Float64Array', int8: 'Int8Array', uint8: 'Uint8Array', int16: 'Int16Array',
  uint16: 'Uint16Array', int32: 'Int32Array', uint32: 'Uint32Array', int64: 'BigInt64Array', uint64: 'BigUint64Array',
  bool: 'Uint8Array',
};

function checkDims(dims: readonly number[]): void {
  for (const d of dims) if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`dims must be non-negative integers, got [${dims.join(', ')}]`);
}

function countOf(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** Keeps declared shapes of a value (graph input, value_info) in step with a reshaped initializer. */
function updateDeclaredShapes(graph: GraphProto, name: string, dims: readonly number[]): void {
  const update = (vi: ValueInfoProto): void => {
    const tt = vi.name === name ? vi.type?.tensor_type : undefined;
    if (tt?.shape) tt.shape.dim = dims.map((d) => ({ dim_value: BigInt(d) }));
  };
  graph.input.forEach(update);
  graph.value_info.forEach(update);
}

function store(model: OnnxModel, t: TensorProto, bytes: Uint8Array, dims: readonly number[] | undefined): void {
  t.raw_data = bytes.slice();
  t.float_data = []; t.int32_data = []; t.int64_data = []; t.double_data = []; t.uint64_data = [];
  if (dims && (dims.length !== t.dims.length || dims.some((d, i) => BigInt(d) !== BigInt(t.dims[i]!)))) {
    t.dims = dims.map((d) => BigInt(d));
    updateDeclaredShapes(model.graph, t.name ?? '', dims);
  }
}

/**
 * Replaces an initializer's elements (stored as raw_data; the typed array is
 * copied). `data` must be the typed array of the initializer's element type
 * (Float32Array for float32, ...); `dims` (default: unchanged) must match its
 * length. A changed shape is also written to a graph input or value_info
 * that declares the same name. TypeError/RangeError on misuse.
 */
export function setInitializer(model: OnnxModel, name: string, data: TensorArray, dims?: readonly number[]): void {
  const t = mustFind(model, name);
  const info = dataTypeInfo(t.data_type);
  if (!info?.dtype) throw new TypeError(`initializer '${name}' is ${dataTypeName(t.data_type)}, which has no typed array; use setInitializerBytes`);
  const want = ARRAY_OF[info.dtype]!;
  const got = Object.prototype.toString.call(data).slice(8, -1); // works across realms, unlike instanceof
  if (got !== want) throw new TypeError(`initializer '${name}' is ${info.name}: expected a ${want}, got ${got}`);
  const newDims = dims ?? tensorDims(t);
  checkDims(newDims);
  if (countOf(newDims) !== data.length) throw new RangeError(`initializer '${name}': dims [${newDims.join(', ')}] need ${countOf(newDims)} elements, got ${data.length}`);
  store(model, t, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), dims);
}

/**
 * Replaces an initializer's elements with raw little-endian bytes, for any
 * fixed-width element type (float16, 4-bit packed, ...). The length must match
 * the element type and `dims` (default: unchanged).
 */
export function setInitializerBytes(model: OnnxModel, name: string, bytes: Uint8Array, dims?: readonly number[]): void {
  const t = mustFind(model, name);
  const info = dataTypeInfo(t.data_type);
  if (!info || info.bits === 0) throw new TypeError(`initializer '${name}' is ${dataTypeName(t.data_type)}, which has no raw byte form`);
  const newDims = dims ?? tensorDims(t);
  checkDims(newDims);
  const want = rawByteLength(info, countOf(newDims));
  if (bytes.byteLength !== want) throw new RangeError(`initializer '${name}': ${info.name} dims [${newDims.join(', ')}] need ${want} bytes, got ${bytes.byteLength}`);
  store(model, t, bytes, dims);
}

/** Adds an initializer; RangeError when its name is empty or already names a value of the graph. */
export function addInitializer(model: OnnxModel, tensor: TensorProto): void {
  const name = tensor.name ?? '';
  if (name === '') throw new RangeError('an initializer needs a name');
  const g = model.graph;
  const taken = g.initializer.some((t) => t.name === name) || g.input.some((v) => v.name === name)
    || g.node.some((n) => n.output.includes(name));
  if (taken) throw new RangeError(`the graph already has a value named '${name}'`);
  g.initializer.push(tensor);
}
