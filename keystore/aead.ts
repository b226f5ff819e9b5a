/**
 * XChaCha20-Poly1305 with a detached tag, in place: the cipher of `sealed`
 * files written since the native-speed change (docs/SPEC.md §6.4).
 *
 * Construction (draft-irtf-cfrg-xchacha-03, libsodium's
 * `crypto_aead_xchacha20poly1305_ietf_*_detached`):
 *   subkey = HChaCha20(key, nonce[0..16))
 *   iv12   = 00 00 00 00 || nonce[16..24)
 *   ChaCha20-Poly1305 (RFC 8439) under (subkey, iv12): Poly1305 key = block 0,
 *   keystream from block counter 1, tag over AAD || pad16 || C || pad16 || le64 lens.
 *
 * Native where the platform has it: Node's `chacha20-poly1305` (OpenSSL, with
 * its SIMD assembly) in large slices, and `chacha20` (16-byte IV = le32 counter
 * || iv12) for the decrypt-only path. HChaCha20 (one block) comes from
 * @noble/ciphers. Elsewhere (browsers) the same construction runs in JavaScript
 * (@noble/ciphers' ChaCha20 and Poly1305); a WebAssembly SIMD ChaCha is future
 * work. Node's crypto module is found through a variable name, as in nacl.ts,
 * so browser bundles do not pull it, and it is adopted only after it has
 * reproduced @noble's output on a known input (a runtime whose names differ,
 * or that lacks the ciphers, gets JavaScript).
 */
