/**
 * CBOR at one boundary: every keylock file is CBOR, decoded here and then
 * checked field by field, so a malformed or hostile file fails with a typed error
 * that names the field, never with a TypeError deep inside the caller. Signed and
 * sealed files are read strictly; recorded-input files, the user's own data,
 * leniently (docs/SPEC.md, "Recorded inputs").
 */
import { Decoder, Encoder } from 'cbor-x';
import { FormatError, SizeLimitError } from './errors.ts';

// Records and typed-array tags are cbor-x extensions; keylock files use plain
// maps, byte strings, text, integers and arrays so that any CBOR library reads them.
const encoder = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: true, variableMapSize: true });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

/** Encodes a value of plain maps, arrays, strings, numbers, bigints and Uint8Arrays. */
export function encodeCbor(value: unknown): Uint8Array {
  const b = encoder.encode(value);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Options of `checkCbor` and `decodeCbor`. */
export interface CborOptions {
  /**
   * Accept the lenient profile of recorded files instead of the strict one of
   * signed files: also integers and lengths not in shortest form, indefinite
   * lengths, `null`, `undefined`, and the tags in `LENIENT_TAGS` around a byte
   * string. Every limit and every other refusal of the strict profile stays.
   */
  lenient?: boolean;
}

/**
 * Decodes exactly one CBOR item that fills `bytes`. Trailing bytes, truncation,
 * excessive nesting and oversize input are all `FormatError`/`SizeLimitError`.
 *
 * Strict (the default): the bytes are first walked by `checkCbor`, so cbor-x only
 * ever sees the plain subset keylock files use. Lenient (`{ lenient: true }`):
 * the same walk builds the value itself, since cbor-x refuses indefinite-length
 * strings; it builds what cbor-x would (byte strings as views of `bytes`, the
 * typed arrays of `LENIENT_TAGS`, `__proto__` keys renamed `__proto_`), except
 * that an integer is a number whenever it is a safe integer and a bigint
 * otherwise, whatever its encoded width (cbor-x makes a bigint of every 8-byte
 * integer, so a non-shortest 3 would come back as 3n).
 */
export function decodeCbor(bytes: Uint8Array, what: string, maxBytes: number, maxItems = MAX_CBOR_ITEMS, opts: CborOptions = {}): unknown {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${what}: expected a Uint8Array`);
  if (bytes.byteLength > maxBytes) throw new SizeLimitError(what, maxBytes, bytes.byteLength);
  if (bytes.byteLength === 0) throw new FormatError(`${what}: expected CBOR data, got an empty file`);
  if (opts.lenient) return walk(bytes, what, maxItems, true, true);
  checkCbor(bytes, what, maxItems);
  try {
    return decoder.decode(bytes);
  } catch (e) {
    const m = (e as Error).message ?? String(e);
    const why = /end of buffer not reached/.test(m) ? 'trailing bytes after the CBOR item'
      : /outside the bounds|Unexpected end|incomplete/i.test(m) || (e as { incomplete?: boolean }).incomplete ? 'truncated CBOR'
      : e instanceof RangeError ? `invalid or too deeply nested CBOR (${m})`
      : `invalid CBOR (${m})`;
    throw new FormatError(`${what}: ${why}`, { cause: e });
  }
}

/** Deepest nesting of arrays and maps accepted (keylock files nest about 6 deep). */
export const MAX_CBOR_DEPTH = 64;
/**
 * Most CBOR items (every value, key and container counts one) one decode accepts
 * by default: what bounds the JavaScript objects a file can make, since a byte
 * of CBOR can be an array element of 8 or more bytes once decoded.
 */
export const MAX_CBOR_ITEMS = 1 << 20;

/**
 * The tags the lenient profile accepts, each only directly around a byte string
 * (definite or indefinite), and the typed array each becomes: the one cbor-x
 * 1.6.8 builds (a view of the input when aligned, else a copy; never an
 * unaligned array, which JavaScript cannot make). 64 is RFC 8746 uint8, the rest
 * its little-endian arrays. Left out: 84 (float16 LE), which cbor-x does not
 * read (it returns a generic Tag object), Node 20 has no Float16Array for, and
 * keylock has no dtype for; the big-endian forms, which need a byte swap and no
 * encoder writes on the little-endian hosts keylock runs on.
 */
export const LENIENT_TAGS: ReadonlyMap<number, TypedArrayCtor> = new Map<number, TypedArrayCtor>([
  [64, Uint8Array], [68, Uint8ClampedArray], [69, Uint16Array], [70, Uint32Array], [71, BigUint64Array],
  [72, Int8Array], [77, Int16Array], [78, Int32Array], [79, BigInt64Array], [85, Float32Array], [86, Float64Array],
]);

/** A typed array class of `LENIENT_TAGS`. */
export type TypedArrayCtor = {
  new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): ArrayBufferView;
  readonly BYTES_PER_ELEMENT: number;
  readonly name: string;
};

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Walks the CBOR in `bytes` without building anything and refuses, with a
 * FormatError that names the byte offset, all that keylock files never hold
 * (docs/SPEC.md, Conventions): tags (cbor-x would build Dates, Sets, RegExps,
 * typed arrays, shared references, records, and big integers in quadratic
 * time), indefinite lengths, simple values other than false and true (null
 * and undefined included), map keys that are not text, duplicate map keys,
 * text that is not UTF-8, integers and lengths not in their shortest form,
 * nesting deeper than MAX_CBOR_DEPTH, declared lengths or counts larger than
 * the bytes left, and anything after the first item; more than `maxItems`
 * items is SizeLimitError. It is iterative, so a hostile depth cannot exhaust
 * the stack, and it runs in time linear in the input. With `{ lenient: true }`
 * it checks the lenient profile instead (see `CborOptions`).
 */
export function checkCbor(bytes: Uint8Array, what: string, maxItems = MAX_CBOR_ITEMS, opts: CborOptions = {}): void {
  walk(bytes, what, maxItems, opts.lenient === true, false);
}

/**
 * One open item: an array or map (4, 5), a tag waiting for its byte string (6),
 * or an indefinite-length string waiting for chunks (2, 3).
 */
interface Frame {
  major: number;
  /** Header offset, for messages. */
  at: number;
  /** Entries expected (a map counts keys and values), or -1 until a break. */
  count: number;
  seen: number;
  /** Map keys seen. */
  keys?: Set<string>;
  /** Map key waiting for its value, when building. */
  key?: string;
  /** The array or object being built, or a string's chunks. */
  out?: unknown;
  /** Tag number, or an indefinite byte string's length so far. */
  n?: number;
}

const MAJOR = ['an unsigned integer', 'a negative integer', 'a byte string', 'a text string', 'an array', 'a map', 'a tag', 'a simple value or float'];

/**
 * The walker behind `checkCbor` and the lenient `decodeCbor`: one pass, one
 * explicit stack, building the value only when `build` is set.
 */
function walk(bytes: Uint8Array, what: string, maxItems: number, lenient: boolean, build: boolean): unknown {
  const end = bytes.byteLength;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: Frame[] = [];
  let pos = 0;
  let items = 0;
  let result: unknown;
  const fail = (at: number, why: string): never => {
    throw new FormatError(`${what}: ${why} at byte ${at}`);
  };
  for (;;) {
    const at = pos;
    if (pos >= end) fail(at, 'truncated CBOR');
    if (++items > maxItems) throw new SizeLimitError(`${what} (CBOR items)`, maxItems, items);
    const ib = bytes[pos++];
    const major = ib >> 5;
    const ai = ib & 31;
    let arg: number;
    if (ai < 24) arg = ai;
    else if (ai === 24) {
      if (pos + 1 > end) fail(at, 'truncated CBOR');
      arg = bytes[pos];
      pos += 1;
      if (!lenient && major !== 7 && arg < 24) fail(at, 'a number not in its shortest form');
    } else if (ai === 25) {
      if (pos + 2 > end) fail(at, 'truncated CBOR');
      arg = dv.getUint16(pos);
      pos += 2;
      if (!lenient && major !== 7 && arg < 0x100) fail(at, 'a number not in its shortest form');
    } else if (ai === 26) {
      if (pos + 4 > end) fail(at, 'truncated CBOR');
      arg = dv.getUint32(pos);
      pos += 4;
      if (!lenient && major !== 7 && arg < 0x10000) fail(at, 'a number not in its shortest form');
    } else if (ai === 27) {
      if (pos + 8 > end) fail(at, 'truncated CBOR');
      const hi = dv.getUint32(pos);
      arg = hi * 2 ** 32 + dv.getUint32(pos + 4);
      pos += 8;
      if (!lenient && major !== 7 && hi === 0) fail(at, 'a number not in its shortest form');
    } else if (ai === 31 && lenient && major >= 2 && major !== 6) {
      arg = -1; // an indefinite length (2 to 5) or a break (7)
    } else {
      fail(at, ai !== 31 ? `a reserved CBOR header byte 0x${ib.toString(16)}`
        : lenient ? `an indefinite length on ${MAJOR[major]} (header byte 0x${ib.toString(16)})`
        : 'an indefinite length (keylock files use definite lengths only)');
      break;
    }
    const top = stack[stack.length - 1];
    // Inside a tag or an indefinite string only one kind of item may come (lenient only: strict never opens these).
    if (top?.major === 6 && major !== 2) fail(top.at, `tag ${top.n} followed by ${MAJOR[major]} (it must wrap a byte string)`);
    if ((top?.major === 2 || top?.major === 3) && ib !== 0xff && (major !== top.major || arg === -1)) {
      const kind = top.major === 2 ? 'byte' : 'text';
      fail(at, `${MAJOR[major]}${arg === -1 ? ' of indefinite length' : ''} inside an indefinite-length ${kind} string (only definite ${kind} string chunks may come)`);
    }
    let value: unknown;
    let keyText: string | undefined;
    let binLen = 0;
    let itemAt = at; // where the item just read starts (for an indefinite one, its header)
    if (ib === 0xff && lenient) {
      // A break closes the indefinite item on top, which is then the item just read.
      if (!top || top.count !== -1) fail(at, 'a break byte outside an indefinite-length item');
      if (top.major === 5 && top.seen % 2 === 1) fail(at, 'an indefinite-length map that ends after a key, without its value');
      stack.pop();
      itemAt = top.at;
      if (top.major === 3) keyText = value = (top.out as string[]).join('');
      else if (top.major === 2) {
        binLen = top.n!;
        if (build) value = concat(top.out as Uint8Array[], binLen);
      } else value = top.out;
    } else {
      const isKey = top !== undefined && top.major === 5 && top.seen % 2 === 0;
      if (isKey && major !== 3) fail(at, 'a map key that is not a text string');
      switch (major) {
        case 0:
          if (build) value = arg <= Number.MAX_SAFE_INTEGER ? arg : dv.getBigUint64(at + 1);
          break;
        case 1:
          if (build) value = arg < Number.MAX_SAFE_INTEGER ? -1 - arg : -1n - dv.getBigUint64(at + 1);
          break;
        case 2:
        case 3: {
          if (arg === -1) {
            stack.push({ major, at, count: -1, seen: 0, n: 0, out: major === 3 || build ? [] : undefined });
            continue;
          }
          if (arg > end - pos) fail(at, `a ${major === 2 ? 'byte' : 'text'} string of ${arg} bytes with ${end - pos} bytes left`);
          const body = bytes.subarray(pos, pos + arg);
          if (major === 3) {
            let s = '';
            try {
              s = utf8.decode(body);
            } catch {
              fail(at, 'a text string that is not UTF-8');
            }
            value = s;
            // Strict keys are compared byte for byte, as before; lenient keys by their text (chunks join first).
            keyText = lenient ? s : isKey ? String.fromCharCode(...(body.byteLength <= 4096 ? body : body.subarray(0, 4096))) + (body.byteLength > 4096 ? `#${body.byteLength}` : '') : undefined;
          } else {
            binLen = arg;
            if (build) value = body;
          }
          pos += arg;
          break;
        }
        case 4:
        case 5: {
          if (arg !== -1 && (major === 5 ? arg * 2 : arg) > end - pos) fail(at, `${major === 5 ? 'a map' : 'an array'} of ${arg} entries with ${end - pos} bytes left`);
          if (stack.length >= MAX_CBOR_DEPTH) fail(at, `nesting deeper than ${MAX_CBOR_DEPTH} levels`);
          const count = major === 5 && arg !== -1 ? arg * 2 : arg;
          const out = build ? (major === 4 ? [] : {}) : undefined;
          if (count !== 0) {
            stack.push(major === 5 ? { major, at, count, seen: 0, keys: new Set(), out } : { major, at, count, seen: 0, out });
            continue;
          }
          value = out;
          break;
        }
        case 6:
          if (!lenient) fail(at, `a CBOR tag (${arg}); keylock files use none`);
          if (!LENIENT_TAGS.has(arg)) {
            fail(at, arg === 2 || arg === 3 ? `a big-integer tag (${arg})`
              : `a CBOR tag (${arg}); only 64 and the little-endian typed-array tags (${[...LENIENT_TAGS.keys()].slice(1).join(', ')}) are accepted${arg === 0xdfff ? ' (a cbor-x record: encode with useRecords: false)' : ''}`);
          }
          stack.push({ major, at, count: 1, seen: 0, n: arg });
          continue;
        case 7:
          if (ai === 20 || ai === 21) value = ai === 21;
          else if (ai === 25) value = half(arg);
          else if (ai === 26) value = dv.getFloat32(at + 1);
          else if (ai === 27) value = dv.getFloat64(at + 1);
          else if (lenient && (ai === 22 || ai === 23)) value = ai === 22 ? null : undefined;
          else fail(at, ai === 22 ? 'null (keylock files omit absent fields)' : ai === 23 ? 'undefined' : `a CBOR simple value (${ai === 24 ? arg : ai})`);
      }
    }
    // One item is complete: hand it to the open items above, closing every one it completes.
    for (;;) {
      const f = stack[stack.length - 1];
      if (!f) {
        result = value;
        break;
      }
      if (f.major === 2 || f.major === 3) {
        if (f.major === 3) (f.out as string[]).push(value as string);
        else {
          f.n! += binLen;
          if (build) (f.out as Uint8Array[]).push(value as Uint8Array);
        }
        break;
      }
      if (f.major === 6) {
        stack.pop();
        const C = LENIENT_TAGS.get(f.n!)!;
        if (binLen % C.BYTES_PER_ELEMENT) fail(f.at, `tag ${f.n} (${C.name}) around ${binLen} bytes, not a multiple of ${C.BYTES_PER_ELEMENT}`);
        if (build) value = typedArray(C, value as Uint8Array);
        keyText = undefined;
        continue;
      }
      if (f.major === 5 && f.seen % 2 === 0) {
        if (f.keys!.has(keyText!)) fail(itemAt, 'a map key that appears twice');
        f.keys!.add(keyText!);
        f.key = keyText;
      } else if (build) {
        if (f.major === 4) (f.out as unknown[]).push(value);
        else (f.out as Record<string, unknown>)[f.key === '__proto__' ? '__proto_' : f.key!] = value;
      }
      if (++f.seen !== f.count) break;
      stack.pop();
      value = f.out;
      keyText = undefined;
    }
    if (!stack.length) break;
  }
  if (pos !== end) fail(pos, `trailing bytes after the CBOR item (${end - pos} bytes)`);
  return result;
}

