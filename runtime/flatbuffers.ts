/**
 * A small, bounds-checked reader of the FlatBuffers wire format, enough for
 * TFLite models (runtime/tflite-schema.ts has the field ids).
 *
 * Wire format (little-endian): the file starts with a u32 offset to the root
 * table, optionally followed by a 4-byte file identifier. A table starts with
 * an i32 `soffset`; its vtable sits at `table - soffset` and holds u16 vtable
 * size, u16 table size, then one u16 per field id: the field's offset inside
 * the table, 0 when absent (the schema default applies). A field that refers
 * to a table, vector or string holds a u32 offset relative to the field's own
 * position. A vector is a u32 element count followed by the elements; a string
 * is a vector of bytes followed by a NUL. Unions take two ids: `id` holds the
 * u8 type, `id + 1` the table.
 *
 * Every read is checked against the buffer, so a truncated or garbage file is
 * a FormatError that says where, never an out-of-range read. It lives in
 * runtime/ because the device's TFLite backend reads input shapes with it;
 * the vendor's codec (models/tflite/) builds on it.
 */
import { FormatError } from '../keystore/errors.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A byte range of the buffer: where a `[ubyte]` vector's data is. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** A flatbuffer held in memory. */
export class FlatBuffer {
  readonly view: DataView;

  /** `what` names the file in error messages (e.g. `TFLite model`). */
  constructor(readonly bytes: Uint8Array, readonly what: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Throws FormatError unless `[pos, pos + size)` lies inside the buffer. */
  check(pos: number, size: number, what: string): void {
    if (!Number.isSafeInteger(pos) || pos < 0 || size < 0 || pos + size > this.bytes.byteLength) {
      throw new FormatError(`${this.what}: ${what} at offset ${pos} needs ${size} byte(s); the file has ${this.bytes.byteLength} (truncated or not a flatbuffer)`);
    }
  }

  u8(pos: number, what: string): number { this.check(pos, 1, what); return this.view.getUint8(pos); }
  i8(pos: number, what: string): number { this.check(pos, 1, what); return this.view.getInt8(pos); }
  u16(pos: number, what: string): number { this.check(pos, 2, what); return this.view.getUint16(pos, true); }
  i32(pos: number, what: string): number { this.check(pos, 4, what); return this.view.getInt32(pos, true); }
  u32(pos: number, what: string): number { this.check(pos, 4, what); return this.view.getUint32(pos, true); }
  f32(pos: number, what: string): number { this.check(pos, 4, what); return this.view.getFloat32(pos, true); }

  /** A 64-bit integer as a number; FormatError when it does not fit a safe integer. */
  i64(pos: number, what: string, signed: boolean): number {
    this.check(pos, 8, what);
    const v = signed ? this.view.getBigInt64(pos, true) : this.view.getBigUint64(pos, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new FormatError(`${this.what}: ${what} at offset ${pos} is ${v}, beyond 2^53`);
    }
    return Number(v);
  }

  /** The 4-byte file identifier after the root offset, as text (may be garbage). */
  identifier(): string {
    if (this.bytes.byteLength < 8) return '';
    return String.fromCharCode(...this.bytes.subarray(4, 8));
  }

  /** The root table. */
  root(type: string): FlatTable {
    const off = this.u32(0, 'root table offset');
    return new FlatTable(this, off, type);
  }

  /** Follows the u32 offset stored at `pos`. */
  deref(pos: number, what: string): number {
    const rel = this.u32(pos, what);
    const target = pos + rel;
    this.check(target, 4, `${what} target`);
    return target;
  }
}

/** A vector's element count and the position of its first element. */
export interface VectorRef {
  start: number;
  length: number;
}

/** One table of a flatbuffer, named `type` in error messages. */
export class FlatTable {
  private readonly vt: number;
  private readonly vtSize: number;
  private readonly size: number;

  constructor(readonly fb: FlatBuffer, readonly pos: number, readonly type: string) {
    if (pos % 4 !== 0) throw new FormatError(`${fb.what}: ${type} table at offset ${pos} is not 4-byte aligned`);
    const soff = fb.i32(pos, `${type} vtable offset`);
    this.vt = pos - soff;
    this.vtSize = fb.u16(this.vt, `${type} vtable size`);
    this.size = fb.u16(this.vt + 2, `${type} table size`);
    if (this.vtSize < 4 || this.vtSize % 2 !== 0) throw new FormatError(`${fb.what}: ${type} vtable at offset ${this.vt} has size ${this.vtSize}; expected an even number >= 4`);
    fb.check(this.vt, this.vtSize, `${type} vtable`);
    fb.check(pos, this.size, `${type} table`);
  }

