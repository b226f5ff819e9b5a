/**
 * ONNX ModelProto bytes <-> plain objects (see types.ts), with protobufjs and the
 * ONNX schema. Decoding refuses what keylock cannot carry faithfully (unknown
 * fields, external data, segments); encoding moves typed tensor fields into
 * raw_data so every tensor is one contiguous byte range of the file.
 */
import { FormatError, KeylockError, SizeLimitError, UnsupportedModelError } from '../../keystore/errors.ts';
import type protobuf from 'protobufjs';
import { onnxSchema, strictReader } from './proto.ts';
import { checkTensorStorage, withRawData } from './tensor-data.ts';
import { AttributeType, type ModelProto, type OnnxModel, type TensorProto } from './types.ts';
import { findUnknownFields, forEachMessage, mapMessages } from './walk.ts';

/** Largest model the codec accepts or writes: protobuf's 2 GiB message limit. */
export const MAX_MODEL_BYTES = 2 ** 31 - 1;

/** Options of decodeModel / encodeModel / listInitializers. */
export interface CodecOptions {
  /** Refuse models larger than this many bytes (default and upper bound: MAX_MODEL_BYTES). */
  maxBytes?: number;
}

/** Throws SizeLimitError when `size` exceeds the limit the options ask for. */
export function checkModelSize(size: number, opts: CodecOptions = {}): void {
  const limit = opts.maxBytes ?? MAX_MODEL_BYTES;
  if (!Number.isSafeInteger(limit) || limit < 0 || limit > MAX_MODEL_BYTES) {
    throw new RangeError(`maxBytes must be an integer in [0, ${MAX_MODEL_BYTES}], got ${limit}`);
  }
  if (size > limit) throw new SizeLimitError('ONNX model', limit, size);
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: BigInt, arrays: true, defaults: false };
const TENSOR = '.onnx.TensorProto';
const ATTRIBUTE = '.onnx.AttributeProto';
const KNOWN_ATTRIBUTE_TYPES = new Set<number>(Object.values(AttributeType));

/**
 * Decodes ONNX model bytes. The model owns a private copy of the bytes (raw_data
 * fields are views into it), so later changes to `bytes` do not leak in.
 *
 * Throws FormatError when the bytes are not a well-formed ONNX model (truncated,
 * garbage, no ir_version / graph / opset_import, inconsistent tensor data),
 * UnsupportedModelError for fields this schema does not know, external data and
 * segmented tensors, SizeLimitError above the size limit.
 */
export function decodeModel(bytes: Uint8Array, opts: CodecOptions = {}): OnnxModel {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`decodeModel: expected a Uint8Array, got ${Object.prototype.toString.call(bytes)}`);
  checkModelSize(bytes.byteLength, opts);
  const own = new Uint8Array(bytes); // a copy: Buffer.slice would alias
  const s = onnxSchema();
  let msg: protobuf.Message;
  try {
    msg = s.ModelProto.decode(strictReader(own));
  } catch (e) {
    throw new FormatError(`not a valid ONNX model: ${own.byteLength} bytes do not decode as a ModelProto (${(e as Error).message})`, { cause: e });
  }
  const model = s.ModelProto.toObject(msg, TO_OBJECT) as ModelProto;
  if (model.ir_version === undefined) throw new FormatError('not an ONNX model: ModelProto.ir_version is missing');
  if (!model.graph) throw new FormatError('not an ONNX model: ModelProto.graph is missing');
  if (model.opset_import.length === 0) throw new FormatError('not an ONNX model: ModelProto.opset_import is empty');
  const unknown = findUnknownFields(s.ModelProto, msg);
  if (unknown) {
    throw new UnsupportedModelError(`${unknown.path} has field(s) ${unknown.fields.join(', ')} (or enum values) that keylock's ONNX schema does not know (model ir_version ${model.ir_version}); re-encoding would drop them`);
  }
  forEachMessage(s.ModelProto, model, TENSOR, (t, path) => checkTensorStorage(t as unknown as TensorProto, path));
  return model as OnnxModel;
}

/**
 * Encodes a model. Tensors whose elements are in float_data, int32_data,
 * int64_data, double_data or uint64_data are written with raw_data instead
 * (little-endian), wherever they are (initializers, Constant nodes, subgraphs);
 * string tensors stay in string_data. `model` itself is not modified.
 *
 * Throws FormatError for tensors whose data does not match their dims,
 * UnsupportedModelError for external data, segments, typed data of unknown
 * element types and unknown attribute types, TypeError when the object does not
 * fit the schema (or lacks ir_version / opset_import), SizeLimitError when the
 * result exceeds the size limit.
 */
export function encodeModel(model: OnnxModel, opts: CodecOptions = {}): Uint8Array {
  if (typeof model !== 'object' || model === null || typeof model.graph !== 'object' || model.graph === null) {
    throw new TypeError('encodeModel: expected an OnnxModel with a graph');
  }
  // What decodeModel requires of a file, encodeModel requires of what it writes.
  if (model.ir_version === undefined) throw new TypeError('encodeModel: ir_version is missing');
  if (!Array.isArray(model.opset_import) || model.opset_import.length === 0) throw new TypeError('encodeModel: opset_import is empty');
  const s = onnxSchema();
  const prepared = mapMessages(s.ModelProto, model as unknown as Record<string, unknown>, {
    [TENSOR]: (t, path) => withRawData(t as unknown as TensorProto, path) as unknown as Record<string, unknown>,
    [ATTRIBUTE]: (a, path) => {
      if (a.type !== undefined && !KNOWN_ATTRIBUTE_TYPES.has(a.type as number)) {
        throw new UnsupportedModelError(`${path}: attribute type ${String(a.type)} is not one this schema knows`);
      }
      return a;
    },
  });
  let out: Uint8Array;
  try {
    out = s.ModelProto.encode(s.ModelProto.fromObject(prepared)).finish();
  } catch (e) {
    if (e instanceof KeylockError) throw e;
    throw new TypeError(`encodeModel: the model does not fit the ONNX schema: ${(e as Error).message}`, { cause: e });
  }
  checkModelSize(out.byteLength, opts);
  // protobufjs returns a Node Buffer, small ones carved from a shared pool; hand out a plain, unshared array.
  const view = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  return out.byteOffset === 0 && out.buffer.byteLength === out.byteLength ? view : view.slice();
}

/** `encodeModel(decodeModel(bytes))`: every tensor's data in raw_data, fields in canonical order. */
export function normalizeModel(bytes: Uint8Array, opts: CodecOptions = {}): Uint8Array {
  return encodeModel(decodeModel(bytes, opts), opts);
}
