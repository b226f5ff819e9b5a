/** TFLite codec: reader, weight ranges, writer, ONNX reference export. */
export {
  isTflite, readTflite, MAX_TFLITE_BYTES,
  type TfliteModel, type TfliteSubgraph, type TfliteTensor, type TfliteOperator, type TfliteOperatorCode, type TfliteBuffer,
  type TfliteQuantization, type OperatorOptions, type ConvOptions, type FullyConnectedOptions, type PoolOptions, type ReshapeOptions,
} from './codec.ts';
export { listWeights, weightOf, readWeight, readFloat32, rewriteWeight, TFLITE_DTYPE_SIZE, type WeightInfo, type WeightUse } from './weights.ts';
export { writeTflite, type TfliteModelSpec, type TfliteTensorSpec, type TfliteOperatorSpec } from './writer.ts';
export { onnxToTflite } from './export.ts';
