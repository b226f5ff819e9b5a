/**
 * The elements of a TensorProto: checking that its storage is consistent, reading
 * them as little-endian bytes or a typed array, and moving typed fields
 * (float_data, int32_data, ...) into raw_data.
 */
import { FormatError, UnsupportedModelError } from '../../keystore/errors.ts';
import { typedFromBytes, type TensorData } from '../../runtime/tensor.ts';
import { dataTypeInfo, dataTypeName, rawByteLength, type DataTypeInfo, type TypedField } from './dtypes.ts';
import { DataLocation, type Int64, type TensorProto } from './types.ts';

const TYPED_FIELDS: readonly TypedField[] = ['float_data', 'int32_data', 'string_data', 'int64_data', 'double_data', 'uint64_data'];

/** Typed fields of `t` that hold at least one value. */
function usedTypedFields(t: TensorProto): TypedField[] {
  return TYPED_FIELDS.filter((f) => (t[f]?.length ?? 0) > 0);
}

/** A safe non-negative integer from an int64 dim, or a FormatError naming `where`. */
function dimToNumber(d: Int64, where: string): number {
  const n = typeof d === 'bigint' ? Number(d) : d;
  if (!Number.isSafeInteger(n) || n < 0) throw new FormatError(`${where}: dims must be non-negative integers, got ${String(d)}`);
  return n;
}

/** The dims of a tensor as numbers. */
export function tensorDims(t: TensorProto, where = tensorLabel(t)): number[] {
  return (t.dims ?? []).map((d) => dimToNumber(d, where));
}

/** Element count of a tensor's dims (1 for a scalar). */
export function tensorElementCount(t: TensorProto, where = tensorLabel(t)): number {
  let n = 1;
  for (const d of tensorDims(t, where)) {
    n *= d;
    if (!Number.isSafeInteger(n)) throw new FormatError(`${where}: dims [${t.dims.join(', ')}] have more elements than can be addressed`);
  }
  return n;
}

/** `tensor 'name'`, for messages. */
export function tensorLabel(t: TensorProto): string {
  return t.name ? `tensor '${t.name}'` : 'unnamed tensor';
}

/** Number of values a typed field must hold for `count` elements. */
function typedValueCount(info: DataTypeInfo, count: number): number {
  if (info.name === 'complex64' || info.name === 'complex128') return 2 * count;
  if (info.bits === 4) return Math.ceil(count / 2);
  return count;
}

/**
 * Throws unless the tensor's data is stored in a way keylock can handle and is
 * consistent with its dims: data inside the file, not a segment, in raw_data or
 * in the one typed field its type uses, with exactly the right amount of data.
 * Unknown element types pass when their data is in raw_data (nothing to check).
 */
export function checkTensorStorage(t: TensorProto, where = tensorLabel(t)): void {
  if (t.data_location === DataLocation.EXTERNAL || (t.external_data?.length ?? 0) > 0) {
    const loc = t.external_data?.find((e) => e.key === 'location')?.value;
    throw new UnsupportedModelError(`${where} keeps its data in an external file${loc ? ` ('${loc}')` : ''}; keylock needs every tensor inside the .onnx file (re-save the model without external data)`);
  }
  if (t.data_location !== undefined && t.data_location !== DataLocation.DEFAULT) {
    throw new UnsupportedModelError(`${where}: data_location ${t.data_location} is not one this schema knows`);
  }
  if (t.segment) throw new UnsupportedModelError(`${where} is a segment of a larger tensor; segmented tensors are not supported`);
  const info = dataTypeInfo(t.data_type);
  const count = tensorElementCount(t, where);
  const typed = usedTypedFields(t);
  if (t.raw_data !== undefined) {
    if (typed.length > 0) throw new FormatError(`${where} has both raw_data and ${typed.join(', ')}; a tensor keeps its elements in one place`);
    if (!info) return;
    if (info.bits === 0) throw new FormatError(`${where}: string tensors keep their elements in string_data, not raw_data`);
    const want = rawByteLength(info, count);
    if (t.raw_data.byteLength !== want) {
      throw new FormatError(`${where}: raw_data of a ${info.name} tensor with dims [${t.dims.join(', ')}]: expected ${want} bytes, got ${t.raw_data.byteLength}`);
    }
    return;
  }
  if (typed.length === 0) {
    if (count !== 0) throw new FormatError(`${where}: dims [${t.dims.join(', ')}] need ${count} elements, but the tensor holds no data`);
    return;
  }
  if (!info) return;
  if (typed.length > 1 || typed[0] !== info.typedField) {
    throw new FormatError(`${where}: a ${info.name} tensor keeps its elements in ${info.typedField}, found ${typed.join(', ')}`);
  }
  const want = typedValueCount(info, count);
  const got = t[info.typedField].length;
  if (got !== want) throw new FormatError(`${where}: ${info.typedField} of a ${info.name} tensor with dims [${t.dims.join(', ')}]: expected ${want} values, got ${got}`);
}

