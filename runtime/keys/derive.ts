/**
 * Key derivation: every scheme key, nonce and check value that keylock derives
 * from a model key, in one place shared by the vendor's lockers and the device's
 * appliers. docs/SPEC.md ("Key derivation") is the normative text;
 * python/keylock_keys.py is the reference these functions are tested against.
 *
 * Construction: SHAKE256(modelKey || UTF-8("keylock/v1/" + scheme + "/" + purpose)),
 * read as a stream. SHAKE256 is an XOF, so a short output is a prefix of a long one
 * and every consumer (bytes, bits, rejection-sampled integers) reads the same stream.
 */
import { shake256 } from '@noble/hashes/sha3.js';
import { KeyMismatchError, expectedGot } from '../../keystore/errors.ts';
import { shake256Native } from '../../keystore/nacl.ts';
import { hex } from '../../keystore/hex.ts';

/** Size of a model key in bytes. */
export const MODEL_KEY_BYTES = 32;
/** Prefix of every derivation label; the version bumps if any derivation changes. */
export const LABEL_PREFIX = 'keylock/v1/';
/** Size of a key check value in bytes. */
export const KCV_BYTES = 16;
/** Size of an XSalsa20-Poly1305 (NaCl secretbox) key. */
export const SECRETBOX_KEY_BYTES = 32;
/** Size of an XSalsa20-Poly1305 (NaCl secretbox) nonce. */
export const SECRETBOX_NONCE_BYTES = 24;

const TWO_32 = 0x1_0000_0000;
/** SHAKE256 rate; refilling whole blocks keeps squeezes aligned with the sponge. */
const STREAM_BUFFER_BYTES = 136 * 8;
const SCHEME_RE = /^[a-z0-9][a-z0-9-]*$/;
const utf8 = new TextEncoder();

/**
 * Checks that `modelKey` is a 32-byte Uint8Array.
 * @throws TypeError if it is not a Uint8Array; RangeError if its length is not 32.
 */
export function assertModelKey(modelKey: Uint8Array): void {
  if (!(modelKey instanceof Uint8Array)) {
    throw new TypeError(expectedGot('model key', 'Uint8Array', Object.prototype.toString.call(modelKey)));
  }
  if (modelKey.length !== MODEL_KEY_BYTES) {
    throw new RangeError(expectedGot('model key length', `${MODEL_KEY_BYTES} bytes`, `${modelKey.length} bytes`));
  }
}

/** UTF-8 that refuses lone surrogates, which TextEncoder would silently map to U+FFFD. */
function strictUtf8(what: string, s: string): Uint8Array {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
      throw new RangeError(`${what}: lone surrogate at index ${i}`);
    }
    if (c >= 0xdc00 && c <= 0xdfff) throw new RangeError(`${what}: lone surrogate at index ${i}`);
  }
  return utf8.encode(s);
}

/**
 * The derivation label `UTF-8("keylock/v1/" + scheme + "/" + purpose)`.
 * `scheme` matches `[a-z0-9][a-z0-9-]*` (so the label splits unambiguously);
 * `purpose` is any non-empty well-formed string, tensor names included.
 * @throws RangeError on a malformed scheme or purpose.
 */
export function derivationLabel(scheme: string, purpose: string): Uint8Array {
  if (typeof scheme !== 'string' || !SCHEME_RE.test(scheme)) {
    throw new RangeError(expectedGot('scheme', '[a-z0-9][a-z0-9-]*', JSON.stringify(scheme)));
  }
  if (typeof purpose !== 'string' || purpose.length === 0) {
    throw new RangeError(expectedGot('purpose', 'a non-empty string', JSON.stringify(purpose)));
  }
  return strictUtf8('purpose', LABEL_PREFIX + scheme + '/' + purpose);
}

function assertCount(what: string, n: number, min: number, max: number): void {
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new RangeError(expectedGot(what, `an integer in [${min}, ${max}]`, n));
  }
}

/**
 * The SHAKE256 output of one label, read in order, incrementally.
 * Bytes, big-endian u32 words and rejection-sampled integers all come from the
 * same cursor; `position` counts the bytes consumed (the spec's vectors record it).
 */
export class KeyStream {
  private readonly xof: ReturnType<typeof shake256.create>;
  private readonly buf = new Uint8Array(STREAM_BUFFER_BYTES);
  private pos = STREAM_BUFFER_BYTES;
  private consumed = 0;

  /**
   * @throws RangeError on a wrong-size key or a malformed label.
   */
  constructor(modelKey: Uint8Array, scheme: string, purpose: string) {
    assertModelKey(modelKey);
    const lbl = derivationLabel(scheme, purpose);
    this.xof = shake256.create().update(modelKey).update(lbl);
  }

