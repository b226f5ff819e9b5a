/**
 * The glue between a source's arrays and a model input: which dims a sample
 * has, whether an array fits them, and conversion to the input's dtype.
 *
 * A model input's first dim is its batch dim when it is 1 or dynamic; a
 * recorded sample always has batch 1 there (the runtime runs one sample at a
 * time). Other dynamic dims take the source's size.
 */
import { InputMismatchError } from '../../keystore/errors.ts';
import { shapeSize, type DType, type TensorArray, type TensorData } from '../../runtime/tensor.ts';

/** A declared dim: a size, or a dynamic dim (a name, or -1). */
export type Dim = number | string;

/** A model input as declared: the model's name, dtype and shape. */
export interface InputSpec {
  name: string;
  dtype: DType;
  shape: Dim[];
}

/** True for a dim whose size the model leaves open. */
export function isDynamic(d: Dim): d is string {
  return typeof d === 'string' || d < 0;
}

/** `[N,1,28,28]`. */
export function showDims(dims: readonly Dim[]): string {
  return `[${dims.join(',')}]`;
}

/** `input "x" float32[N,1,28,28]`, for messages. */
export function showInput(spec: InputSpec): string {
  return `input "${spec.name}" ${spec.dtype}${showDims(spec.shape)}`;
}

/** The dims of one sample: a dynamic leading (batch) dim becomes 1. */
export function sampleDims(spec: InputSpec): Dim[] {
  return spec.shape.map((d, i) => (i === 0 && isDynamic(d) ? 1 : d));
}

function positional(src: readonly number[], target: readonly Dim[]): number[] | undefined {
  if (src.length !== target.length) return undefined;
  if (!target.every((d, i) => isDynamic(d) || d === src[i])) return undefined;
  return target.map((d, i) => (isDynamic(d) ? src[i] : d));
}

/**
 * The resolved dims of `target` that an array of shape `src` fills, or
 * undefined. Accepted: the same rank (dynamic dims take the source's size);
 * the target without its leading 1; or, for a static target, the same values
 * after dropping size-1 axes, or any shape with the same count when the target
 * is a vector. Anything else (e.g. HWC data for a CHW input) would silently
 * reorder values, so it is refused.
 */
export function fitShape(src: readonly number[], target: readonly Dim[]): number[] | undefined {
  const same = positional(src, target);
  if (same) return same;
  if (target.length === src.length + 1 && target[0] === 1) {
    const rest = positional(src, target.slice(1));
    if (rest) return [1, ...rest];
  }
  if (target.some(isDynamic)) return undefined;
  const t = target as number[];
  if (shapeSize(src) !== shapeSize(t)) return undefined;
  const ts = t.filter((d) => d !== 1);
  const ss = src.filter((d) => d !== 1);
  if (ts.length <= 1 || (ts.length === ss.length && ts.every((d, i) => d === ss[i]))) return [...t];
  return undefined;
}

/** Values per sample of an input, or undefined when a dim other than batch is dynamic. */
export function valuesPerSample(spec: InputSpec): number | undefined {
  const d = sampleDims(spec);
  return d.some(isDynamic) ? undefined : shapeSize(d as number[]);
}

/** An n-dimensional array read from a source, row-major. */
export interface SourceArray {
  dtype: DType;
  shape: number[];
  data: TensorArray;
}

/**
 * Splits an array into samples for `spec`: along its leading axis (each slice
 * one sample), unless the whole array already has one sample's shape.
 * InputMismatchError, naming both shapes, when neither fits.
 */
export function splitSamples(arr: SourceArray, spec: InputSpec, what: string): TensorData[] {
  const target = sampleDims(spec);
  const whole = positional(arr.shape, target);
  if (whole) return [{ dtype: spec.dtype, dims: whole, data: convert(arr.data, arr.dtype, spec.dtype, what) }];
  const rest = arr.shape.slice(1);
  const each = arr.shape.length ? fitShape(rest, target) : undefined;
  if (each) {
    const n = arr.shape[0];
    const per = shapeSize(rest);
    const out: TensorData[] = [];
    for (let i = 0; i < n; i++) {
      out.push({ dtype: spec.dtype, dims: [...each], data: convert(arr.data.subarray(i * per, (i + 1) * per), arr.dtype, spec.dtype, `${what} [${i}]`) });
    }
    return out;
  }
  const one = fitShape(arr.shape, target);
  if (one) return [{ dtype: spec.dtype, dims: one, data: convert(arr.data, arr.dtype, spec.dtype, what) }];
  throw new InputMismatchError(`${what}: an array of shape ${showDims(arr.shape)} cannot fill ${showInput(spec)}: `
    + `expected [n,${target.slice(target[0] === 1 ? 1 : 0).join(',')}] for n samples or ${showDims(target)} for one; got ${shapeSize(rest.length ? rest : arr.shape)} values per sample, `
    + `the input takes ${valuesPerSample(spec) ?? 'a size set by its dynamic dims'}`);
}

type Ctor = { new (n: number): TensorArray };
const CTORS: Record<DType, Ctor> = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
  int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array,
  int64: BigInt64Array, uint64: BigUint64Array, bool: Uint8Array,
};

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767], uint16: [0, 65535],
  int32: [-(2 ** 31), 2 ** 31 - 1], uint32: [0, 2 ** 32 - 1], bool: [0, 1],
};

/** A new typed array for `n` elements of `dtype`. */
export function allocate(dtype: DType, n: number): TensorArray {
  return new CTORS[dtype](n);
}

/**
 * Copies `src` (of source dtype `from`) into a new array of `to`. Float targets
 * take any number (float64 to float32 rounds, as numpy's astype does); integer
 * and bool targets take only values they hold exactly, so a cast never changes
 * a value silently. InputMismatchError names the first value that does not fit.
 */
export function convert(src: ArrayLike<number | bigint | boolean>, from: DType, to: DType, what: string): TensorArray {
  const n = src.length;
  const out = allocate(to, n);
  if (from === to || (to === 'uint8' && from === 'bool')) {
    (out as { set(a: ArrayLike<unknown>): void }).set(src);
    return out;
  }
  const bad = (i: number): never => {
    throw new InputMismatchError(`${what}: value ${String(src[i])} at index ${i} does not fit the input's ${to} (the source is ${from}); expected ${to === 'bool' ? '0 or 1' : `a whole number${INT_RANGE[to] ? ` in ${INT_RANGE[to]!.join('..')}` : ''}`}`);
  };
  if (to === 'float32' || to === 'float64') {
    const o = out as Float32Array | Float64Array;
    for (let i = 0; i < n; i++) o[i] = Number(src[i]);
  } else if (to === 'int64' || to === 'uint64') {
    const o = out as BigInt64Array | BigUint64Array;
    const lo = to === 'int64' ? -(2n ** 63n) : 0n;
    const hi = to === 'int64' ? 2n ** 63n - 1n : 2n ** 64n - 1n;
    for (let i = 0; i < n; i++) {
      const v = src[i];
      const num = typeof v === 'bigint' ? v : Number(v);
      if (typeof num === 'number' && !Number.isInteger(num)) bad(i);
      const b = BigInt(num);
      if (b < lo || b > hi) bad(i);
      o[i] = b;
    }
  } else {
    const o = out as Exclude<TensorArray, BigInt64Array | BigUint64Array>;
    const [lo, hi] = INT_RANGE[to]!;
    for (let i = 0; i < n; i++) {
      const v = Number(src[i]);
      if (!Number.isInteger(v) || v < lo || v > hi) bad(i);
      o[i] = v;
    }
  }
  return out;
}
