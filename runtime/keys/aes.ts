/**
 * The AES pieces Deep-Lock uses: the S-box, its inverse, and the AES-128 key
 * expansion continued for as many words as a model has parameters.
 *
 * Not an AES cipher: keylock never encrypts with AES. Tables are computed at load
 * (from GF(2^8) logarithms), not pasted, and checked against FIPS-197 in the tests.
 */

/** Multiplication by x in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (0x11b). */
export function xtime(b: number): number {
  const s = (b << 1) & 0x1ff;
  return s & 0x100 ? s ^ 0x11b : s;
}

function buildSboxes(): [Uint8Array, Uint8Array] {
  // exp/log tables over generator 0x03 give the multiplicative inverse in O(1).
  const exp = new Uint8Array(255);
  const log = new Uint8Array(256);
  let v = 1;
  for (let i = 0; i < 255; i++) {
    exp[i] = v;
    log[v] = i;
    v ^= xtime(v); // v * 3
  }
  const s = new Uint8Array(256);
  const inv = new Uint8Array(256);
  for (let a = 0; a < 256; a++) {
    const b = a === 0 ? 0 : exp[(255 - log[a]) % 255];
    let r = b;
    for (let k = 1; k <= 4; k++) r ^= ((b << k) | (b >> (8 - k))) & 0xff;
    r ^= 0x63;
    s[a] = r;
    inv[r] = a;
  }
  return [s, inv];
}

/** The AES S-box (FIPS-197 §5.1.1). Treat as read-only. */
export const SBOX: Uint8Array = buildSboxes()[0];
/** The inverse AES S-box (FIPS-197 §5.3.2). Treat as read-only. */
export const INV_SBOX: Uint8Array = new Uint8Array(256);
for (let a = 0; a < 256; a++) INV_SBOX[SBOX[a]] = a;

/**
 * Rcon(j) = x^(j-1) in GF(2^8) for every j >= 1. AES-128 itself needs j <= 10;
 * Deep-Lock's extended schedule continues by repeated xtime (period 51), never by
 * wrapping a 10-entry table, which would make the schedule repeat.
 * @throws RangeError if j < 1.
 */
export function rcon(j: number): number {
  if (!Number.isSafeInteger(j) || j < 1) throw new RangeError(`rcon: expected j >= 1, got ${j}`);
  let r = 1;
  for (let i = 1; i < (j - 1) % 51 + 1; i++) r = xtime(r);
  return r;
}

/**
 * Streaming AES-128 key expansion without end: w[0..3] = key; for i >= 4,
 * t = w[i-1]; if i mod 4 = 0, t = SubWord(RotWord(t)) xor (Rcon(i/4), 0, 0, 0);
 * w[i] = w[i-4] xor t. Words are big-endian u32 in AES byte order
 * (byte 0 of the word is the most significant). O(1) time and memory per word.
 */
export class AesExtendedKeySchedule {
  private readonly w = new Uint32Array(4);
  private i = 0;
  private rc = 1;

  /** @throws RangeError unless `key` is 16 bytes. */
  constructor(key: Uint8Array) {
    if (!(key instanceof Uint8Array) || key.length !== 16) {
      throw new RangeError(`AES-128 key: expected 16 bytes, got ${key instanceof Uint8Array ? key.length : typeof key}`);
    }
    for (let k = 0; k < 4; k++) {
      this.w[k] = ((key[4 * k] << 24) | (key[4 * k + 1] << 16) | (key[4 * k + 2] << 8) | key[4 * k + 3]) >>> 0;
    }
  }

  /** Index of the word the next call to `next()` returns. */
  get index(): number {
    return this.i;
  }

  /** The next word w[index]. */
  next(): number {
    const i = this.i++;
    const w = this.w;
    if (i < 4) return w[i];
    let t = w[(i - 1) & 3];
    if ((i & 3) === 0) {
      // RotWord then SubWord: bytes (t1, t2, t3, t0) through the S-box.
      t =
        (((SBOX[(t >>> 16) & 0xff] ^ this.rc) << 24) |
          (SBOX[(t >>> 8) & 0xff] << 16) |
          (SBOX[t & 0xff] << 8) |
          SBOX[t >>> 24]) >>>
        0;
      this.rc = xtime(this.rc);
    }
    const v = (w[i & 3] ^ t) >>> 0; // w[i & 3] still holds w[i-4]
    w[i & 3] = v;
    return v;
  }
}

/**
 * The first `count` words of the extended AES-128 key schedule of `key`.
 * @throws RangeError on a bad key or count.
 */
export function aesExpandKeyWords(key: Uint8Array, count: number): Uint32Array {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`word count: expected an integer >= 0, got ${count}`);
  const ks = new AesExtendedKeySchedule(key);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = ks.next();
  return out;
}
