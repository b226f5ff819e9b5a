/**
 * Strict CBOR at one boundary: every keylock file is CBOR, decoded here and then
 * checked field by field, so a malformed or hostile file fails with a typed error
 * that names the field, never with a TypeError deep inside the caller.
 */
import { Decoder, Encoder } from 'cbor-x';
import { FormatError, SizeLimitError } from '../runtime/errors.ts';

// Records and typed-array tags are cbor-x extensions; keylock files use plain
// maps, byte strings, text, integers and arrays so that any CBOR library reads them.
const encoder = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: true, variableMapSize: true });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

/** Encodes a value of plain maps, arrays, strings, numbers, bigints and Uint8Arrays. */
export function encodeCbor(value: unknown): Uint8Array {
  const b = encoder.encode(value);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Decodes exactly one CBOR item that fills `bytes`. Trailing bytes, truncation,
 * excessive nesting and oversize input are all `FormatError`/`SizeLimitError`.
 * The bytes are first walked by `checkCbor`, so cbor-x only ever sees the plain
 * subset keylock files use.
 */
export function decodeCbor(bytes: Uint8Array, what: string, maxBytes: number, maxItems = MAX_CBOR_ITEMS): unknown {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${what}: expected a Uint8Array`);
  if (bytes.byteLength > maxBytes) throw new SizeLimitError(what, maxBytes, bytes.byteLength);
  if (bytes.byteLength === 0) throw new FormatError(`${what}: expected CBOR data, got an empty file`);
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
 * the stack, and it runs in time linear in the input.
 */
export function checkCbor(bytes: Uint8Array, what: string, maxItems = MAX_CBOR_ITEMS): void {
  const end = bytes.byteLength;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // One frame per open array or map: items still to read; for maps, whether the next item is a key, and the keys seen.
  const stack: { left: number; map: boolean; keys?: Set<string> }[] = [];
  let pos = 0;
  let items = 0;
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
      if (major !== 7 && arg < 24) fail(at, 'a number not in its shortest form');
    } else if (ai === 25) {
      if (pos + 2 > end) fail(at, 'truncated CBOR');
      arg = dv.getUint16(pos);
      pos += 2;
      if (major !== 7 && arg < 0x100) fail(at, 'a number not in its shortest form');
    } else if (ai === 26) {
      if (pos + 4 > end) fail(at, 'truncated CBOR');
      arg = dv.getUint32(pos);
      pos += 4;
      if (major !== 7 && arg < 0x10000) fail(at, 'a number not in its shortest form');
    } else if (ai === 27) {
      if (pos + 8 > end) fail(at, 'truncated CBOR');
      const hi = dv.getUint32(pos);
      arg = hi * 2 ** 32 + dv.getUint32(pos + 4);
      pos += 8;
      if (major !== 7 && hi === 0) fail(at, 'a number not in its shortest form');
    } else {
      fail(at, ai === 31 ? 'an indefinite length (keylock files use definite lengths only)' : `a reserved CBOR header byte 0x${ib.toString(16)}`);
      break;
    }
    const top = stack[stack.length - 1];
    const isKey = top !== undefined && top.map && top.left % 2 === 0;
    if (isKey && major !== 3) fail(at, 'a map key that is not a text string');
    switch (major) {
      case 0:
      case 1:
        break;
      case 2:
      case 3: {
        if (arg > end - pos) fail(at, `a ${major === 2 ? 'byte' : 'text'} string of ${arg} bytes with ${end - pos} bytes left`);
        if (major === 3) {
          const text = bytes.subarray(pos, pos + arg);
          try {
            utf8.decode(text);
          } catch {
            fail(at, 'a text string that is not UTF-8');
          }
          if (isKey) {
            const k = String.fromCharCode(...(text.byteLength <= 4096 ? text : text.subarray(0, 4096))) + (text.byteLength > 4096 ? `#${text.byteLength}` : '');
            if (top.keys!.has(k)) fail(at, 'a map key that appears twice');
            top.keys!.add(k);
          }
        }
        pos += arg;
        break;
      }
      case 4:
      case 5: {
        const items = major === 5 ? arg * 2 : arg;
        if (items > end - pos) fail(at, `${major === 5 ? 'a map' : 'an array'} of ${arg} entries with ${end - pos} bytes left`);
        if (stack.length >= MAX_CBOR_DEPTH) fail(at, `nesting deeper than ${MAX_CBOR_DEPTH} levels`);
        if (top) top.left--;
        if (items > 0) {
          stack.push(major === 5 ? { left: items, map: true, keys: new Set() } : { left: items, map: false });
          continue;
        }
        break;
      }
      case 6:
        fail(at, `a CBOR tag (${arg}); keylock files use none`);
        break;
      case 7:
        if (ai === 20 || ai === 21 || ai === 25 || ai === 26 || ai === 27) break;
        fail(at, ai === 22 ? 'null (keylock files omit absent fields)' : ai === 23 ? 'undefined' : `a CBOR simple value (${ai === 24 ? arg : ai})`);
    }
    // One item done: close every frame it completes.
    if (top && major !== 4 && major !== 5) top.left--;
    while (stack.length && stack[stack.length - 1].left === 0) {
      stack.pop();
    }
    if (!stack.length) break;
  }
  if (pos !== end) fail(pos, `trailing bytes after the CBOR item (${end - pos} bytes)`);
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
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return v.length > 40 ? `text "${v.slice(0, 40)}…"` : `"${v}"`;
  if (typeof v === 'object') return 'a map';
  return `${typeof v} ${String(v)}`;
}
