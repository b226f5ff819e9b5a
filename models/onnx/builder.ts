/**
 * Builders for small ONNX models from scratch (reference models exported from
 * tfjs-trained weights, test models). Defaults: ir_version 7, opset 13, which
 * every onnxruntime-web build runs.
 */
import { bytesOf, type DType, type TensorArray } from '../../runtime/tensor.ts';
import { makeAttribute, type AttributeInput } from './attributes.ts';
import { dataTypeInfo, rawByteLength, toDataType, type DataTypeInfo, type OnnxDTypeName } from './dtypes.ts';
import type {
  GraphProto, NodeProto, OnnxModel, OperatorSetIdProto, TensorProto, TensorShapeDimension, ValueInfoProto,
} from './types.ts';

/** A dimension for makeValueInfo: a number, a symbolic name, or null (unknown). */
export type DimInput = number | string | null;

/** Data for makeTensor: see makeTensor for which forms each element type accepts. */
export type TensorInput = TensorArray | readonly number[] | readonly bigint[] | readonly string[];

const ARRAYS: Readonly<Record<DType, { new (n: number): TensorArray; name: string }>> = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array, int16: Int16Array,
  uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array,
  bool: Uint8Array,
};

function kindOf(v: unknown): string {
  return Object.prototype.toString.call(v).slice(8, -1);
}

function checkDims(dims: readonly number[], what: string): number {
  let n = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`${what}: dims must be non-negative integers, got [${dims.join(', ')}]`);
    n *= d;
  }
  return n;
}

/** Little-endian bytes for `data` as elements of `info`, checked against `count`. */
function elementBytes(info: DataTypeInfo, count: number, data: TensorInput, what: string): Uint8Array {
  if (info.dtype) {
    const C = ARRAYS[info.dtype];
    let arr: TensorArray;
    if (Array.isArray(data)) {
      const src = data as readonly (number | bigint | string)[];
      arr = new C(src.length);
      const big = info.dtype === 'int64' || info.dtype === 'uint64';
      for (let i = 0; i < src.length; i++) {
        const v = src[i]!;
        if (typeof v === 'string') throw new TypeError(`${what}: ${info.name} data must be numbers, got a string`);
        (arr as unknown as (number | bigint)[])[i] = big ? BigInt(v) : Number(v);
        // Integer arrays wrap out-of-range values silently; refuse instead of writing another number.
        if (info.dtype !== 'float32' && info.dtype !== 'float64' && arr[i] != v) throw new RangeError(`${what}: ${String(v)} is not a ${info.name} value`);
      }
    } else if (kindOf(data) === C.name) {
      arr = data as TensorArray;
    } else {
      throw new TypeError(`${what}: ${info.name} data must be a ${C.name} or an array of numbers, got ${kindOf(data)}`);
    }
    if (arr.length !== count) throw new RangeError(`${what}: dims need ${count} elements, got ${arr.length}`);
    return bytesOf(arr).slice();
  }
  if (!(data instanceof Uint8Array)) throw new TypeError(`${what}: ${info.name} data must be its little-endian bytes as a Uint8Array, got ${kindOf(data)}`);
  const want = rawByteLength(info, count);
  if (data.byteLength !== want) throw new RangeError(`${what}: ${info.name} dims need ${want} bytes, got ${data.byteLength}`);
  return data.slice();
}

/** The typed-field values (float_data, int32_data, ...) for little-endian `raw` bytes of `info`. */
function typedValues(info: DataTypeInfo, raw: Uint8Array): Partial<TensorProto> {
  const buf = raw.slice().buffer; // aligned copy
  switch (info.typedField) {
    case 'float_data': return { float_data: Array.from(new Float32Array(buf)) };
    case 'double_data': return { double_data: Array.from(new Float64Array(buf)) };
    case 'int64_data': return { int64_data: Array.from(new BigInt64Array(buf)) };
    case 'uint64_data': return { uint64_data: info.bits === 32 ? Array.from(new Uint32Array(buf)) : Array.from(new BigUint64Array(buf)) };
    case 'int32_data': {
      if (info.bits === 32) return { int32_data: Array.from(new Int32Array(buf)) };
      if (info.bits === 16) return { int32_data: Array.from(info.name === 'int16' ? new Int16Array(buf) : new Uint16Array(buf)) };
      return { int32_data: Array.from(info.name === 'int8' ? new Int8Array(buf) : new Uint8Array(buf)) };
    }
    default: throw new TypeError(`${info.name} tensors have no typed numeric field`);
  }
}

/** A TensorProto with every repeated field present and empty. */
function emptyTensor(name: string, dataType: number, dims: readonly number[]): TensorProto {
  return {
    name, data_type: dataType, dims: dims.map((d) => BigInt(d)), float_data: [], int32_data: [], string_data: [],
    int64_data: [], double_data: [], uint64_data: [], external_data: [], metadata_props: [],
  };
}

