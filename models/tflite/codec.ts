/**
 * TFLite model reader (vendor side): the parts of the official schema.fbs
 * that locking needs (runtime/tflite-schema.ts lists the field ids), read with
 * the bounds-checked flatbuffer reader of runtime/flatbuffers.ts.
 *
 * A model's weights live in `Model.buffers`; a tensor names its buffer by
 * index, buffer 0 is the empty sentinel. Each non-empty buffer's data is one
 * contiguous byte range of the file, so locks edit the file in place (same
 * length) and the manifest addresses weights by those ranges, as for ONNX.
 *
 * Refused (UnsupportedModelError): buffers stored outside the flatbuffer
 * (schema 3c, `Buffer.offset > 1`, for models over 2 GB); sparse tensors are
 * listed but flagged, since their buffer is not a dense row-major array.
 */
import { FormatError, UnsupportedModelError } from '../../keystore/errors.ts';
import { FlatBuffer, type FlatTable } from '../../runtime/flatbuffers.ts';
import {
  ACTIVATIONS, BUFFER, BUILTIN, builtinName, CONV_2D_OPTIONS, DEPTHWISE_OPTIONS, FULLY_CONNECTED_OPTIONS, MODEL, OPERATOR, OPERATOR_CODE,
  OPTIONS_TYPE, PADDING, POOL_2D_OPTIONS, QUANTIZATION, RESHAPE_OPTIONS, SUBGRAPH, TENSOR, tensorTypeName, TFLITE_IDENTIFIER,
} from '../../runtime/tflite-schema.ts';

/** QuantizationParameters: real = scale * (q - zeroPoint), per channel along `quantizedDimension` when there are several. */
export interface TfliteQuantization {
  scale: number[];
  zeroPoint: number[];
  quantizedDimension: number;
}

export interface TfliteTensor {
  index: number;
  name: string;
  shape: number[];
  /** -1 marks a dynamic dimension; absent when the file has no signature. */
  shapeSignature?: number[];
  /** TensorType value. */
  type: number;
  /** keylock dtype name, e.g. `float32`, `int8`. */
  dtype: string;
  /** Index into `buffers`; 0 = no data. */
  buffer: number;
  quantization?: TfliteQuantization;
  isVariable: boolean;
  /** True when the tensor has sparsity parameters (its buffer is not dense). */
  sparse: boolean;
}

export type Padding = (typeof PADDING)[number];
export type Activation = (typeof ACTIVATIONS)[number];

/** Options of CONV_2D and DEPTHWISE_CONV_2D. */
export interface ConvOptions {
  kind: 'conv';
  padding: Padding;
  strideW: number;
  strideH: number;
  activation: Activation;
  dilationW: number;
  dilationH: number;
  /** DEPTHWISE_CONV_2D only. */
  depthMultiplier?: number;
}

export interface FullyConnectedOptions {
  kind: 'fully-connected';
  activation: Activation;
  /** 0 = DEFAULT; anything else is a packed int8 layout. */
  weightsFormat: number;
  keepNumDims: boolean;
}

export interface PoolOptions {
  kind: 'pool';
  padding: Padding;
  strideW: number;
  strideH: number;
  filterWidth: number;
  filterHeight: number;
  activation: Activation;
}

export interface ReshapeOptions {
  kind: 'reshape';
  newShape?: number[];
}

export type OperatorOptions = ConvOptions | FullyConnectedOptions | PoolOptions | ReshapeOptions;

export interface TfliteOperator {
  index: number;
  opcodeIndex: number;
  /** Resolved BuiltinOperator (max of deprecated_builtin_code and builtin_code, as TFLite does). */
  builtin: number;
  /** Its name, or `CUSTOM:<code>` for a custom op. */
  op: string;
  /** Tensor indices; -1 = an omitted optional input. */
  inputs: number[];
  outputs: number[];
  /** BuiltinOptions union type. */
  optionsType: number;
  /** Parsed for CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, pools and RESHAPE. */
  options?: OperatorOptions;
}

export interface TfliteSubgraph {
  name: string;
  tensors: TfliteTensor[];
  inputs: number[];
  outputs: number[];
  operators: TfliteOperator[];
}

