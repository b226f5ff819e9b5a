/**
 * Streams over a loaded model: `createStream(model, opts)` keeps a stateful
 * model's state tensors (silero_vad's `h`/`c`, an LSTM's `h0`/`c0`) per stream,
 * feeds each run's state outputs back as the next run's state inputs, holds
 * constant inputs (a sample rate), and with a fixed-frame adapter turns blocks
 * of any length (an audio callback's 128 samples) into the frames the model
 * takes (512 samples, with a hop).
 *
 * A stream only calls `LockedModel.run`, so it works on any model `loadModel`
 * returns, whatever its lock scheme and wherever its session runs. Several
 * streams may share one model: each holds its own state, and the model
 * serialises their runs.
 */
import { InputMismatchError } from '../keystore/errors.ts';
import type { IOSpec } from './klm.ts';
import type { LockedModel } from './model.ts';
import { isDType, shapeSize, type DType, type TensorArray, type TensorData, type TensorMap } from './tensor.ts';

/** A fixed-frame adapter on one of the model's inputs (see `FrameAdapter`). */
export interface FrameOptions {
  /** The input that takes the frames. */
  input: string;
  /** Elements per frame (e.g. 512 samples). */
  size: number;
  /** Elements the frame advances by, 1..size; default `size` (no overlap). */
  hop?: number;
  /** Dims of a frame tensor; default the input's declared shape, dynamic dims 1 but the last, which holds the frame. */
  dims?: number[];
}

/** How a stream feeds the model. */
export interface StreamOptions {
  /**
   * State inputs and the outputs that feed them on the next run, e.g.
   * `{ h: 'hn', c: 'cn' }`. Default: inferred from the names, where each state
   * input has exactly one output named `<input>n`, `<input>N`, `<input>_out`,
   * `<input>_next` or `next_<input>` of the same dtype and shape (silero_vad:
   * h->hn, c->cn). `{}`: no state.
   */
  state?: Record<string, string>;
  /** Inputs held fixed for every run (silero_vad's sample rate `sr`). */
  constants?: TensorMap;
  /** Sizes of named dims in state shapes (`{ batch: 1 }`); a dim whose name contains "batch" defaults to 1. */
  dims?: Record<string, number>;
  /** Frames for `write`: blocks of any length in, frames of `size` elements out. */
  frame?: FrameOptions;
}

/** Output names that carry an input's state to the next run, in the order they are tried. */
const STATE_NAMES = [(i: string) => `${i}n`, (i: string) => `${i}N`, (i: string) => `${i}_out`, (i: string) => `${i}_next`, (i: string) => `next_${i}`];

/**
 * The state mapping a model's names make unambiguous: each input with exactly
 * one output of a state name (`STATE_NAMES`), same dtype and rank, no output
 * claimed twice. Throws InputMismatchError when a name matches more than one.
 */
export function inferState(inputs: readonly IOSpec[], outputs: readonly IOSpec[]): Record<string, string> {
  const map: Record<string, string> = {};
  const claimed = new Set<string>();
  for (const i of inputs) {
    const hits = outputs.filter((o) => STATE_NAMES.some((f) => f(i.name) === o.name) && o.dtype === i.dtype && o.shape.length === i.shape.length);
    if (hits.length > 1) throw new InputMismatchError(`state of input "${i.name}" is ambiguous: outputs ${hits.map((o) => `"${o.name}"`).join(', ')} all match; pass the mapping as the stream's \`state\` option`);
    if (hits.length === 1) {
      if (claimed.has(hits[0].name)) throw new InputMismatchError(`output "${hits[0].name}" matches two state inputs; pass the mapping as the stream's \`state\` option`);
      claimed.add(hits[0].name);
      map[i.name] = hits[0].name;
    }
  }
  return map;
}

