/**
 * ONNX operators (default domain) as differentiable tfjs code. Each op reads
 * its inputs as {@link Val}s and returns its outputs in ONNX semantics; convs
 * and pools compute in NHWC and hand back NHWC-held values, elementwise ops
 * keep whatever layout they were given.
 *
 * Static operands (shapes, axes, pads, clip bounds) are read from constant
 * values' numbers, or else downloaded from the tensor; they never carry
 * gradients in ONNX models, so that costs nothing in differentiability.
 */
import * as tf from '@tensorflow/tfjs';
import { UnsupportedModelError } from '../../keystore/errors.ts';
import type { Attrs } from './onnx-attrs.ts';
import type { GraphProto, NodeProto } from '../onnx/types.ts';
import { NHWC_AXIS, tensorFromProto, tfDType, Val } from './onnx-value.ts';

/** What an op sees of the executor. */
export interface OpEnv {
  readonly node: NodeProto;
  /** `node 'name' (Op)`, for messages. */
  readonly where: string;
  /** Version of the default ONNX domain the model imports. */
  readonly opset: number;
  readonly attrs: Attrs;
  /** Input `i`, or undefined when the node leaves it out (absent or named ""). */
  input(i: number): Val | undefined;
  /** Input `i`; a FormatError when it is missing. */
  need(i: number): Val;
  /** Runs a subgraph (an If branch) that sees the enclosing values; returns its outputs. */
  subgraph(g: GraphProto): Val[];
}

/** An op: outputs in node-output order (undefined for outputs it does not make). */
export type OpFn = (e: OpEnv) => (Val | undefined)[];

function unsupported(e: OpEnv, what: string): never {
  throw new UnsupportedModelError(`${e.where}: ${what}`);
}

function normAxis(axis: number, rank: number, e: OpEnv): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) unsupported(e, `axis ${axis} is out of range for a rank-${rank} tensor`);
  return a;
}

function prod(a: readonly number[]): number {
  return a.reduce((x, y) => x * y, 1);
}

// ---------------------------------------------------------------- elementwise

function unary(fn: (t: tf.Tensor, e: OpEnv) => tf.Tensor): OpFn {
  return (e) => [e.need(0).map((t) => fn(t, e))];
}

/**
 * Broadcasting n-ary elementwise op. When the output is rank 4 and an operand
 * already sits in NHWC, every operand is aligned to NHWC instead of
 * transposing that operand back.
 */
function nary(vals: Val[], fn: (ts: tf.Tensor[]) => tf.Tensor): Val {
  const rank = Math.max(...vals.map((v) => v.rank));
  if (rank === 4 && vals.some((v) => v.rank === 4 && v.hasNhwc)) {
    return Val.fromNhwc(fn(vals.map((v) => v.asNhwcOperand())) as tf.Tensor4D);
  }
  return Val.of(fn(vals.map((v) => v.t)));
}

function binary(fn: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor): OpFn {
  return (e) => [nary([e.need(0), e.need(1)], ([a, b]) => fn(a, b))];
}

function variadic(fn: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, finish?: (t: tf.Tensor, n: number) => tf.Tensor): OpFn {
  return (e) => {
    const vals = e.node.input.map((_, i) => e.need(i));
    return [nary(vals, (ts) => {
      let acc = ts[0];
      for (let i = 1; i < ts.length; i++) acc = fn(acc, ts[i]);
      return finish ? finish(acc, ts.length) : acc;
    })];
  };
}

/** ONNX Div: integer division truncates toward zero; tfjs's int div floors. */
function div(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  if (a.dtype !== 'int32') return tf.div(a, b);
  const q = tf.div(tf.cast(a, 'float32'), tf.cast(b, 'float32'));
  return tf.cast(tf.sub(q, tf.mod(q, 1)), 'int32');
}

function clip(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  let lo: Val | number | undefined;
  let hi: Val | number | undefined;
  if (e.opset < 11) {
    lo = e.attrs.float('min', -Infinity);
    hi = e.attrs.float('max', Infinity);
  } else {
    lo = e.input(1);
    hi = e.input(2);
    if (lo?.known) lo = lo.known[0];
    if (hi?.known) hi = hi.known[0];
  }
  if (typeof lo !== 'object' && typeof hi !== 'object') {
    const l = lo ?? -Infinity;
    const h = hi ?? Infinity;
    if (x.dtype === 'float32') return [x.map((t) => tf.clipByValue(t, Math.max(l, -3.4028234663852886e38), Math.min(h, 3.4028234663852886e38)))];
    return [x.map((t) => tf.minimum(tf.maximum(t, tf.scalar(l, t.dtype)), tf.scalar(h, t.dtype)))];
  }
  const parts: Val[] = [x];
  if (lo !== undefined) parts.push(typeof lo === 'number' ? Val.of(tf.scalar(lo, x.dtype)) : lo);
  if (hi !== undefined) parts.push(typeof hi === 'number' ? Val.of(tf.scalar(hi, x.dtype)) : hi);
  const hasLo = lo !== undefined;
  return [nary(parts, (ts) => {
    let t = ts[0];
    if (hasLo) t = tf.maximum(t, ts[1]);
    if (hi !== undefined) t = tf.minimum(t, ts[hasLo ? 2 : 1]);
    return t;
  })];
}