export interface TfliteOperatorCode {
  builtin: number;
  custom?: string;
  version: number;
}

/** One entry of `Model.buffers`: where its data sits in the file. */
export interface TfliteBuffer {
  index: number;
  /** Offset of the first data byte in the file (0 when empty). */
  offset: number;
  length: number;
}

export interface TfliteModel {
  version: number;
  description: string;
  operatorCodes: TfliteOperatorCode[];
  subgraphs: TfliteSubgraph[];
  buffers: TfliteBuffer[];
  /** File length: every buffer range lies below it. */
  byteLength: number;
}

/** Largest model keylock reads (the flatbuffer format's own limit is 2 GiB). */
export const MAX_TFLITE_BYTES = 0x7fff_f000;

/** True when `bytes` carries the TFLite file identifier. */
export function isTflite(bytes: Uint8Array): boolean {
  return bytes.byteLength >= 8 && new FlatBuffer(bytes, 'TFLite model').identifier() === TFLITE_IDENTIFIER;
}

function quantization(t: FlatTable): TfliteQuantization | undefined {
  const scale = t.floats(QUANTIZATION.scale, 'scale') ?? [];
  const zeroPoint = t.longs(QUANTIZATION.zeroPoint, 'zero_point') ?? [];
  if (!scale.length && !zeroPoint.length) return undefined;
  return { scale, zeroPoint, quantizedDimension: t.i32(QUANTIZATION.quantizedDimension, 'quantized_dimension') };
}

function enumName<T extends readonly string[]>(names: T, v: number, what: string): T[number] {
  const n = names[v];
  if (n === undefined) throw new FormatError(`TFLite model: ${what} is ${v}; expected 0..${names.length - 1}`);
  return n;
}

function options(op: FlatTable, builtin: number, type: number, what: string): OperatorOptions | undefined {
  const o = op.table(OPERATOR.builtinOptions, `${what} options`);
  const expect = (want: number): boolean => {
    if (type !== want) throw new FormatError(`TFLite model: ${what} (${builtinName(builtin)}) carries options of union type ${type}, expected ${want}`);
    return o !== undefined;
  };
  switch (builtin) {
    case BUILTIN.CONV_2D:
      if (!expect(OPTIONS_TYPE.Conv2DOptions)) return undefined;
      return {
        kind: 'conv', padding: enumName(PADDING, o!.i8(CONV_2D_OPTIONS.padding, 'padding'), `${what} padding`),
        strideW: o!.i32(CONV_2D_OPTIONS.strideW, 'stride_w'), strideH: o!.i32(CONV_2D_OPTIONS.strideH, 'stride_h'),
        activation: enumName(ACTIVATIONS, o!.i8(CONV_2D_OPTIONS.activation, 'fused_activation_function'), `${what} activation`),
        dilationW: o!.i32(CONV_2D_OPTIONS.dilationW, 'dilation_w_factor', 1), dilationH: o!.i32(CONV_2D_OPTIONS.dilationH, 'dilation_h_factor', 1),
      };
    case BUILTIN.DEPTHWISE_CONV_2D:
      if (!expect(OPTIONS_TYPE.DepthwiseConv2DOptions)) return undefined;
      return {
        kind: 'conv', padding: enumName(PADDING, o!.i8(DEPTHWISE_OPTIONS.padding, 'padding'), `${what} padding`),
        strideW: o!.i32(DEPTHWISE_OPTIONS.strideW, 'stride_w'), strideH: o!.i32(DEPTHWISE_OPTIONS.strideH, 'stride_h'),
        depthMultiplier: o!.i32(DEPTHWISE_OPTIONS.depthMultiplier, 'depth_multiplier'),
        activation: enumName(ACTIVATIONS, o!.i8(DEPTHWISE_OPTIONS.activation, 'fused_activation_function'), `${what} activation`),
        dilationW: o!.i32(DEPTHWISE_OPTIONS.dilationW, 'dilation_w_factor', 1), dilationH: o!.i32(DEPTHWISE_OPTIONS.dilationH, 'dilation_h_factor', 1),
      };
    case BUILTIN.FULLY_CONNECTED:
      if (!expect(OPTIONS_TYPE.FullyConnectedOptions)) return undefined;
      return {
        kind: 'fully-connected',
        activation: enumName(ACTIVATIONS, o!.i8(FULLY_CONNECTED_OPTIONS.activation, 'fused_activation_function'), `${what} activation`),
        weightsFormat: o!.i8(FULLY_CONNECTED_OPTIONS.weightsFormat, 'weights_format'),
        keepNumDims: o!.bool(FULLY_CONNECTED_OPTIONS.keepNumDims, 'keep_num_dims'),
      };
    case BUILTIN.MAX_POOL_2D:
    case BUILTIN.AVERAGE_POOL_2D:
      if (!expect(OPTIONS_TYPE.Pool2DOptions)) return undefined;
      return {
        kind: 'pool', padding: enumName(PADDING, o!.i8(POOL_2D_OPTIONS.padding, 'padding'), `${what} padding`),
        strideW: o!.i32(POOL_2D_OPTIONS.strideW, 'stride_w'), strideH: o!.i32(POOL_2D_OPTIONS.strideH, 'stride_h'),
        filterWidth: o!.i32(POOL_2D_OPTIONS.filterWidth, 'filter_width'), filterHeight: o!.i32(POOL_2D_OPTIONS.filterHeight, 'filter_height'),
        activation: enumName(ACTIVATIONS, o!.i8(POOL_2D_OPTIONS.activation, 'fused_activation_function'), `${what} activation`),
      };
    case BUILTIN.RESHAPE:
      if (type === OPTIONS_TYPE.NONE) return { kind: 'reshape' };
      if (!expect(OPTIONS_TYPE.ReshapeOptions)) return { kind: 'reshape' };
      return { kind: 'reshape', newShape: o!.ints(RESHAPE_OPTIONS.newShape, 'new_shape') };
    default:
      return undefined;
  }
}

