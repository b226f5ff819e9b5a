/**
 * numpy `.npy` and `.npz` files, parsed with npyjs (`parse` works on bytes,
 * with no fetch). npyjs leaves some of what numpy writes to the caller, so this
 * module fills the gaps before and after it:
 * - big-endian arrays (`>f4`): byte-swapped and relabelled little-endian first
 *   (npyjs only knows `<` and `|`);
 * - `fortran_order: True`: npyjs returns the column-major data as is; it is
 *   transposed to row-major here;
 * - bool: npyjs returns a JS array of booleans; kept as bytes;
 * - float16: npyjs widens it to float32 (keylock has no float16), said in a note;
 * - complex, strings, objects, datetimes and structured arrays: refused.
 * The data length is checked against the shape (npyjs takes whatever follows).
 */
import { parse as parseNpy } from 'npyjs';
import { unzipSync } from 'fflate';
import { FormatError } from '../../keystore/errors.ts';
import { shapeSize, type DType, type TensorArray } from '../../runtime/tensor.ts';
import { allocate, type SourceArray } from './spec.ts';

/** An array read from a .npy, row-major and little-endian, with the numpy dtype it came from. */
export interface NpyArray extends SourceArray {
  /** numpy's dtype code, e.g. `<f2`, `>i8`, `|b1`. */
  descr: string;
}

const DTYPES: Record<string, DType> = {
  b1: 'bool', i1: 'int8', u1: 'uint8', i2: 'int16', u2: 'uint16', i4: 'int32', u4: 'uint32',
  i8: 'int64', u8: 'uint64', f2: 'float32', f4: 'float32', f8: 'float64',
};

const REFUSED: Record<string, string> = {
  c: 'complex numbers', U: 'unicode strings', S: 'byte strings', O: 'Python objects (pickled)',
  M: 'datetimes', m: 'timedeltas', V: 'raw void records',
};

/** The header's offset, length and `descr` text; FormatError when the bytes are not a .npy. */
function peekHeader(b: Uint8Array, what: string): { start: number; length: number; descr: string } {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (b.byteLength < 10 || magic.some((m, i) => b[i] !== m)) throw new FormatError(`${what}: not a .npy file (expected the magic "\\x93NUMPY")`);
  const major = b[6];
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const start = major >= 2 ? 12 : 10;
  const length = major >= 2 ? dv.getUint32(8, true) : dv.getUint16(8, true);
  if (start + length > b.byteLength) throw new FormatError(`${what}: the header claims ${length} bytes, the file has ${b.byteLength - start} after the preamble`);
  const header = new TextDecoder('latin1').decode(b.subarray(start, start + length));
  const m = /'descr'\s*:\s*('([^']*)'|\[)/.exec(header);
  if (!m) throw new FormatError(`${what}: the header has no 'descr' (expected a dict like {'descr': '<f4', ...})`);
  if (m[1] === '[') throw new FormatError(`${what}: a structured array (several named fields per element); expected a plain numeric array: save one field per array`);
  return { start, length, descr: m[2] };
}

/**
 * npyjs knows only `<` and `|`: relabels `>` / `=` as `<` in the header (same
 * length) and, for big-endian, reverses each element's bytes. A copy.
 */
function toLittleEndian(b: Uint8Array, start: number, length: number, descr: string): Uint8Array {
  const out = new Uint8Array(b); // a copy (Buffer.slice would alias the caller's bytes)
  const at = start + new TextDecoder('latin1').decode(out.subarray(start, start + length)).indexOf(`'${descr}'`) + 1;
  out[at] = 0x3c; // '<'
  const size = Number(descr.slice(2));
  if (descr[0] === '>' && size > 1) {
    for (let i = start + length; i + size <= out.byteLength; i += size) out.subarray(i, i + size).reverse();
  }
  return out;
}