function cast(e: OpEnv): (Val | undefined)[] {
  const to = e.attrs.int('to', 0);
  const dtype = tfDType(to, e.where);
  const x = e.need(0);
  if (x.dtype === dtype) return [x];
  // ONNX casts float → int by truncation; tfjs's cast truncates too.
  return [x.map((t) => tf.cast(t, dtype))];
}

function hardSigmoid(t: tf.Tensor, alpha: number, beta: number): tf.Tensor {
  return tf.clipByValue(tf.add(tf.mul(t, alpha), beta), 0, 1);
}

// ---------------------------------------------------------------- dense

function gemm(e: OpEnv): (Val | undefined)[] {
  const a = e.need(0).t;
  const b = e.need(1).t;
  const c = e.input(2);
  if (a.rank !== 2 || b.rank !== 2) unsupported(e, `Gemm expects rank-2 A and B, got ranks ${a.rank} and ${b.rank}`);
  const alpha = e.attrs.float('alpha', 1);
  const beta = e.attrs.float('beta', 1);
  // Explicit transposes: the wasm backend's matMul with transpose flags measured ~3× slower than a transpose plus a plain matMul.
  const at = e.attrs.int('transA', 0) !== 0 ? tf.transpose(a) : a;
  const bt = e.attrs.int('transB', 0) !== 0 ? tf.transpose(b) : b;
  let y: tf.Tensor = tf.matMul(at as tf.Tensor2D, bt as tf.Tensor2D);
  if (alpha !== 1) y = tf.mul(y, alpha);
  if (c) y = tf.add(y, beta === 1 ? c.t : tf.mul(c.t, beta));
  return [Val.of(y)];
}

function matMul(e: OpEnv): (Val | undefined)[] {
  let a = e.need(0).t;
  let b = e.need(1).t;
  const aVec = a.rank === 1;
  const bVec = b.rank === 1;
  if (aVec) a = tf.expandDims(a, 0);
  if (bVec) b = tf.expandDims(b, 1);
  let y: tf.Tensor;
  if (b.rank === 2 && a.rank > 2) {
    // [..., M, K] × [K, N]: one 2-D product over the flattened leading axes.
    const lead = a.shape.slice(0, -1);
    y = tf.reshape(tf.matMul(tf.reshape(a, [-1, a.shape[a.rank - 1]]) as tf.Tensor2D, b as tf.Tensor2D), [...lead, b.shape[1]!]);
  } else {
    const r = Math.max(a.rank, b.rank);
    if (a.rank < r) a = tf.reshape(a, [...new Array<number>(r - a.rank).fill(1), ...a.shape]);
    if (b.rank < r) b = tf.reshape(b, [...new Array<number>(r - b.rank).fill(1), ...b.shape]);
    y = tf.matMul(a, b);
  }
  if (aVec) y = tf.squeeze(y, [y.rank - 2]);
  if (bVec) y = tf.squeeze(y, [y.rank - 1]);
  return [Val.of(y)];
}

// ---------------------------------------------------------------- conv and pool

interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  /** Padding before each spatial axis. */
  begin: number[];
  /** Padding after each spatial axis (ceil_mode's extra rows included). */
  end: number[];
  /** The declared end padding only (without ceil_mode's extra rows). */
  declaredEnd: number[];
  out: number[];
}

