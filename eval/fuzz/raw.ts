/**
 * CBOR that no well-behaved encoder writes (tags, indefinite lengths, nesting
 * 100,000 deep, lengths larger than the file), spliced into otherwise normal
 * trees: a `Raw` node is encoded as a unique placeholder byte string whose
 * encoding is then replaced by the raw bytes.
 */
import { encodeCbor } from '../../keystore/cbor.ts';

/** Bytes to put verbatim where this node sits in a tree. */
export class Raw {
  constructor(readonly bytes: Uint8Array, readonly label: string) {}
  toJSON(): string {
    return `Raw(${this.label})`;
  }
}

const MARK = 0x54; // CBOR header of a 20-byte byte string

/** Encodes a tree that may hold `Raw` nodes. */
export function encodeRaw(tree: unknown): Uint8Array {
  const raws: Raw[] = [];
  const prefix = crypto.getRandomValues(new Uint8Array(16));
  const swap = (v: unknown): unknown => {
    if (v instanceof Raw) {
      const ph = new Uint8Array(20);
      ph.set(prefix);
      new DataView(ph.buffer).setUint32(16, raws.length);
      raws.push(v);
      return ph;
    }
    if (v instanceof Uint8Array || v === null || typeof v !== 'object') return v;
    // Copy on write: a subtree without a Raw in it is encoded as it is (copying every tree of
    // every input was a fifth of the campaign's time).
    if (Array.isArray(v)) {
      let out: unknown[] | undefined;
      for (let i = 0; i < v.length; i++) {
        const x = swap(v[i]);
        if (x !== v[i]) (out ??= v.slice())[i] = x;
      }
      return out ?? v;
    }
    let out: Record<string, unknown> | undefined;
    for (const k of Object.keys(v)) {
      const was = (v as Record<string, unknown>)[k];
      const x = swap(was);
      if (x !== was) (out ??= { ...(v as Record<string, unknown>) })[k] = x;
    }
    return out ?? v;
  };
  const bytes = encodeCbor(swap(tree));
  if (!raws.length) return bytes;
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const parts: Uint8Array[] = [];
  let from = 0;
  for (let i = 0; i < raws.length; i++) {
    const needle = Buffer.alloc(21);
    needle[0] = MARK;
    needle.set(prefix, 1);
    needle.writeUInt32BE(i, 17);
    const at = buf.indexOf(needle, from);
    if (at < 0) throw new Error(`raw placeholder ${i} not found`);
    parts.push(bytes.subarray(from, at), raws[i].bytes);
    from = at + 21;
  }
  parts.push(bytes.subarray(from));
  return Buffer.concat(parts);
}

function repeat(head: number[], n: number, tail: number[]): Uint8Array {
  const out = new Uint8Array(head.length * n + tail.length);
  for (let i = 0; i < n; i++) out.set(head, i * head.length);
  out.set(tail, head.length * n);
  return out;
}

/** Hostile raw items, by name. */
export const RAW_ITEMS: Record<string, () => Uint8Array> = {
  'nested arrays x65': () => repeat([0x81], 65, [0x00]),
  'nested arrays x100000': () => repeat([0x81], 100_000, [0x00]),
  'nested maps x100000': () => repeat([0xa1, 0x61, 0x61], 100_000, [0x00]),
  'tag 6 x100000': () => repeat([0xc6], 100_000, [0x00]),
  'bignum 64 KiB': () => { const b = new Uint8Array(6 + 65536).fill(0xff); b.set([0xc2, 0x5a, 0x00, 0x01, 0x00, 0x00]); return b; },
  'shared reference cycle': () => Uint8Array.from([0xd8, 0x1c, 0x81, 0xd8, 0x1d, 0x00]),
  'dangling shared reference': () => Uint8Array.from([0xd8, 0x1d, 0x05]),
  'date tag': () => Uint8Array.from([0xc1, 0x1a, 0x65, 0x00, 0x00, 0x00]),
  'regexp tag 27': () => Uint8Array.from([0xd8, 0x1b, 0x82, 0x66, ...new TextEncoder().encode('RegExp'), 0x62, 0x28, 0x29]),
  'set tag 258': () => Uint8Array.from([0xd9, 0x01, 0x02, 0x80]),
  'typed array tag 85': () => Uint8Array.from([0xd8, 0x55, 0x44, 0, 0, 0x80, 0x3f]),
  'record tag': () => Uint8Array.from([0xd9, 0xdf, 0xff, 0x83, 0x19, 0xe0, 0x00, 0x81, 0x61, 0x61, 0x01]),
  'indefinite array': () => Uint8Array.from([0x9f, 0x01, 0x02, 0xff]),
  'indefinite text': () => Uint8Array.from([0x7f, 0x61, 0x61, 0xff]),
  'null': () => Uint8Array.from([0xf6]),
  'undefined': () => Uint8Array.from([0xf7]),
  'simple 99': () => Uint8Array.from([0xf8, 99]),
  'break alone': () => Uint8Array.from([0xff]),
  'non-minimal 1': () => Uint8Array.from([0x18, 0x01]),
  'half float NaN': () => Uint8Array.from([0xf9, 0x7e, 0x00]),
  'bytes declared 2^32': () => Uint8Array.from([0x5a, 0xff, 0xff, 0xff, 0xff, 0x00]),
  'bytes declared 2^64': () => Uint8Array.from([0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]),
  'array declared 2^32': () => Uint8Array.from([0x9a, 0xff, 0xff, 0xff, 0xff, 0x00]),
  'map declared 2^31': () => Uint8Array.from([0xba, 0x7f, 0xff, 0xff, 0xff, 0x61, 0x61, 0x00]),
  'invalid utf-8 text': () => Uint8Array.from([0x62, 0xc3, 0x28]),
  'duplicate keys': () => Uint8Array.from([0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02]),
  'byte-string key': () => Uint8Array.from([0xa1, 0x41, 0x61, 0x01]),
  'integer key': () => Uint8Array.from([0xa1, 0x01, 0x01]),
  '__proto__ key': () => Uint8Array.from([0xa1, 0x69, ...new TextEncoder().encode('__proto__'), 0xa1, 0x61, 0x78, 0x01]),
  'uint64 max': () => Uint8Array.from([0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
  'nint64 min': () => Uint8Array.from([0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
};