/** Zeros of `dtype` with `dims` (dtype names are the runtime's). */
export function zeros(dtype: DType, dims: number[]): TensorData {
  const n = shapeSize(dims);
  const data: TensorArray =
    dtype === 'int64' ? new BigInt64Array(n) : dtype === 'uint64' ? new BigUint64Array(n) :
    dtype === 'float64' ? new Float64Array(n) : dtype === 'int32' ? new Int32Array(n) : dtype === 'uint32' ? new Uint32Array(n) :
    dtype === 'int16' ? new Int16Array(n) : dtype === 'uint16' ? new Uint16Array(n) : dtype === 'int8' ? new Int8Array(n) :
    dtype === 'uint8' || dtype === 'bool' ? new Uint8Array(n) : new Float32Array(n);
  return { dtype, dims: [...dims], data };
}

function resolveDims(spec: IOSpec, dims: Record<string, number>, what: string): number[] {
  return spec.shape.map((d) => {
    if (typeof d === 'number' && d >= 0) return d;
    const name = String(d);
    if (Object.hasOwn(dims, name)) return dims[name];
    if (/batch/i.test(name)) return 1;
    throw new InputMismatchError(`${what} "${spec.name}" has dynamic dim "${name}" in [${spec.shape.join(',')}]; give its size in the stream's \`dims\` option, e.g. { ${JSON.stringify(name)}: 1 }`);
  });
}

const ARRAYS: Record<string, new (n: number) => TensorArray> = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array,
  int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array, bool: Uint8Array,
};

/** Options of a `FrameAdapter`. */
export interface FrameAdapterOptions {
  /** Rows per frame. */
  size: number;
  /** Rows the frame advances by, 1..size; default `size`. */
  hop?: number;
  /** Elements per row (1 for samples; 32 for a frame of mel bins). */
  row?: number;
  /** Rows of zeros buffered at the start and after `reset()` (a history that starts silent). */
  prefill?: number;
  /** Element type; default float32. */
  dtype?: DType;
}

/**
 * Blocks of any length in, fixed frames out: rows are buffered, and each time
 * `size` rows are buffered a frame of them is emitted (a fresh array of
 * `size * row` elements) and the first `hop` rows are dropped. With `prefill`
 * the buffer starts with that many rows of zeros.
 */
export class FrameAdapter {
  readonly size: number;
  readonly hop: number;
  readonly row: number;
  readonly prefill: number;
  readonly dtype: DType;
  private buf: TensorArray;
  private len = 0;

  constructor(opts: FrameAdapterOptions) {
    const { size, hop = size, row = 1, prefill = 0, dtype = 'float32' } = opts;
    const int = (v: number, min: number, max: number, what: string): void => {
      if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`frame ${what} must be an integer in ${min}..${max}, got ${v}`);
    };
    int(size, 1, 1 << 24, 'size');
    int(hop, 1, size, 'hop');
    int(row, 1, 1 << 20, 'row');
    int(prefill, 0, size - 1, 'prefill');
    if (!isDType(dtype)) throw new RangeError(`frame dtype must be a dtype name, got ${String(dtype)}`);
    this.size = size; this.hop = hop; this.row = row; this.prefill = prefill; this.dtype = dtype;
    this.buf = new ARRAYS[dtype](2 * size * row);
    this.reset();
  }

  /** Elements buffered, not yet emitted in a frame. */
  get buffered(): number { return this.len; }

  /** Drops what is buffered; the buffer holds `prefill` rows of zeros again. */
  reset(): void {
    this.len = this.prefill * this.row;
    this.buf.fill(this.dtype === 'int64' || this.dtype === 'uint64' ? 0n as never : 0 as never, 0, this.len);
  }

  /** Appends `block` (a whole number of rows, of the adapter's dtype) and returns the frames it completes. */
  push(block: TensorArray): TensorArray[] {
    if (!(block instanceof ARRAYS[this.dtype])) throw new InputMismatchError(`frame adapter: expected a ${this.dtype} block, got ${block.constructor.name}`);
    if (block.length % this.row !== 0) throw new InputMismatchError(`frame adapter: expected a whole number of ${this.row}-element rows, got ${block.length} elements`);
    const need = this.len + block.length;
    if (need > this.buf.length) {
      const grown = new ARRAYS[this.dtype](Math.max(need, 2 * this.buf.length));
      grown.set(this.buf.subarray(0, this.len) as never);
      this.buf = grown;
    }
    this.buf.set(block as never, this.len);
    this.len = need;
    const frame = this.size * this.row;
    const step = this.hop * this.row;
    const out: TensorArray[] = [];
    let start = 0;
    while (this.len - start >= frame) {
      out.push(this.buf.slice(start, start + frame));
      start += step;
    }
    if (start) {
      this.buf.copyWithin(0, start, this.len);
      this.len -= start;
    }
    return out;
  }
}

