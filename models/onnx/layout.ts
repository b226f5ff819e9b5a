/**
 * Where each graph initializer's bytes sit inside an encoded ONNX file, found by
 * walking the wire format (ModelProto.graph = 7 -> GraphProto.initializer = 5 ->
 * TensorProto.raw_data = 9). Lockers and the device runtime address weights by
 * these ranges, so the file itself never has to be parsed on the device.
 */
import { FormatError, UnsupportedModelError } from '../../keystore/errors.ts';
import { checkModelSize, type CodecOptions } from './codec.ts';
import { dataTypeInfo, dataTypeName, rawByteLength, type OnnxDTypeName } from './dtypes.ts';
import { WireReader, type WireField } from './wire.ts';

/** One graph initializer and the file range of its data. */
export interface InitializerInfo {
  name: string;
  /** TensorProto.DataType number. */
  dataType: number;
  /** Its name, e.g. `float32`. */
  dtype: OnnxDTypeName;
  dims: number[];
  elementCount: number;
  /**
   * True when the elements are in raw_data, so `[byteOffset, byteOffset + byteLength)`
   * of the file holds exactly the tensor's little-endian bytes. False when they are
   * in a typed field (or the tensor is a string tensor, or an empty one with no
   * raw_data): call `normalizeModel` first; string tensors never have a range.
   */
  inRawData: boolean;
  /** Offset of the raw_data payload in the file; -1 when `inRawData` is false. */
  byteOffset: number;
  /** Length of the raw_data payload; 0 when `inRawData` is false. */
  byteLength: number;
}

const TYPED_FIELD_NAMES: Readonly<Record<number, string>> = {
  4: 'float_data', 5: 'int32_data', 6: 'string_data', 7: 'int64_data', 10: 'double_data', 11: 'uint64_data',
};

const utf8 = new TextDecoder();

function wantWireType(f: WireField, wt: number, what: string): void {
  if (f.wireType !== wt) throw new FormatError(`${what}: field ${f.num} has wire type ${f.wireType}, expected ${wt}`);
}

function readTensor(bytes: Uint8Array, start: number, end: number, what: string): InitializerInfo {
  const r = new WireReader(bytes, start, end, what);
  const dims: number[] = [];
  let dataType: number | undefined = 0;
  let name = '';
  let raw: WireField | undefined;
  const typed = new Set<string>();
  let external = false;
  let location: number | undefined = 0;
  let segment = false;
  for (let f = r.next(); f; f = r.next()) {
    switch (f.num) {
      case 1: {
        // dims: unpacked (as ONNX writes them) or packed; both are valid encodings.
        const vals = f.wireType === 2 ? WireReader.packedVarints(bytes, f.start, f.end, what) : (wantWireType(f, 0, what), [f.value]);
        for (const v of vals) {
          if (v === undefined) throw new FormatError(`${what}: dims must be non-negative integers, got a value of 2^53 or more (or a negative one)`);
          dims.push(v);
        }
        break;
      }
      case 2: wantWireType(f, 0, what); dataType = f.value; break;
      case 3: segment = true; break;
      case 8: wantWireType(f, 2, what); name = utf8.decode(bytes.subarray(f.start, f.end)); break;
      case 9: wantWireType(f, 2, what); raw = f; break; // the last occurrence wins, as in every protobuf parser
      case 13: external = true; break;
      case 14: wantWireType(f, 0, what); location = f.value; break;
      default:
        // A packed typed field may be present but empty; only values count as data.
        if (TYPED_FIELD_NAMES[f.num] && (f.wireType !== 2 || f.end > f.start || f.num === 6)) typed.add(TYPED_FIELD_NAMES[f.num]!);
    }
  }
  const label = name ? `initializer '${name}'` : what;
  if (external || location === 1) {
    throw new UnsupportedModelError(`${label} keeps its data in an external file; keylock needs every tensor inside the .onnx file (re-save the model without external data)`);
  }
  if (location !== 0) throw new UnsupportedModelError(`${label}: data_location ${String(location)} is not one this schema knows`);
  if (segment) throw new UnsupportedModelError(`${label} is a segment of a larger tensor; segmented tensors are not supported`);
  const info = dataTypeInfo(dataType);
  if (!info) throw new UnsupportedModelError(`${label}: element type ${dataTypeName(dataType ?? -1)} is not one this schema knows`);
  let count = 1;
  for (const d of dims) {
    count *= d;
    if (!Number.isSafeInteger(count)) throw new FormatError(`${label}: dims [${dims.join(', ')}] have more elements than can be addressed`);
  }
  const base = { name, dataType: info.id, dtype: info.name, dims, elementCount: count };
  if (raw) {
    if (typed.size > 0) throw new FormatError(`${label} has both raw_data and ${[...typed].join(', ')}; a tensor keeps its elements in one place`);
    if (info.bits === 0) throw new FormatError(`${label}: string tensors keep their elements in string_data, not raw_data`);
    const want = rawByteLength(info, count);
    const got = raw.end - raw.start;
    if (got !== want) throw new FormatError(`${label}: raw_data of a ${info.name} tensor with dims [${dims.join(', ')}]: expected ${want} bytes, got ${got}`);
    return { ...base, inRawData: true, byteOffset: raw.start, byteLength: got };
  }
  if (typed.size === 0 && count !== 0) throw new FormatError(`${label}: dims [${dims.join(', ')}] need ${count} elements, but the tensor holds no data`);
  return { ...base, inRawData: false, byteOffset: -1, byteLength: 0 };
}