/** Output size and padding of a conv or pool window, per ONNX's auto_pad, pads and ceil_mode rules. */
function windowGeometry(e: OpEnv, inSize: number[], kernel: number[], ceil: boolean): Window {
  const n = inSize.length;
  const strides = e.attrs.ints('strides') ?? new Array<number>(n).fill(1);
  const dilations = e.attrs.ints('dilations') ?? new Array<number>(n).fill(1);
  const autoPad = e.attrs.str('auto_pad', 'NOTSET');
  const pads = e.attrs.ints('pads') ?? new Array<number>(2 * n).fill(0);
  if (strides.length !== n || dilations.length !== n || pads.length !== 2 * n || kernel.length !== n) {
    unsupported(e, `expected ${n} spatial axes in kernel_shape/strides/dilations and ${2 * n} pads, got [${kernel}], [${strides}], [${dilations}], [${pads}]`);
  }
  if (pads.some((p) => p < 0)) unsupported(e, `negative pads [${pads}] are not supported`);
  const begin: number[] = [];
  const end: number[] = [];
  const declaredEnd: number[] = [];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const k = (kernel[i] - 1) * dilations[i] + 1;
    const s = strides[i];
    let b: number;
    let en: number;
    let o: number;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
      o = Math.ceil(inSize[i] / s);
      const total = Math.max(0, (o - 1) * s + k - inSize[i]);
      b = autoPad === 'SAME_UPPER' ? Math.floor(total / 2) : Math.ceil(total / 2);
      en = total - b;
    } else if (autoPad === 'VALID') {
      b = 0; en = 0;
      o = Math.floor((inSize[i] - k) / s) + 1;
    } else if (autoPad === 'NOTSET') {
      b = pads[i]; en = pads[i + n];
      const span = inSize[i] + b + en - k;
      o = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
      // A last window that would start in the end padding is dropped (ceil_mode only).
      if (ceil && (o - 1) * s >= inSize[i] + b) o--;
    } else {
      unsupported(e, `auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got ${autoPad}`);
    }
    if (o < 1) unsupported(e, `the window (${k}) is larger than the padded input (${inSize[i] + b + en}) on spatial axis ${i}`);
    begin.push(b);
    declaredEnd.push(en);
    end.push(Math.max(en, (o - 1) * s + k - inSize[i] - b));
    out.push(o);
  }
  return { kernel, strides, dilations, begin, end, declaredEnd, out };
}

/**
 * The input as NHWC 4-D plus how to turn the NHWC result back into a Val.
 * 1-D convs/pools ([N,C,L]) run as 2-D with a height of 1.
 */
function spatialIn(e: OpEnv, x: Val): { t: tf.Tensor4D; size: number[]; back: (y: tf.Tensor4D) => Val } {
  if (x.rank === 4) return { t: x.nhwc, size: x.shape.slice(2), back: (y) => Val.fromNhwc(y) };
  if (x.rank === 3) {
    const t = tf.expandDims(tf.transpose(x.t, [0, 2, 1]), 1) as tf.Tensor4D;
    return { t, size: [1, x.shape[2]], back: (y) => Val.of(tf.transpose(tf.squeeze(y, [1]), [0, 2, 1])) };
  }
  return unsupported(e, `expected a 1-D or 2-D spatial input (rank 3 or 4), got rank ${x.rank}`);
}

/** 1-D window parameters lifted to 2-D (height 1, no padding, stride 1). */
function lift(w: Window, oneD: boolean): Window {
  if (!oneD) return w;
  return {
    kernel: [1, ...w.kernel], strides: [1, ...w.strides], dilations: [1, ...w.dilations],
    begin: [0, ...w.begin], end: [0, ...w.end], declaredEnd: [0, ...w.declaredEnd], out: [1, ...w.out],
  };
}

/** Inserts d−1 zeros between kernel taps along one axis of an HWIO kernel, so tfjs needs no dilation (its gradients have none). */
function dilateKernel(f: tf.Tensor4D, axis: 0 | 1, d: number): tf.Tensor4D {
  if (d === 1) return f;
  const s = f.shape;
  const k = s[axis];
  const x = tf.expandDims(f, axis + 1);
  const padding: [number, number][] = [[0, 0], [0, 0], [0, 0], [0, 0], [0, 0]];
  padding[axis + 1] = [0, d - 1];
  const shape = [...s] as number[];
  shape[axis] = k * d;
  const full = tf.reshape(tf.pad(x, padding), shape);
  const size = [...s] as number[];
  size[axis] = (k - 1) * d + 1;
  return tf.slice(full, [0, 0, 0, 0], size) as tf.Tensor4D;
}

function hasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

