/**
 * Recorded inputs and outputs: the CBOR file that offline tests, canaries and
 * `keylock run` use. Layout (docs/SPEC.md, "Recorded inputs"):
 *
 *   [ { inputs: { <name>: { dtype, dims, data: bstr (little-endian) } }, label?: uint }, ... ]
 *
 * Output files have the same shape with `outputs` in place of `inputs`.
 */
import { decodeCbor, encodeCbor, Fields } from '../keystore/cbor.ts';
import { FormatError } from './errors.ts';
import { bytesOf, dtypeSize, isDType, shapeSize, typedFromBytes, type TensorData, type TensorMap } from './tensor.ts';

/** One recorded sample. `inputs` for input files, `outputs` for output files. */
export interface Sample {
  inputs?: TensorMap;
  outputs?: TensorMap;
  /** Ground-truth class, when known (e.g. the MNIST digit). */
  label?: number;
}

/** Which map a file holds. */
export type RecordedKind = 'inputs' | 'outputs';

/** Largest recorded file keylock reads (1 GiB). */
export const MAX_RECORDED_BYTES = 1 << 30;
const MAX_SAMPLES = 1 << 24;
/** Most CBOR items in a recorded file (about 18 per one-tensor sample): what bounds the memory decoding takes. */
export const MAX_RECORDED_ITEMS = 1 << 24;
const MAX_RANK = 16;

function encodeTensor(t: TensorData): Record<string, unknown> {
  const n = shapeSize(t.dims);
  if (t.data.length !== n) throw new RangeError(`tensor data has ${t.data.length} elements but dims [${t.dims.join(',')}] need ${n}`);
  return { dtype: t.dtype, dims: [...t.dims], data: bytesOf(t.data) };
}

/** Encodes samples; each must carry the `kind` map. */
export function encodeRecorded(samples: readonly Sample[], kind: RecordedKind = 'inputs'): Uint8Array {
  return encodeCbor(samples.map((s, i) => {
    const m = s[kind];
    if (!m) throw new TypeError(`sample ${i} has no ${kind}`);
    const o: Record<string, unknown> = {
      [kind]: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, encodeTensor(v)])),
    };
    if (s.label !== undefined) o.label = s.label;
    return o;
  }));
}

function decodeTensor(what: string, v: unknown): TensorData {
  const f = Fields.of(what, v);
  const dtype = f.text('dtype', 16);
  if (!isDType(dtype)) throw new FormatError(`${what}.dtype: expected a dtype name (float32, int64, ...), got "${dtype}"`);
  const dims = f.array('dims', MAX_RANK).map((d, i) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) throw new FormatError(`${what}.dims[${i}]: expected a non-negative integer, got ${String(d)}`);
    return d;
  });
  const data = f.bytes('data');
  const want = shapeSize(dims) * dtypeSize(dtype);
  if (data.byteLength !== want) {
    throw new FormatError(`${what}.data: dims [${dims.join(',')}] of ${dtype} need ${want} bytes, got ${data.byteLength}`);
  }
  return { dtype, dims, data: typedFromBytes(dtype, data) };
}

/** Decodes a recorded file, checking every field. */
export function decodeRecorded(bytes: Uint8Array, kind: RecordedKind = 'inputs'): Sample[] {
  const v = decodeCbor(bytes, 'recorded file', MAX_RECORDED_BYTES, MAX_RECORDED_ITEMS);
  if (!Array.isArray(v)) throw new FormatError(`recorded file: expected an array of samples, got ${typeof v}`);
  if (v.length > MAX_SAMPLES) throw new FormatError(`recorded file: ${v.length} samples is over the limit of ${MAX_SAMPLES}`);
  return v.map((s, i) => {
    const f = Fields.of(`sample[${i}]`, s);
    const m = f.map(kind);
    const tensors: TensorMap = {};
    for (const [name, t] of Object.entries(m.obj)) tensors[name] = decodeTensor(`sample[${i}].${kind}.${name}`, t);
    const out: Sample = { [kind]: tensors };
    if (f.has('label')) out.label = f.uint('label');
    return out;
  });
}