/**
 * Lists the main graph's initializers, in file order, with the byte range of each
 * one's raw_data inside `bytes`.
 *
 * Throws FormatError for bytes that are not a well-formed ModelProto or tensors
 * whose data does not match their dims; UnsupportedModelError for external
 * data, segments, unknown element types and sparse initializers (their weights
 * would otherwise be missed by anyone locking the listed ranges).
 */
export function listInitializers(bytes: Uint8Array, opts: CodecOptions = {}): InitializerInfo[] {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`listInitializers: expected a Uint8Array, got ${Object.prototype.toString.call(bytes)}`);
  checkModelSize(bytes.byteLength, opts);
  const top = new WireReader(bytes, 0, bytes.byteLength, 'ModelProto');
  const graphs: WireField[] = [];
  for (let f = top.next(); f; f = top.next()) {
    if (f.num === 7) {
      wantWireType(f, 2, 'ModelProto');
      graphs.push(f);
    }
  }
  if (graphs.length === 0) throw new FormatError('not an ONNX model: ModelProto.graph is missing');
  const out: InitializerInfo[] = [];
  const seen = new Set<string>();
  // A message field that occurs more than once is merged by protobuf parsers: the initializer lists concatenate.
  for (const g of graphs) {
    const r = new WireReader(bytes, g.start, g.end, 'GraphProto');
    for (let f = r.next(); f; f = r.next()) {
      if (f.num === 5) {
        wantWireType(f, 2, 'GraphProto');
        const info = readTensor(bytes, f.start, f.end, `graph.initializer[${out.length}]`);
        if (seen.has(info.name)) throw new FormatError(`initializer name '${info.name}' occurs more than once`);
        seen.add(info.name);
        out.push(info);
      } else if (f.num === 15) {
        throw new UnsupportedModelError('the graph has sparse initializers; keylock handles dense initializers only (convert them to dense tensors first)');
      }
    }
  }
  return out;
}

/** Where a tensor listed by `listTensors` lives. */
export type TensorPlaceKind = 'initializer' | 'attribute';

/** A tensor anywhere in the model, with the file range of its data. */
export interface TensorPlace extends InitializerInfo {
  /**
   * The name locks and manifests use, unique in the model: a main-graph
   * initializer's own name; otherwise `scope` + the tensor's name (a body's
   * initializer) or `scope` + `<node>.<attribute>` (a Constant's `value`, any
   * node's tensor attribute; `[i]` for the i-th of a list).
   */
  name: string;
  /** The TensorProto's own name ('' for most attribute tensors). */
  tensorName: string;
  place: TensorPlaceKind;
  /** '' for the main graph; `If_25.then_branch/` (nested: concatenated) for a body. */
  scope: string;
  /**
   * Set by the lock pipeline (not by `listTensors`, which does not read the
   * graph) on integer tensors the graph reads as learned parameters: the int32
   * biases behind a QDQ DequantizeLinear or of a QLinearConv. `sealed` encrypts them.
   */
  learnedInteger?: boolean;
}