function conv(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  const wv = e.need(1);
  const bias = e.input(2);
  if (x.rank !== wv.rank) unsupported(e, `Conv input rank ${x.rank} and weight rank ${wv.rank} must match`);
  const oneD = x.rank === 3;
  const { t: xin, size, back } = spatialIn(e, x);
  let w = wv.t;
  if (oneD) w = tf.expandDims(w, 2);
  const [outC, inPerGroup, kh, kw] = w.shape;
  const group = e.attrs.int('group', 1);
  const inC = xin.shape[3];
  if (inPerGroup * group !== inC || outC % group !== 0) {
    unsupported(e, `Conv expects weight [O, C/group, kH, kW] with C=${inC}, group=${group}, got [${w.shape}]`);
  }
  const ks = e.attrs.ints('kernel_shape');
  const kernel = oneD ? [kw] : [kh, kw];
  if (ks && ks.join() !== kernel.join()) unsupported(e, `kernel_shape [${ks}] differs from the weight's [${kernel}]`);
  const g = lift(windowGeometry(e, oneD ? size.slice(1) : size, kernel, false), oneD);
  const pad: 'valid' | [[number, number], [number, number], [number, number], [number, number]] =
    g.begin.every((p) => p === 0) && g.end.every((p) => p === 0)
      ? 'valid'
      : [[0, 0], [g.begin[0], g.end[0]], [g.begin[1], g.end[1]], [0, 0]];
  const strides: [number, number] = [g.strides[0], g.strides[1]];
  // OIHW → HWIO, then dilation spelled out in the kernel.
  let f = tf.transpose(w, [2, 3, 1, 0]) as tf.Tensor4D;
  f = dilateKernel(dilateKernel(f, 0, g.dilations[0]), 1, g.dilations[1]);
  let y: tf.Tensor4D;
  if (group === 1) {
    y = tf.conv2d(xin, f, strides, pad);
  } else if (group === inC && inPerGroup === 1 && hasKernel('DepthwiseConv2dNativeBackpropFilter') && hasKernel('DepthwiseConv2dNativeBackpropInput')) {
    // HW1(C·m) → HWCm: output channel c·m + j of ONNX is tfjs's depthwise channel c, multiplier j.
    const m = outC / inC;
    y = tf.depthwiseConv2d(xin, tf.reshape(f, [f.shape[0], f.shape[1], inC, m]) as tf.Tensor4D, strides, pad);
  } else {
    // Grouped conv as one dense conv with a block-diagonal kernel: works (and
    // differentiates) on every backend, including wasm, which lacks the
    // depthwise backprop kernels.
    const outPerGroup = outC / group;
    const tiled = tf.tile(f, [1, 1, group, 1]);
    const mask = new Float32Array(inC * outC);
    for (let ci = 0; ci < inC; ci++) {
      for (let co = 0; co < outC; co++) {
        if (Math.floor(ci / inPerGroup) === Math.floor(co / outPerGroup)) mask[ci * outC + co] = 1;
      }
    }
    y = tf.conv2d(xin, tf.mul(tiled, tf.tensor4d(mask, [1, 1, inC, outC])) as tf.Tensor4D, strides, pad);
  }
  if (bias) y = tf.add(y, bias.t) as tf.Tensor4D;
  return [back(y)];
}

const LOWEST = -3.4028234663852886e38;

function pool(kind: 'max' | 'avg'): OpFn {
  return (e) => {
    if (e.node.output.length > 1 && e.node.output[1]) unsupported(e, 'the Indices output of MaxPool is not supported');
    const x = e.need(0);
    const oneD = x.rank === 3;
    const { t: xin, size, back } = spatialIn(e, x);
    const kernel = e.attrs.ints('kernel_shape');
    if (!kernel) unsupported(e, 'kernel_shape is required');
    const g = lift(windowGeometry(e, oneD ? size.slice(1) : size, kernel, e.attrs.int('ceil_mode', 0) !== 0), oneD);
    if (g.dilations.some((d) => d !== 1)) unsupported(e, `pooling dilations [${g.dilations}] are not supported`);
    const k: [number, number] = [g.kernel[0], g.kernel[1]];
    const s: [number, number] = [g.strides[0], g.strides[1]];
    const padded = g.begin.some((p) => p > 0) || g.end.some((p) => p > 0);
    const padding: [number, number][] = [[0, 0], [g.begin[0], g.end[0]], [g.begin[1], g.end[1]], [0, 0]];
    let y: tf.Tensor4D;
    if (kind === 'max') {
      y = tf.maxPool(padded ? tf.pad(xin, padding, LOWEST) : xin, k, s, 'valid');
    } else {
      y = tf.avgPool(padded ? tf.pad(xin, padding, 0) : xin, k, s, 'valid');
      const includePad = e.attrs.int('count_include_pad', 0) !== 0;
      const extra = g.end.some((p, i) => p !== g.declaredEnd[i]);
      if (padded && (!includePad || extra)) {
        // Divide by the count of cells that count: the input, plus the declared
        // pads when count_include_pad, never ceil_mode's extra rows.
        const [, h, w] = xin.shape;
        const v = includePad ? 1 : 0;
        let m = tf.pad(tf.ones([1, h, w, 1]), [[0, 0], [g.begin[0], g.declaredEnd[0]], [g.begin[1], g.declaredEnd[1]], [0, 0]], v);
        m = tf.pad(m, [[0, 0], [0, g.end[0] - g.declaredEnd[0]], [0, g.end[1] - g.declaredEnd[1]], [0, 0]], 0);
        y = tf.div(y, tf.avgPool(m as tf.Tensor4D, k, s, 'valid'));
      }
    }
    if (y.shape[1] !== g.out[0] || y.shape[2] !== g.out[1]) {
      y = tf.slice(y, [0, 0, 0, 0], [y.shape[0], g.out[0], g.out[1], y.shape[3]]);
    }
    return [back(y)];
  };
}