  /** Position of field `id` in the buffer, or 0 when the table does not hold it. */
  field(id: number): number {
    const at = 4 + 2 * id;
    if (at + 2 > this.vtSize) return 0;
    const off = this.fb.u16(this.vt + at, `${this.type} field ${id}`);
    if (off === 0) return 0;
    if (off + 1 > this.size) throw new FormatError(`${this.fb.what}: ${this.type} field ${id} sits at ${off}, past the table's ${this.size} bytes`);
    return this.pos + off;
  }

  has(id: number): boolean { return this.field(id) !== 0; }

  private scalar(id: number, size: number, name: string): number {
    const p = this.field(id);
    if (p) this.fb.check(p, size, `${this.type}.${name}`);
    return p;
  }

  u8(id: number, name: string, dflt = 0): number { const p = this.scalar(id, 1, name); return p ? this.fb.u8(p, name) : dflt; }
  i8(id: number, name: string, dflt = 0): number { const p = this.scalar(id, 1, name); return p ? this.fb.i8(p, name) : dflt; }
  bool(id: number, name: string, dflt = false): boolean { const p = this.scalar(id, 1, name); return p ? this.fb.u8(p, name) !== 0 : dflt; }
  i32(id: number, name: string, dflt = 0): number { const p = this.scalar(id, 4, name); return p ? this.fb.i32(p, name) : dflt; }
  u32(id: number, name: string, dflt = 0): number { const p = this.scalar(id, 4, name); return p ? this.fb.u32(p, name) : dflt; }
  f32(id: number, name: string, dflt = 0): number { const p = this.scalar(id, 4, name); return p ? this.fb.f32(p, name) : dflt; }
  u64(id: number, name: string, dflt = 0): number { const p = this.scalar(id, 8, name); return p ? this.fb.i64(p, `${this.type}.${name}`, false) : dflt; }

  /** A sub-table, or undefined when absent. */
  table(id: number, type: string): FlatTable | undefined {
    const p = this.field(id);
    return p ? new FlatTable(this.fb, this.fb.deref(p, `${this.type} -> ${type}`), type) : undefined;
  }

  /** A vector's header, or undefined when absent; checks that `elemSize`-byte elements fit. */
  vector(id: number, elemSize: number, name: string): VectorRef | undefined {
    const p = this.field(id);
    if (!p) return undefined;
    const at = this.fb.deref(p, `${this.type}.${name}`);
    const length = this.fb.u32(at, `${this.type}.${name} length`);
    this.fb.check(at + 4, length * elemSize, `${this.type}.${name} (${length} element(s) of ${elemSize} byte(s))`);
    return { start: at + 4, length };
  }

  string(id: number, name: string): string | undefined {
    const v = this.vector(id, 1, name);
    if (!v) return undefined;
    try {
      return utf8.decode(this.fb.bytes.subarray(v.start, v.start + v.length));
    } catch {
      throw new FormatError(`${this.fb.what}: ${this.type}.${name} at offset ${v.start} is not valid UTF-8`);
    }
  }

  /** A vector of tables. */
  tables(id: number, type: string, name: string): FlatTable[] {
    const v = this.vector(id, 4, name);
    if (!v) return [];
    const out: FlatTable[] = [];
    for (let i = 0; i < v.length; i++) out.push(new FlatTable(this.fb, this.fb.deref(v.start + 4 * i, `${this.type}.${name}[${i}]`), type));
    return out;
  }

  ints(id: number, name: string): number[] | undefined {
    const v = this.vector(id, 4, name);
    if (!v) return undefined;
    return Array.from({ length: v.length }, (_, i) => this.fb.view.getInt32(v.start + 4 * i, true));
  }

  floats(id: number, name: string): number[] | undefined {
    const v = this.vector(id, 4, name);
    if (!v) return undefined;
    return Array.from({ length: v.length }, (_, i) => this.fb.view.getFloat32(v.start + 4 * i, true));
  }

  longs(id: number, name: string): number[] | undefined {
    const v = this.vector(id, 8, name);
    if (!v) return undefined;
    return Array.from({ length: v.length }, (_, i) => this.fb.i64(v.start + 8 * i, `${this.type}.${name}[${i}]`, true));
  }

  /** Where a `[ubyte]` vector's bytes are in the buffer. */
  byteRange(id: number, name: string): ByteRange | undefined {
    const v = this.vector(id, 1, name);
    return v && { offset: v.start, length: v.length };
  }
}