/**
 * The label of a node in the names of `listTensors`: its name, or `#<index>`
 * (its position in its graph) when it has none. The object-side twin is
 * `subgraphScope`; both must give the same names.
 */
export function nodeLabel(nodeName: string | undefined, index: number): string {
  return nodeName ? nodeName : `#${index}`;
}

/** Scope prefix of a body graph held by attribute `attr` (graph `i` of a `graphs` list when `i` is given) of a node. */
export function subgraphScope(parent: string, nodeName: string | undefined, nodeIndex: number, attr: string, i?: number): string {
  return `${parent}${nodeLabel(nodeName, nodeIndex)}.${attr}${i === undefined ? '' : `[${i}]`}/`;
}

/** The `listTensors` name of tensor attribute `attr` (`i`-th of a list when given) of a node in `scope`. */
export function attributeTensorName(scope: string, nodeName: string | undefined, nodeIndex: number, attr: string, i?: number): string {
  return `${scope}${nodeLabel(nodeName, nodeIndex)}.${attr}${i === undefined ? '' : `[${i}]`}`;
}

/** Nested bodies deeper than this are refused (protobuf parsers stop at 100 levels of messages). */
const MAX_GRAPH_DEPTH = 32;

function sparseRefusal(where: string, bytes: Uint8Array, f: WireField): UnsupportedModelError {
  let name = '';
  try {
    const r = new WireReader(bytes, f.start, f.end, 'SparseTensorProto');
    for (let g = r.next(); g; g = r.next()) {
      if (g.num === 1 && g.wireType === 2) {
        const t = new WireReader(bytes, g.start, g.end, 'TensorProto');
        for (let h = t.next(); h; h = t.next()) if (h.num === 8 && h.wireType === 2) name = utf8.decode(bytes.subarray(h.start, h.end));
      }
    }
  } catch { /* the name is only for the message */ }
  return new UnsupportedModelError(`${where} holds sparse tensor${name ? ` '${name}'` : ''}; keylock locks dense tensors only (its values and indices would stay in the clear): convert it to a dense tensor first (e.g. onnx.numpy_helper.to_array of the densified values)`);
}

/**
 * Lists every tensor of the model with its byte range, in file order: the main
 * graph's initializers, the initializers of If/Loop/Scan bodies at any depth,
 * and tensor-valued node attributes (a Constant's `value`, ConstantOfShape's
 * `value`, ...) in any graph, including the nodes of model-local functions.
 * A device needs no parser for any of them: each is one byte range.
 *
 * Throws what `listInitializers` throws, UnsupportedModelError for sparse
 * tensors anywhere (naming the tensor), names that collide, or bodies nested
 * deeper than 32 levels.
 */