function globalPool(kind: 'max' | 'avg'): OpFn {
  return (e) => {
    const x = e.need(0);
    const red = kind === 'max' ? tf.max : tf.mean;
    if (x.rank === 4 && x.hasNhwc) return [Val.fromNhwc(red(x.nhwc, [1, 2], true) as tf.Tensor4D)];
    if (x.rank < 3) unsupported(e, `expected a rank ≥ 3 input, got rank ${x.rank}`);
    const axes = Array.from({ length: x.rank - 2 }, (_, i) => i + 2);
    return [Val.of(red(x.t, axes, true))];
  };
}

function batchNorm(e: OpEnv): (Val | undefined)[] {
  if (e.attrs.int('training_mode', 0) !== 0) unsupported(e, 'training_mode=1 is not supported (inference-mode BatchNormalization only)');
  if (e.node.output.filter((o) => o).length > 1) unsupported(e, 'the running mean/var outputs are not supported');
  const x = e.need(0);
  const eps = e.attrs.float('epsilon', 1e-5);
  const [scale, b, mean, variance] = [1, 2, 3, 4].map((i) => e.need(i).t);
  // y = x·k + (B − mean·k) with k = scale / sqrt(var + eps); all four stay differentiable.
  const k = tf.mul(scale, tf.rsqrt(tf.add(variance, eps)));
  const shift = tf.sub(b, tf.mul(mean, k));
  if (x.rank === 4 && x.hasNhwc) return [Val.fromNhwc(tf.add(tf.mul(x.nhwc, k), shift) as tf.Tensor4D)];
  if (x.rank < 2) unsupported(e, `expected a rank ≥ 2 input, got rank ${x.rank}`);
  const shape = [k.shape[0], ...new Array<number>(x.rank - 2).fill(1)];
  return [Val.of(tf.add(tf.mul(x.t, tf.reshape(k, shape)), tf.reshape(shift, shape)))];
}

// ---------------------------------------------------------------- shape ops

function softmax(log: boolean): OpFn {
  return (e) => {
    const x = e.need(0).t;
    const fn = log ? tf.logSoftmax : tf.softmax;
    if (e.opset < 13) {
      // Opsets 1–12: softmax over everything from `axis` on, as one flattened row.
      const axis = normAxis(e.attrs.int('axis', 1), x.rank, e);
      const rows = prod(x.shape.slice(0, axis));
      return [Val.of(tf.reshape(fn(tf.reshape(x, [rows, -1])), x.shape))];
    }
    const axis = normAxis(e.attrs.int('axis', -1), x.rank, e);
    if (axis === x.rank - 1) return [Val.of(fn(x))];
    const perm = Array.from({ length: x.rank }, (_, i) => i);
    perm[axis] = x.rank - 1;
    perm[x.rank - 1] = axis;
    return [Val.of(tf.transpose(fn(tf.transpose(x, perm)), perm))];
  };
}

function flatten(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  const s = x.shape;
  const axis = e.attrs.int('axis', 1);
  const a = axis < 0 ? axis + s.length : axis;
  if (a < 0 || a > s.length) unsupported(e, `Flatten axis ${axis} is out of range for rank ${s.length}`);
  return [Val.of(tf.reshape(x.t, [prod(s.slice(0, a)), prod(s.slice(a))]))];
}

function reshape(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  const spec = e.opset < 5 ? (e.attrs.ints('shape') ?? []) : e.need(1).numbers();
  const allowZero = e.attrs.int('allowzero', 0) !== 0;
  const inShape = x.shape;
  const shape = spec.map((d, i) => (d === 0 && !allowZero ? inShape[i] : d));
  return [Val.of(tf.reshape(x.t, shape))];
}

function transpose(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  const perm = e.attrs.ints('perm') ?? Array.from({ length: x.rank }, (_, i) => x.rank - 1 - i);
  if (x.rank === 4 && x.hasNhwc && !x.hasNchw) {
    // Compose with the NCHW→NHWC permutation instead of undoing it first.
    const p = perm.map((a) => NHWC_AXIS[a]);
    return [Val.of(p.every((a, i) => a === i) ? x.nhwc : tf.transpose(x.nhwc, p))];
  }
  return [Val.of(tf.transpose(x.t, perm))];
}

