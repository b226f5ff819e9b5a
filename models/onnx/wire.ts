/**
 * A minimal protobuf wire-format reader: enough to walk a message's fields and
 * know where each one's bytes sit in the file, which protobufjs does not report.
 */
import { FormatError } from '../../keystore/errors.ts';

/** One field occurrence: number, wire type, and for length-delimited fields the payload range. */
export interface WireField {
  num: number;
  wireType: number;
  /** Varint value (wire type 0), when it is a safe integer; otherwise undefined. */
  value?: number;
  /** Payload start (wire type 2) or value start (wire types 1 and 5). */
  start: number;
  end: number;
}

/** Reads the fields of one message in `bytes[start, end)`; `what` names it in errors. */
export class WireReader {
  pos: number;
  constructor(readonly bytes: Uint8Array, start: number, readonly end: number, readonly what: string) {
    this.pos = start;
  }

  private fail(msg: string): never {
    throw new FormatError(`${this.what}: ${msg} at byte ${this.pos}`);
  }

  /** A varint; values above 2^53 come back as undefined (still consumed). */
  varint(): number | undefined {
    let v = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= this.end) this.fail('truncated varint');
      const b = this.bytes[this.pos++]!;
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return Number.isSafeInteger(v) ? v : undefined;
    }
    return this.fail('varint longer than 10 bytes');
  }

  /** The next field, or undefined at the end of the message. */
  next(): WireField | undefined {
    if (this.pos >= this.end) return undefined;
    const tag = this.varint();
    if (tag === undefined || tag > 0xffffffff) this.fail('field tag out of range');
    const num = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (num === 0) this.fail('field number 0');
    switch (wireType) {
      case 0: {
        const start = this.pos;
        const value = this.varint();
        return { num, wireType, value, start, end: this.pos };
      }
      case 1:
      case 5: {
        const start = this.pos;
        this.pos += wireType === 1 ? 8 : 4;
        if (this.pos > this.end) this.fail(`truncated fixed-width field ${num}`);
        return { num, wireType, start, end: this.pos };
      }
      case 2: {
        const len = this.varint();
        if (len === undefined || len > this.end - this.pos) this.fail(`length of field ${num} runs past the end of the message`);
        const start = this.pos;
        this.pos += len;
        return { num, wireType, start, end: this.pos };
      }
      default:
        // Wire types 3/4 (groups) do not occur in ONNX; 6/7 do not exist.
        return this.fail(`unexpected wire type ${wireType} for field ${num}`);
    }
  }

  /** Decodes a packed run of varints in `[start, end)`. */
  static packedVarints(bytes: Uint8Array, start: number, end: number, what: string): (number | undefined)[] {
    const r = new WireReader(bytes, start, end, what);
    const out: (number | undefined)[] = [];
    while (r.pos < end) out.push(r.varint());
    return out;
  }
}
