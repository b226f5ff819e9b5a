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