/** A stream over one model; see the module comment. */
export interface ModelStream {
  /** The state mapping in use (state input -> the output that feeds it). */
  readonly stateMap: Readonly<Record<string, string>>;
  /** The current state tensors, by state input name. */
  readonly state: Readonly<TensorMap>;
  /** Runs so far (since creation; `reset` does not clear it). */
  readonly runs: number;
  /**
   * One run: `inputs` (every input but the state and constant ones) with the
   * stream's state and constants; the state outputs become the next state.
   * Resolves to all the model's outputs. Pushes on one stream run in order.
   */
  push(inputs: TensorMap): Promise<TensorMap>;
  /** With `frame`: appends a block to the frame input and runs every frame it completes; the outputs, in order. */
  write(block: TensorArray): Promise<TensorMap[]>;
  /** State back to zeros and the frame buffer emptied, for the runs pushed from now on; runs pushed before keep to the old state. */
  reset(): void;
}

class Stream implements ModelStream {
  readonly stateMap: Readonly<Record<string, string>>;
  /** The state of the runs pushed since the last reset; a reset starts a new one. */
  private epoch: { cur: TensorMap } = { cur: {} };
  private readonly initial: TensorMap = {};
  private readonly constants: TensorMap;
  private readonly frames?: { adapter: FrameAdapter; input: string; dims: number[] };
  private queue: Promise<unknown> = Promise.resolve();
  private n = 0;

  constructor(private readonly model: LockedModel, opts: StreamOptions) {
    const { inputs, outputs } = model;
    const byName = new Map(inputs.map((s) => [s.name, s]));
    this.constants = { ...(opts.constants ?? {}) };
    for (const name of Object.keys(this.constants)) {
      if (!byName.has(name)) throw new InputMismatchError(`stream constant "${name}": the model takes ${inputs.map((s) => `"${s.name}"`).join(', ')}`);
    }
    const map = opts.state ?? inferState(inputs.filter((s) => !Object.hasOwn(this.constants, s.name)), outputs);
    for (const [i, o] of Object.entries(map)) {
      const spec = byName.get(i);
      if (!spec) throw new InputMismatchError(`stream state input "${i}": the model takes ${inputs.map((s) => `"${s.name}"`).join(', ')}`);
      const out = outputs.find((x) => x.name === o);
      if (!out) throw new InputMismatchError(`stream state "${i}" -> "${o}": the model's outputs are ${outputs.map((s) => `"${s.name}"`).join(', ')}`);
      if (out.dtype !== spec.dtype) throw new InputMismatchError(`stream state "${i}" -> "${o}": input is ${spec.dtype}, output is ${out.dtype}`);
      if (!isDType(spec.dtype)) throw new InputMismatchError(`stream state "${i}": dtype ${spec.dtype} is not one keylock carries`);
      this.initial[i] = zeros(spec.dtype, resolveDims(spec, opts.dims ?? {}, 'state input'));
    }
    this.stateMap = Object.freeze({ ...map });
    if (opts.frame) {
      const f = opts.frame;
      const spec = byName.get(f.input);
      if (!spec) throw new InputMismatchError(`stream frame input "${f.input}": the model takes ${inputs.map((s) => `"${s.name}"`).join(', ')}`);
      if (!isDType(spec.dtype)) throw new InputMismatchError(`stream frame input "${f.input}": dtype ${spec.dtype} is not one keylock carries`);
      const dims = f.dims ?? frameDims(spec, f.size);
      if (shapeSize(dims) !== f.size) throw new InputMismatchError(`stream frame input "${f.input}": dims [${dims.join(',')}] hold ${shapeSize(dims)} elements, the frame ${f.size}`);
      this.frames = { adapter: new FrameAdapter({ size: f.size, hop: f.hop, dtype: spec.dtype }), input: f.input, dims };
    }
    this.reset();
  }