function checkIndex(i: number, n: number, what: string, optional: boolean): void {
  if (optional && i === -1) return;
  if (!Number.isInteger(i) || i < 0 || i >= n) throw new FormatError(`TFLite model: ${what} is ${i}; expected 0..${n - 1}${optional ? ' or -1' : ''}`);
}

/**
 * Reads a TFLite flatbuffer. FormatError for a file that is not one (no
 * "TFL3" identifier), is truncated or refers outside itself;
 * UnsupportedModelError for buffers kept outside the flatbuffer.
 */
export function readTflite(bytes: Uint8Array): TfliteModel {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('readTflite: expected a Uint8Array');
  if (bytes.byteLength > MAX_TFLITE_BYTES) throw new UnsupportedModelError(`TFLite model is ${bytes.byteLength} bytes; keylock reads at most ${MAX_TFLITE_BYTES}`);
  const fb = new FlatBuffer(bytes, 'TFLite model');
  if (bytes.byteLength < 8 || fb.identifier() !== TFLITE_IDENTIFIER) {
    const got = bytes.byteLength < 8 ? `a ${bytes.byteLength}-byte file` : JSON.stringify(fb.identifier());
    throw new FormatError(`not a TFLite model: expected the file identifier "${TFLITE_IDENTIFIER}" at bytes 4..8, got ${got}`);
  }
  const root = fb.root('Model');
  const version = root.u32(MODEL.version, 'version');
  if (version !== 3) throw new FormatError(`TFLite model: schema version ${version}; keylock reads version 3`);

  const operatorCodes = root.tables(MODEL.operatorCodes, 'OperatorCode', 'operator_codes').map((c, i): TfliteOperatorCode => {
    const deprecated = c.i8(OPERATOR_CODE.deprecatedBuiltinCode, 'deprecated_builtin_code');
    const code = c.i32(OPERATOR_CODE.builtinCode, 'builtin_code');
    const custom = c.string(OPERATOR_CODE.customCode, 'custom_code');
    if (deprecated < 0 || code < 0) throw new FormatError(`TFLite model: operator code ${i} is negative`);
    return { builtin: Math.max(deprecated, code), custom, version: c.i32(OPERATOR_CODE.version, 'version', 1) };
  });

  const buffers = root.tables(MODEL.buffers, 'Buffer', 'buffers').map((b, index): TfliteBuffer => {
    const external = b.u64(BUFFER.offset, 'offset');
    if (external > 1) {
      throw new UnsupportedModelError(`TFLite buffer ${index} keeps its ${b.u64(BUFFER.size, 'size')} bytes outside the flatbuffer (at file offset ${external}), as models over 2 GB do; keylock locks only models whose weights are inside the flatbuffer`);
    }
    const r = b.byteRange(BUFFER.data, 'data');
    return { index, offset: r && r.length ? r.offset : 0, length: r?.length ?? 0 };
  });

  const subgraphs = root.tables(MODEL.subgraphs, 'SubGraph', 'subgraphs').map((g, gi): TfliteSubgraph => {
    const tensors = g.tables(SUBGRAPH.tensors, 'Tensor', 'tensors').map((t, index): TfliteTensor => {
      const type = t.i8(TENSOR.type, 'type');
      const q = t.table(TENSOR.quantization, 'QuantizationParameters');
      const tensor: TfliteTensor = {
        index, name: t.string(TENSOR.name, 'name') ?? '', shape: t.ints(TENSOR.shape, 'shape') ?? [], type, dtype: tensorTypeName(type),
        buffer: t.u32(TENSOR.buffer, 'buffer'), quantization: q && quantization(q), isVariable: t.bool(TENSOR.isVariable, 'is_variable'),
        sparse: t.has(TENSOR.sparsity),
      };
      const sig = t.ints(TENSOR.shapeSignature, 'shape_signature');
      if (sig) tensor.shapeSignature = sig;
      checkIndex(tensor.buffer, Math.max(buffers.length, 1), `subgraph ${gi} tensor ${index} ("${tensor.name}") buffer`, false);
      return tensor;
    });
    const operators = g.tables(SUBGRAPH.operators, 'Operator', 'operators').map((o, index): TfliteOperator => {
      const opcodeIndex = o.u32(OPERATOR.opcodeIndex, 'opcode_index');
      checkIndex(opcodeIndex, operatorCodes.length, `subgraph ${gi} operator ${index} opcode_index`, false);
      const code = operatorCodes[opcodeIndex];
      const inputs = o.ints(OPERATOR.inputs, 'inputs') ?? [];
      const outputs = o.ints(OPERATOR.outputs, 'outputs') ?? [];
      inputs.forEach((x, k) => checkIndex(x, tensors.length, `subgraph ${gi} operator ${index} input ${k}`, true));
      outputs.forEach((x, k) => checkIndex(x, tensors.length, `subgraph ${gi} operator ${index} output ${k}`, false));
      const optionsType = o.u8(OPERATOR.builtinOptionsType, 'builtin_options_type');
      const what = `subgraph ${gi} operator ${index}`;
      return {
        index, opcodeIndex, builtin: code.builtin, op: code.custom !== undefined && code.builtin === BUILTIN.CUSTOM ? `CUSTOM:${code.custom}` : builtinName(code.builtin),
        inputs, outputs, optionsType, options: options(o, code.builtin, optionsType, what),
      };
    });
    const inputs = g.ints(SUBGRAPH.inputs, 'inputs') ?? [];
    const outputs = g.ints(SUBGRAPH.outputs, 'outputs') ?? [];
    inputs.forEach((x, k) => checkIndex(x, tensors.length, `subgraph ${gi} input ${k}`, false));
    outputs.forEach((x, k) => checkIndex(x, tensors.length, `subgraph ${gi} output ${k}`, false));
    return { name: g.string(SUBGRAPH.name, 'name') ?? '', tensors, inputs, outputs, operators };
  });
  if (!subgraphs.length) throw new FormatError('TFLite model: no subgraphs');
  return { version, description: root.string(MODEL.description, 'description') ?? '', operatorCodes, subgraphs, buffers, byteLength: bytes.byteLength };
}
