/**
 * ONNX element types (TensorProto.DataType): numbers, keylock's names for them, storage
 * widths, and which typed field holds them when a tensor does not use raw_data.
 */
import type { DType } from '../../runtime/tensor.ts';

/** The TensorProto.DataType numbers of the ONNX schema. */
export const DataType = {
  UNDEFINED: 0, FLOAT: 1, UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7,
  STRING: 8, BOOL: 9, FLOAT16: 10, DOUBLE: 11, UINT32: 12, UINT64: 13, COMPLEX64: 14,
  COMPLEX128: 15, BFLOAT16: 16, FLOAT8E4M3FN: 17, FLOAT8E4M3FNUZ: 18, FLOAT8E5M2: 19,
  FLOAT8E5M2FNUZ: 20, UINT4: 21, INT4: 22, FLOAT4E2M1: 23, FLOAT8E8M0: 24,
} as const;

/** Name keylock uses for an ONNX element type (the same names as runtime/tensor.ts where they overlap). */
export type OnnxDTypeName =
  | 'float32' | 'uint8' | 'int8' | 'uint16' | 'int16' | 'int32' | 'int64' | 'string' | 'bool'
  | 'float16' | 'float64' | 'uint32' | 'uint64' | 'complex64' | 'complex128' | 'bfloat16'
  | 'float8e4m3fn' | 'float8e4m3fnuz' | 'float8e5m2' | 'float8e5m2fnuz' | 'uint4' | 'int4'
  | 'float4e2m1' | 'float8e8m0';

/** The TensorProto field that carries elements of a type when raw_data is not used. */
export type TypedField = 'float_data' | 'int32_data' | 'string_data' | 'int64_data' | 'double_data' | 'uint64_data';

/** What the codec knows about one element type. */
export interface DataTypeInfo {
  readonly id: number;
  readonly name: OnnxDTypeName;
  /** Bits per element in raw_data; 0 for strings (which never use raw_data). */
  readonly bits: number;
  readonly typedField: TypedField;
  /** The runtime dtype with a JS typed array for it, when there is one. */
  readonly dtype?: DType;
}

const INFO: readonly DataTypeInfo[] = [
  { id: 1, name: 'float32', bits: 32, typedField: 'float_data', dtype: 'float32' },
  { id: 2, name: 'uint8', bits: 8, typedField: 'int32_data', dtype: 'uint8' },
  { id: 3, name: 'int8', bits: 8, typedField: 'int32_data', dtype: 'int8' },
  { id: 4, name: 'uint16', bits: 16, typedField: 'int32_data', dtype: 'uint16' },
  { id: 5, name: 'int16', bits: 16, typedField: 'int32_data', dtype: 'int16' },
  { id: 6, name: 'int32', bits: 32, typedField: 'int32_data', dtype: 'int32' },
  { id: 7, name: 'int64', bits: 64, typedField: 'int64_data', dtype: 'int64' },
  { id: 8, name: 'string', bits: 0, typedField: 'string_data' },
  { id: 9, name: 'bool', bits: 8, typedField: 'int32_data', dtype: 'bool' },
  { id: 10, name: 'float16', bits: 16, typedField: 'int32_data' },
  { id: 11, name: 'float64', bits: 64, typedField: 'double_data', dtype: 'float64' },
  { id: 12, name: 'uint32', bits: 32, typedField: 'uint64_data', dtype: 'uint32' },
  { id: 13, name: 'uint64', bits: 64, typedField: 'uint64_data', dtype: 'uint64' },
  { id: 14, name: 'complex64', bits: 64, typedField: 'float_data' },
  { id: 15, name: 'complex128', bits: 128, typedField: 'double_data' },
  { id: 16, name: 'bfloat16', bits: 16, typedField: 'int32_data' },
  { id: 17, name: 'float8e4m3fn', bits: 8, typedField: 'int32_data' },
  { id: 18, name: 'float8e4m3fnuz', bits: 8, typedField: 'int32_data' },
  { id: 19, name: 'float8e5m2', bits: 8, typedField: 'int32_data' },
  { id: 20, name: 'float8e5m2fnuz', bits: 8, typedField: 'int32_data' },
  { id: 21, name: 'uint4', bits: 4, typedField: 'int32_data' },
  { id: 22, name: 'int4', bits: 4, typedField: 'int32_data' },
  { id: 23, name: 'float4e2m1', bits: 4, typedField: 'int32_data' },
  { id: 24, name: 'float8e8m0', bits: 8, typedField: 'int32_data' },
];

const BY_ID = new Map(INFO.map((i) => [i.id, i]));
const BY_NAME = new Map<string, DataTypeInfo>(INFO.map((i) => [i.name, i]));

/** Info for a DataType number, or undefined when this schema does not know it (incl. UNDEFINED). */
export function dataTypeInfo(id: number | undefined): DataTypeInfo | undefined {
  return id === undefined ? undefined : BY_ID.get(id);
}

/** Display name of a DataType number: its keylock name, or `unknown(<n>)`. */
export function dataTypeName(id: number | undefined): string {
  return dataTypeInfo(id)?.name ?? `unknown(${String(id ?? 0)})`;
}

/**
 * The DataType number for a keylock name or a number. Throws RangeError for names
 * or numbers this schema does not know (API misuse: callers name types themselves).
 */
export function toDataType(t: OnnxDTypeName | DType | number): number {
  const info = typeof t === 'number' ? BY_ID.get(t) : BY_NAME.get(t);
  if (!info) throw new RangeError(`unknown ONNX element type: expected one of ${INFO.map((i) => i.name).join(', ')} or its number, got ${String(t)}`);
  return info.id;
}

/** Bytes that `count` elements take in raw_data (4-bit types pack two per byte). */
export function rawByteLength(info: DataTypeInfo, count: number): number {
  return info.bits >= 8 ? count * (info.bits / 8) : Math.ceil((count * info.bits) / 8);
}
