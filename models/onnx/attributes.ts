/**
 * Node attributes as plain values, and AttributeProtos from plain values.
 */
import { FormatError, UnsupportedModelError } from '../../keystore/errors.ts';
import {
  AttributeType, type AttributeProto, type GraphProto, type Int64, type NodeProto,
  type SparseTensorProto, type TensorProto, type TypeProto,
} from './types.ts';

/** An attribute's value: INT(S) give numbers, or bigints where a number would not be exact. */
export type AttributeValue =
  | number | bigint | string | TensorProto | GraphProto | SparseTensorProto | TypeProto
  | number[] | (number | bigint)[] | string[] | TensorProto[] | GraphProto[] | SparseTensorProto[] | TypeProto[];

/**
 * What `makeAttribute` accepts. Plain numbers become INT when they are integers
 * and FLOAT otherwise (arrays likewise; an empty array is INTS); wrap a value as
 * `{ float }`, `{ floats }`, `{ int }` or `{ ints }` to choose explicitly.
 * Strings and Uint8Arrays become STRING; objects with `node` a GRAPH, with `dims`
 * a TENSOR.
 */
export type AttributeInput =
  | number | bigint | string | Uint8Array | TensorProto | GraphProto
  | readonly (number | bigint)[] | readonly string[] | readonly TensorProto[] | readonly GraphProto[]
  | { float: number } | { floats: readonly number[] } | { int: Int64 } | { ints: readonly Int64[] }
  | { strings: readonly (string | Uint8Array)[] };

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

function intValue(v: Int64): number | bigint {
  if (typeof v === 'number') return v;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : v;
}

/**
 * The value of one attribute. FormatError when its type field is missing or does
 * not match the field in use; UnsupportedModelError for references to a calling
 * function's attributes (only valid inside function bodies).
 */
export function attributeValue(a: AttributeProto): AttributeValue {
  const where = `attribute '${a.name ?? ''}'`;
  if (a.ref_attr_name) throw new UnsupportedModelError(`${where} refers to attribute '${a.ref_attr_name}' of a calling function; it has no value of its own`);
  const need = <T>(v: T | undefined, field: string): T => {
    if (v === undefined) throw new FormatError(`${where}: type ${a.type} but field ${field} is missing`);
    return v;
  };
  switch (a.type) {
    case AttributeType.FLOAT: return a.f ?? 0; // proto2 default when the writer omitted 0.0
    case AttributeType.INT: return intValue(a.i ?? 0);
    case AttributeType.STRING: return utf8Decoder.decode(a.s ?? new Uint8Array(0));
    case AttributeType.TENSOR: return need(a.t, 't');
    case AttributeType.GRAPH: return need(a.g, 'g');
    case AttributeType.SPARSE_TENSOR: return need(a.sparse_tensor, 'sparse_tensor');
    case AttributeType.TYPE_PROTO: return need(a.tp, 'tp');
    case AttributeType.FLOATS: return [...a.floats];
    case AttributeType.INTS: return a.ints.map(intValue);
    case AttributeType.STRINGS: return a.strings.map((s) => utf8Decoder.decode(s));
    case AttributeType.TENSORS: return [...a.tensors];
    case AttributeType.GRAPHS: return [...a.graphs];
    case AttributeType.SPARSE_TENSORS: return [...a.sparse_tensors];
    case AttributeType.TYPE_PROTOS: return [...a.type_protos];
    default: throw new FormatError(`${where}: missing or unknown attribute type ${String(a.type)}`);
  }
}

/** All attributes of a node as `{ name: value }`. */
export function readAttributes(node: NodeProto): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const a of node.attribute) out[a.name ?? ''] = attributeValue(a);
  return out;
}

/** One attribute's value, or undefined when the node does not set it. */
export function getAttribute(node: NodeProto, name: string): AttributeValue | undefined {
  const a = node.attribute.find((x) => x.name === name);
  return a ? attributeValue(a) : undefined;
}

function nodeLabel(node: NodeProto): string {
  return `${node.op_type ?? '?'} node '${node.name ?? ''}'`;
}