/** An IEEE 754 half-precision float. */
function half(h: number): number {
  const e = (h >> 10) & 31;
  const m = h & 1023;
  const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1024 + m) * 2 ** (e - 25);
  return h & 0x8000 ? -v : v;
}

function concat(parts: Uint8Array[], n: number): Uint8Array {
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

/**
 * As cbor-x: a view of the byte string when it is aligned for the element size,
 * else a copy. Elements are read in host order, like `typedFromBytes` in
 * runtime/tensor.ts: keylock runs on little-endian hosts only.
 */
function typedArray(C: TypedArrayCtor, b: Uint8Array): ArrayBufferView {
  const size = C.BYTES_PER_ELEMENT;
  if (b.byteOffset % size === 0) return new C(b.buffer, b.byteOffset, b.byteLength / size);
  // Uint8Array's slice copies; a Buffer's (whose subarrays these are when the input is one) would not.
  return new C(Uint8Array.prototype.slice.call(b).buffer, 0, b.byteLength / size);
}

/** Field readers: each checks the type (and limits) of one field of a decoded map. */
export class Fields {
  constructor(readonly what: string, readonly obj: Record<string, unknown>) {}

  /** Wraps a decoded value that must be a map. */
  static of(what: string, v: unknown): Fields {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) {
      throw new FormatError(`${what}: expected a map, got ${describe(v)}`);
    }
    return new Fields(what, v as Record<string, unknown>);
  }

  private fail(key: string, expected: string, v: unknown): never {
    throw new FormatError(`${this.what}.${key}: expected ${expected}, got ${describe(v)}`);
  }

  has(key: string): boolean {
    return Object.hasOwn(this.obj, key) && this.obj[key] !== undefined && this.obj[key] !== null;
  }

  bytes(key: string, opts: { len?: number; max?: number } = {}): Uint8Array {
    const v = this.obj[key];
    if (!(v instanceof Uint8Array)) this.fail(key, 'a byte string', v);
    if (opts.len !== undefined && v.byteLength !== opts.len) this.fail(key, `${opts.len} bytes`, `${v.byteLength} bytes`);
    if (opts.max !== undefined && v.byteLength > opts.max) throw new SizeLimitError(`${this.what}.${key}`, opts.max, v.byteLength);
    return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  }

  text(key: string, max = 4096): string {
    const v = this.obj[key];
    if (typeof v !== 'string') this.fail(key, 'a text string', v);
    if (v.length > max) throw new SizeLimitError(`${this.what}.${key}`, max, v.length);
    return v;
  }

  /** A safe non-negative integer (CBOR unsigned int). */
  uint(key: string): number {
    const v = this.obj[key];
    const n = typeof v === 'bigint' && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= 0n ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) this.fail(key, 'a non-negative integer', v);
    return n;
  }

  num(key: string): number {
    const v = this.obj[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, 'a finite number', v);
    return v;
  }

  bool(key: string): boolean {
    const v = this.obj[key];
    if (typeof v !== 'boolean') this.fail(key, 'a boolean', v);
    return v;
  }

  array(key: string, max = 1 << 20): unknown[] {
    const v = this.obj[key];
    if (!Array.isArray(v)) this.fail(key, 'an array', v);
    if (v.length > max) throw new SizeLimitError(`${this.what}.${key} (entries)`, max, v.length);
    return v;
  }

  map(key: string): Fields {
    return Fields.of(`${this.what}.${key}`, this.obj[key]);
  }

  /** The value must equal one of `allowed`. */
  oneOf<T extends string | number>(key: string, allowed: readonly T[]): T {
    const v = this.obj[key];
    if (!allowed.includes(v as T)) this.fail(key, `one of ${allowed.join(', ')}`, v);
    return v as T;
  }
}

/** Short description of a decoded value's type, for error messages. */
export function describe(v: unknown): string {
  if (v === undefined) return 'nothing (missing)';
  if (v === null) return 'null';
  if (v instanceof Uint8Array) return `a byte string of ${v.byteLength} bytes`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name} of ${v.byteLength} bytes`; // a lenient typed-array tag
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return v.length > 40 ? `text "${v.slice(0, 40)}…"` : `"${v}"`;
  if (typeof v === 'object') return 'a map';
  return `${typeof v} ${String(v)}`;
}