function concat(e: OpEnv): (Val | undefined)[] {
  const vals = e.node.input.map((_, i) => e.need(i));
  const rank = vals[0].rank;
  const axis = normAxis(e.attrs.int('axis', 0), rank, e);
  if (rank === 4 && vals.some((v) => v.hasNhwc)) return [Val.fromNhwc(tf.concat(vals.map((v) => v.nhwc), NHWC_AXIS[axis]) as tf.Tensor4D)];
  const known = vals.every((v) => v.known) && rank === 1 ? vals.flatMap((v) => v.known!) : undefined;
  return [Val.of(tf.concat(vals.map((v) => v.t), axis), known)];
}

function axesOf(e: OpEnv, inputIndex: number, fromInputSince: number): number[] | undefined {
  if (e.opset >= fromInputSince) return e.input(inputIndex)?.numbers();
  return e.attrs.ints('axes');
}

function squeeze(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  const s = x.shape;
  const axes = axesOf(e, 1, 13);
  const drop = axes ? axes.map((a) => normAxis(a, s.length, e)) : s.flatMap((d, i) => (d === 1 ? [i] : []));
  for (const a of drop) if (s[a] !== 1) unsupported(e, `cannot squeeze axis ${a} of size ${s[a]}`);
  const out = s.filter((_, i) => !drop.includes(i));
  return [Val.of(tf.reshape(x.t, out), x.known)];
}

function unsqueeze(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  const axes = axesOf(e, 1, 13);
  if (!axes) unsupported(e, 'Unsqueeze needs axes');
  const r = x.rank + axes.length;
  const norm = axes.map((a) => normAxis(a, r, e));
  const out: number[] = [];
  const s = x.shape;
  let j = 0;
  for (let i = 0; i < r; i++) out.push(norm.includes(i) ? 1 : s[j++]);
  return [Val.of(tf.reshape(x.t, out), x.known)];
}

function constant(e: OpEnv): (Val | undefined)[] {
  const a = e.attrs;
  const t = a.tensor('value');
  if (t) {
    const { tensor, known } = tensorFromProto(t, `${e.where} value`);
    return [Val.of(tensor, known)];
  }
  if (a.has('value_float')) {
    const v = a.float('value_float', 0);
    return [Val.of(tf.scalar(v), [v])];
  }
  const fs = a.floats('value_floats');
  if (fs) return [Val.of(tf.tensor1d(fs), fs)];
  if (a.has('value_int')) {
    const v = a.int('value_int', 0);
    return [Val.of(tf.scalar(v, 'int32'), [v])];
  }
  const is = a.ints('value_ints');
  if (is) return [Val.of(tf.tensor1d(is, 'int32'), is)];
  return unsupported(e, 'Constant needs value, value_float(s) or value_int(s); sparse and string constants are not supported');
}

function shapeOp(e: OpEnv): (Val | undefined)[] {
  const s = e.need(0).shape;
  const r = s.length;
  const clampAxis = (a: number) => Math.min(r, Math.max(0, a < 0 ? a + r : a));
  const part = s.slice(clampAxis(e.attrs.int('start', 0)), clampAxis(e.attrs.int('end', r)));
  return [Val.of(tf.tensor1d(part, 'int32'), part)];
}

function gather(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  const iv = e.need(1);
  const axis = normAxis(e.attrs.int('axis', 0), x.rank, e);
  const dim = x.shape[axis];
  const fix = (i: number) => (i < 0 ? i + dim : i);
  let idx: tf.Tensor;
  if (iv.known) {
    const ids = iv.known.map(fix);
    idx = tf.tensor(ids, iv.shape, 'int32');
  } else {
    idx = tf.where(tf.less(iv.t, 0), tf.add(iv.t, tf.scalar(dim, 'int32')), iv.t);
  }
  const known = x.known && x.rank === 1 && iv.known ? iv.known.map((i) => x.known![fix(i)]) : undefined;
  return [Val.of(tf.gather(x.t, idx, axis), known)];
}