export function listTensors(bytes: Uint8Array, opts: CodecOptions = {}): TensorPlace[] {
  const mainInits = listInitializers(bytes, opts);
  const out: TensorPlace[] = [];
  const seen = new Set<string>();
  const add = (t: TensorPlace): void => {
    if (seen.has(t.name)) throw new UnsupportedModelError(`two tensors of the model would both be named '${t.name}' (nodes without names holding same-named tensors); give the nodes unique names`);
    seen.add(t.name);
    out.push(t);
  };
  let main = 0;
  const readAttribute = (f: WireField, scope: string, nodeName: string, nodeIndex: number, depth: number): void => {
    const r = new WireReader(bytes, f.start, f.end, 'AttributeProto');
    const fields: WireField[] = [];
    let attr = '';
    for (let g = r.next(); g; g = r.next()) {
      if (g.num === 1) { wantWireType(g, 2, 'AttributeProto'); attr = utf8.decode(bytes.subarray(g.start, g.end)); } else fields.push(g);
    }
    let ti = 0;
    let gi = 0;
    const single = fields.filter((g) => g.num === 5).length === 1;
    for (const g of fields) {
      const where = `attribute '${attr}' of node '${nodeLabel(nodeName, nodeIndex)}'${scope ? ` in ${scope}` : ''}`;
      if (g.num === 5 || g.num === 10) {
        wantWireType(g, 2, 'AttributeProto');
        const name = g.num === 5 && single ? attributeTensorName(scope, nodeName, nodeIndex, attr) : attributeTensorName(scope, nodeName, nodeIndex, attr, ti++);
        const info = readTensor(bytes, g.start, g.end, where);
        add({ ...info, name, tensorName: info.name, place: 'attribute', scope });
      } else if (g.num === 6 || g.num === 11) {
        wantWireType(g, 2, 'AttributeProto');
        readGraph(g, g.num === 6 ? subgraphScope(scope, nodeName, nodeIndex, attr) : subgraphScope(scope, nodeName, nodeIndex, attr, gi++), depth + 1);
      } else if (g.num === 22 || g.num === 23) {
        throw sparseRefusal(where, bytes, g);
      }
    }
  };
  const readNodes = (nodes: WireField[], scope: string, depth: number): void => {
    nodes.forEach((f, nodeIndex) => {
      const r = new WireReader(bytes, f.start, f.end, 'NodeProto');
      let nodeName = '';
      const attrs: WireField[] = [];
      for (let g = r.next(); g; g = r.next()) {
        if (g.num === 3) { wantWireType(g, 2, 'NodeProto'); nodeName = utf8.decode(bytes.subarray(g.start, g.end)); } else if (g.num === 5) { wantWireType(g, 2, 'NodeProto'); attrs.push(g); }
      }
      for (const a of attrs) readAttribute(a, scope, nodeName, nodeIndex, depth);
    });
  };
  function readGraph(f: WireField, scope: string, depth: number): void {
    if (depth > MAX_GRAPH_DEPTH) throw new UnsupportedModelError(`${scope}: bodies nested more than ${MAX_GRAPH_DEPTH} deep`);
    const r = new WireReader(bytes, f.start, f.end, 'GraphProto');
    const nodes: WireField[] = [];
    for (let g = r.next(); g; g = r.next()) {
      if (g.num === 1) { wantWireType(g, 2, 'GraphProto'); nodes.push(g); } else if (g.num === 5) {
        wantWireType(g, 2, 'GraphProto');
        if (depth === 0) {
          // Read (and checked) by listInitializers already, in the same order.
          add({ ...mainInits[main++]!, tensorName: mainInits[main - 1]!.name, place: 'initializer', scope: '' });
        } else {
          const info = readTensor(bytes, g.start, g.end, `initializer of ${scope}`);
          add({ ...info, name: `${scope}${info.name}`, tensorName: info.name, place: 'initializer', scope });
        }
      } else if (g.num === 15) {
        throw sparseRefusal(depth === 0 ? 'the main graph' : scope, bytes, g);
      }
    }
    readNodes(nodes, scope, depth);
  }
  const top = new WireReader(bytes, 0, bytes.byteLength, 'ModelProto');
  for (let f = top.next(); f; f = top.next()) {
    if (f.num === 7) readGraph(f, '', 0);
    else if (f.num === 25) {
      // A model-local function's nodes: its Constants are weights of every call.
      wantWireType(f, 2, 'ModelProto');
      const r = new WireReader(bytes, f.start, f.end, 'FunctionProto');
      let fname = '';
      const nodes: WireField[] = [];
      for (let g = r.next(); g; g = r.next()) {
        if (g.num === 1 && g.wireType === 2) fname = utf8.decode(bytes.subarray(g.start, g.end));
        else if (g.num === 7) { wantWireType(g, 2, 'FunctionProto'); nodes.push(g); }
      }
      readNodes(nodes, `function:${fname}/`, 1);
    }
  }
  return out;
}
