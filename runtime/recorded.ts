/**
 * Recorded inputs and outputs: the CBOR file that offline tests, canaries and
 * `keylock run` use. Layout (docs/SPEC.md, "Recorded inputs"):
 *
 *   [ { inputs: { <name>: { dtype, dims, data: bstr (little-endian) } }, label?: uint }, ... ]
 *
 * Output files have the same shape with `outputs` in place of `inputs`. keylock
 * writes the strict canonical form and reads any well-formed CBOR of this shape
 * in the lenient profile (keystore/cbor.ts `CborOptions`): what cbor-x, another
 * CBOR library, python/keylock_recorded.py or the device recorder wrote.
 */
import { decodeCbor, describe, encodeCbor, Fields } from '../keystore/cbor.ts';
import { FormatError } from '../keystore/errors.ts';
import { bytesOf, dtypeSize, isDType, shapeSize, typedFromBytes, type DType, type TensorData, type TensorMap } from './tensor.ts';

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

function sampleMap(s: Sample, kinds: readonly RecordedKind[]): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const kind of kinds) {
    const m = s[kind];
    if (m) o[kind] = Object.fromEntries(Object.entries(m).map(([k, v]) => [k, encodeTensor(v)]));
  }
  if (s.label !== undefined) o.label = s.label;
  return o;
}

/** Encodes samples (strict canonical CBOR); each must carry the `kind` map. */
export function encodeRecorded(samples: readonly Sample[], kind: RecordedKind = 'inputs'): Uint8Array {
  return encodeCbor(samples.map((s, i) => {
    if (!s[kind]) throw new TypeError(`sample ${i} has no ${kind}`);
    return sampleMap(s, [kind]);
  }));
}

/**
 * Encodes one sample map with whichever of `inputs` and `outputs` it carries (in
 * that order), and its label: an element of a recorded file, for writers that
 * append samples one at a time (runtime/recorder.ts).
 */
export function encodeSample(s: Sample): Uint8Array {
  if (!s.inputs && !s.outputs) throw new TypeError('sample has neither inputs nor outputs');
  return encodeCbor(sampleMap(s, ['inputs', 'outputs']));
}

// The dtype each typed array of a lenient CBOR tag carries (keystore/cbor.ts LENIENT_TAGS);
// Uint8Array (tag 64) and Uint8ClampedArray (68) are plain bytes and fit every dtype.
const TAGGED_DTYPE: Record<string, DType> = {
  Int8Array: 'int8', Int16Array: 'int16', Uint16Array: 'uint16', Int32Array: 'int32', Uint32Array: 'uint32',
  BigInt64Array: 'int64', BigUint64Array: 'uint64', Float32Array: 'float32', Float64Array: 'float64',
};

/** The bytes of `data`: a byte string, or a typed array of a CBOR tag whose element type is `dtype`'s. */
function dataBytes(what: string, dtype: DType, v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (!ArrayBuffer.isView(v) || v instanceof DataView) throw new FormatError(`${what}: expected a byte string, got ${describe(v)}`);
  const kind = (v as unknown as { [Symbol.toStringTag]: string })[Symbol.toStringTag];
  if (kind !== 'Uint8ClampedArray' && TAGGED_DTYPE[kind] !== dtype) {
    throw new FormatError(`${what}: expected a byte string or ${dtype} typed array, got a ${kind} (a typed-array tag of another element type)`);
  }
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function decodeTensor(what: string, v: unknown): TensorData {
  const f = Fields.of(what, v);
  const dtype = f.text('dtype', 16);
  if (!isDType(dtype)) throw new FormatError(`${what}.dtype: expected a dtype name (float32, int64, ...), got "${dtype}"`);
  const dims = f.array('dims', MAX_RANK).map((d, i) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) throw new FormatError(`${what}.dims[${i}]: expected a non-negative integer, got ${String(d)}`);
    return d;
  });
  const data = dataBytes(`${what}.data`, dtype, f.obj.data);
  const want = shapeSize(dims) * dtypeSize(dtype);
  if (data.byteLength !== want) {
    throw new FormatError(`${what}.data: dims [${dims.join(',')}] of ${dtype} need ${want} bytes, got ${data.byteLength}`);
  }
  return { dtype, dims, data: typedFromBytes(dtype, data) };
}

/**
 * Decodes a recorded file, checking every field. The CBOR is read in the lenient
 * profile (docs/SPEC.md, "Recorded inputs"): `data` may also be a typed-array
 * tag of the dtype's element type (or tag 64), and `label: null` means no label.
 */
export function decodeRecorded(bytes: Uint8Array, kind: RecordedKind = 'inputs'): Sample[] {
  const v = decodeCbor(bytes, 'recorded file', MAX_RECORDED_BYTES, MAX_RECORDED_ITEMS, { lenient: true });
  if (!Array.isArray(v)) throw new FormatError(`recorded file: expected an array of samples, got ${describe(v)}`);
  if (v.length > MAX_SAMPLES) throw new FormatError(`recorded file: ${v.length} samples is over the limit of ${MAX_SAMPLES}`);
  return v.map((s, i) => {
    const f = Fields.of(`sample[${i}]`, s);
    const m = f.map(kind);
    const tensors: TensorMap = {};
    for (const [name, t] of Object.entries(m.obj)) tensors[name] = decodeTensor(`sample[${i}].${kind}.${name}`, t);
    const out: Sample = { [kind]: tensors };
    if (f.has('label')) out.label = f.uint('label'); // absent, null and undefined all mean no label
    return out;
  });
}