/** An INT attribute as a number (`fallback` when absent). TypeError when it is another type or not exact. */
export function intAttribute(node: NodeProto, name: string, fallback?: number): number {
  const v = getAttribute(node, name);
  if (v === undefined) {
    if (fallback === undefined) throw new RangeError(`${nodeLabel(node)} has no attribute '${name}'`);
    return fallback;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${nodeLabel(node)}: attribute '${name}' should be a safe INT, got ${String(v)}`);
  return v;
}

/** An INTS attribute as numbers (`fallback` when absent). */
export function intsAttribute(node: NodeProto, name: string, fallback?: number[]): number[] {
  const a = node.attribute.find((x) => x.name === name);
  if (!a) {
    if (fallback === undefined) throw new RangeError(`${nodeLabel(node)} has no attribute '${name}'`);
    return fallback;
  }
  if (a.type !== AttributeType.INTS) throw new TypeError(`${nodeLabel(node)}: attribute '${name}' should be INTS, got type ${String(a.type)}`);
  return a.ints.map((x) => {
    const n = Number(x);
    if (!Number.isSafeInteger(n)) throw new TypeError(`${nodeLabel(node)}: attribute '${name}' holds ${String(x)}, beyond a safe number`);
    return n;
  });
}

/** An AttributeProto with every repeated field present and empty. */
function emptyAttribute(name: string, type: number): AttributeProto {
  return { name, type, floats: [], ints: [], strings: [], tensors: [], graphs: [], sparse_tensors: [], type_protos: [] };
}

function bytesOfString(s: string | Uint8Array): Uint8Array {
  return typeof s === 'string' ? utf8Encoder.encode(s) : s;
}

function isGraph(v: object): v is GraphProto {
  return 'node' in v;
}

function isTensor(v: object): v is TensorProto {
  return 'dims' in v || 'data_type' in v;
}

/** Builds an AttributeProto from a plain value (see AttributeInput for the type rules). */
export function makeAttribute(name: string, value: AttributeInput): AttributeProto {
  const at = (type: number, fill: Partial<AttributeProto>): AttributeProto => ({ ...emptyAttribute(name, type), ...fill });
  if (typeof value === 'number') return Number.isInteger(value) ? at(AttributeType.INT, { i: value }) : at(AttributeType.FLOAT, { f: value });
  if (typeof value === 'bigint') return at(AttributeType.INT, { i: value });
  if (typeof value === 'string' || value instanceof Uint8Array) return at(AttributeType.STRING, { s: bytesOfString(value) });
  if (Array.isArray(value)) {
    const arr = value as readonly unknown[];
    if (arr.every((x) => typeof x === 'bigint' || (typeof x === 'number' && Number.isInteger(x)))) return at(AttributeType.INTS, { ints: [...arr] as Int64[] });
    if (arr.every((x) => typeof x === 'number')) return at(AttributeType.FLOATS, { floats: [...arr] as number[] });
    if (arr.every((x) => typeof x === 'string')) return at(AttributeType.STRINGS, { strings: (arr as string[]).map(bytesOfString) });
    if (arr.every((x) => typeof x === 'object' && x !== null && isGraph(x))) return at(AttributeType.GRAPHS, { graphs: [...arr] as GraphProto[] });
    if (arr.every((x) => typeof x === 'object' && x !== null && isTensor(x))) return at(AttributeType.TENSORS, { tensors: [...arr] as TensorProto[] });
    throw new TypeError(`attribute '${name}': an array must hold only numbers, only strings, only tensors or only graphs`);
  }
  if (typeof value === 'object' && value !== null) {
    if ('float' in value) return at(AttributeType.FLOAT, { f: value.float });
    if ('floats' in value) return at(AttributeType.FLOATS, { floats: [...value.floats] });
    if ('int' in value) return at(AttributeType.INT, { i: value.int });
    if ('ints' in value) return at(AttributeType.INTS, { ints: [...value.ints] });
    if ('strings' in value) return at(AttributeType.STRINGS, { strings: value.strings.map(bytesOfString) });
    if (isGraph(value)) return at(AttributeType.GRAPH, { g: value });
    if (isTensor(value)) return at(AttributeType.TENSOR, { t: value });
  }
  throw new TypeError(`attribute '${name}': cannot tell the attribute type of ${String(value)}`);
}

/** Sets (adds or replaces) one attribute of a node. */
export function setAttribute(node: NodeProto, name: string, value: AttributeInput): void {
  const a = makeAttribute(name, value);
  const i = node.attribute.findIndex((x) => x.name === name);
  if (i >= 0) node.attribute[i] = a;
  else node.attribute.push(a);
}