function slice(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  let starts: number[];
  let ends: number[];
  let axes: number[] | undefined;
  let steps: number[] | undefined;
  if (e.opset < 10) {
    starts = e.attrs.ints('starts') ?? [];
    ends = e.attrs.ints('ends') ?? [];
    axes = e.attrs.ints('axes');
  } else {
    starts = e.need(1).numbers();
    ends = e.need(2).numbers();
    axes = e.input(3)?.numbers();
    steps = e.input(4)?.numbers();
  }
  const s = x.shape;
  const r = s.length;
  axes ??= starts.map((_, i) => i);
  const begin = new Array<number>(r).fill(0);
  const end = [...s];
  const stride = new Array<number>(r).fill(1);
  const reverse: number[] = [];
  for (let i = 0; i < axes.length; i++) {
    const a = normAxis(axes[i], r, e);
    const d = s[a];
    const step = steps?.[i] ?? 1;
    if (step === 0) unsupported(e, 'Slice step 0 is invalid');
    let st = starts[i] < 0 ? starts[i] + d : starts[i];
    let en = ends[i] < 0 ? ends[i] + d : ends[i];
    if (step > 0) {
      st = Math.min(Math.max(st, 0), d);
      en = Math.min(Math.max(en, 0), d);
      begin[a] = st; end[a] = Math.max(st, en); stride[a] = step;
    } else {
      // Negative steps run on the axis reversed: index i becomes d−1−i.
      st = Math.min(Math.max(st, 0), d - 1);
      en = Math.min(Math.max(en, -1), d - 1);
      reverse.push(a);
      begin[a] = d - 1 - st; end[a] = Math.max(d - 1 - st, d - 1 - en); stride[a] = -step;
    }
  }
  let t = x.t;
  if (reverse.length) t = tf.reverse(t, reverse);
  const size = end.map((v, i) => v - begin[i]);
  const y = stride.every((v) => v === 1) ? tf.slice(t, begin, size) : tf.stridedSlice(t, begin, end, stride);
  let known: number[] | undefined;
  if (x.known && r === 1 && reverse.length === 0) {
    known = [];
    for (let i = begin[0]; i < end[0]; i += stride[0]) known.push(x.known[i]);
  }
  return [Val.of(y, known)];
}

function padOp(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  const mode = e.attrs.str('mode', 'constant');
  let pads: number[];
  let value = 0;
  let axes: number[] | undefined;
  if (e.opset < 11) {
    pads = e.attrs.ints('pads') ?? [];
    value = e.attrs.float('value', 0);
  } else {
    pads = e.need(1).numbers();
    const cv = e.input(2);
    if (cv) value = cv.numbers()[0];
    axes = e.input(3)?.numbers();
  }
  const r = x.rank;
  const ax = (axes ?? Array.from({ length: r }, (_, i) => i)).map((a) => normAxis(a, r, e));
  if (pads.length !== 2 * ax.length) unsupported(e, `expected ${2 * ax.length} pads, got ${pads.length}`);
  if (pads.some((p) => p < 0)) unsupported(e, 'negative pads are not supported');
  const pairs: [number, number][] = Array.from({ length: r }, () => [0, 0]);
  ax.forEach((a, i) => { pairs[a] = [pads[i], pads[i + ax.length]]; });
  if (mode === 'constant') return [Val.of(tf.pad(x.t, pairs, value))];
  if (mode === 'reflect') return [Val.of(tf.mirrorPad(x.t, pairs, 'reflect'))];
  return unsupported(e, `Pad mode ${mode} is not supported (constant and reflect are)`);
}

function expand(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  const shape = e.need(1).numbers();
  const s = x.shape;
  const r = Math.max(s.length, shape.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const a = s[i - (r - s.length)] ?? 1;
    const b = shape[i - (r - shape.length)] ?? 1;
    if (a !== b && a !== 1 && b !== 1) unsupported(e, `cannot broadcast [${s}] to [${shape}]`);
    out.push(a === 1 ? b : a);
  }
  let t = x.t;
  if (t.rank < r) t = tf.reshape(t, [...new Array<number>(r - t.rank).fill(1), ...t.shape]);
  return [Val.of(tf.broadcastTo(t, out))];
}

function reduce(kind: 'mean' | 'sum' | 'max' | 'min' | 'prod', axesInputSince: number): OpFn {
  const fns = { mean: tf.mean, sum: tf.sum, max: tf.max, min: tf.min, prod: tf.prod };
  return (e) => {
    const x = e.need(0);
    const keep = e.attrs.int('keepdims', 1) !== 0;
    let axes = axesOf(e, 1, axesInputSince);
    if (!axes || axes.length === 0) {
      if (e.attrs.int('noop_with_empty_axes', 0) !== 0) return [x];
      axes = Array.from({ length: x.rank }, (_, i) => i);
    }
    const norm = axes.map((a) => normAxis(a, x.rank, e));
    const fn = fns[kind];
    if (keep && x.rank === 4 && x.hasNhwc) return [Val.fromNhwc(fn(x.nhwc, norm.map((a) => NHWC_AXIS[a]), true) as tf.Tensor4D)];
    return [Val.of(fn(x.t, norm, keep))];
  };
}