  /** Bytes consumed from the start of the stream. */
  get position(): number {
    return this.consumed;
  }

  /** Fills `out` with the next `out.length` stream bytes. */
  readInto(out: Uint8Array): Uint8Array {
    let o = 0;
    while (o < out.length) {
      if (this.pos === this.buf.length) this.refill();
      const take = Math.min(this.buf.length - this.pos, out.length - o);
      out.set(this.buf.subarray(this.pos, this.pos + take), o);
      this.pos += take;
      o += take;
    }
    this.consumed += out.length;
    return out;
  }

  /** The next `n` stream bytes. */
  read(n: number): Uint8Array {
    assertCount('byte count', n, 0, Number.MAX_SAFE_INTEGER);
    return this.readInto(new Uint8Array(n));
  }

  /** The next 4 stream bytes as a big-endian unsigned 32-bit integer. */
  u32(): number {
    const b = this.buf;
    let p = this.pos;
    if (p + 4 > b.length) {
      // Rare path across a refill; keep byte order exact.
      let x = 0;
      for (let i = 0; i < 4; i++) {
        if (this.pos === b.length) this.refill();
        x = x * 256 + b[this.pos++];
      }
      this.consumed += 4;
      return x;
    }
    const x = ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
    this.pos = p + 4;
    this.consumed += 4;
    return x;
  }

  /**
   * An unbiased integer in [0, n) for 1 <= n <= 2^32: read a u32 x; reject while
   * x >= 2^32 - (2^32 mod n); return x mod n.
   * @throws RangeError if n is out of range.
   */
  uniform(n: number): number {
    assertCount('uniform bound n', n, 1, TWO_32);
    const limit = TWO_32 - (TWO_32 % n);
    for (;;) {
      const x = this.u32();
      if (x < limit) return x % n;
    }
  }

  private refill(): void {
    this.xof.xofInto(this.buf);
    this.pos = 0;
  }
}

/**
 * First `n` bytes of SHAKE256(modelKey || label(scheme, purpose)).
 * @throws RangeError on a wrong-size key, a malformed label or a bad n.
 */
export function deriveBytes(modelKey: Uint8Array, scheme: string, purpose: string, n: number): Uint8Array {
  assertModelKey(modelKey);
  assertCount('byte count', n, 0, Number.MAX_SAFE_INTEGER);
  const lbl = derivationLabel(scheme, purpose);
  return shake256.create().update(modelKey).update(lbl).xof(n);
}

/**
 * Draws `count` values of `uniform(n)` from one stream (the uniform vectors).
 * @throws RangeError on bad arguments.
 */
export function deriveUniforms(
  modelKey: Uint8Array,
  scheme: string,
  purpose: string,
  n: number,
  count: number,
): { values: number[]; bytesConsumed: number } {
  assertCount('count', count, 0, Number.MAX_SAFE_INTEGER);
  const ks = new KeyStream(modelKey, scheme, purpose);
  const values: number[] = [];
  for (let i = 0; i < count; i++) values.push(ks.uniform(n));
  return { values, bytesConsumed: ks.position };
}

/**
 * A uniformly random permutation of [0, size): Fisher–Yates (Durstenfeld), for
 * i = size-1 down to 1, j = uniform(i+1), swap p[i] and p[j].
 * @throws RangeError on bad arguments (size must be in [1, 2^32]).
 */
