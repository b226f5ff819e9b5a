/**
 * A small TFLite writer: one subgraph of tensors and builtin operators
 * (CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE,
 * FULLY_CONNECTED, SOFTMAX, GATHER, MEAN/SUM/REDUCE_MAX, and option-less ops), serialized as a schema-3 flatbuffer
 * with the field ids of runtime/tflite-schema.ts.
 *
 * Layout: FlatBuffers offsets (u32) may only point forward, so the writer
 * lays every object out after the field that refers to it: a table's vtable,
 * then the table, then its children, patching each offset once the child's
 * position is known. Scalars sit at their natural alignment, vector lengths
 * at 4, buffer data at 16 (schema: force_align 16), as the flatbuffers
 * verifier and TFLite's kernels expect.
 */
import {
  ACTIVATIONS, BUFFER, BUILTIN, CONV_2D_OPTIONS, DEPTHWISE_OPTIONS, FULLY_CONNECTED_OPTIONS, MODEL, OPERATOR, OPERATOR_CODE, OPTIONS_TYPE,
  PADDING, POOL_2D_OPTIONS, QUANTIZATION, RESHAPE_OPTIONS, SUBGRAPH, TENSOR, tensorTypeOf, TFLITE_IDENTIFIER,
} from '../../runtime/tflite-schema.ts';
import type { OperatorOptions } from './codec.ts';

/** A tensor to write; `data` makes it a constant with its own buffer. */
export interface TfliteTensorSpec {
  name: string;
  dtype: string;
  shape: number[];
  shapeSignature?: number[];
  data?: Uint8Array;
  /**
   * A buffer kept outside the flatbuffer (schema 3c, models over 2 GB): only
   * its offset and size are written. For tests of readers that must refuse it.
   */
  external?: { offset: number; size: number };
  quantization?: { scale: number[]; zeroPoint: number[]; quantizedDimension?: number };
}

/**
 * Options the writer takes beyond what the codec reads back: SOFTMAX's beta
 * (TFLite reads a missing SoftmaxOptions as beta 0, a uniform softmax), GATHER's
 * axis, and the reducers' keep_dims.
 */
export type WriterOnlyOptions =
  | { kind: 'softmax'; beta: number }
  | { kind: 'gather'; axis: number; batchDims?: number }
  | { kind: 'reducer'; keepDims: boolean };

/** BuiltinOptions union indices and field ids (schema.fbs) of {@link WriterOnlyOptions}. */
const EXTRA_OPTIONS = {
  SoftmaxOptions: { type: 9, beta: 0 },
  GatherOptions: { type: 23, axis: 0, batchDims: 1 },
  ReducerOptions: { type: 27, keepDims: 0 },
} as const;

export interface TfliteOperatorSpec {
  /** A BUILTIN name, e.g. `CONV_2D`; `CUSTOM` with `customCode` for a custom op. */
  op: keyof typeof BUILTIN;
  /** The custom op's name (`op: 'CUSTOM'` only), e.g. `TFLite_Detection_PostProcess`. */
  customCode?: string;
  inputs: number[];
  outputs: number[];
  options?: OperatorOptions | WriterOnlyOptions;
}

/** A single-subgraph model. */
export interface TfliteModelSpec {
  description?: string;
  tensors: TfliteTensorSpec[];
  inputs: number[];
  outputs: number[];
  operators: TfliteOperatorSpec[];
}

type Scalar = { kind: 'u8' | 'i8' | 'bool' | 'i32' | 'u32' | 'f32' | 'u64'; value: number };
type Child = { kind: 'child'; write: (w: Writer) => number };
type Field = Scalar | Child;
type Fields = Record<number, Field | undefined>;

const SIZE = { u8: 1, i8: 1, bool: 1, i32: 4, u32: 4, f32: 4, u64: 8 } as const;