/** Row-major copy of column-major data: element (i0..ik) sits at sum(i_j * stride_j), stride_0 = 1. */
function fromFortran(data: TensorArray, shape: number[], dtype: DType): TensorArray {
  const n = data.length;
  const out = allocate(dtype, n) as { [i: number]: unknown };
  const k = shape.length;
  const stride = new Array<number>(k);
  for (let j = 0, s = 1; j < k; j++) { stride[j] = s; s *= shape[j]; }
  const idx = new Array<number>(k).fill(0);
  let f = 0;
  for (let c = 0; c < n; c++) {
    out[c] = (data as { [i: number]: unknown })[f];
    // Advance the row-major index (last axis fastest) and track the Fortran offset.
    for (let j = k - 1; j >= 0; j--) {
      idx[j]++;
      f += stride[j];
      if (idx[j] < shape[j]) break;
      f -= stride[j] * shape[j];
      idx[j] = 0;
    }
  }
  return out as TensorArray;
}

/**
 * Reads a .npy. FormatError for a malformed file, a dtype keylock cannot carry
 * (stating the numpy dtype), or data whose length does not match the shape.
 */
export function readNpy(bytes: Uint8Array, what: string): NpyArray {
  const { start, length, descr } = peekHeader(bytes, what);
  const code = descr.slice(1);
  const refused = REFUSED[code[0]];
  if (refused) throw new FormatError(`${what}: holds ${refused} (numpy dtype '${descr}'); expected numbers or bools (float16/32/64, int8..64, uint8..64, bool)`);
  const dtype = DTYPES[code];
  if (!dtype || !'<>|='.includes(descr[0])) throw new FormatError(`${what}: numpy dtype '${descr}' is not one keylock reads; expected float16/32/64, int8..64, uint8..64 or bool`);
  // '=' is native order: little-endian on every platform keylock runs on.
  const b = descr[0] === '>' || descr[0] === '=' ? toLittleEndian(bytes, start, length, descr) : bytes;
  // npyjs makes typed-array views at the data offset: give it a buffer of its own, aligned at 0.
  const buf = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b.buffer as ArrayBuffer : new Uint8Array(b).buffer;
  let parsed;
  try {
    parsed = parseNpy(buf);
  } catch (e) {
    throw new FormatError(`${what}: npyjs could not parse it (${(e as Error).message})`, { cause: e });
  }
  const shape = parsed.shape;
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new FormatError(`${what}: shape (${shape.join(', ')}) is not a list of sizes`);
  const n = shapeSize(shape);
  const raw = parsed.data as unknown as ArrayLike<number | bigint | boolean>;
  if (raw.length < n) {
    const size = Number(code.slice(1));
    throw new FormatError(`${what}: shape ${JSON.stringify(shape)} of '${descr}' needs ${n * size} data bytes, the file has ${raw.length * size}`);
  }
  let data: TensorArray;
  if (Array.isArray(raw)) data = Uint8Array.from(raw, (v) => (v ? 1 : 0)); // bool
  else data = (raw as TensorArray).slice(0, n) as TensorArray; // a copy: `buf` may be the caller's bytes
  if (parsed.fortranOrder && shape.length > 1) data = fromFortran(data, shape, dtype);
  return { dtype, shape, data, descr };
}

/**
 * Reads every array of an .npz (a zip of .npy files, as `np.savez` and
 * `np.savez_compressed` write it), keyed by name without `.npy`, in zip order.
 */
export function readNpz(bytes: Uint8Array, what: string): Map<string, NpyArray> {
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(bytes);
  } catch (e) {
    throw new FormatError(`${what}: not a readable .npz (zip) file (${(e as Error).message})`, { cause: e });
  }
  const out = new Map<string, NpyArray>();
  for (const [name, data] of Object.entries(files)) {
    if (name.endsWith('/')) continue;
    if (!name.endsWith('.npy')) throw new FormatError(`${what}: entry "${name}" is not a .npy; expected an archive written by np.savez`);
    const key = name.slice(0, -4);
    out.set(key, readNpy(data, `${what}["${key}"]`));
  }
  if (!out.size) throw new FormatError(`${what}: the archive holds no arrays`);
  return out;
}

/** A note for arrays whose values changed type on reading (float16, which keylock has no dtype for). */
export function npyNote(a: NpyArray, what: string): string | undefined {
  return a.descr.endsWith('f2') ? `${what}: float16 widened to float32 (keylock has no float16)` : undefined;
}