function intIn(v: number, lo: number, hi: number, where: string, field: string): number {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new FormatError(`${where}: ${field} value ${v} is out of range [${lo}, ${hi}]`);
  return v;
}

function bigIn(v: Int64, signed: boolean, where: string, field: string): bigint {
  let b: bigint;
  try {
    b = BigInt(v);
  } catch {
    throw new FormatError(`${where}: ${field} value ${String(v)} is not an integer`);
  }
  if ((signed ? BigInt.asIntN(64, b) : BigInt.asUintN(64, b)) !== b) {
    throw new FormatError(`${where}: ${field} value ${b} does not fit in ${signed ? 'int64' : 'uint64'}`);
  }
  return b;
}

function viewBytes(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Little-endian raw_data bytes for the values of the typed field (already checked by checkTensorStorage). */
function typedFieldBytes(t: TensorProto, info: DataTypeInfo, where: string): Uint8Array {
  const f = info.typedField;
  switch (f) {
    case 'float_data':
      return viewBytes(Float32Array.from(t.float_data));
    case 'double_data':
      return viewBytes(Float64Array.from(t.double_data));
    case 'int64_data':
      return viewBytes(BigInt64Array.from(t.int64_data, (v) => bigIn(v, true, where, f)));
    case 'uint64_data':
      if (info.bits === 32) return viewBytes(Uint32Array.from(t.uint64_data, (v) => intIn(Number(v), 0, 0xffffffff, where, f)));
      return viewBytes(BigUint64Array.from(t.uint64_data, (v) => bigIn(v, false, where, f)));
    case 'int32_data': {
      const v = t.int32_data;
      if (info.bits === 32) return viewBytes(Int32Array.from(v, (x) => intIn(x, -0x80000000, 0x7fffffff, where, f)));
      // Narrow types: accept the signed and the unsigned reading of the same bit pattern.
      if (info.bits === 16) return viewBytes(Uint16Array.from(v, (x) => intIn(x, -0x8000, 0xffff, where, f) & 0xffff));
      return Uint8Array.from(v, (x) => intIn(x, -0x80, 0xff, where, f) & 0xff);
    }
    case 'string_data':
      throw new UnsupportedModelError(`${where}: string tensors have no raw byte form`);
  }
}

/**
 * The tensor's elements as little-endian bytes (raw_data layout). A view of
 * raw_data when the tensor has it; freshly built from the typed field otherwise.
 * Throws UnsupportedModelError for strings and unknown element types.
 */
export function tensorRawBytes(t: TensorProto, where = tensorLabel(t)): Uint8Array {
  checkTensorStorage(t, where);
  const info = dataTypeInfo(t.data_type);
  if (!info) throw new UnsupportedModelError(`${where}: element type ${dataTypeName(t.data_type)} is not one this schema knows`);
  if (info.bits === 0) throw new UnsupportedModelError(`${where}: string tensors have no raw byte form`);
  if (t.raw_data !== undefined) return t.raw_data;
  if (usedTypedFields(t).length === 0) return new Uint8Array(0);
  return typedFieldBytes(t, info, where);
}

/**
 * The same tensor with its elements in raw_data: `t` itself when it already is
 * (or is a string tensor), else a copy with raw_data set and typed fields emptied.
 */
export function withRawData(t: TensorProto, where = tensorLabel(t)): TensorProto {
  checkTensorStorage(t, where);
  const typed = usedTypedFields(t);
  if (typed[0] === 'string_data' || t.raw_data !== undefined) return t;
  if (typed.length === 0) {
    // An empty tensor with no data field at all: give it an empty raw_data so it too has a (zero-length) range.
    const info = dataTypeInfo(t.data_type);
    return info && info.bits > 0 ? { ...t, raw_data: new Uint8Array(0) } : t;
  }
  const raw = tensorRawBytes(t, where);
  return { ...t, raw_data: raw, float_data: [], int32_data: [], int64_data: [], double_data: [], uint64_data: [] };
}

/**
 * The tensor as a keylock TensorData (a copied, aligned typed array). Throws
 * UnsupportedModelError for element types without a JS typed array (float16,
 * bfloat16, float8, 4-bit, complex, string) and unknown ones.
 */
export function tensorData(t: TensorProto, where = tensorLabel(t)): TensorData {
  const info = dataTypeInfo(t.data_type);
  if (!info?.dtype) {
    throw new UnsupportedModelError(`${where}: typed access supports float32, float64, int8/16/32/64, uint8/16/32/64 and bool, got ${dataTypeName(t.data_type)}`);
  }
  const bytes = tensorRawBytes(t, where);
  return { dtype: info.dtype, dims: tensorDims(t, where), data: typedFromBytes(info.dtype, bytes) };
}