class Writer {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  pos = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf);
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  /** Pads with zeros until (pos + skew) is a multiple of n. */
  align(n: number, skew = 0): void {
    const pad = (n - ((this.pos + skew) % n)) % n;
    this.room(pad);
    this.pos += pad;
  }

  put(kind: Scalar['kind'], v: number): void {
    this.room(8);
    const p = this.pos;
    if (kind === 'u8' || kind === 'bool') this.view.setUint8(p, v);
    else if (kind === 'i8') this.view.setInt8(p, v);
    else if (kind === 'i32') this.view.setInt32(p, v, true);
    else if (kind === 'u32') this.view.setUint32(p, v, true);
    else if (kind === 'u64') this.view.setBigUint64(p, BigInt(v), true);
    else this.view.setFloat32(p, v, true);
    this.pos += SIZE[kind];
  }

  u16(v: number): void { this.room(2); this.view.setUint16(this.pos, v, true); this.pos += 2; }
  i64(v: number): void { this.room(8); this.view.setBigInt64(this.pos, BigInt(v), true); this.pos += 8; }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.pos); this.pos += b.length; }
  patch(at: number, target: number): void { this.view.setUint32(at, target - at, true); }

  /** Writes a table (vtable first), then its children; returns the table's position. */
  table(fields: Fields): number {
    const ids = Object.keys(fields).map(Number).filter((id) => fields[id] !== undefined);
    const maxId = ids.length ? Math.max(...ids) : -1;
    // Inline layout: largest first keeps every field aligned after the 4-byte soffset.
    const order = [...ids].sort((a, b) => fieldSize(fields[b]!) - fieldSize(fields[a]!) || a - b);
    const at = new Map<number, number>();
    let size = 4;
    for (const id of order) {
      const s = fieldSize(fields[id]!);
      size += (s - (size % s)) % s;
      at.set(id, size);
      size += s;
    }
    size += (4 - (size % 4)) % 4;
    if (size > 0xffff) throw new RangeError(`a table of ${size} bytes does not fit a vtable`);
    this.align(2);
    const vt = this.pos;
    this.u16(4 + 2 * (maxId + 1));
    this.u16(size);
    for (let id = 0; id <= maxId; id++) this.u16(at.get(id) ?? 0);
    this.align(ids.some((id) => fieldSize(fields[id]!) === 8) ? 8 : 4);
    const start = this.pos;
    this.room(size);
    this.view.setInt32(start, start - vt, true);
    const children: { pos: number; child: Child }[] = [];
    for (const id of order) {
      const f = fields[id]!;
      this.pos = start + at.get(id)!;
      if (f.kind === 'child') {
        this.put('u32', 0);
        children.push({ pos: start + at.get(id)!, child: f });
      } else {
        this.put(f.kind, f.value);
      }
    }
    this.pos = start + size;
    for (const c of children) this.patch(c.pos, c.child.write(this));
    return start;
  }

  /** A vector of tables. */
  tables(items: readonly Fields[]): number {
    this.align(4);
    const start = this.pos;
    this.put('u32', items.length);
    for (let i = 0; i < items.length; i++) this.put('u32', 0);
    items.forEach((f, i) => this.patch(start + 4 + 4 * i, this.table(f)));
    return start;
  }

  /** A vector of scalars. */
  scalars(kind: 'i32' | 'f32', values: readonly number[]): number {
    this.align(4);
    const start = this.pos;
    this.put('u32', values.length);
    for (const v of values) this.put(kind, v);
    return start;
  }

  longs(values: readonly number[]): number {
    this.align(8, 4);
    const start = this.pos;
    this.put('u32', values.length);
    for (const v of values) this.i64(v);
    return start;
  }

  /** A `[ubyte]` vector whose data starts at a multiple of `dataAlign`. */
  byteVector(b: Uint8Array, dataAlign = 16): number {
    this.align(dataAlign, 4);
    const start = this.pos;
    this.put('u32', b.length);
    this.bytes(b);
    return start;
  }

  string(s: string): number {
    const b = new TextEncoder().encode(s);
    this.align(4);
    const start = this.pos;
    this.put('u32', b.length);
    this.bytes(b);
    this.bytes(new Uint8Array(1));
    return start;
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

function fieldSize(f: Field): number {
  return f.kind === 'child' ? 4 : SIZE[f.kind];
}

const child = (write: (w: Writer) => number): Child => ({ kind: 'child', write });
const i32 = (value: number): Scalar => ({ kind: 'i32', value });
const i8 = (value: number): Scalar => ({ kind: 'i8', value });

function enumIndex(names: readonly string[], v: string): number {
  const i = names.indexOf(v);
  if (i < 0) throw new RangeError(`unknown enum value "${v}"; expected one of ${names.join(', ')}`);
  return i;
}

function optionsOf(op: TfliteOperatorSpec): { type: number; fields?: Fields } {
  const o = op.options;
  const code = BUILTIN[op.op];
  if (code === BUILTIN.CONV_2D || code === BUILTIN.DEPTHWISE_CONV_2D) {
    if (o?.kind !== 'conv') throw new RangeError(`${op.op} needs conv options`);
    const ids = code === BUILTIN.CONV_2D ? CONV_2D_OPTIONS : DEPTHWISE_OPTIONS;
    const fields: Fields = {
      [ids.padding]: i8(enumIndex(PADDING, o.padding)), [ids.strideW]: i32(o.strideW), [ids.strideH]: i32(o.strideH),
      [ids.activation]: i8(enumIndex(ACTIVATIONS, o.activation)), [ids.dilationW]: i32(o.dilationW), [ids.dilationH]: i32(o.dilationH),
    };
    if (code === BUILTIN.DEPTHWISE_CONV_2D) fields[DEPTHWISE_OPTIONS.depthMultiplier] = i32(o.depthMultiplier ?? 1);
    return { type: code === BUILTIN.CONV_2D ? OPTIONS_TYPE.Conv2DOptions : OPTIONS_TYPE.DepthwiseConv2DOptions, fields };
  }
  if (code === BUILTIN.MAX_POOL_2D || code === BUILTIN.AVERAGE_POOL_2D) {
    if (o?.kind !== 'pool') throw new RangeError(`${op.op} needs pool options`);
    return {
      type: OPTIONS_TYPE.Pool2DOptions,
      fields: {
        [POOL_2D_OPTIONS.padding]: i8(enumIndex(PADDING, o.padding)), [POOL_2D_OPTIONS.strideW]: i32(o.strideW), [POOL_2D_OPTIONS.strideH]: i32(o.strideH),
        [POOL_2D_OPTIONS.filterWidth]: i32(o.filterWidth), [POOL_2D_OPTIONS.filterHeight]: i32(o.filterHeight),
        [POOL_2D_OPTIONS.activation]: i8(enumIndex(ACTIVATIONS, o.activation)),
      },
    };
  }
  if (code === BUILTIN.FULLY_CONNECTED) {
    if (o?.kind !== 'fully-connected') throw new RangeError(`${op.op} needs fully-connected options`);
    return {
      type: OPTIONS_TYPE.FullyConnectedOptions,
      fields: {
        [FULLY_CONNECTED_OPTIONS.activation]: i8(enumIndex(ACTIVATIONS, o.activation)),
        [FULLY_CONNECTED_OPTIONS.weightsFormat]: i8(o.weightsFormat), [FULLY_CONNECTED_OPTIONS.keepNumDims]: { kind: 'bool', value: o.keepNumDims ? 1 : 0 },
      },
    };
  }
  if (code === BUILTIN.RESHAPE) {
    const shape = o?.kind === 'reshape' ? o.newShape : undefined;
    return { type: OPTIONS_TYPE.ReshapeOptions, fields: shape ? { [RESHAPE_OPTIONS.newShape]: child((w) => w.scalars('i32', shape)) } : {} };
  }
  if (code === BUILTIN.SOFTMAX) {
    if (o?.kind !== 'softmax') throw new RangeError(`${op.op} needs softmax options (beta)`);
    return { type: EXTRA_OPTIONS.SoftmaxOptions.type, fields: { [EXTRA_OPTIONS.SoftmaxOptions.beta]: { kind: 'f32', value: o.beta } } };
  }
  if (code === BUILTIN.GATHER && o) {
    if (o.kind !== 'gather') throw new RangeError(`${op.op} takes gather options, got ${o.kind}`);
    const g = EXTRA_OPTIONS.GatherOptions;
    return { type: g.type, fields: { [g.axis]: i32(o.axis), [g.batchDims]: i32(o.batchDims ?? 0) } };
  }
  if ((code === BUILTIN.MEAN || code === BUILTIN.SUM || code === BUILTIN.REDUCE_MAX) && o) {
    if (o.kind !== 'reducer') throw new RangeError(`${op.op} takes reducer options, got ${o.kind}`);
    return { type: EXTRA_OPTIONS.ReducerOptions.type, fields: { [EXTRA_OPTIONS.ReducerOptions.keepDims]: { kind: 'bool', value: o.keepDims ? 1 : 0 } } };
  }
  if (o) throw new RangeError(`the writer has no options for ${op.op}`);
  return { type: OPTIONS_TYPE.NONE };
}

/** Serializes a single-subgraph model. RangeError on an inconsistent spec. */
export function writeTflite(spec: TfliteModelSpec): Uint8Array {
  const n = spec.tensors.length;
  const check = (i: number, what: string, optional = false): void => {
    if (!(Number.isInteger(i) && ((optional && i === -1) || (i >= 0 && i < n)))) throw new RangeError(`${what}: tensor index ${i} is out of range 0..${n - 1}`);
  };
  spec.inputs.forEach((i) => check(i, 'subgraph input'));
  spec.outputs.forEach((i) => check(i, 'subgraph output'));
  // One operator code per builtin, one per custom op name.
  const codeOf = (o: TfliteOperatorSpec): string => (o.op === 'CUSTOM' ? `CUSTOM:${o.customCode ?? ''}` : o.op);
  const ops = [...new Set(spec.operators.map(codeOf))];
  for (const o of spec.operators) {
    if (BUILTIN[o.op] === undefined) throw new RangeError(`unknown operator ${o.op}`);
    if ((o.op === 'CUSTOM') !== (o.customCode !== undefined)) throw new RangeError(`customCode goes with op CUSTOM, and CUSTOM needs one (got op ${o.op})`);
    o.inputs.forEach((i) => check(i, o.op, true));
    o.outputs.forEach((i) => check(i, o.op));
  }
  // Buffer 0 is the empty sentinel; each constant gets its own buffer.
  const buffers: (Uint8Array | { offset: number; size: number })[] = [new Uint8Array(0)];
  const bufferOf = spec.tensors.map((t) => {
    const b = t.data ?? t.external;
    if (!b) return 0;
    buffers.push(b);
    return buffers.length - 1;
  });

  const tensor = (t: TfliteTensorSpec, i: number): Fields => {
    const q = t.quantization;
    return {
      [TENSOR.shape]: child((w) => w.scalars('i32', t.shape)),
      [TENSOR.type]: i8(tensorTypeOf(t.dtype)),
      [TENSOR.buffer]: { kind: 'u32', value: bufferOf[i] },
      [TENSOR.name]: child((w) => w.string(t.name)),
      [TENSOR.quantization]: q && child((w) => w.table({
        [QUANTIZATION.scale]: child((x) => x.scalars('f32', q.scale)),
        [QUANTIZATION.zeroPoint]: child((x) => x.longs(q.zeroPoint)),
        [QUANTIZATION.quantizedDimension]: i32(q.quantizedDimension ?? 0),
      })),
      [TENSOR.shapeSignature]: t.shapeSignature && child((w) => w.scalars('i32', t.shapeSignature!)),
    };
  };
  const operator = (o: TfliteOperatorSpec): Fields => {
    const { type, fields } = optionsOf(o);
    return {
      [OPERATOR.opcodeIndex]: { kind: 'u32', value: ops.indexOf(codeOf(o)) },
      [OPERATOR.inputs]: child((w) => w.scalars('i32', o.inputs)),
      [OPERATOR.outputs]: child((w) => w.scalars('i32', o.outputs)),
      [OPERATOR.builtinOptionsType]: { kind: 'u8', value: type },
      [OPERATOR.builtinOptions]: fields && child((w) => w.table(fields)),
    };
  };
  const w = new Writer();
  w.put('u32', 0);
  w.bytes(new TextEncoder().encode(TFLITE_IDENTIFIER));
  const root = w.table({
    [MODEL.version]: { kind: 'u32', value: 3 },
    [MODEL.operatorCodes]: child((x) => x.tables(ops.map((name) => {
      const custom = name.startsWith('CUSTOM:') ? name.slice('CUSTOM:'.length) : undefined;
      const code = BUILTIN[(custom === undefined ? name : 'CUSTOM') as keyof typeof BUILTIN];
      return {
        [OPERATOR_CODE.customCode]: custom === undefined ? undefined : child((y) => y.string(custom)),
        [OPERATOR_CODE.deprecatedBuiltinCode]: i8(Math.min(code, BUILTIN.PLACEHOLDER_FOR_GREATER_OP_CODES)),
        [OPERATOR_CODE.version]: i32(1),
        [OPERATOR_CODE.builtinCode]: i32(code),
      };
    }))),
    [MODEL.subgraphs]: child((x) => x.tables([{
      [SUBGRAPH.tensors]: child((y) => y.tables(spec.tensors.map(tensor))),
      [SUBGRAPH.inputs]: child((y) => y.scalars('i32', spec.inputs)),
      [SUBGRAPH.outputs]: child((y) => y.scalars('i32', spec.outputs)),
      [SUBGRAPH.operators]: child((y) => y.tables(spec.operators.map(operator))),
      [SUBGRAPH.name]: child((y) => y.string('main')),
    }])),
    [MODEL.description]: child((x) => x.string(spec.description ?? 'keylock TFLite writer')),
    [MODEL.buffers]: child((x) => x.tables(buffers.map((b): Fields => {
      if (!(b instanceof Uint8Array)) return { [BUFFER.offset]: { kind: 'u64', value: b.offset }, [BUFFER.size]: { kind: 'u64', value: b.size } };
      return b.length ? { [BUFFER.data]: child((y) => y.byteVector(b)) } : {};
    }))),
  });
  w.patch(0, root);
  return w.finish();
}