/**
 * Builds a tensor. `data`: for types with a JS typed array (float32, int64, bool,
 * ...) that typed array or an array of numbers/bigints (integer values must fit
 * the type exactly); for float16, bfloat16, float8, 4-bit and complex types the
 * little-endian bytes as a Uint8Array; for strings an array of strings.
 * The data is copied. Elements go to raw_data unless `typed` is set, which puts
 * them in the schema's typed field (float_data, int32_data, int64_data, ...).
 */
export function makeTensor(name: string, dtype: OnnxDTypeName | DType | number, dims: readonly number[], data: TensorInput, opts: { typed?: boolean } = {}): TensorProto {
  const info = dataTypeInfo(toDataType(dtype))!;
  const what = `tensor '${name}'`;
  const count = checkDims(dims, what);
  const t = emptyTensor(name, info.id, dims);
  if (info.bits === 0) {
    if (!Array.isArray(data) || !data.every((s) => typeof s === 'string')) throw new TypeError(`${what}: string data must be an array of strings`);
    if (data.length !== count) throw new RangeError(`${what}: dims need ${count} elements, got ${data.length}`);
    const enc = new TextEncoder();
    t.string_data = (data as string[]).map((s) => enc.encode(s));
    return t;
  }
  const raw = elementBytes(info, count, data, what);
  return opts.typed ? { ...t, ...typedValues(info, raw) } : { ...t, raw_data: raw };
}

/**
 * Builds a node. Attribute values follow makeAttribute's rules (integers become
 * INT, other numbers FLOAT; wrap as `{ float: 1 }` to force a type); undefined
 * values are skipped.
 */
export function makeNode(
  op: string, inputs: readonly string[], outputs: readonly string[],
  attrs: Readonly<Record<string, AttributeInput | undefined>> = {}, name?: string, domain?: string,
): NodeProto {
  const node: NodeProto = {
    op_type: op, input: [...inputs], output: [...outputs],
    attribute: Object.entries(attrs).filter(([, v]) => v !== undefined).map(([k, v]) => makeAttribute(k, v!)),
    metadata_props: [], device_configurations: [],
  };
  if (name !== undefined) node.name = name;
  if (domain !== undefined && domain !== '') node.domain = domain;
  return node;
}

/** A shape dimension from a number, a symbol, or null (unknown). */
function makeDim(d: DimInput): TensorShapeDimension {
  if (d === null) return {};
  if (typeof d === 'string') return { dim_param: d };
  if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`a dimension must be a non-negative integer, a name or null, got ${d}`);
  return { dim_value: BigInt(d) };
}

/** A tensor-typed ValueInfoProto; omit `dims` for an unknown rank. */
export function makeValueInfo(name: string, dtype: OnnxDTypeName | DType | number, dims?: readonly DimInput[]): ValueInfoProto {
  const tensor_type = dims === undefined
    ? { elem_type: toDataType(dtype) }
    : { elem_type: toDataType(dtype), shape: { dim: dims.map(makeDim) } };
  return { name, type: { tensor_type }, metadata_props: [] };
}

/** What makeGraph takes. */
export interface GraphSpec {
  name?: string;
  nodes: NodeProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  initializers?: TensorProto[];
  valueInfo?: ValueInfoProto[];
  docString?: string;
}

/** Builds a graph (also for If/Loop bodies). */
export function makeGraph(spec: GraphSpec): GraphProto {
  const g: GraphProto = {
    name: spec.name ?? 'graph', node: [...spec.nodes], input: [...spec.inputs], output: [...spec.outputs],
    initializer: [...(spec.initializers ?? [])], sparse_initializer: [], value_info: [...(spec.valueInfo ?? [])],
    quantization_annotation: [], metadata_props: [],
  };
  if (spec.docString !== undefined) g.doc_string = spec.docString;
  return g;
}

/** What makeModel takes: a graph's parts plus model-level fields. */
export interface ModelSpec extends GraphSpec {
  /** Default-domain opset version (default 13), or the full opset_import list. */
  opset?: number | { domain?: string; version: number }[];
  /** Default 7 (accepted by every onnxruntime build keylock supports). */
  irVersion?: number;
  /** Default 'keylock'. */
  producerName?: string;
  producerVersion?: string;
  /** Model metadata_props. */
  metadata?: Record<string, string>;
}

/** Builds a model around a new graph. */
export function makeModel(spec: ModelSpec): OnnxModel {
  const opset: OperatorSetIdProto[] = typeof spec.opset === 'object'
    ? spec.opset.map((o) => ({ domain: o.domain ?? '', version: BigInt(o.version) }))
    : [{ domain: '', version: BigInt(spec.opset ?? 13) }];
  const model: OnnxModel = {
    ir_version: BigInt(spec.irVersion ?? 7),
    opset_import: opset,
    producer_name: spec.producerName ?? 'keylock',
    graph: makeGraph(spec),
    metadata_props: Object.entries(spec.metadata ?? {}).map(([key, value]) => ({ key, value })),
    training_info: [], functions: [], configuration: [],
  };
  if (spec.producerVersion !== undefined) model.producer_version = spec.producerVersion;
  return model;
}
