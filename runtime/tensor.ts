/**
 * The plain tensor shape keylock passes between the runtime, recorded-input
 * files and backends: a dtype name, dims and a typed array. Backends convert
 * to and from their own tensor classes at their boundary.
 */

/** Element types keylock can carry in recorded inputs and feeds. */
export type DType =
  | 'float32' | 'float64' | 'int8' | 'uint8' | 'int16' | 'uint16'
  | 'int32' | 'uint32' | 'int64' | 'uint64' | 'bool';

/** The typed array that holds each dtype's elements. */
export type TypedArrayOf<D extends DType> =
  D extends 'float32' ? Float32Array :
  D extends 'float64' ? Float64Array :
  D extends 'int8' ? Int8Array :
  D extends 'uint8' | 'bool' ? Uint8Array :
  D extends 'int16' ? Int16Array :
  D extends 'uint16' ? Uint16Array :
  D extends 'int32' ? Int32Array :
  D extends 'uint32' ? Uint32Array :
  D extends 'int64' ? BigInt64Array :
  D extends 'uint64' ? BigUint64Array : never;

/** Any typed array a tensor may hold. */
export type TensorArray = TypedArrayOf<DType>;

/** A tensor: dtype, dims (row-major) and elements. */
export interface TensorData {
  dtype: DType;
  dims: number[];
  data: TensorArray;
}

/** Named tensors, as fed to or returned by a model. */
export type TensorMap = Record<string, TensorData>;

const CTORS: Record<DType, { new (buf: ArrayBuffer, off: number, len: number): TensorArray; BYTES_PER_ELEMENT: number }> = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
  int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array,
  int64: BigInt64Array, uint64: BigUint64Array, bool: Uint8Array,
};

/** True when `s` names a dtype keylock knows. */
export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.hasOwn(CTORS, s);
}

/** Bytes per element of a dtype. */
export function dtypeSize(d: DType): number {
  return CTORS[d].BYTES_PER_ELEMENT;
}

/** Element count of a shape; dims must be non-negative integers. */
export function shapeSize(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`shape dims must be non-negative integers, got [${dims.join(',')}]`);
    n *= d;
  }
  return n;
}

/**
 * A typed array of `dtype` over little-endian `bytes`. Copies when the bytes are
 * not aligned for the element size (CBOR byte strings usually are not), so the
 * result never aliases a buffer the caller may reuse.
 */
export function typedFromBytes(dtype: DType, bytes: Uint8Array): TensorArray {
  const C = CTORS[dtype];
  if (bytes.byteLength % C.BYTES_PER_ELEMENT !== 0) {
    throw new RangeError(`${dtype} data must be a multiple of ${C.BYTES_PER_ELEMENT} bytes, got ${bytes.byteLength}`);
  }
  const copy = new Uint8Array(bytes);
  return new C(copy.buffer, 0, copy.byteLength / C.BYTES_PER_ELEMENT);
}

/** The little-endian bytes of a typed array (a view, not a copy). */
export function bytesOf(a: TensorArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