  get state(): Readonly<TensorMap> { return this.epoch.cur; }
  get runs(): number { return this.n; }

  reset(): void {
    const cur: TensorMap = {};
    for (const [k, t] of Object.entries(this.initial)) cur[k] = { dtype: t.dtype, dims: [...t.dims], data: t.data.slice() };
    this.epoch = { cur };
    this.frames?.adapter.reset();
  }

  push(inputs: TensorMap): Promise<TensorMap> {
    // Runs pushed before a reset keep to their own state, whenever they start.
    const epoch = this.epoch;
    const r = this.queue.then(() => this.step(inputs, epoch));
    this.queue = r.catch(() => undefined);
    return r;
  }

  async write(block: TensorArray): Promise<TensorMap[]> {
    const f = this.frames;
    if (!f) throw new InputMismatchError('stream.write needs the `frame` option (which input takes the frames, and their size)');
    const outs: Promise<TensorMap>[] = [];
    for (const frame of f.adapter.push(block)) outs.push(this.push({ [f.input]: { dtype: f.adapter.dtype, dims: f.dims, data: frame } }));
    return Promise.all(outs);
  }

  private async step(inputs: TensorMap, epoch: { cur: TensorMap }): Promise<TensorMap> {
    for (const name of Object.keys(inputs)) {
      if (Object.hasOwn(this.stateMap, name) || Object.hasOwn(this.constants, name)) {
        throw new InputMismatchError(`input "${name}" is the stream's ${Object.hasOwn(this.stateMap, name) ? 'state' : 'constant'}; push only ${this.model.inputs.filter((s) => !Object.hasOwn(this.stateMap, s.name) && !Object.hasOwn(this.constants, s.name)).map((s) => `"${s.name}"`).join(', ')}`);
      }
    }
    const out = await this.model.run({ ...inputs, ...this.constants, ...epoch.cur });
    this.n++;
    const next: TensorMap = {};
    for (const [i, o] of Object.entries(this.stateMap)) next[i] = out[o];
    epoch.cur = next;
    return out;
  }
}

/** A frame's dims from the declared shape: numeric dims kept, dynamic ones 1 but the last, which takes the rest. */
function frameDims(spec: IOSpec, size: number): number[] {
  const fixed = spec.shape.reduce<number>((p, d) => (typeof d === 'number' && d >= 0 ? p * d : p), 1);
  const last = spec.shape.map((d) => typeof d === 'number' && d >= 0).lastIndexOf(false);
  if (last < 0 || size % fixed !== 0) {
    if (fixed === size) return spec.shape.map(Number);
    throw new InputMismatchError(`stream frame input "${spec.name}" has shape [${spec.shape.join(',')}], which cannot hold ${size}-element frames; give the frame's \`dims\``);
  }
  return spec.shape.map((d, i) => (typeof d === 'number' && d >= 0 ? d : i === last ? size / fixed : 1));
}

/**
 * A stream over `model` (see the module comment): state kept per stream and
 * fed back, constants held, frames made by `write`. Throws InputMismatchError
 * when the options do not fit the model's declared inputs and outputs.
 */
export function createStream(model: LockedModel, opts: StreamOptions = {}): ModelStream {
  return new Stream(model, opts);
}
