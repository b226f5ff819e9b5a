/**
 * The ONNX schema loaded into protobufjs, built once on first use.
 *
 * The schema text comes from schema.ts (a string constant generated from
 * onnx.proto), so this works unchanged inside an esbuild bundle.
 */
import protobuf from 'protobufjs';
import { ONNX_PROTO_TEXT } from './schema.ts';

/** The resolved protobufjs types keylock uses. */
export interface OnnxSchema {
  readonly root: protobuf.Root;
  readonly ModelProto: protobuf.Type;
  readonly GraphProto: protobuf.Type;
  readonly NodeProto: protobuf.Type;
  readonly AttributeProto: protobuf.Type;
  readonly TensorProto: protobuf.Type;
}

let schema: OnnxSchema | undefined;

/** The parsed and resolved ONNX schema (field names kept in snake_case). */
export function onnxSchema(): OnnxSchema {
  if (schema) return schema;
  // Without long.js protobufjs decodes int64 as doubles and would round values above 2^53.
  if (!protobuf.util.Long) throw new Error('protobufjs has no Long support (the "long" package is missing); ONNX int64 fields cannot be decoded exactly');
  const root = protobuf.parse(ONNX_PROTO_TEXT, { keepCase: true }).root;
  root.resolveAll();
  schema = {
    root,
    ModelProto: root.lookupType('onnx.ModelProto'),
    GraphProto: root.lookupType('onnx.GraphProto'),
    NodeProto: root.lookupType('onnx.NodeProto'),
    AttributeProto: root.lookupType('onnx.AttributeProto'),
    TensorProto: root.lookupType('onnx.TensorProto'),
  };
  return schema;
}

/** protobufjs Reader over `bytes` that keeps unknown fields, so the codec can refuse to drop them. */
export function strictReader(bytes: Uint8Array): protobuf.Reader {
  const r = protobuf.Reader.create(bytes);
  r.discardUnknown = false;
  return r;
}
