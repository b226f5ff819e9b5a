/**
 * The one boundary to the crypto libraries: tweetnacl (Ed25519, X25519 box,
 * Poly1305), @noble/ciphers (XSalsa20 and the attached secretbox, byte-identical
 * to NaCl's and several times faster than tweetnacl's on megabytes) and
 * @noble/hashes (SHA-256, HMAC); native Ed25519 and X25519 first where the
 * platform has them (node:crypto, else WebCrypto's Ed25519 for `verifyAsync`;
 * keystore/native.ts finds them once and checks them against known answers),
 * tweetnacl otherwise, with the same bytes either way (`cryptoInfo()` says which
 * runs); WebCrypto's SHA-256; Node's own SHA-256 and SHAKE256;
 * and keylock's WebAssembly SIMD XSalsa20/Poly1305 (keystore/wasm/secretbox.ts),
 * which opens sealed tensors. Every key, nonce and signature size is checked here, so
 * callers get a RangeError for misuse and a typed error for a failed MAC or
 * signature, never a `null` or `false` to forget.
 */
import nacl from 'tweetnacl';
import { xsalsa20, xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { TamperedError } from './errors.ts';
import { openInPlaceWasm, secretboxWasm } from './wasm/secretbox.ts';
import { ed25519Native, ed25519Web, x25519Native } from './native.ts';

export { cryptoInfo, forceCryptoFallback, prepareCrypto, type CryptoInfo } from './native.ts';

/** Sizes fixed by NaCl. */
export const SIZES = {
  signSeed: 32, signPublic: 32, signSecret: 64, signature: 64,
  boxPublic: 32, boxSecret: 32, boxNonce: 24,
  secretboxKey: 32, secretboxNonce: 24, mac: 16,
} as const;

function need(what: string, b: Uint8Array, len: number): void {
  if (!(b instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  if (b.byteLength !== len) throw new RangeError(`${what} must be ${len} bytes, got ${b.byteLength}`);
}

/** Cryptographically secure random bytes (WebCrypto, via tweetnacl's PRNG hookup). */
export function randomBytes(n: number): Uint8Array {
  return nacl.randomBytes(n);
}

/** SHA-256 of `data`. */
export function sha256(data: Uint8Array): Uint8Array {
  return nobleSha256(data);
}

/** WebCrypto's digest, where the platform has one (Node, Deno, browsers in secure contexts). */
const subtle: SubtleCrypto | undefined = (globalThis as { crypto?: Crypto }).crypto?.subtle;

/** Below this size the hop to WebCrypto's thread costs more than hashing in JavaScript. */
const ASYNC_DIGEST_MIN = 1 << 20;

type Hash = (data: Uint8Array) => Uint8Array;
/** Node's own SHA-256 (null where there is none); looked up on first use. */
let nodeSha256: Hash | null | undefined;
/** Node's own SHAKE256, found by the same lookup (null until then, or where there is none). */
let nodeShake256: ((data: Uint8Array, outputLength: number) => Uint8Array) | null = null;
/** A variable, so that bundlers for browsers leave the import alone. */
const NODE_CRYPTO = 'node:crypto';

async function nodeHash(): Promise<Hash | null> {
  if (nodeSha256 !== undefined) return nodeSha256;
  nodeSha256 = null;
  if ((globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node) {
    try {
      const m = (await import(/* @vite-ignore */ NODE_CRYPTO)) as { createHash(a: string, o?: { outputLength: number }): { update(d: Uint8Array): { digest(): Uint8Array } } };
      nodeSha256 = (d) => new Uint8Array(m.createHash('sha256').update(d).digest());
      const shake = (d: Uint8Array, n: number): Uint8Array => new Uint8Array(m.createHash('shake256', { outputLength: n }).update(d).digest());
      // Checked once against a known answer (SHAKE256 of nothing), so a runtime that names the
      // algorithm differently is simply not used.
      if (equalBytes(shake(new Uint8Array(0), 4), Uint8Array.of(0x46, 0xb9, 0xdd, 0x2b))) nodeShake256 = shake;
    } catch {
      // Not Node after all: WebCrypto or JavaScript below.
    }
  }
  return nodeSha256;
}

/**
 * SHAKE256 of `data` in native code, or undefined where there is none or the
 * lookup (started by the first `sha256Async`, which every model load calls)
 * has not finished: the caller then computes it in JavaScript. About 3× faster
 * than @noble/hashes on short inputs (a sealed model derives one nonce per tensor).
 */
export function shake256Native(data: Uint8Array, outputLength: number): Uint8Array | undefined {
  return nodeShake256?.(data, outputLength);
}

/**
 * SHA-256 of `data` in native code where the platform has it, else as `sha256`:
 * Node's `createHash` (hashes the bytes where they lie), else WebCrypto (which
 * copies its input and keeps the copy until garbage collection: one more model
 * size at peak), else JavaScript. Several times faster than SHA-256 in
 * JavaScript on a model of megabytes.
 */
export async function sha256Async(data: Uint8Array): Promise<Uint8Array> {
  if (data.byteLength < ASYNC_DIGEST_MIN) {
    void nodeHash(); // finds the native SHAKE256 for what follows the digest
    return nobleSha256(data);
  }
  const node = await nodeHash();
  if (node) return node(data);
  if (subtle) {
    try {
      return new Uint8Array(await subtle.digest('SHA-256', data as Uint8Array<ArrayBuffer>));
    } catch {
      // An engine that refuses this view (e.g. over a SharedArrayBuffer) still gets a digest.
    }
  }
  return nobleSha256(data);
}

/**
 * Finds the platform's native hashes (Node's SHA-256 and SHAKE256) if not yet
 * done; `sha256Async` does it on its first call. For a caller that hashes with
 * `sha256Snapshot` and then derives with `shake256Native`.
 */
export async function prepareNativeHashes(): Promise<void> {
  await nodeHash();
}

/**
 * Whether `sha256Async` hashes model-sized inputs natively where they lie, with
 * no copy (Node's hash, once `prepareNativeHashes` has found it), rather than
 * through WebCrypto, which copies its input.
 */
export function sha256InPlace(): boolean {
  return !!nodeSha256;
}

/**
 * SHA-256 of the bytes `data` holds now, hashed on another thread: WebCrypto's
 * digest takes a copy of its input when it is called (the first step the
 * WebCrypto spec gives it; Node, Deno and browsers do so) and hashes the copy
 * on a thread of its own (Node's thread pool), so the caller may overwrite
 * `data` as soon as this returns and do other work meanwhile. The price is the
 * copy: one more input size at peak until garbage collection, and the time of
 * a memory copy on the calling thread. Undefined where that is not on offer
 * (no WebCrypto, an input under 1 MiB, bytes in a SharedArrayBuffer that another
 * thread could change): then hash with `sha256Async` before changing the bytes.
 */
export function sha256Snapshot(data: Uint8Array): Promise<Uint8Array> | undefined {
  if (!subtle || data.byteLength < ASYNC_DIGEST_MIN || !(data.buffer instanceof ArrayBuffer)) return undefined;
  return subtle.digest('SHA-256', data as Uint8Array<ArrayBuffer>).then((d) => new Uint8Array(d));
}

/** Constant-time equality of two byte strings (false when lengths differ). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let d = 0;
  for (let i = 0; i < a.byteLength; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/** Overwrites a buffer with zeros (best effort: the GC may hold older copies). */
export function wipe(b: Uint8Array | undefined): void {
  if (b) b.fill(0);
}

/** Ed25519 key pair from a 32-byte seed (the secret key is seed || public key, as NaCl's). */
export function signKeyPair(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array } {
  need('signing seed', seed, SIZES.signSeed);
  const publicKey = ed25519Native()?.publicKey(seed);
  if (!publicKey) return nacl.sign.keyPair.fromSeed(seed);
  const secretKey = new Uint8Array(SIZES.signSecret);
  secretKey.set(seed);
  secretKey.set(publicKey, SIZES.signSeed);
  return { publicKey, secretKey };
}

/** Ed25519 detached signature (deterministic: the same bytes from every implementation). */
export function sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  need('signing secret key', secretKey, SIZES.signSecret);
  return ed25519Native()?.sign(message, secretKey) ?? nacl.sign.detached(message, secretKey);
}

/**
 * A signing function for many messages under one secret key (a vendor issuing
 * a fleet's grants): with node:crypto the key is imported once, not per
 * signature; the same bytes as `sign`. The caller wipes `secretKey` when done;
 * the native copy lives until the function is collected.
 */
export function signer(secretKey: Uint8Array): (message: Uint8Array) => Uint8Array {
  need('signing secret key', secretKey, SIZES.signSecret);
  const fast = ed25519Native()?.signer(secretKey);
  if (!fast) return (message) => sign(message, secretKey);
  return (message) => fast(message) ?? nacl.sign.detached(message, secretKey);
}

/** The group order L of Ed25519, little-endian. */
const ED25519_L = Uint8Array.from([
  0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
]);

/**
 * Whether the signature's S (its second half) is below L, as RFC 8032 §5.1.7
 * requires of a verifier. node:crypto and WebCrypto refuse S >= L; tweetnacl
 * does not look, so this check, made before any of them runs, gives every path
 * the same verdict (a signer's S is always reduced: only a forger's is not).
 */
function canonicalS(signature: Uint8Array): boolean {
  for (let i = 31; i >= 0; i--) {
    const s = signature[32 + i];
    if (s !== ED25519_L[i]) return s < ED25519_L[i];
  }
  return false; // S == L
}

function badSignature(what: string): TamperedError {
  return new TamperedError(`${what}: the Ed25519 signature does not verify`);
}

/** Verifies an Ed25519 signature; throws TamperedError when it does not match. */
export function verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array, what: string): void {
  need('public key', publicKey, SIZES.signPublic);
  if (signature.byteLength !== SIZES.signature || !canonicalS(signature)) throw badSignature(what);
  const ok = ed25519Native()?.verify(message, signature, publicKey) ?? nacl.sign.detached.verify(message, signature, publicKey);
  if (!ok) throw badSignature(what);
}

/**
 * `verify`, by native code where the platform has it: node:crypto (Node,
 * Deno, Electron's main process: a tenth of a millisecond on a manifest), else
 * WebCrypto's Ed25519 (browsers), else tweetnacl (several milliseconds, and
 * tens in a process whose JIT is still cold). The same verdict on every path.
 */
export async function verifyAsync(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array, what: string): Promise<void> {
  need('public key', publicKey, SIZES.signPublic);
  if (signature.byteLength !== SIZES.signature || !canonicalS(signature)) throw badSignature(what);
  if (ed25519Native()) return verify(message, signature, publicKey, what);
  const web = await ed25519Web();
  if (web) {
    let ok: boolean;
    try {
      ok = await web.verify(message, signature, publicKey);
    } catch {
      ok = false; // the engine passed its known answers: a refusal here is this key's or signature's
    }
    if (!ok) throw badSignature(what);
    return;
  }
  verify(message, signature, publicKey, what);
}

/**
 * XSalsa20-Poly1305 encryption that keeps the MAC apart, so ciphertext can
 * replace plaintext in place (same length) and the MAC travel elsewhere.
 */
export function secretboxDetached(plain: Uint8Array, nonce: Uint8Array, key: Uint8Array): { cipher: Uint8Array; mac: Uint8Array } {
  need('secretbox nonce', nonce, SIZES.secretboxNonce);
  need('secretbox key', key, SIZES.secretboxKey);
  const boxed = xsalsa20poly1305(key, nonce).encrypt(plain);
  return { mac: boxed.subarray(0, SIZES.mac), cipher: boxed.subarray(SIZES.mac) };
}

/** Opens a detached secretbox; throws `onFail()` when the MAC does not verify. */
export function secretboxOpenDetached(cipher: Uint8Array, mac: Uint8Array, nonce: Uint8Array, key: Uint8Array, onFail: () => Error): Uint8Array {
  const plain = new Uint8Array(cipher);
  secretboxOpenDetachedInPlace(plain, mac, nonce, key, onFail);
  return plain;
}

/** tweetnacl's low-level Poly1305 (crypto_onetimeauth), which its typings do not declare. */
const lowlevel = (nacl as unknown as {
  lowlevel: { crypto_onetimeauth(out: Uint8Array, outpos: number, m: Uint8Array, mpos: number, n: number, k: Uint8Array): number };
}).lowlevel;

/** Bytes decrypted per call; a multiple of the 64-byte Salsa20 block, small enough to stay in cache. */
const CHUNK = 64 << 10;

/**
 * Opens a detached secretbox in place: checks the MAC over `data` (the
 * ciphertext) first, then overwrites `data` with the plaintext, so a failed
 * MAC leaves the ciphertext untouched and no plaintext copy is ever made.
 * Throws `onFail()` when the MAC does not verify.
 *
 * NaCl's secretbox takes the Poly1305 key from the first 32 bytes of the
 * XSalsa20 stream and encrypts with the stream from byte 32 on; decrypting in
 * slices keyed by the block counter gives exactly `nacl.secretbox.open`.
 * WebAssembly SIMD does the work where the engine runs it
 * (keystore/wasm/secretbox.ts, several times faster), JavaScript otherwise.
 */
export function secretboxOpenDetachedInPlace(data: Uint8Array, mac: Uint8Array, nonce: Uint8Array, key: Uint8Array, onFail: () => Error): void {
  need('secretbox MAC', mac, SIZES.mac);
  if (!openInPlace(data, nonce, key, (tag) => equalBytes(tag, mac))) throw onFail();
}

/**
 * Decrypts a detached secretbox's ciphertext in place WITHOUT checking its MAC:
 * only for bytes that something else authenticates before they are used (a
 * `.klm` whose signed digest, under a pinned vendor key, covers them; see
 * docs/SPEC.md, `sealed`). XSalsa20 alone is malleable: never call this on
 * bytes that nothing authenticates.
 */
export function secretboxDecryptInPlace(data: Uint8Array, nonce: Uint8Array, key: Uint8Array): void {
  openInPlace(data, nonce, key, undefined);
}

/**
 * The in-place open: with `accept`, the Poly1305 tag of `data` is computed
 * first and `data` is decrypted only if `accept(tag)` says it matches (returns
 * false otherwise); without, it only decrypts.
 */
function openInPlace(data: Uint8Array, nonce: Uint8Array, key: Uint8Array, accept: ((tag: Uint8Array) => boolean) | undefined): boolean {
  if (!(data instanceof Uint8Array)) throw new TypeError('secretbox data must be a Uint8Array');
  need('secretbox nonce', nonce, SIZES.secretboxNonce);
  need('secretbox key', key, SIZES.secretboxKey);
  const w = secretboxWasm();
  if (w) return openInPlaceWasm(w, data, nonce, key, accept);
  const block0 = xsalsa20(key, nonce, new Uint8Array(64));
  try {
    if (accept) {
      // tweetnacl's Poly1305 reads the data where it lies; noble's copies every update() argument,
      // which over a model of megabytes leaves megabytes of garbage (peak RSS) and runs slower.
      const tag = new Uint8Array(SIZES.mac);
      lowlevel.crypto_onetimeauth(tag, 0, data, 0, data.byteLength, block0.subarray(0, 32));
      const ok = accept(tag);
      tag.fill(0);
      if (!ok) return false;
    }
    const head = Math.min(32, data.byteLength);
    for (let i = 0; i < head; i++) data[i] ^= block0[32 + i];
    // The cipher's fast path needs 4-byte-aligned views; tensor data inside a
    // protobuf rarely is, so unaligned slices go through a small aligned scratch.
    let scratch: Uint8Array | undefined;
    for (let off = 32, counter = 1; off < data.byteLength; off += CHUNK, counter += CHUNK / 64) {
      const slice = data.subarray(off, Math.min(off + CHUNK, data.byteLength));
      if (slice.byteOffset % 4 === 0) {
        xsalsa20(key, nonce, slice, slice, counter);
      } else {
        scratch ??= new Uint8Array(CHUNK);
        const s = scratch.subarray(0, slice.byteLength);
        s.set(slice);
        xsalsa20(key, nonce, s, s, counter);
        slice.set(s);
      }
    }
    scratch?.fill(0);
    return true;
  } finally {
    block0.fill(0);
  }
}

/** Secretbox with the MAC attached (MAC || ciphertext), for small sealed records. */
export function seal(plain: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array {
  need('secretbox nonce', nonce, SIZES.secretboxNonce);
  need('secretbox key', key, SIZES.secretboxKey);
  return xsalsa20poly1305(key, nonce).encrypt(plain);
}

/** Opens `seal` output; throws `onFail()` on a MAC failure. */
export function open(boxed: Uint8Array, nonce: Uint8Array, key: Uint8Array, onFail: () => Error): Uint8Array {
  if (!(boxed instanceof Uint8Array)) throw new TypeError('secretbox must be a Uint8Array');
  if (boxed.byteLength < SIZES.mac) throw onFail();
  return secretboxOpenDetached(boxed.subarray(SIZES.mac), boxed.subarray(0, SIZES.mac), nonce, key, onFail);
}

/** HMAC-SHA-256 of `data` under `key`. */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return hmac(nobleSha256, key, data);
}

/** A fresh X25519 key pair for NaCl box (a device identity). */
export function boxKeyPair(): { publicKey: Uint8Array; secretKey: Uint8Array } {
  const x = x25519Native();
  if (x) {
    const secretKey = nacl.randomBytes(SIZES.boxSecret);
    const publicKey = x.publicKey(secretKey);
    if (publicKey) return { publicKey, secretKey };
    return nacl.box.keyPair.fromSecretKey(secretKey);
  }
  return nacl.box.keyPair();
}

/** A message sealed to one X25519 public key from a throw-away sender key pair. */
export interface SealedToDevice {
  /** The sender's one-time X25519 public key. */
  ephemeralPub: Uint8Array;
  nonce: Uint8Array;
  /** NaCl box output: MAC || ciphertext. */
  box: Uint8Array;
}

/** tweetnacl's HSalsa20 (crypto_core_hsalsa20), which its typings do not declare. */
const hsalsa20 = (nacl as unknown as {
  lowlevel: { crypto_core_hsalsa20(out: Uint8Array, inp: Uint8Array, k: Uint8Array, c: Uint8Array): number };
}).lowlevel.crypto_core_hsalsa20;
/** Salsa20's constant, "expand 32-byte k". */
const SIGMA = Uint8Array.from([...'expand 32-byte k'].map((c) => c.charCodeAt(0)));

/**
 * NaCl's crypto_box_beforenm from an X25519 shared secret: HSalsa20 of it
 * under a zero nonce, the secretbox key of the box. Wipes `shared`.
 */
function boxKey(shared: Uint8Array): Uint8Array {
  const k = new Uint8Array(32);
  hsalsa20(k, new Uint8Array(16), shared, SIGMA);
  shared.fill(0);
  return k;
}

/**
 * Seals `plain` to `recipientPub` with NaCl box (X25519, XSalsa20-Poly1305) from
 * a fresh ephemeral key pair whose secret half is wiped at once: only the
 * recipient can open it, and the sender cannot be impersonated by reusing keys.
 * Authenticity of the sender comes from the vendor signature around it, not from box.
 */
export function sealToDevice(plain: Uint8Array, recipientPub: Uint8Array): SealedToDevice {
  need('recipient public key', recipientPub, SIZES.boxPublic);
  const eph = x25519Native()?.ephemeral(recipientPub);
  if (eph) {
    const nonce = nacl.randomBytes(SIZES.boxNonce);
    const k = boxKey(eph.shared);
    try {
      return { ephemeralPub: eph.publicKey, nonce, box: seal(plain, nonce, k) };
    } finally {
      k.fill(0);
    }
  }
  const kp = nacl.box.keyPair();
  try {
    return sealToDeviceWith(plain, recipientPub, kp.secretKey, nacl.randomBytes(SIZES.boxNonce));
  } finally {
    kp.secretKey.fill(0);
  }
}

/**
 * `sealToDevice` with the caller's ephemeral secret key and nonce, for known
 * answers and byte-for-byte comparisons of the implementations (tests,
 * vectors). Never for real grants: an ephemeral key is used once, and the
 * caller must wipe it.
 */
export function sealToDeviceWith(plain: Uint8Array, recipientPub: Uint8Array, ephemeralSecret: Uint8Array, nonce: Uint8Array): SealedToDevice {
  need('recipient public key', recipientPub, SIZES.boxPublic);
  need('ephemeral secret key', ephemeralSecret, SIZES.boxSecret);
  need('box nonce', nonce, SIZES.boxNonce);
  const x = x25519Native();
  const ephemeralPub = x?.publicKey(ephemeralSecret);
  const shared = ephemeralPub && x!.shared(ephemeralSecret, recipientPub);
  if (!ephemeralPub || !shared) {
    return { ephemeralPub: nacl.box.keyPair.fromSecretKey(ephemeralSecret).publicKey, nonce, box: nacl.box(plain, nonce, recipientPub, ephemeralSecret) };
  }
  const k = boxKey(shared);
  try {
    return { ephemeralPub, nonce, box: seal(plain, nonce, k) };
  } finally {
    k.fill(0);
  }
}

/** Opens `sealToDevice` output with the recipient's secret key; throws `onFail()` on a MAC failure. */
export function openFromSender(sealed: SealedToDevice, recipientSecret: Uint8Array, onFail: () => Error): Uint8Array {
  need('box secret key', recipientSecret, SIZES.boxSecret);
  need('ephemeral public key', sealed.ephemeralPub, SIZES.boxPublic);
  need('box nonce', sealed.nonce, SIZES.boxNonce);
  if (!(sealed.box instanceof Uint8Array)) throw new TypeError('box must be a Uint8Array');
  if (sealed.box.byteLength < SIZES.mac) throw onFail();
  const shared = x25519Native()?.shared(recipientSecret, sealed.ephemeralPub);
  if (!shared) {
    const plain = nacl.box.open(sealed.box, sealed.nonce, sealed.ephemeralPub, recipientSecret);
    if (!plain) throw onFail();
    return plain;
  }
  const k = boxKey(shared);
  try {
    return open(sealed.box, sealed.nonce, k, onFail);
  } finally {
    k.fill(0);
  }
}