function ifOp(e: OpEnv): (Val | undefined)[] {
  const cond = e.need(0);
  if (cond.shape.reduce((a, b) => a * b, 1) !== 1) unsupported(e, `If needs a single-element condition, got shape [${cond.shape}]`);
  const branch = e.attrs.graph(cond.numbers()[0] ? 'then_branch' : 'else_branch');
  if (!branch) unsupported(e, 'If needs then_branch and else_branch graphs');
  return e.subgraph(branch);
}

function dropout(e: OpEnv): (Val | undefined)[] {
  const x = e.need(0);
  // Inference: identity; a requested mask output is all true.
  return e.node.output.length > 1 && e.node.output[1] ? [x, Val.of(tf.ones(x.shape, 'bool'))] : [x];
}

/** Every supported default-domain op. */
export const OPS: Readonly<Record<string, OpFn>> = {
  // elementwise
  Identity: (e) => [e.need(0)],
  Dropout: dropout,
  Relu: unary((t) => tf.relu(t)),
  LeakyRelu: unary((t, e) => tf.leakyRelu(t, e.attrs.float('alpha', 0.01))),
  Sigmoid: unary((t) => tf.sigmoid(t)),
  Tanh: unary((t) => tf.tanh(t)),
  Elu: unary((t, e) => {
    const alpha = e.attrs.float('alpha', 1);
    return alpha === 1 ? tf.elu(t) : tf.add(tf.relu(t), tf.mul(alpha, tf.sub(tf.exp(tf.minimum(t, 0)), 1)));
  }),
  Softplus: unary((t) => tf.softplus(t)),
  HardSigmoid: unary((t, e) => hardSigmoid(t, e.attrs.float('alpha', 0.2), e.attrs.float('beta', 0.5))),
  HardSwish: unary((t) => tf.mul(t, hardSigmoid(t, 1 / 6, 0.5))),
  Neg: unary((t) => tf.neg(t)),
  Abs: unary((t) => tf.abs(t)),
  Exp: unary((t) => tf.exp(t)),
  Log: unary((t) => tf.log(t)),
  Sqrt: unary((t) => tf.sqrt(t)),
  Reciprocal: unary((t) => tf.reciprocal(t)),
  Erf: unary((t) => tf.erf(t)),
  Floor: unary((t) => tf.floor(t)),
  Ceil: unary((t) => tf.ceil(t)),
  Not: unary((t) => tf.logicalNot(t)),
  Clip: clip,
  Cast: cast,
  Add: binary(tf.add),
  Sub: binary(tf.sub),
  Mul: binary(tf.mul),
  Div: binary(div),
  Pow: binary((a, b) => tf.pow(a, b.dtype === a.dtype ? b : tf.cast(b, a.dtype))),
  PRelu: binary((x, slope) => tf.add(tf.relu(x), tf.mul(slope, tf.minimum(x, 0)))),
  Equal: binary(tf.equal),
  Greater: binary(tf.greater),
  GreaterOrEqual: binary(tf.greaterEqual),
  Less: binary(tf.less),
  LessOrEqual: binary(tf.lessEqual),
  And: binary(tf.logicalAnd),
  Or: binary(tf.logicalOr),
  Where: (e) => [nary([e.need(0), e.need(1), e.need(2)], ([c, a, b]) => tf.where(c, a, b))],
  Max: variadic(tf.maximum),
  Min: variadic(tf.minimum),
  Sum: variadic(tf.add),
  Mean: variadic(tf.add, (t, n) => tf.div(t, n)),
  // dense
  Gemm: gemm,
  MatMul: matMul,
  // conv and pool
  Conv: conv,
  MaxPool: pool('max'),
  AveragePool: pool('avg'),
  GlobalAveragePool: globalPool('avg'),
  GlobalMaxPool: globalPool('max'),
  BatchNormalization: batchNorm,
  // shape
  Softmax: softmax(false),
  LogSoftmax: softmax(true),
  Flatten: flatten,
  Reshape: reshape,
  Transpose: transpose,
  Concat: concat,
  Squeeze: squeeze,
  Unsqueeze: unsqueeze,
  Constant: constant,
  Shape: shapeOp,
  Gather: gather,
  Slice: slice,
  Pad: padOp,
  Expand: expand,
  ReduceMean: reduce('mean', 18),
  ReduceSum: reduce('sum', 13),
  ReduceMax: reduce('max', 18),
  ReduceMin: reduce('min', 18),
  ReduceProd: reduce('prod', 18),
  If: ifOp,
};
