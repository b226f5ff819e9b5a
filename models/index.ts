/**
 * keylock vendor tools: the public surface of `keylock/vendor`. Never part of a
 * device bundle (protobuf codec, graph rewriting, training live here).
 */
export { lockOnnx, lockTflite, lockModel, modelFormatOf, parseSchemes, type LockRequest, type LockResult, type LockOptions } from './lock/index.ts';
export { packKlm, type ManifestDraft } from './klm.ts';
export * as onnx from './onnx/index.ts';
export * as tflite from './tflite/index.ts';
export { makeGrant, makeRevocation, makeReinstate } from '../keystore/index.ts';
export { encodeVendorPub, encodeVendorSecret, encodeModelKey, decodeModelKey, decodeVendorSecret } from '../keystore/keyfiles.ts';
export { lockPipeline, pipelineFromSpec, type PipelineRequest, type PipelineResult, type PipelineStageRequest, type GlueStepSpec, type PipelineSpecFile } from './pipeline.ts';
