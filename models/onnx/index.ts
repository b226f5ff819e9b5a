/**
 * keylock's ONNX codec (vendor side): decode/encode ModelProto, locate weight
 * byte ranges in the file, edit graphs and weights, build small models. The
 * protobuf schema behind it (proto.ts, schema.ts) is the codec's own business
 * and not exported: a vendor works with the decoded types below.
 */
export { decodeModel, encodeModel, normalizeModel, checkModelSize, MAX_MODEL_BYTES, type CodecOptions } from './codec.ts';
export {
  listInitializers, listTensors, nodeLabel, subgraphScope, attributeTensorName, type InitializerInfo, type TensorPlace, type TensorPlaceKind,
} from './layout.ts';
export {
  findInitializer, getInitializer, getInitializerBytes, setInitializer, setInitializerBytes, addInitializer,
} from './initializers.ts';
export {
  findNode, findNodesByOp, producerOf, consumersOf, nodeUses, isGraphOutput, runtimeInputs, describeValue,
  uniqueName, replaceUses, addNode, insertNodeAfter, spliceAfter, addInput,
} from './graph.ts';
export {
  readAttributes, getAttribute, attributeValue, intAttribute, intsAttribute, makeAttribute, setAttribute,
  type AttributeValue, type AttributeInput,
} from './attributes.ts';
export {
  makeTensor, makeNode, makeValueInfo, makeGraph, makeModel,
  type DimInput, type TensorInput, type GraphSpec, type ModelSpec,
} from './builder.ts';
export { tensorData, tensorRawBytes, tensorDims, tensorElementCount, withRawData, checkTensorStorage } from './tensor-data.ts';
export { DataType, dataTypeInfo, dataTypeName, toDataType, rawByteLength, type DataTypeInfo, type OnnxDTypeName, type TypedField } from './dtypes.ts';
export type * from './types.ts';
export { AttributeType, DataLocation } from './types.ts';