import { chacha20, hchacha, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { poly1305 } from '@noble/ciphers/_poly1305.js';
import { ctr as aesCtr, gcm as aesGcm } from '@noble/ciphers/aes.js';

/** Sizes of the construction. */
export const XCHACHA = { key: 32, nonce: 24, tag: 16 } as const;

function need(what: string, b: Uint8Array, len: number): void {
  if (!(b instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  if (b.byteLength !== len) throw new RangeError(`${what} must be ${len} bytes, got ${b.byteLength}`);
}

function needData(data: Uint8Array): void {
  if (!(data instanceof Uint8Array)) throw new TypeError('XChaCha20-Poly1305 data must be a Uint8Array');
}

interface NodeCipherLike {
  update(data: Uint8Array): Uint8Array;
  final(): Uint8Array;
  setAAD(aad: Uint8Array, opts: { plaintextLength: number }): unknown;
  setAuthTag(tag: Uint8Array): unknown;
  getAuthTag(): Uint8Array;
}
interface NodeCryptoLike {
  createCipheriv(alg: string, key: Uint8Array, iv: Uint8Array, opts?: { authTagLength: number }): NodeCipherLike;
  createDecipheriv(alg: string, key: Uint8Array, iv: Uint8Array, opts?: { authTagLength: number }): NodeCipherLike;
}

/** A variable, so that bundlers for browsers leave the import alone. */
const NODE_CRYPTO = 'node:crypto';
/** Node's crypto once adopted; null where there is none (or it failed the check); undefined before the lookup. */
let native: NodeCryptoLike | null | undefined;
let forceJs = false;

/**
 * Bytes per native update. Node's update() has no output buffer: each call
 * returns a new one, copied back into place and then wiped (it holds
 * plaintext). Measured on 32 MB (eval/bench/sections/aead.ts): 256 KiB is
 * faster than 64 KiB and as fast as 1 MiB; the wipe costs about a fifth of
 * the open, kept because the old paths leave no plaintext garbage either.
 */
const NATIVE_CHUNK = 256 << 10;
/** Bytes per JavaScript slice (multiple of 64). */
const JS_CHUNK = 64 << 10;

interface ProcessLike {
  versions?: { node?: string };
  getBuiltinModule?: (id: string) => unknown;
}

function adopt(m: unknown): NodeCryptoLike | null {
  try {
    const c = m as NodeCryptoLike;
    if (typeof c?.createCipheriv !== 'function') return null;
    // Known answer against @noble on an odd length: tag path and the decrypt-only path.
    const key = new Uint8Array(32).map((_, i) => i * 7 + 1);
    const nonce = new Uint8Array(24).map((_, i) => 0xa0 + i);
    const plain = new Uint8Array(131).map((_, i) => i);
    const want = xchacha20poly1305(key, nonce).encrypt(plain);
    const got = new Uint8Array(plain);
    const tag = nativeSeal(c, got, nonce, key, undefined);
    if (!eq(got, want.subarray(0, 131)) || !eq(tag, want.subarray(131))) return null;
    nativeXor(c, got, nonce, key);
    if (!eq(got, plain)) return null;
    return c;
  } catch {
    return null;
  }
}

/** Adopts Node's crypto module `m` (or none) for both constructions, each after its own known answer. */
function found(m: unknown): NodeCryptoLike | null {
  nativeAes = m ? adoptAes(m) : null;
  return (native = m ? adopt(m) : null);
}

function lookupSync(): NodeCryptoLike | null | undefined {
  if (native !== undefined) return native;
  const p = (globalThis as { process?: ProcessLike }).process;
  if (!p?.versions?.node) return found(null);
  if (typeof p.getBuiltinModule === 'function') {
    try {
      return found(p.getBuiltinModule(NODE_CRYPTO));
    } catch {
      return found(null);
    }
  }
  return undefined; // an older Node: prepareAead() imports it
}

/**
 * Finds the native ciphers (Node's crypto) ahead of the first open; resolves
 * to whether they will be used. Opens before it resolves still work (in
 * JavaScript, where the synchronous lookup cannot reach Node's module).
 */
export async function prepareAead(): Promise<boolean> {
  if (lookupSync() === undefined) {
    try {
      found(await import(/* @vite-ignore */ NODE_CRYPTO));
    } catch {
      found(null);
    }
  }
  return aeadNative();
}

/** Whether opens and seals run natively now (for reports and benchmarks). */
export function aeadNative(): boolean {
  return !forceJs && !!lookupSync();
}

/** Makes every call use JavaScript (`true`) or the native ciphers where found (`false`, the default). For tests and benchmarks. */
export function setAeadForceJs(on: boolean): void {
  forceJs = on;
}

function impl(): NodeCryptoLike | null {
  return forceJs ? null : (lookupSync() ?? null);
}

function eq(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let d = 0;
  for (let i = 0; i < a.byteLength; i++) d |= a[i] ^ b[i];
  return d === 0;
}

const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);

/** HChaCha20(key, nonce[0..16)) as 32 bytes, and iv12 = 0^4 || nonce[16..24). */
export function xchachaSubkey(key: Uint8Array, nonce: Uint8Array): { subkey: Uint8Array; iv12: Uint8Array } {
  need('XChaCha20 key', key, XCHACHA.key);
  need('XChaCha20 nonce', nonce, XCHACHA.nonce);
  const k = new Uint8Array(key);
  const n = nonce.slice(0, 16);
  const out = new Uint32Array(8);
  hchacha(SIGMA, new Uint32Array(k.buffer), new Uint32Array(n.buffer), out);
  k.fill(0);
  const subkey = new Uint8Array(out.buffer);
  const iv12 = new Uint8Array(12);
  iv12.set(nonce.subarray(16), 4);
  return { subkey, iv12 };
}

/** Native: encrypts `data` in place, returns the tag. */
function nativeSeal(c: NodeCryptoLike, data: Uint8Array, nonce: Uint8Array, key: Uint8Array, aad: Uint8Array | undefined): Uint8Array {
  const { subkey, iv12 } = xchachaSubkey(key, nonce);
  try {
    const e = c.createCipheriv('chacha20-poly1305', subkey, iv12, { authTagLength: XCHACHA.tag });
    if (aad) e.setAAD(aad, { plaintextLength: data.byteLength });
    pump(e, data);
    e.final();
    return new Uint8Array(e.getAuthTag());
  } finally {
    subkey.fill(0);
  }
}

/** Runs `data` through a native cipher in slices, writing each output back where its input was. */
function pump(x: NodeCipherLike, data: Uint8Array): void {
  let w = 0;
  for (let off = 0; off < data.byteLength; off += NATIVE_CHUNK) {
    const out = x.update(data.subarray(off, Math.min(off + NATIVE_CHUNK, data.byteLength)));
    data.set(out, w);
    w += out.byteLength;
    out.fill(0);
  }
  if (w !== data.byteLength) throw new Error(`native cipher returned ${w} of ${data.byteLength} bytes`);
}

/** Native: XORs `data` with the ChaCha20 keystream from block 1 (decrypt or encrypt, no tag). */
function nativeXor(c: NodeCryptoLike, data: Uint8Array, nonce: Uint8Array, key: Uint8Array): void {
  const { subkey, iv12 } = xchachaSubkey(key, nonce);
  try {
    const iv16 = new Uint8Array(16);
    iv16[0] = 1; // le32 block counter 1: the AEAD's keystream starts after the Poly1305 key block
    iv16.set(iv12, 4);
    const d = c.createDecipheriv('chacha20', subkey, iv16);
    pump(d, data);
    d.final();
  } finally {
    subkey.fill(0);
  }
}

/** JavaScript: XORs `data` in place with the keystream from block 1, through an aligned scratch where needed. */
function jsXor(data: Uint8Array, subkey: Uint8Array, iv12: Uint8Array): void {
  let scratch: Uint8Array | undefined;
  for (let off = 0, counter = 1; off < data.byteLength; off += JS_CHUNK, counter += JS_CHUNK / 64) {
    const slice = data.subarray(off, Math.min(off + JS_CHUNK, data.byteLength));
    if (slice.byteOffset % 4 === 0) {
      chacha20(subkey, iv12, slice, slice, counter);
    } else {
      scratch ??= new Uint8Array(JS_CHUNK);
      const s = scratch.subarray(0, slice.byteLength);
      s.set(slice);
      chacha20(subkey, iv12, s, s, counter);
      slice.set(s);
    }
  }
  scratch?.fill(0);
}

const PAD = new Uint8Array(16);

/** JavaScript: the RFC 8439 tag of ciphertext `data` (read where it lies, in slices). */
function jsTag(data: Uint8Array, subkey: Uint8Array, iv12: Uint8Array, aad: Uint8Array | undefined): Uint8Array {
  const polyKey = chacha20(subkey, iv12, new Uint8Array(32), undefined, 0);
  const mac = poly1305.create(polyKey);
  const a = aad?.byteLength ?? 0;
  if (aad && a) {
    mac.update(aad);
    if (a % 16) mac.update(PAD.subarray(a % 16));
  }
  for (let off = 0; off < data.byteLength; off += JS_CHUNK) mac.update(data.subarray(off, Math.min(off + JS_CHUNK, data.byteLength)));
  if (data.byteLength % 16) mac.update(PAD.subarray(data.byteLength % 16));
  const lens = new Uint8Array(16);
  const v = new DataView(lens.buffer);
  v.setBigUint64(0, BigInt(a), true);
  v.setBigUint64(8, BigInt(data.byteLength), true);
  mac.update(lens);
  polyKey.fill(0);
  return mac.digest();
}

/**
 * Encrypts `data` in place and returns its 16-byte tag (the vendor side of
 * `sealed`). `aad` is optional (sealed uses none; the known-answer tests do).
 */
export function xchachaSealDetached(data: Uint8Array, nonce: Uint8Array, key: Uint8Array, aad?: Uint8Array): Uint8Array {
  needData(data);
  need('XChaCha20 nonce', nonce, XCHACHA.nonce);
  need('XChaCha20 key', key, XCHACHA.key);
  const c = impl();
  if (c) return nativeSeal(c, data, nonce, key, aad);
  const boxed = xchacha20poly1305(key, nonce, aad).encrypt(data);
  data.set(boxed.subarray(0, data.byteLength));
  const tag = boxed.slice(data.byteLength);
  boxed.fill(0);
  return tag;
}

/**
 * `dst = src` XOR the XChaCha20 keystream from block 1: decryption without a
 * tag, out of place, leaving no copy of the plaintext behind. Natively, Node's
 * cipher runs over zeros, so what it frees uncleared (see `InPlaceOptions`) is
 * keystream, never plaintext (keystream is as secret as the key, which the
 * caller holds anyway); the XOR is done here, in `dst`. In JavaScript: copy,
 * then XOR in place.
 */
export function xchachaDecryptInto(dst: Uint8Array, src: Uint8Array, nonce: Uint8Array, key: Uint8Array): void {
  needData(src);
  if (dst.byteLength !== src.byteLength) throw new RangeError(`XChaCha20: the output must be ${src.byteLength} bytes, got ${dst.byteLength}`);
  need('XChaCha20 nonce', nonce, XCHACHA.nonce);
  need('XChaCha20 key', key, XCHACHA.key);
  const c = impl();
  const { subkey, iv12 } = xchachaSubkey(key, nonce);
  try {
    if (!c) {
      dst.set(src);
      jsXor(dst, subkey, iv12);
      return;
    }
    const iv16 = new Uint8Array(16);
    iv16[0] = 1; // block counter 1, as nativeXor
    iv16.set(iv12, 4);
    const d = c.createDecipheriv('chacha20', subkey, iv16);
    zeros ??= new Uint8Array(NATIVE_CHUNK);
    for (let off = 0; off < src.byteLength; off += NATIVE_CHUNK) {
      const n = Math.min(NATIVE_CHUNK, src.byteLength - off);
      const ks = d.update(zeros.subarray(0, n));
      if (ks.byteLength !== n) throw new Error(`native ChaCha20 returned ${ks.byteLength} of ${n} bytes`);
      xorInto(dst.subarray(off, off + n), src.subarray(off, off + n), ks);
      ks.fill(0);
    }
    d.final();
  } finally {
    subkey.fill(0);
  }
}

let zeros: Uint8Array | undefined;

/** `d = a XOR b` (equal lengths), by 32-bit words where all three are aligned. */
function xorInto(d: Uint8Array, a: Uint8Array, b: Uint8Array): void {
  const n = d.byteLength;
  let i = 0;
  if (d.byteOffset % 4 === 0 && a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0) {
    const w = n >>> 2;
    const D = new Uint32Array(d.buffer, d.byteOffset, w);
    const A = new Uint32Array(a.buffer, a.byteOffset, w);
    const B = new Uint32Array(b.buffer, b.byteOffset, w);
    for (let k = 0; k < w; k++) D[k] = A[k] ^ B[k];
    i = w << 2;
  }
  for (; i < n; i++) d[i] = a[i] ^ b[i];
}

/**
 * `noCopies`: compute in JavaScript, truly in place. Node's native cipher
 * writes each output into a buffer one byte longer than the input (the
 * block size of a stream cipher is 1) and copies it into a buffer of the
 * right length, freeing the first without clearing it: the plaintext then
 * stays in the process's malloc heap until reused. Plaintext that must not
 * outlive its buffer (`sealed` inline) is decrypted with this set.
 */
export interface InPlaceOptions { noCopies?: boolean }

/**
 * Opens `data` in place: on success `data` holds the plaintext; when the tag
 * does not verify, `data` holds the ciphertext it held before and `onFail()`
 * is thrown. Natively, decryption and Poly1305 run in one pass and the tag is
 * known only at the end, so a failed tag re-encrypts the bytes (the plaintext
 * of bytes that do not verify never leaves this function). In JavaScript the
 * tag is checked first, then the bytes are decrypted.
 */
export function xchachaOpenDetachedInPlace(
  data: Uint8Array, tag: Uint8Array, nonce: Uint8Array, key: Uint8Array, onFail: () => Error, aad?: Uint8Array, opts?: InPlaceOptions,
): void {
  needData(data);
  need('XChaCha20-Poly1305 tag', tag, XCHACHA.tag);
  need('XChaCha20 nonce', nonce, XCHACHA.nonce);
  need('XChaCha20 key', key, XCHACHA.key);
  const c = opts?.noCopies ? null : impl();
  if (c) {
    const { subkey, iv12 } = xchachaSubkey(key, nonce);
    let ok = false;
    try {
      const d = c.createDecipheriv('chacha20-poly1305', subkey, iv12, { authTagLength: XCHACHA.tag });
      if (aad) d.setAAD(aad, { plaintextLength: data.byteLength });
      d.setAuthTag(tag);
      pump(d, data);
      try {
        d.final();
        ok = true;
      } catch {
        // Poly1305 mismatch (OpenSSL: "Unsupported state or unable to authenticate data").
      }
    } finally {
      subkey.fill(0);
    }
    if (!ok) {
      nativeXor(c, data, nonce, key);
      throw onFail();
    }
    return;
  }
  const { subkey, iv12 } = xchachaSubkey(key, nonce);
  try {
    const t = jsTag(data, subkey, iv12, aad);
    const ok = eq(t, tag);
    t.fill(0);
    if (!ok) throw onFail();
    jsXor(data, subkey, iv12);
  } finally {
    subkey.fill(0);
  }
}

/**
 * Decrypts `data` in place WITHOUT checking a tag: only for bytes that
 * something else authenticates before they are used (a `.klm` whose signed
 * digest, under a pinned vendor key, covers them; docs/SPEC.md §6.4). ChaCha20
 * alone is malleable: never call this on bytes that nothing authenticates.
 */
export function xchachaDecryptInPlace(data: Uint8Array, nonce: Uint8Array, key: Uint8Array, opts?: InPlaceOptions): void {
  needData(data);
  need('XChaCha20 nonce', nonce, XCHACHA.nonce);
  need('XChaCha20 key', key, XCHACHA.key);
  const c = opts?.noCopies ? null : impl();
  if (c) return nativeXor(c, data, nonce, key);
  const { subkey, iv12 } = xchachaSubkey(key, nonce);
  try {
    jsXor(data, subkey, iv12);
  } finally {
    subkey.fill(0);
  }
}

// ---------------------------------------------------------------------------
// AES-256-GCM (docs/SPEC.md §6.4): the `sealed` cipher for fleets with AES
// hardware. One of three paths, chosen once per process (`prepareAesGcm`) and
// each adopted only after it reproduced @noble/ciphers on a known answer:
//   node      node:crypto `aes-256-gcm` / `aes-256-ctr` (OpenSSL: AES-NI, VAES,
//             ARMv8 crypto extensions), synchronous: Node, Electron, Deno;
//   webcrypto `crypto.subtle` AES-GCM / AES-CTR (browsers in a secure context),
//             asynchronous: the load awaits the restore;
//   js        @noble/ciphers `gcm` / `ctr` (a page without a secure context,
//             where `crypto.subtle` is undefined).
// Every path writes the same bytes; only the speed differs.
// ---------------------------------------------------------------------------

/** Sizes of AES-256-GCM as `sealed` uses it: 96-bit nonces, 128-bit tags. */
export const AESGCM = { key: 32, nonce: 12, tag: 16 } as const;
/** GCM's bound on one message: 2^39 − 256 bits (NIST SP 800-38D §5.2.1.1). */
const AESGCM_MAX_BYTES = 2 ** 36 - 32;

export type AesGcmPath = 'node' | 'webcrypto' | 'js';

/** Node's crypto once adopted for AES-256-GCM (set with `native`). */
let nativeAes: NodeCryptoLike | null | undefined;
/** `crypto.subtle` once it passed the known answer; null where absent or failed; undefined before the probe. */
let subtle: SubtleCrypto | null | undefined;
/** A path forced by tests and benchmarks. */
let forcedAes: AesGcmPath | undefined;

function needAes(what: string, data: Uint8Array, nonce: Uint8Array, key: Uint8Array): void {
  if (!(data instanceof Uint8Array)) throw new TypeError(`AES-256-GCM ${what} must be a Uint8Array`);
  if (data.byteLength > AESGCM_MAX_BYTES) throw new RangeError(`AES-256-GCM: one message holds at most ${AESGCM_MAX_BYTES} bytes, got ${data.byteLength}`);
  need('AES-256-GCM nonce', nonce, AESGCM.nonce);
  need('AES-256-GCM key', key, AESGCM.key);
}

/** The initial counter block of the payload: nonce || be32(2) (J0 = nonce || be32(1) masks the tag). */
function ctrBlock(nonce: Uint8Array, block = 2): Uint8Array {
  const iv = new Uint8Array(16);
  iv.set(nonce);
  new DataView(iv.buffer).setUint32(12, block >>> 0, false);
  return iv;
}

/** The known answer every path must reproduce: @noble's GCM on an odd length, and its CTR. */
function aesKnown(): { key: Uint8Array; nonce: Uint8Array; plain: Uint8Array; sealed: Uint8Array } {
  const key = new Uint8Array(32).map((_, i) => i * 11 + 3);
  const nonce = new Uint8Array(12).map((_, i) => 0x50 + i);
  const plain = new Uint8Array(133).map((_, i) => i * 3);
  return { key, nonce, plain, sealed: aesGcm(key, nonce).encrypt(plain) };
}

function adoptAes(m: unknown): NodeCryptoLike | null {
  try {
    const c = m as NodeCryptoLike;
    if (typeof c?.createCipheriv !== 'function') return null;
    const { key, nonce, plain, sealed } = aesKnown();
    const got = new Uint8Array(plain);
    const tag = nodeGcmSeal(c, got, nonce, key, undefined);
    if (!eq(got, sealed.subarray(0, plain.length)) || !eq(tag, sealed.subarray(plain.length))) return null;
    nodeCtr(c, got, nonce, key);
    return eq(got, plain) ? c : null;
  } catch {
    return null;
  }
}

async function adoptSubtle(s: SubtleCrypto | undefined): Promise<SubtleCrypto | null> {
  try {
    if (!s || typeof s.importKey !== 'function') return null;
    const { key, nonce, plain, sealed } = aesKnown();
    const open = new Uint8Array(sealed);
    await webGcmOpen(s, webKey(s, key, 'AES-GCM'), open.subarray(0, plain.length), open.subarray(plain.length), nonce, () => new Error('tag'), undefined);
    if (!eq(open.subarray(0, plain.length), plain)) return null;
    const ct = sealed.slice(0, plain.length);
    await webCtr(s, webKey(s, key, 'AES-CTR'), ct, nonce);
    return eq(ct, plain) ? s : null;
  } catch {
    return null;
  }
}

/**
 * Chooses the AES-256-GCM path once (node:crypto, else WebCrypto, else
 * JavaScript) and resolves to it. Opens before it resolves take node:crypto
 * where it is found synchronously, else JavaScript.
 */
export async function prepareAesGcm(): Promise<AesGcmPath> {
  await prepareAead();
  if (!nativeAes && subtle === undefined) {
    subtle = await adoptSubtle((globalThis as { crypto?: { subtle?: SubtleCrypto } }).crypto?.subtle);
  }
  return aesGcmPath();
}

/** The path opens take now (for reports, tests and benchmarks). */
export function aesGcmPath(): AesGcmPath {
  if (forcedAes) return forcedAes;
  lookupSync();
  if (nativeAes) return 'node';
  return subtle ? 'webcrypto' : 'js';
}

/**
 * Forces one path (tests and benchmarks; `undefined` restores the choice).
 * Forcing `node` or `webcrypto` where it was not adopted is a RangeError, so a
 * test can never pass on a path it did not run.
 */
export async function setAesGcmPath(path: AesGcmPath | undefined): Promise<void> {
  if (path === 'node' || path === 'webcrypto') {
    await prepareAead();
    if (path === 'webcrypto' && subtle === undefined) subtle = await adoptSubtle((globalThis as { crypto?: { subtle?: SubtleCrypto } }).crypto?.subtle);
    if (path === 'node' && !nativeAes) throw new RangeError('AES-256-GCM: node:crypto is not available here');
    if (path === 'webcrypto' && !subtle) throw new RangeError('AES-256-GCM: crypto.subtle is not available here');
  }
  forcedAes = path;
}

function nodeGcmSeal(c: NodeCryptoLike, data: Uint8Array, nonce: Uint8Array, key: Uint8Array, aad: Uint8Array | undefined): Uint8Array {
  const e = c.createCipheriv('aes-256-gcm', key, nonce, { authTagLength: AESGCM.tag });
  if (aad) e.setAAD(aad, { plaintextLength: data.byteLength });
  pump(e, data);
  e.final();
  return new Uint8Array(e.getAuthTag());
}

/** node:crypto `aes-256-ctr` from counter block nonce || be32(2): GCM's payload keystream, in place. */
function nodeCtr(c: NodeCryptoLike, data: Uint8Array, nonce: Uint8Array, key: Uint8Array): void {
  const d = c.createDecipheriv('aes-256-ctr', key, ctrBlock(nonce));
  pump(d, data);
  d.final();
}

function webKey(s: SubtleCrypto, key: Uint8Array, name: 'AES-GCM' | 'AES-CTR'): Promise<CryptoKey> {
  return s.importKey('raw', key as BufferSource, { name }, false, ['decrypt']);
}

/**
 * WebCrypto GCM: `data || tag` in one buffer (ciphertext, not secret; `scratch`
 * when it is large enough: a fresh large buffer per tensor costs a page several
 * times the decryption), the plaintext copied back and its buffer wiped.
 */
async function webGcmOpen(
  s: SubtleCrypto, key: Promise<CryptoKey>, data: Uint8Array, tag: Uint8Array, nonce: Uint8Array, onFail: () => Error, aad: Uint8Array | undefined,
  scratch?: Uint8Array,
): Promise<void> {
  const k = await key;
  const n = data.byteLength + AESGCM.tag;
  const ct = scratch && scratch.byteLength >= n ? scratch.subarray(0, n) : new Uint8Array(n);
  ct.set(data);
  ct.set(tag, data.byteLength);
  let plain: ArrayBuffer;
  try {
    plain = await s.decrypt({ name: 'AES-GCM', iv: nonce as BufferSource, tagLength: 128, ...(aad ? { additionalData: aad as BufferSource } : {}) }, k, ct as BufferSource);
  } catch {
    throw onFail(); // OperationError: the tag does not match; nothing was returned, `data` is untouched
  }
  const p = new Uint8Array(plain);
  data.set(p);
  p.fill(0);
}

async function webCtr(s: SubtleCrypto, key: Promise<CryptoKey>, data: Uint8Array, nonce: Uint8Array, scratch?: Uint8Array): Promise<void> {
  const k = await key;
  const input = scratch && scratch.byteLength >= data.byteLength ? scratch.subarray(0, data.byteLength) : new Uint8Array(data.byteLength);
  input.set(data);
  // length 32: the low 32 bits count, as GCM's inc32.
  const out = new Uint8Array(await s.decrypt({ name: 'AES-CTR', counter: ctrBlock(nonce) as BufferSource, length: 32 }, k, input as BufferSource));
  data.set(out);
  out.fill(0);
}

/** JavaScript CTR from block 2, in place, through an aligned scratch where needed (16-byte blocks). */
function jsCtr(data: Uint8Array, nonce: Uint8Array, key: Uint8Array): void {
  let scratch: Uint8Array | undefined;
  for (let off = 0; off < data.byteLength; off += JS_CHUNK) {
    const slice = data.subarray(off, Math.min(off + JS_CHUNK, data.byteLength));
    const c = aesCtr(key, ctrBlock(nonce, 2 + off / 16));
    if (slice.byteOffset % 4 === 0) {
      c.encrypt(slice, slice);
    } else {
      scratch ??= new Uint8Array(JS_CHUNK);
      const t = scratch.subarray(0, slice.byteLength);
      t.set(slice);
      c.encrypt(t, t);
      slice.set(t);
    }
  }
  scratch?.fill(0);
}

/**
 * Encrypts `data` in place with AES-256-GCM and returns its 16-byte tag (the
 * vendor side of `sealed`): node:crypto where adopted, else JavaScript.
 */
export function aesGcmSealDetached(data: Uint8Array, nonce: Uint8Array, key: Uint8Array, aad?: Uint8Array): Uint8Array {
  needAes('data', data, nonce, key);
  const path = aesGcmPath();
  if (path === 'node') return nodeGcmSeal(nativeAes!, data, nonce, key, aad);
  const boxed = aesGcm(key, nonce, aad).encrypt(data);
  data.set(boxed.subarray(0, data.byteLength));
  const tag = boxed.slice(data.byteLength);
  boxed.fill(0);
  return tag;
}

/**
 * Opens `data` in place with its detached tag. On success `data` holds the
 * plaintext; when the tag does not verify, `data` holds its ciphertext again
 * and `onFail()` is thrown. Synchronous on node:crypto and in JavaScript, a
 * Promise on WebCrypto: callers await the result.
 */
export function aesGcmOpenDetachedInPlace(
  data: Uint8Array, tag: Uint8Array, nonce: Uint8Array, key: Uint8Array, onFail: () => Error, aad?: Uint8Array,
): void | Promise<void> {
  return aesGcmKey(key).open(data, tag, nonce, onFail, aad);
}

/**
 * One AES-256-GCM key for several tensors (a restore): on WebCrypto the key is
 * imported once per algorithm, not once per tensor. It reads `key` when first
 * used and keeps the imported keys until dropped; the caller wipes `key` after
 * the last call.
 */
export interface AesGcmKey {
  /** As `aesGcmOpenDetachedInPlace`. */
  open(data: Uint8Array, tag: Uint8Array, nonce: Uint8Array, onFail: () => Error, aad?: Uint8Array): void | Promise<void>;
  /** As `aesGcmDecryptInPlace`. */
  decrypt(data: Uint8Array, nonce: Uint8Array): void | Promise<void>;
}

export function aesGcmKey(key: Uint8Array): AesGcmKey {
  need('AES-256-GCM key', key, AESGCM.key);
  let gcmKey: Promise<CryptoKey> | undefined;
  let ctrKey: Promise<CryptoKey> | undefined;
  let scratch: Uint8Array | undefined; // WebCrypto's C || tag, reused (decrypt copies its input when called)
  return {
    open: (data, tag, nonce, onFail, aad) => {
      needAes('data', data, nonce, key);
      need('AES-256-GCM tag', tag, AESGCM.tag);
      if (aesGcmPath() !== 'webcrypto') return openSync(data, tag, nonce, key, onFail, aad);
      gcmKey ??= webKey(subtle!, key, 'AES-GCM');
      if (!scratch || scratch.byteLength < data.byteLength + AESGCM.tag) scratch = new Uint8Array(data.byteLength + AESGCM.tag);
      return webGcmOpen(subtle!, gcmKey, data, tag, nonce, onFail, aad, scratch);
    },
    decrypt: (data, nonce) => {
      needAes('data', data, nonce, key);
      const path = aesGcmPath();
      if (path === 'node') return nodeCtr(nativeAes!, data, nonce, key);
      if (path === 'js') return jsCtr(data, nonce, key);
      ctrKey ??= webKey(subtle!, key, 'AES-CTR');
      if (!scratch || scratch.byteLength < data.byteLength + AESGCM.tag) scratch = new Uint8Array(data.byteLength + AESGCM.tag);
      return webCtr(subtle!, ctrKey, data, nonce, scratch);
    },
  };
}

/** node:crypto or JavaScript open (the synchronous paths). */
function openSync(data: Uint8Array, tag: Uint8Array, nonce: Uint8Array, key: Uint8Array, onFail: () => Error, aad: Uint8Array | undefined): void {
  const path = aesGcmPath();
  if (path === 'node') {
    const c = nativeAes!;
    const d = c.createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: AESGCM.tag });
    if (aad) d.setAAD(aad, { plaintextLength: data.byteLength });
    d.setAuthTag(tag);
    pump(d, data);
    try {
      d.final();
      return;
    } catch {
      // GHASH mismatch: OpenSSL decrypts and authenticates in one pass, so the bytes are re-encrypted.
    }
    nodeCtr(c, data, nonce, key);
    throw onFail();
  }
  // JavaScript: @noble checks the tag before it decrypts; it takes ciphertext || tag in one buffer.
  const ct = new Uint8Array(data.byteLength + AESGCM.tag);
  ct.set(data);
  ct.set(tag, data.byteLength);
  let plain: Uint8Array;
  try {
    plain = aesGcm(key, nonce, aad).decrypt(ct);
  } catch {
    throw onFail();
  }
  data.set(plain);
  plain.fill(0);
}

/**
 * Decrypts `data` in place WITHOUT checking the tag: AES-256-CTR from counter
 * block nonce || be32(2), GCM's payload keystream. Only for bytes that a
 * signed digest under a pinned vendor key authenticates before use (docs/SPEC.md
 * §6.4): CTR alone is malleable. A Promise on WebCrypto.
 */
export function aesGcmDecryptInPlace(data: Uint8Array, nonce: Uint8Array, key: Uint8Array): void | Promise<void> {
  return aesGcmKey(key).decrypt(data, nonce);
}
