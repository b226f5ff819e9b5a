/**
 * Field ids and enums of the TFLite flatbuffer schema, as in the official
 * tensorflow/lite/schema/schema.fbs, schema version 3 (file identifier
 * "TFL3"; revision 3c, which added Buffer.offset/size for models over 2 GB).
 * A field's id is its position in the table's declaration; a union takes two
 * ids (its type, then its value). Only the fields keylock reads or writes are
 * listed; new fields are only ever appended to the schema, so these ids hold.
 *
 *   table Model          { version:uint 0; operator_codes:[OperatorCode] 1; subgraphs:[SubGraph] 2;
 *                          description:string 3; buffers:[Buffer] 4; metadata_buffer 5; metadata 6; signature_defs 7 }
 *   table OperatorCode   { deprecated_builtin_code:byte 0; custom_code:string 1; version:int = 1 2;
 *                          builtin_code:BuiltinOperator(int) 3 }
 *   table SubGraph       { tensors:[Tensor] 0; inputs:[int] 1; outputs:[int] 2; operators:[Operator] 3; name:string 4 }
 *   table Tensor         { shape:[int] 0; type:TensorType(byte) 1; buffer:uint 2; name:string 3;
 *                          quantization:QuantizationParameters 4; is_variable:bool 5; sparsity 6;
 *                          shape_signature:[int] 7; has_rank:bool 8; variant_tensors 9 }
 *   table QuantizationParameters { min:[float] 0; max:[float] 1; scale:[float] 2; zero_point:[long] 3;
 *                          details (union) 4,5; quantized_dimension:int 6 }
 *   table Operator       { opcode_index:uint 0; inputs:[int] 1; outputs:[int] 2; builtin_options (union) 3,4;
 *                          custom_options:[ubyte] 5; ... large_custom_options_offset:ulong 9; _size 10 }
 *   table Buffer         { data:[ubyte] (force_align 16) 0; offset:ulong 1; size:ulong 2 }
 *   table Conv2DOptions  { padding 0; stride_w 1; stride_h 2; fused_activation_function 3;
 *                          dilation_w_factor = 1 4; dilation_h_factor = 1 5 }
 *   table DepthwiseConv2DOptions { padding 0; stride_w 1; stride_h 2; depth_multiplier 3;
 *                          fused_activation_function 4; dilation_w_factor = 1 5; dilation_h_factor = 1 6 }
 *   table FullyConnectedOptions { fused_activation_function 0; weights_format 1; keep_num_dims 2; asymmetric_quantize_inputs 3 }
 *   table Pool2DOptions  { padding 0; stride_w 1; stride_h 2; filter_width 3; filter_height 4; fused_activation_function 5 }
 *   table ReshapeOptions { new_shape:[int] 0 }
 */

export const TFLITE_IDENTIFIER = 'TFL3';

export const MODEL = { version: 0, operatorCodes: 1, subgraphs: 2, description: 3, buffers: 4 } as const;
export const OPERATOR_CODE = { deprecatedBuiltinCode: 0, customCode: 1, version: 2, builtinCode: 3 } as const;
export const SUBGRAPH = { tensors: 0, inputs: 1, outputs: 2, operators: 3, name: 4 } as const;
export const TENSOR = { shape: 0, type: 1, buffer: 2, name: 3, quantization: 4, isVariable: 5, sparsity: 6, shapeSignature: 7 } as const;
export const QUANTIZATION = { min: 0, max: 1, scale: 2, zeroPoint: 3, detailsType: 4, details: 5, quantizedDimension: 6 } as const;
export const OPERATOR = { opcodeIndex: 0, inputs: 1, outputs: 2, builtinOptionsType: 3, builtinOptions: 4, customOptions: 5 } as const;
export const BUFFER = { data: 0, offset: 1, size: 2 } as const;
export const CONV_2D_OPTIONS = { padding: 0, strideW: 1, strideH: 2, activation: 3, dilationW: 4, dilationH: 5 } as const;
export const DEPTHWISE_OPTIONS = { padding: 0, strideW: 1, strideH: 2, depthMultiplier: 3, activation: 4, dilationW: 5, dilationH: 6 } as const;
export const FULLY_CONNECTED_OPTIONS = { activation: 0, weightsFormat: 1, keepNumDims: 2 } as const;
export const POOL_2D_OPTIONS = { padding: 0, strideW: 1, strideH: 2, filterWidth: 3, filterHeight: 4, activation: 5 } as const;
export const RESHAPE_OPTIONS = { newShape: 0 } as const;