export function derivePermutation(modelKey: Uint8Array, scheme: string, purpose: string, size: number): Uint32Array {
  assertCount('permutation size', size, 1, TWO_32);
  const ks = new KeyStream(modelKey, scheme, purpose);
  const p = new Uint32Array(size);
  for (let i = 0; i < size; i++) p[i] = i;
  for (let i = size - 1; i >= 1; i--) {
    const j = ks.uniform(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** The inverse permutation: inv[p[k]] = k. */
export function invertPermutation(p: Uint32Array): Uint32Array {
  const inv = new Uint32Array(p.length);
  for (let k = 0; k < p.length; k++) inv[p[k]] = k;
  return inv;
}

/**
 * `count` key bits as 0/1 bytes: bit k = (bytes[k >> 3] >> (k & 7)) & 1 of
 * deriveBytes(..., ceil(count / 8)) (least significant bit first).
 * @throws RangeError on bad arguments.
 */
export function deriveBits(modelKey: Uint8Array, scheme: string, purpose: string, count: number): Uint8Array {
  assertCount('bit count', count, 0, Number.MAX_SAFE_INTEGER);
  const bytes = deriveBytes(modelKey, scheme, purpose, Math.ceil(count / 8));
  const bits = new Uint8Array(count);
  for (let k = 0; k < count; k++) bits[k] = (bytes[k >> 3] >> (k & 7)) & 1;
  return bits;
}

// ---------------------------------------------------------------------------
// Scheme labels. Each purpose string below is normative (docs/SPEC.md).
// ---------------------------------------------------------------------------

function assertBlockShape(m: number, channels: number): void {
  assertCount('block size m', m, 1, 0xffff);
  assertCount('channels C', channels, 1, 0xffff);
  assertCount('block length m*m*C', m * m * channels, 1, TWO_32);
}

/** Purpose of the shuffle permutation: `perm/m=<m>/c=<C>`. */
export function shufflePermPurpose(m: number, channels: number): string {
  assertBlockShape(m, channels);
  return `perm/m=${m}/c=${channels}`;
}

/** Purpose of the shuffle negative/positive bits: `negpos/m=<m>/c=<C>`. */
export function shuffleNegposPurpose(m: number, channels: number): string {
  assertBlockShape(m, channels);
  return `negpos/m=${m}/c=${channels}`;
}

/** The shuffle block permutation of N = m*m*C positions (block order row, column, channel). */
export function shufflePermutation(modelKey: Uint8Array, m: number, channels: number): Uint32Array {
  return derivePermutation(modelKey, 'shuffle', shufflePermPurpose(m, channels), m * m * channels);
}

/** The shuffle negative/positive bits, one per block position (1: x -> 1 - x). */
export function shuffleNegposBits(modelKey: Uint8Array, m: number, channels: number): Uint8Array {
  return deriveBits(modelKey, 'shuffle', shuffleNegposPurpose(m, channels), m * m * channels);
}

/**
 * Sign-flip bits of one layer, purpose `layer/<weight tensor name>`; bit j = 1
 * negates output channel j.
 */
export function signflipLayerBits(modelKey: Uint8Array, weightName: string, outChannels: number): Uint8Array {
  return deriveBits(modelKey, 'signflip', `layer/${weightName}`, outChannels);
}

/** Sign-flip bits in MAC-unit mode, purpose `units/<U>`, one per unit. */
export function signflipUnitBits(modelKey: Uint8Array, units: number): Uint8Array {
  assertCount('MAC units U', units, 1, Number.MAX_SAFE_INTEGER);
  return deriveBits(modelKey, 'signflip', `units/${units}`, units);
}

/** In MAC-unit mode, output channel j of any layer uses unit bit j mod U. */
export function signflipChannelBitsFromUnits(unitBits: Uint8Array, outChannels: number): Uint8Array {
  if (unitBits.length === 0) throw new RangeError(expectedGot('unit bits', 'at least one', 0));
  assertCount('output channels', outChannels, 0, Number.MAX_SAFE_INTEGER);
  const out = new Uint8Array(outChannels);
  for (let j = 0; j < outChannels; j++) out[j] = unitBits[j % unitBits.length];
  return out;
}

/** Deep-Lock's AES-128 master key: deriveBytes(modelKey, 'deeplock', 'aes128', 16). */
export function deeplockMasterKey(modelKey: Uint8Array): Uint8Array {
  return deriveBytes(modelKey, 'deeplock', 'aes128', 16);
}

/** Secretbox key of the `sealed` lock. */
export function sealedSecretboxKey(modelKey: Uint8Array): Uint8Array {
  return deriveBytes(modelKey, 'sealed', 'secretbox', SECRETBOX_KEY_BYTES);
}

/**
 * XChaCha20-Poly1305 key of the `sealed` lock (files whose entry names
 * `cipher: "xchacha20-poly1305"`): deriveBytes(modelKey, 'sealed', 'xchacha20-poly1305', 32).
 * A label of its own, so the two ciphers never share a key.
 */
export function sealedXchachaKey(modelKey: Uint8Array): Uint8Array {
  return deriveBytes(modelKey, 'sealed', 'xchacha20-poly1305', SECRETBOX_KEY_BYTES);
}

/** Secretbox key that seals the `advparams` key list. */
export function advparamsSecretboxKey(modelKey: Uint8Array): Uint8Array {
  return deriveBytes(modelKey, 'advparams', 'secretbox', SECRETBOX_KEY_BYTES);
}

/** Public nonce: SHAKE256 of labelled, NUL-separated fields, first `bytes` bytes (24 unless told). */
function publicNonce(prefix: string, fields: [string, string][], bytes = SECRETBOX_NONCE_BYTES): Uint8Array {
  const parts: Uint8Array[] = [utf8.encode(prefix)];
  for (const [what, value] of fields) {
    if (typeof value !== 'string') throw new TypeError(expectedGot(what, 'string', typeof value));
    // The separator must not occur inside a field, or two (id, name) pairs could collide.
    if (value.includes('\u0000')) throw new RangeError(`${what} must not contain U+0000`);
    parts.push(new Uint8Array([0]), strictUtf8(what, value));
  }
  const input = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((o, p) => (input.set(p, o), o + p.length), 0);
  // Node's native SHAKE256 where a model load has found it (one nonce per sealed tensor adds up).
  return shake256Native(input, bytes) ?? shake256(input, { dkLen: bytes });
}

/**
 * Nonce of one tensor under the `sealed` lock: first 24 bytes of
 * SHAKE256("keylock/v1/sealed/nonce" || 0x00 || modelId || 0x00 || tensorName).
 * Public (no key): unique per (model, tensor), since each model has its own key.
 */
export function sealedNonce(modelId: string, tensorName: string): Uint8Array {
  return publicNonce('keylock/v1/sealed/nonce', [
    ['model id', modelId],
    ['tensor name', tensorName],
  ]);
}

/** Size of the per-lock salt of a `sealed` entry (docs/SPEC.md §6.4). */
export const SEALED_SALT_BYTES = 16;

/** The nonce fields of one sealed tensor: (model id, tensor name), and the entry's salt as hex when it has one. */
function sealedNonceFields(modelId: string, tensorName: string, salt: Uint8Array | undefined): [string, string][] {
  const fields: [string, string][] = [['model id', modelId], ['tensor name', tensorName]];
  if (salt !== undefined) {
    if (!(salt instanceof Uint8Array) || salt.byteLength !== SEALED_SALT_BYTES) {
      throw new RangeError(expectedGot('sealed salt', `${SEALED_SALT_BYTES} bytes`, salt instanceof Uint8Array ? `${salt.byteLength} bytes` : typeof salt));
    }
    fields.push(['salt', hex(salt)]);
  }
  return fields;
}

/**
 * Nonce of one tensor under the `sealed` lock with XChaCha20-Poly1305: first 24 bytes of
 * SHAKE256("keylock/v1/sealed/xchacha20-poly1305/nonce" || 0x00 || modelId || 0x00 || tensorName
 * [ || 0x00 || hex(salt) ]). Entries written since the salt exists carry one (a fresh random
 * value per lock), so re-locking a changed model under the same key and id never repeats a nonce.
 */
export function sealedXchachaNonce(modelId: string, tensorName: string, salt?: Uint8Array): Uint8Array {
  return publicNonce('keylock/v1/sealed/xchacha20-poly1305/nonce', sealedNonceFields(modelId, tensorName, salt));
}

/**
 * AES-256-GCM key of the `sealed` lock (entry `cipher: "aes-256-gcm"`):
 * deriveBytes(modelKey, 'sealed', 'aes-256-gcm', 32). A label of its own, as XChaCha20's.
 */
export function sealedAesGcmKey(modelKey: Uint8Array): Uint8Array {
  return deriveBytes(modelKey, 'sealed', 'aes-256-gcm', 32);
}

/**
 * 96-bit nonce of one tensor under the `sealed` lock with AES-256-GCM: first 12 bytes of
 * SHAKE256("keylock/v1/sealed/aes-256-gcm/nonce" || 0x00 || modelId || 0x00 || tensorName || 0x00 || hex(salt)).
 * The salt is mandatory for this cipher.
 */
export function sealedAesGcmNonce(modelId: string, tensorName: string, salt: Uint8Array): Uint8Array {
  if (salt === undefined) throw new RangeError(expectedGot('sealed salt', `${SEALED_SALT_BYTES} bytes`, 'none'));
  return publicNonce('keylock/v1/sealed/aes-256-gcm/nonce', sealedNonceFields(modelId, tensorName, salt), 12);
}

/** Nonce of the sealed `advparams` key list: SHAKE256("keylock/v1/advparams/nonce" || 0x00 || modelId), 24 bytes. */
export function advparamsNonce(modelId: string): Uint8Array {
  return publicNonce('keylock/v1/advparams/nonce', [['model id', modelId]]);
}

/** Key check value: deriveBytes(modelKey, 'check', 'kcv', 16), stored in the manifest. */
export function keyCheckValue(modelKey: Uint8Array): Uint8Array {
  return deriveBytes(modelKey, 'check', 'kcv', KCV_BYTES);
}

/** Equality whose running time depends only on the lengths, not on where bytes differ. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/**
 * Checks a model key against the manifest's key check value, in constant time.
 * @throws KeyMismatchError if the key does not match; RangeError on a wrong-size key.
 */
export function assertKeyCheckValue(modelKey: Uint8Array, expected: Uint8Array): void {
  const got = keyCheckValue(modelKey);
  if (expected.length !== KCV_BYTES || !constantTimeEqual(got, expected)) {
    throw new KeyMismatchError('key check value: expected the manifest kcv, got a different value (wrong model key)');
  }
}
