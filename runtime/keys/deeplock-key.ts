/**
 * Deep-Lock's key schedule and per-parameter byte substitution, shared by the
 * locker and the applier. The master key comes from derive.ts.
 *
 * Parameter i (float32 parameters counted across all locked tensors in manifest
 * order, from 0) uses word w[i] of the extended AES-128 key schedule. Its four
 * stored bytes b_0..b_3 (little-endian float32, file order) lock as
 * b'_j = S(b_j xor w_i[j]), w_i[j] being byte j of the word in AES order; unlock
 * is b_j = InvS(b'_j) xor w_i[j].
 *
 * 2-byte elements (float16, bfloat16; an entry's `width: 2`) follow the same
 * count: parameter i uses the first two bytes of word w[i] in AES order,
 * b'_j = S(b_j xor w_i[j]) for j = 0, 1, and bytes 2 and 3 of the word go
 * unused. The published construction covers float32 only; this is keylock's
 * extension to float16 models (docs/SPEC.md, §6.3).
 *
 * This construction is weak by design (see docs/SPEC.md); keylock ships it only to
 * reproduce the paper. Use `sealed` to protect a model.
 */
import { AesExtendedKeySchedule, INV_SBOX, SBOX } from './aes.ts';
import { deeplockMasterKey } from './derive.ts';

/** Bytes per parameter a deeplock range may have: 4 (float32, the published construction) or 2 (float16, bfloat16). */
export type DeeplockWidth = 2 | 4;

/** The deeplock width of a dtype, or undefined when deeplock does not lock it. */
export function deeplockWidthOf(dtype: string): DeeplockWidth | undefined {
  return dtype === 'float32' ? 4 : dtype === 'float16' || dtype === 'bfloat16' ? 2 : undefined;
}

function assertWidth(bytes: Uint8Array, width: number): void {
  if (width === 4) return assertFloatBytes(bytes);
  if (!(bytes instanceof Uint8Array)) throw new TypeError('float16 data: expected a Uint8Array view');
  if (width !== 2) throw new RangeError(`deeplock element width: expected 2 or 4, got ${width}`);
  if (bytes.length % 2 !== 0) throw new RangeError(`float16 data: expected a multiple of 2 bytes, got ${bytes.length}`);
}

function assertFloatBytes(bytes: Uint8Array): void {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('float32 data: expected a Uint8Array view');
  if (bytes.length % 4 !== 0) {
    throw new RangeError(`float32 data: expected a multiple of 4 bytes, got ${bytes.length}`);
  }
}

/**
 * Schedule words w[0..count-1] as bytes (word i at [4i, 4i+4), AES byte order),
 * for deeplockLock / deeplockUnlock. 4 bytes per parameter: for large models
 * prefer DeeplockKeystream. Zero it after use.
 * @throws RangeError on a wrong-size model key or a bad count.
 */
export function deeplockSchedule(modelKey: Uint8Array, count: number): Uint8Array {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`word count: expected an integer >= 0, got ${count}`);
  const master = deeplockMasterKey(modelKey);
  const ks = new AesExtendedKeySchedule(master);
  master.fill(0);
  const out = new Uint8Array(4 * count);
  for (let o = 0; o < out.length; o += 4) {
    const w = ks.next();
    out[o] = w >>> 24;
    out[o + 1] = (w >>> 16) & 0xff;
    out[o + 2] = (w >>> 8) & 0xff;
    out[o + 3] = w & 0xff;
  }
  return out;
}

function assertRange(bytes: Uint8Array, startParamIndex: number, schedule: Uint8Array): void {
  assertFloatBytes(bytes);
  if (!Number.isSafeInteger(startParamIndex) || startParamIndex < 0) {
    throw new RangeError(`start parameter index: expected an integer >= 0, got ${startParamIndex}`);
  }
  const need = 4 * startParamIndex + bytes.length;
  if (schedule.length < need) {
    throw new RangeError(`deeplock schedule: expected at least ${need} bytes, got ${schedule.length}`);
  }
}

