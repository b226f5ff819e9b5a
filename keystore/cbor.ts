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
 */
export function decodeCbor(bytes: Uint8Array, what: string, maxBytes: number): unknown {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${what}: expected a Uint8Array`);
  if (bytes.byteLength > maxBytes) throw new SizeLimitError(what, maxBytes, bytes.byteLength);
  if (bytes.byteLength === 0) throw new FormatError(`${what}: expected CBOR data, got an empty file`);
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