/** enum TensorType : byte, with keylock's dtype names (undefined: a type keylock does not carry). */
export const TENSOR_TYPES: readonly (readonly [number, string])[] = [
  [0, 'float32'], [1, 'float16'], [2, 'int32'], [3, 'uint8'], [4, 'int64'], [5, 'string'], [6, 'bool'],
  [7, 'int16'], [8, 'complex64'], [9, 'int8'], [10, 'float64'], [11, 'complex128'], [12, 'uint64'],
  [13, 'resource'], [14, 'variant'], [15, 'uint32'], [16, 'uint16'], [17, 'int4'], [18, 'bfloat16'],
];

/** The dtype name of a TensorType value (`type<N>` for one this table does not know). */
export function tensorTypeName(t: number): string {
  return TENSOR_TYPES.find(([n]) => n === t)?.[1] ?? `type${t}`;
}

/** The TensorType value of a dtype name. */
export function tensorTypeOf(name: string): number {
  const e = TENSOR_TYPES.find(([, s]) => s === name);
  if (!e) throw new RangeError(`TFLite has no tensor type "${name}"`);
  return e[0];
}

/** enum BuiltinOperator values keylock looks at. */
export const BUILTIN = {
  ADD: 0, AVERAGE_POOL_2D: 1, CONCATENATION: 2, CONV_2D: 3, DEPTHWISE_CONV_2D: 4, DEQUANTIZE: 6,
  FULLY_CONNECTED: 9, LOGISTIC: 14, MAX_POOL_2D: 17, MUL: 18, RELU: 19, RELU6: 21, RESHAPE: 22,
  SOFTMAX: 25, TANH: 28, CUSTOM: 32, PAD: 34, GATHER: 36, TRANSPOSE: 39, MEAN: 40, SUB: 41, DIV: 42, SQUEEZE: 43,
  STRIDED_SLICE: 45, CAST: 53, MAXIMUM: 55, MINIMUM: 57, GREATER_EQUAL: 62, EXPAND_DIMS: 70, LOG: 73, SUM: 74,
  SQRT: 75, RSQRT: 76, REDUCE_MAX: 82, LEAKY_RELU: 98, QUANTIZE: 114, IF: 118, WHILE: 119, BATCH_MATMUL: 126,
  /** deprecated_builtin_code value meaning "read builtin_code". */
  PLACEHOLDER_FOR_GREATER_OP_CODES: 127,
} as const;

/** Operator name of a BuiltinOperator value (`BUILTIN_<N>` for one not listed). */
export function builtinName(code: number): string {
  for (const [k, v] of Object.entries(BUILTIN)) if (v === code) return k;
  return `BUILTIN_${code}`;
}

/** union BuiltinOptions member types keylock parses. */
export const OPTIONS_TYPE = { NONE: 0, Conv2DOptions: 1, DepthwiseConv2DOptions: 2, Pool2DOptions: 5, FullyConnectedOptions: 8, ReshapeOptions: 17 } as const;

/** enum Padding : byte. */
export const PADDING = ['SAME', 'VALID'] as const;
/** enum ActivationFunctionType : byte. */
export const ACTIVATIONS = ['NONE', 'RELU', 'RELU_N1_TO_1', 'RELU6', 'TANH', 'SIGN_BIT'] as const;