/**
 * Locks, in place, float32 bytes whose first parameter has global index
 * `startParamIndex`, with a schedule from deeplockSchedule (word 0 first).
 * @throws RangeError if the length is not a multiple of 4 or the schedule is too short.
 */
export function deeplockLock(bytes: Uint8Array, startParamIndex: number, schedule: Uint8Array): void {
  assertRange(bytes, startParamIndex, schedule);
  const off = 4 * startParamIndex;
  for (let k = 0; k < bytes.length; k++) bytes[k] = SBOX[bytes[k] ^ schedule[off + k]];
}

/** Inverse of deeplockLock, in place. Same arguments and errors. */
export function deeplockUnlock(bytes: Uint8Array, startParamIndex: number, schedule: Uint8Array): void {
  assertRange(bytes, startParamIndex, schedule);
  const off = 4 * startParamIndex;
  for (let k = 0; k < bytes.length; k++) bytes[k] = INV_SBOX[bytes[k]] ^ schedule[off + k];
}

/**
 * Streaming variant: generates words as tensors are processed in manifest order,
 * so a large model never holds its whole schedule (4 bytes per parameter) in
 * memory. Each lock/unlock call consumes one word per float32 parameter.
 */
export class DeeplockKeystream {
  private readonly ks: AesExtendedKeySchedule;

  /** Starts at parameter 0. @throws RangeError on a wrong-size model key. */
  constructor(modelKey: Uint8Array) {
    const master = deeplockMasterKey(modelKey);
    this.ks = new AesExtendedKeySchedule(master);
    master.fill(0);
  }

  /** Global index of the next parameter. */
  get paramIndex(): number {
    return this.ks.index;
  }

  /** Skips `count` words, to start at a later locked tensor. Tensors that are not locked consume no words. */
  skip(count: number): void {
    if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`skip count: expected an integer >= 0, got ${count}`);
    for (let i = 0; i < count; i++) this.ks.next();
  }

  /** Locks the next bytes.length / width parameters in place (width 4: float32; 2: float16, bfloat16). */
  lock(bytes: Uint8Array, width: DeeplockWidth = 4): void {
    if (width === 2) {
      assertWidth(bytes, 2);
      for (let o = 0; o < bytes.length; o += 2) {
        const w = this.ks.next();
        bytes[o] = SBOX[bytes[o] ^ (w >>> 24)];
        bytes[o + 1] = SBOX[bytes[o + 1] ^ ((w >>> 16) & 0xff)];
      }
      return;
    }
    assertWidth(bytes, width);
    for (let o = 0; o < bytes.length; o += 4) {
      const w = this.ks.next();
      bytes[o] = SBOX[bytes[o] ^ (w >>> 24)];
      bytes[o + 1] = SBOX[bytes[o + 1] ^ ((w >>> 16) & 0xff)];
      bytes[o + 2] = SBOX[bytes[o + 2] ^ ((w >>> 8) & 0xff)];
      bytes[o + 3] = SBOX[bytes[o + 3] ^ (w & 0xff)];
    }
  }

  /** Unlocks the next bytes.length / width parameters in place. */
  unlock(bytes: Uint8Array, width: DeeplockWidth = 4): void {
    if (width === 2) {
      assertWidth(bytes, 2);
      for (let o = 0; o < bytes.length; o += 2) {
        const w = this.ks.next();
        bytes[o] = INV_SBOX[bytes[o]] ^ (w >>> 24);
        bytes[o + 1] = INV_SBOX[bytes[o + 1]] ^ ((w >>> 16) & 0xff);
      }
      return;
    }
    assertWidth(bytes, width);
    for (let o = 0; o < bytes.length; o += 4) {
      const w = this.ks.next();
      bytes[o] = INV_SBOX[bytes[o]] ^ (w >>> 24);
      bytes[o + 1] = INV_SBOX[bytes[o + 1]] ^ ((w >>> 16) & 0xff);
      bytes[o + 2] = INV_SBOX[bytes[o + 2]] ^ ((w >>> 8) & 0xff);
      bytes[o + 3] = INV_SBOX[bytes[o + 3]] ^ (w & 0xff);
    }
  }
}
