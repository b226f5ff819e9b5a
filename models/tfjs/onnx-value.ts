/**
 * One value flowing through the ONNX-to-tfjs executor. ONNX activations are
 * NCHW, tfjs convolutions and pools are NHWC; a 4-D value can be held in
 * either layout (or both), so a chain Conv → Relu → MaxPool → Conv transposes
 * once on the way in and once on the way out instead of around every op.
 */
import * as tf from '@tensorflow/tfjs';
import { UnsupportedModelError } from '../../keystore/errors.ts';
import { dataTypeName } from '../onnx/dtypes.ts';
import { tensorData, tensorLabel } from '../onnx/tensor-data.ts';
import type { TensorProto } from '../onnx/types.ts';

const TO_NHWC = [0, 2, 3, 1];
const TO_NCHW = [0, 3, 1, 2];

/** Axis of the NHWC form that holds axis `a` (0–3) of the NCHW form. */
export const NHWC_AXIS: readonly number[] = [0, 3, 1, 2];

/**
 * A tensor in ONNX (channels-first) semantics. `t` is always available
 * (converted on demand); `nhwc` exists for rank-4 values. Converted forms are
 * cached, so a Val must live no longer than the tf.tidy scope that made it.
 */
export class Val {
  private cf: tf.Tensor | undefined;
  private cl: tf.Tensor4D | undefined;
  /**
   * The elements as numbers, for small constant tensors (shapes, axes, clip
   * bounds): ops read these instead of downloading tensor data. int64 values
   * outside int32 keep their true value here (e.g. Slice's INT64_MAX ends).
   */
  readonly known: readonly number[] | undefined;

  private constructor(cf: tf.Tensor | undefined, cl: tf.Tensor4D | undefined, known?: readonly number[]) {
    this.cf = cf;
    this.cl = cl;
    this.known = known;
  }

  /** A value from a tensor in ONNX layout. */
  static of(t: tf.Tensor, known?: readonly number[]): Val {
    return new Val(t, undefined, known);
  }

  /** A rank-4 value from its NHWC form. */
  static fromNhwc(t: tf.Tensor4D): Val {
    return new Val(undefined, t);
  }

  /** The tensor in ONNX layout. */
  get t(): tf.Tensor {
    this.cf ??= tf.transpose(this.cl!, TO_NCHW);
    return this.cf;
  }

  /** The NHWC form of a rank-4 value. */
  get nhwc(): tf.Tensor4D {
    if (this.cl) return this.cl;
    const t = this.cf!;
    if (t.rank !== 4) throw new RangeError(`NHWC form: expected a rank-4 value, got rank ${t.rank}`);
    this.cl = tf.transpose(t, TO_NHWC) as tf.Tensor4D;
    return this.cl;
  }

  /** True when the NHWC form is at hand without a transpose. */
  get hasNhwc(): boolean {
    return this.cl !== undefined;
  }

  /** True when the ONNX-layout form is at hand without a transpose. */
  get hasNchw(): boolean {
    return this.cf !== undefined;
  }

  /** Shape in ONNX layout. */
  get shape(): number[] {
    if (this.cf) return this.cf.shape;
    const [n, h, w, c] = this.cl!.shape;
    return [n, c, h, w];
  }

  /** Rank (the same in both layouts). */
  get rank(): number {
    return (this.cf ?? this.cl!).rank;
  }

  /** tfjs element type: float32, int32 or bool. */
  get dtype(): tf.DataType {
    return (this.cf ?? this.cl!).dtype;
  }

  /**
   * Applies a layout-agnostic (elementwise) function to whichever form is at
   * hand, preferring NHWC so a following conv or pool needs no transpose.
   */
  map(fn: (t: tf.Tensor) => tf.Tensor): Val {
    if (this.cl) return Val.fromNhwc(fn(this.cl) as tf.Tensor4D);
    return Val.of(fn(this.cf!));
  }

  /**
   * This value broadcast-aligned to an NHWC computation of rank-4 output: a
   * rank-4 value gives its NHWC form, a lower-rank one is padded with leading
   * 1s (numpy broadcasting) and then permuted like the rank-4 operands.
   */
  asNhwcOperand(): tf.Tensor {
    if (this.rank === 4) return this.nhwc;
    const t = this.t;
    if (t.size === 1) return t.rank === 0 ? t : tf.reshape(t, []);
    const s = [...new Array<number>(4 - t.rank).fill(1), ...t.shape];
    return tf.transpose(tf.reshape(t, s), TO_NHWC);
  }

  /** The elements as numbers: `known` when present, else the tensor's data (a synchronous download). */
  numbers(): number[] {
    if (this.known) return [...this.known];
    return Array.from(this.t.dataSync() as ArrayLike<number>, Number);
  }
}

/** Largest element count for which constant tensors also keep their numbers in `Val.known`. */
const KNOWN_LIMIT = 4096;

/** tfjs dtype that carries an ONNX element type (tfjs has no 64-bit or narrow integer types). */
export function tfDType(onnxType: number | undefined, where: string): 'float32' | 'int32' | 'bool' {
  switch (onnxType) {
    case 1: case 11: case 10: case 16: return 'float32';
    case 2: case 3: case 4: case 5: case 6: case 7: case 12: case 13: return 'int32';
    case 9: return 'bool';
    default: throw new UnsupportedModelError(`${where}: expected a numeric or bool element type, got ${dataTypeName(onnxType)}`);
  }
}

const I32_MIN = -2147483648;
const I32_MAX = 2147483647;

/**
 * A TensorProto as a tfjs tensor plus, for small tensors, its numbers. float64
 * narrows to float32 and every integer type to int32 (clamped: large int64
 * values are sentinels such as INT64_MAX, never real sizes).
 */
export function tensorFromProto(p: TensorProto, where = tensorLabel(p)): { tensor: tf.Tensor; known?: number[] } {
  const td = tensorData(p, where);
  const dtype = tfDType(p.data_type, where);
  const n = td.data.length;
  if (dtype === 'float32') {
    const data = td.data instanceof Float32Array ? td.data : Float32Array.from(td.data as Float64Array);
    return { tensor: tf.tensor(data, td.dims, 'float32'), known: n <= KNOWN_LIMIT ? Array.from(data) : undefined };
  }
  const nums = Array.from(td.data as ArrayLike<number | bigint>, Number);
  if (dtype === 'bool') return { tensor: tf.tensor(Uint8Array.from(nums), td.dims, 'bool'), known: n <= KNOWN_LIMIT ? nums : undefined };
  const i32 = Int32Array.from(nums, (v) => Math.min(I32_MAX, Math.max(I32_MIN, v)));
  return { tensor: tf.tensor(i32, td.dims, 'int32'), known: n <= KNOWN_LIMIT ? nums : undefined };
}
