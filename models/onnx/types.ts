/**
 * Plain-object shapes of the ONNX messages, as `decodeModel` returns them and
 * `encodeModel` takes them. Field names are the schema's (snake_case).
 *
 * Repeated fields are always arrays after decoding (possibly empty); the builders
 * fill them too. Optional scalars are `undefined` when absent from the file.
 * 64-bit integers decode as `bigint`, so nothing loses precision (attribute ints
 * such as INT64_MAX are common); writers may use `number` where it is exact.
 */

/** An int64/uint64 field: `bigint` after decoding, `number` accepted when writing. */
export type Int64 = bigint | number;

/** A string key-value pair. */
export interface StringStringEntryProto {
  key?: string;
  value?: string;
}

/** An imported operator set. */
export interface OperatorSetIdProto {
  /** "" (or absent) is the default ONNX domain. */
  domain?: string;
  version?: Int64;
}

/** A chunk of a larger tensor (not supported by keylock; rejected on decode). */
export interface TensorSegment {
  begin?: Int64;
  end?: Int64;
}

/** A dense tensor. Exactly one of raw_data or the typed field for `data_type` holds its elements. */
export interface TensorProto {
  dims: Int64[];
  /** A TensorProto.DataType number (see `DataType`). */
  data_type?: number;
  segment?: TensorSegment;
  float_data: number[];
  int32_data: number[];
  string_data: Uint8Array[];
  int64_data: Int64[];
  name?: string;
  doc_string?: string;
  /** Little-endian elements. After decoding, a view into the model's own copy of the file bytes. */
  raw_data?: Uint8Array;
  external_data: StringStringEntryProto[];
  /** 0 = DEFAULT, 1 = EXTERNAL. */
  data_location?: number;
  double_data: number[];
  uint64_data: Int64[];
  metadata_props: StringStringEntryProto[];
}

/** A sparse tensor. */
export interface SparseTensorProto {
  values?: TensorProto;
  indices?: TensorProto;
  dims: Int64[];
}

/** One dimension of a shape: a number, a symbol, or neither (unknown). */
export interface TensorShapeDimension {
  dim_value?: Int64;
  dim_param?: string;
  denotation?: string;
}

/** A shape. */
export interface TensorShapeProto {
  dim: TensorShapeDimension[];
}

/** The type of a tensor value. */
export interface TypeProtoTensor {
  elem_type?: number;
  shape?: TensorShapeProto;
}

/** The type of a sequence value. */
export interface TypeProtoSequence {
  elem_type?: TypeProto;
}

/** The type of a map value. */
export interface TypeProtoMap {
  key_type?: number;
  value_type?: TypeProto;
}

/** The type of an optional value. */
export interface TypeProtoOptional {
  elem_type?: TypeProto;
}

/** The type of a value; one of the *_type fields is set. */
export interface TypeProto {
  tensor_type?: TypeProtoTensor;
  sequence_type?: TypeProtoSequence;
  map_type?: TypeProtoMap;
  optional_type?: TypeProtoOptional;
  sparse_tensor_type?: TypeProtoTensor;
  denotation?: string;
}

/** Name and type of a graph input, output or intermediate value. */
export interface ValueInfoProto {
  name?: string;
  type?: TypeProto;
  doc_string?: string;
  metadata_props: StringStringEntryProto[];
}

/** A node attribute; `type` (an AttributeProto.AttributeType number) names the field in use. */
export interface AttributeProto {
  name?: string;
  ref_attr_name?: string;
  doc_string?: string;
  type?: number;
  f?: number;
  i?: Int64;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  sparse_tensor?: SparseTensorProto;
  tp?: TypeProto;
  floats: number[];
  ints: Int64[];
  strings: Uint8Array[];
  tensors: TensorProto[];
  graphs: GraphProto[];
  sparse_tensors: SparseTensorProto[];
  type_protos: TypeProto[];
}

/** Key with a list of ints (sharding). */
export interface IntIntListEntryProto {
  key?: Int64;
  value: Int64[];
}

/** One axis split into shards. */
export interface SimpleShardedDimProto {
  dim_value?: Int64;
  dim_param?: string;
  num_shards?: Int64;
}

/** Sharding of one axis. */
export interface ShardedDimProto {
  axis?: Int64;
  simple_sharding: SimpleShardedDimProto[];
}

/** Sharding of one node input or output. */
export interface ShardingSpecProto {
  tensor_name?: string;
  device: Int64[];
  index_to_device_group_map: IntIntListEntryProto[];
  sharded_dim: ShardedDimProto[];
}

/** Multi-device annotation of a node. */
export interface NodeDeviceConfigurationProto {
  configuration_id?: string;
  sharding_spec: ShardingSpecProto[];
  pipeline_stage?: number;
}

/** One operator application. */
export interface NodeProto {
  input: string[];
  output: string[];
  name?: string;
  op_type?: string;
  domain?: string;
  overload?: string;
  attribute: AttributeProto[];
  doc_string?: string;
  metadata_props: StringStringEntryProto[];
  device_configurations: NodeDeviceConfigurationProto[];
}

/** Links a tensor to its quantization parameters. */
export interface TensorAnnotation {
  tensor_name?: string;
  quant_parameter_tensor_names: StringStringEntryProto[];
}

/** A computation graph; nodes are in topological order. */
export interface GraphProto {
  node: NodeProto[];
  name?: string;
  initializer: TensorProto[];
  sparse_initializer: SparseTensorProto[];
  doc_string?: string;
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  value_info: ValueInfoProto[];
  quantization_annotation: TensorAnnotation[];
  metadata_props: StringStringEntryProto[];
}

/** Training graphs. */
export interface TrainingInfoProto {
  initialization?: GraphProto;
  algorithm?: GraphProto;
  initialization_binding: StringStringEntryProto[];
  update_binding: StringStringEntryProto[];
}

/** A model-local function. */
export interface FunctionProto {
  name?: string;
  input: string[];
  output: string[];
  attribute: string[];
  attribute_proto: AttributeProto[];
  node: NodeProto[];
  doc_string?: string;
  opset_import: OperatorSetIdProto[];
  domain?: string;
  overload?: string;
  value_info: ValueInfoProto[];
  metadata_props: StringStringEntryProto[];
}

/** A named multi-device configuration. */
export interface DeviceConfigurationProto {
  name?: string;
  num_devices?: number;
  device: string[];
}

/** The ModelProto message. */
export interface ModelProto {
  ir_version?: Int64;
  opset_import: OperatorSetIdProto[];
  producer_name?: string;
  producer_version?: string;
  domain?: string;
  model_version?: Int64;
  doc_string?: string;
  graph?: GraphProto;
  metadata_props: StringStringEntryProto[];
  training_info: TrainingInfoProto[];
  functions: FunctionProto[];
  configuration: DeviceConfigurationProto[];
}

/** A model as keylock handles it: a ModelProto that has a graph. */
export interface OnnxModel extends ModelProto {
  graph: GraphProto;
}

/** AttributeProto.AttributeType numbers. */
export const AttributeType = {
  UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7,
  STRINGS: 8, TENSORS: 9, GRAPHS: 10, SPARSE_TENSOR: 11, SPARSE_TENSORS: 12,
  TYPE_PROTO: 13, TYPE_PROTOS: 14,
} as const;

/** TensorProto.DataLocation numbers. */
export const DataLocation = { DEFAULT: 0, EXTERNAL: 1 } as const;
