/**
 * The one boundary to tweetnacl (and SHA-256). Every key, nonce and signature
 * size is checked here, so callers get a RangeError for misuse and a typed
 * error for a failed MAC or signature, never a `null` or `false` to forget.
 */
import nacl from 'tweetnacl';
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';
import { hmac } from '@noble/hashes/hmac.js';
import { TamperedError } from '../runtime/errors.ts';

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

/** Ed25519 key pair from a 32-byte seed. */
export function signKeyPair(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array } {
  need('signing seed', seed, SIZES.signSeed);
  return nacl.sign.keyPair.fromSeed(seed);
}

/** Ed25519 detached signature. */
export function sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  need('signing secret key', secretKey, SIZES.signSecret);
  return nacl.sign.detached(message, secretKey);
}

/** Verifies an Ed25519 signature; throws TamperedError when it does not match. */
export function verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array, what: string): void {
  need('public key', publicKey, SIZES.signPublic);
  if (signature.byteLength !== SIZES.signature || !nacl.sign.detached.verify(message, signature, publicKey)) {
    throw new TamperedError(`${what}: the Ed25519 signature does not verify`);
  }
}

/**
 * XSalsa20-Poly1305 encryption that keeps the MAC apart, so ciphertext can
 * replace plaintext in place (same length) and the MAC travel elsewhere.
 */
export function secretboxDetached(plain: Uint8Array, nonce: Uint8Array, key: Uint8Array): { cipher: Uint8Array; mac: Uint8Array } {
  need('secretbox nonce', nonce, SIZES.secretboxNonce);
  need('secretbox key', key, SIZES.secretboxKey);
  const boxed = nacl.secretbox(plain, nonce, key);
  return { mac: boxed.subarray(0, SIZES.mac), cipher: boxed.subarray(SIZES.mac) };
}

/** Opens a detached secretbox; throws `onFail()` when the MAC does not verify. */
export function secretboxOpenDetached(cipher: Uint8Array, mac: Uint8Array, nonce: Uint8Array, key: Uint8Array, onFail: () => Error): Uint8Array {
  need('secretbox nonce', nonce, SIZES.secretboxNonce);
  need('secretbox key', key, SIZES.secretboxKey);
  need('secretbox MAC', mac, SIZES.mac);
  const boxed = new Uint8Array(SIZES.mac + cipher.byteLength);
  boxed.set(mac, 0);
  boxed.set(cipher, SIZES.mac);
  const plain = nacl.secretbox.open(boxed, nonce, key);
  boxed.fill(0);
  if (!plain) throw onFail();
  return plain;
}

/** Secretbox with the MAC attached (MAC || ciphertext), for small sealed records. */
export function seal(plain: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array {
  need('secretbox nonce', nonce, SIZES.secretboxNonce);
  need('secretbox key', key, SIZES.secretboxKey);
  return nacl.secretbox(plain, nonce, key);
}

/** Opens `seal` output; throws `onFail()` on a MAC failure. */
export function open(boxed: Uint8Array, nonce: Uint8Array, key: Uint8Array, onFail: () => Error): Uint8Array {
  need('secretbox nonce', nonce, SIZES.secretboxNonce);
  need('secretbox key', key, SIZES.secretboxKey);
  const plain = boxed.byteLength >= SIZES.mac ? nacl.secretbox.open(boxed, nonce, key) : null;
  if (!plain) throw onFail();
  return plain;
}

/** HMAC-SHA-256 of `data` under `key`. */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return hmac(nobleSha256, key, data);
}

/** A fresh X25519 key pair for NaCl box (a device identity). */
export function boxKeyPair(): { publicKey: Uint8Array; secretKey: Uint8Array } {
  return nacl.box.keyPair();
}

/** The X25519 public key of a 32-byte secret key. */
export function boxPublicKey(secretKey: Uint8Array): Uint8Array {
  need('box secret key', secretKey, SIZES.boxSecret);
  return nacl.box.keyPair.fromSecretKey(secretKey).publicKey;
}

/** A message sealed to one X25519 public key from a throw-away sender key pair. */
export interface SealedToDevice {
  /** The sender's one-time X25519 public key. */
  ephemeralPub: Uint8Array;
  nonce: Uint8Array;
  /** NaCl box output: MAC || ciphertext. */
  box: Uint8Array;
}

/**
 * Seals `plain` to `recipientPub` with NaCl box (X25519, XSalsa20-Poly1305) from
 * a fresh ephemeral key pair whose secret half is wiped at once: only the
 * recipient can open it, and the sender cannot be impersonated by reusing keys.
 * Authenticity of the sender comes from the vendor signature around it, not from box.
 */
export function sealToDevice(plain: Uint8Array, recipientPub: Uint8Array): SealedToDevice {
  need('recipient public key', recipientPub, SIZES.boxPublic);
  const eph = nacl.box.keyPair();
  const nonce = nacl.randomBytes(SIZES.boxNonce);
  try {
    return { ephemeralPub: eph.publicKey, nonce, box: nacl.box(plain, nonce, recipientPub, eph.secretKey) };
  } finally {
    eph.secretKey.fill(0);
  }
}

/** Opens `sealToDevice` output with the recipient's secret key; throws `onFail()` on a MAC failure. */
export function openFromSender(sealed: SealedToDevice, recipientSecret: Uint8Array, onFail: () => Error): Uint8Array {
  need('box secret key', recipientSecret, SIZES.boxSecret);
  need('ephemeral public key', sealed.ephemeralPub, SIZES.boxPublic);
  need('box nonce', sealed.nonce, SIZES.boxNonce);
  const plain = sealed.box.byteLength >= SIZES.mac ? nacl.box.open(sealed.box, sealed.nonce, sealed.ephemeralPub, recipientSecret) : null;
  if (!plain) throw onFail();
  return plain;
}
