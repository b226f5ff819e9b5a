/**
 * The weights of a TFLite model as byte ranges of the file: every non-empty
 * buffer that a tensor reads, with the tensors and operator inputs that use
 * it, its shape, dtype and quantization. Locks address weights by these
 * ranges and rewrite them in place (same length), so the file stays a valid
 * model of the same structure.
 */
import { UnsupportedModelError } from '../../keystore/errors.ts';
import type { TfliteModel, TfliteQuantization } from './codec.ts';

/** Bytes per element of the dtypes a weight range can have. */
export const TFLITE_DTYPE_SIZE: Readonly<Record<string, number>> = {
  float32: 4, float16: 2, bfloat16: 2, float64: 8, int32: 4, uint32: 4, int64: 8, uint64: 8,
  int16: 2, uint16: 2, int8: 1, uint8: 1, bool: 1,
};

/** One operator input slot that reads a weight. */
export interface WeightUse {
  subgraph: number;
  operator: number;
  /** Operator name, e.g. `CONV_2D`. */
  op: string;
  /** Input slot (CONV_2D: 0 input, 1 filter, 2 bias). */
  slot: number;
}

/** A weight buffer and where its data is in the file. */
export interface WeightInfo {
  buffer: number;
  /**
   * Name for the manifest (the first tensor's name; `<name>#<buffer>` when
   * another weight has the same name, because sealed nonces need unique names).
   */
  name: string;
  /** Offset of the first data byte in the file. */
  offset: number;
  length: number;
  /** dtype of the (first) tensor that reads it. */
  dtype: string;
  shape: number[];
  elementCount: number;
  /** True when length = elements × dtype size (false for sparse or string tensors). */
  dense: boolean;
  /** Every tensor that names this buffer. */
  tensors: { subgraph: number; tensor: number; name: string; dtype: string }[];
  quantization?: TfliteQuantization;
  uses: WeightUse[];
}

/** Lists every tensor-referenced, non-empty buffer, in buffer order. */
export function listWeights(model: TfliteModel): WeightInfo[] {
  const byBuffer = new Map<number, WeightInfo>();
  model.subgraphs.forEach((g, gi) => {
    for (const t of g.tensors) {
      const b = model.buffers[t.buffer];
      if (!b || t.buffer === 0 || b.length === 0 || t.isVariable) continue;
      let w = byBuffer.get(t.buffer);
      if (!w) {
        const elementCount = t.shape.reduce((a, d) => a * Math.max(d, 0), 1);
        const size = TFLITE_DTYPE_SIZE[t.dtype];
        w = {
          buffer: t.buffer, name: t.name || `buffer${t.buffer}`, offset: b.offset, length: b.length, dtype: t.dtype, shape: [...t.shape],
          elementCount, dense: !t.sparse && size !== undefined && elementCount * size === b.length, tensors: [], quantization: t.quantization, uses: [],
        };
        byBuffer.set(t.buffer, w);
      }
      w.tensors.push({ subgraph: gi, tensor: t.index, name: t.name, dtype: t.dtype });
    }
    for (const op of g.operators) {
      op.inputs.forEach((ti, slot) => {
        if (ti < 0) return;
        const w = byBuffer.get(g.tensors[ti].buffer);
        if (w && w.tensors.some((x) => x.subgraph === gi && x.tensor === ti)) w.uses.push({ subgraph: gi, operator: op.index, op: op.op, slot });
      });
    }
  });
  const list = [...byBuffer.values()].sort((a, b) => a.buffer - b.buffer);
  const count = new Map<string, number>();
  for (const w of list) count.set(w.name, (count.get(w.name) ?? 0) + 1);
  for (const w of list) if (count.get(w.name)! > 1) w.name = `${w.name}#${w.buffer}`;
  return list;
}

/** The weight that `tensor` of `subgraph` reads, if it is a constant. */
export function weightOf(weights: readonly WeightInfo[], subgraph: number, tensor: number): WeightInfo | undefined {
  return weights.find((w) => w.tensors.some((t) => t.subgraph === subgraph && t.tensor === tensor));
}

/** A copy of a weight's bytes. */
export function readWeight(bytes: Uint8Array, w: WeightInfo): Uint8Array {
  return bytes.slice(w.offset, w.offset + w.length);
}

/** A weight's float32 values (a copy). */
export function readFloat32(bytes: Uint8Array, w: WeightInfo): Float32Array {
  if (w.dtype !== 'float32') throw new UnsupportedModelError(`TFLite weight "${w.name}" is ${w.dtype}, expected float32`);
  return new Float32Array(readWeight(bytes, w).buffer);
}

/** Overwrites a weight's bytes in place. RangeError unless `data` has exactly its length. */
export function rewriteWeight(bytes: Uint8Array, w: WeightInfo, data: Uint8Array | Float32Array): void {
  const b = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (b.byteLength !== w.length) throw new RangeError(`TFLite weight "${w.name}" is ${w.length} bytes; a rewrite must keep its length, got ${b.byteLength}`);
  bytes.set(b, w.offset);
}
