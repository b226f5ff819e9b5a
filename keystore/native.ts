/**
 * Native Ed25519 and X25519 for keystore/nacl.ts, which stays the one crypto
 * boundary and falls back to tweetnacl wherever these return nothing.
 *
 * - node:crypto (Node, Electron's main process, Deno), reached synchronously
 *   through `process.getBuiltinModule` (Node >= 20.16, Deno 2) so that the
 *   synchronous `sign`/`verify` can use it, and never imported by name: browser
 *   bundles carry no `node:` import.
 * - WebCrypto's Ed25519 (browsers, and Node before 20.16), asynchronous only:
 *   `verifyAsync`, the signature check at load.
 *
 * Each is found once, at first use, and used only after it reproduced known
 * answers (RFC 8032 test 1 and 2 for Ed25519, RFC 7748 §6.1 for X25519): a
 * runtime that computes anything else is not used. Ed25519 signatures are
 * deterministic and X25519 is a function, so the bytes are those of tweetnacl;
 * test/crypto-paths.test.ts checks that on vectors through both paths.
 *
 * Keys reach node:crypto as JWK (`d` and `x`, base64url): an import in
 * microseconds where PKCS#8 DER takes a third of a millisecond in OpenSSL 3.
 * The JWK string of a secret is garbage the collector frees but nobody can
 * wipe, as tweetnacl's own intermediate arrays are; the KeyObject's copy lives
 * in OpenSSL memory, cleared when it is freed.
 */

/** The implementation of each primitive, as `cryptoInfo()` reports it. */
export interface CryptoInfo {
  /** Ed25519 of `verifyAsync`, the check of every file at load: 'pending' until the first `verifyAsync` or `prepareCrypto()` probed WebCrypto (only where node:crypto is missing). */
  readonly ed25519: 'node:crypto' | 'webcrypto' | 'tweetnacl' | 'pending';
  /** Ed25519 of the synchronous `signKeyPair`, `sign` and `verify`. */
  readonly ed25519Sync: 'node:crypto' | 'tweetnacl';
  /** X25519 of `boxKeyPair`, `sealToDevice` and `openFromSender`; HSalsa20 and XSalsa20-Poly1305 stay keylock's (JavaScript or WebAssembly) either way. */
  readonly x25519: 'node:crypto' | 'tweetnacl';
  /** Whether `forceCryptoFallback(true)` is in effect. */
  readonly forced: boolean;
}

/** Ed25519 by node:crypto. Each returns undefined where the runtime refused the input: the caller then computes as tweetnacl does. */
export interface Ed25519Native {
  /** The public key of a 32-byte seed. */
  publicKey(seed: Uint8Array): Uint8Array | undefined;
  /** The signature by a 64-byte secret key (seed || public key); undefined also when its second half is not the seed's public key (tweetnacl signs with it as given). */
  sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array | undefined;
  /** Whether `signature` (64 bytes) verifies. */
  verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean | undefined;
  /**
   * A signer holding the secret key imported once (`sign` imports it on every
   * call, ≈ 35 µs of a ≈ 70 µs signature): for issuers that sign many files.
   * Undefined where the runtime refused the key or its second half is not the
   * seed's public key. Its `sign` returns undefined if the runtime fails.
   */
  signer(secretKey: Uint8Array): ((message: Uint8Array) => Uint8Array | undefined) | undefined;
}

/** X25519 by node:crypto; undefined where the runtime refused (OpenSSL refuses an all-zero result, from a low-order point, which NaCl computes). */
export interface X25519Native {
  /** The public key of a 32-byte secret key. */
  publicKey(secretKey: Uint8Array): Uint8Array | undefined;
  /** X25519(secretKey, publicKey). */
  shared(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array | undefined;
  /** A fresh key pair (its secret wiped before returning): its public key and X25519 with `publicKey`. */
  ephemeral(publicKey: Uint8Array): { publicKey: Uint8Array; shared: Uint8Array } | undefined;
}

/** WebCrypto's Ed25519 verification. */
export interface Ed25519Web {
  verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): Promise<boolean>;
}

// ---- the parts of node:crypto used here (no @types/node in shipped code's types) ----

type Curve = 'Ed25519' | 'X25519';
interface Jwk { kty: 'OKP'; crv: Curve; x: string; d?: string }
interface KeyObject { export(o: { format: 'jwk' }): { x?: string } }
interface NodeCrypto {
  createPrivateKey(o: { key: Jwk; format: 'jwk' }): KeyObject;
  createPublicKey(o: { key: Jwk; format: 'jwk' } | KeyObject): KeyObject;
  sign(algorithm: null, data: Uint8Array, key: KeyObject): Uint8Array;
  verify(algorithm: null, data: Uint8Array, key: KeyObject, signature: Uint8Array): boolean;
  diffieHellman(o: { privateKey: KeyObject; publicKey: KeyObject }): Uint8Array;
}

/** A variable, so that bundlers for browsers leave the name alone. */
const NODE_CRYPTO = 'node:crypto';

/** node:crypto where the runtime hands it out synchronously, else undefined. */
function nodeCrypto(): NodeCrypto | undefined {
  try {
    const p = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
    return (p?.getBuiltinModule?.(NODE_CRYPTO) ?? undefined) as NodeCrypto | undefined;
  } catch {
    return undefined;
  }
}

// ---- base64url and small helpers ----

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const B64_INDEX = new Map([...B64].map((c, i) => [c, i]));

function toB64u(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 3) {
    const n = (b[i] << 16) | ((b[i + 1] ?? 0) << 8) | (b[i + 2] ?? 0);
    s += B64[n >> 18] + B64[(n >> 12) & 63] + (i + 1 < b.length ? B64[(n >> 6) & 63] : '') + (i + 2 < b.length ? B64[n & 63] : '');
  }
  return s;
}

/** Decodes a 32-byte key from base64url (43 characters); undefined for anything else. */
function key32FromB64u(s: string | undefined): Uint8Array | undefined {
  if (typeof s !== 'string' || s.length !== 43) return undefined;
  const out = new Uint8Array(33);
  let bits = 0, acc = 0, o = 0;
  for (const c of s) {
    const v = B64_INDEX.get(c);
    if (v === undefined) return undefined;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out.subarray(0, 32);
}

const fromHex = (h: string): Uint8Array => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));

function same(a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (!a || a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/** A copy in a Uint8Array of its own (node:crypto returns Buffers, often views of a shared pool). */
const own = (b: Uint8Array): Uint8Array => new Uint8Array(b);

/** A JWK private key needs an `x`; node:crypto derives the public key from `d` and ignores it (checked by the probes). */
const NO_X = toB64u(new Uint8Array(32));

// ---- node:crypto bindings ----

function bindEd25519(c: NodeCrypto): Ed25519Native {
  /** The last public key verified against, and its KeyObject: a device checks one vendor's files. */
  let last: { pub: Uint8Array; key: KeyObject } | undefined;
  const priv = (seed: Uint8Array, x: string): KeyObject => c.createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: toB64u(seed), x }, format: 'jwk' });
  const pubOf = (k: KeyObject): Uint8Array | undefined => key32FromB64u(c.createPublicKey(k).export({ format: 'jwk' }).x);
  return {
    publicKey(seed) {
      try {
        return pubOf(priv(seed, NO_X));
      } catch {
        return undefined;
      }
    },
    sign(message, secretKey) {
      try {
        const pub = secretKey.subarray(32, 64);
        const k = priv(secretKey.subarray(0, 32), toB64u(pub));
        if (!same(pubOf(k), pub)) return undefined;
        return own(c.sign(null, message, k));
      } catch {
        return undefined;
      }
    },
    signer(secretKey) {
      try {
        const pub = secretKey.subarray(32, 64);
        const k = priv(secretKey.subarray(0, 32), toB64u(pub));
        if (!same(pubOf(k), pub)) return undefined;
        return (message) => {
          try {
            return own(c.sign(null, message, k));
          } catch {
            return undefined;
          }
        };
      } catch {
        return undefined;
      }
    },
    verify(message, signature, publicKey) {
      try {
        if (!last || !same(last.pub, publicKey)) {
          last = { pub: publicKey.slice(), key: c.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: toB64u(publicKey) }, format: 'jwk' }) };
        }
        return c.verify(null, message, last.key, signature);
      } catch {
        return undefined;
      }
    },
  };
}

function bindX25519(c: NodeCrypto): X25519Native {
  const priv = (secret: Uint8Array): KeyObject => c.createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: toB64u(secret), x: NO_X }, format: 'jwk' });
  const pub = (p: Uint8Array): KeyObject => c.createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: toB64u(p) }, format: 'jwk' });
  return {
    publicKey(secret) {
      try {
        return key32FromB64u(c.createPublicKey(priv(secret)).export({ format: 'jwk' }).x);
      } catch {
        return undefined;
      }
    },
    shared(secret, publicKey) {
      try {
        const s = c.diffieHellman({ privateKey: priv(secret), publicKey: pub(publicKey) });
        const out = own(s);
        s.fill(0);
        return out.length === 32 ? out : undefined;
      } catch {
        return undefined;
      }
    },
    ephemeral(publicKey) {
      // Not generateKeyPairSync: Node 20 destroys a key-generation job (when the collector frees
      // it) under the lock of the key it made, and exporting that key holds the same lock while it
      // allocates; a collection at that moment deadlocks the process (seen once in about a million
      // grants: main thread in ~KeyGenJob, called from ExportJWK). A random secret imported as JWK
      // makes no job. The secret is wiped; its JWK string is garbage, as for every import here.
      const secret = new Uint8Array(32);
      try {
        globalThis.crypto.getRandomValues(secret);
        const k = priv(secret);
        const p = key32FromB64u(c.createPublicKey(k).export({ format: 'jwk' }).x);
        const s = c.diffieHellman({ privateKey: k, publicKey: pub(publicKey) });
        const shared = own(s);
        s.fill(0);
        return p && shared.length === 32 ? { publicKey: p, shared } : undefined;
      } catch {
        return undefined;
      } finally {
        secret.fill(0);
      }
    },
  };
}

// ---- known answers ----

/** RFC 8032 §7.1, tests 1 and 2: seed, public key, message, signature. */
const ED25519_KAT = [
  ['9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', '',
    'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b'],
  ['4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb', '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c', '72',
    '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00'],
].map((v) => v.map(fromHex));

/** RFC 7748 §6.1: Alice's secret and public key, Bob's public key, their shared secret. */
const X25519_KAT = [
  '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a',
  '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
  'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f',
  '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742',
].map(fromHex);

function tampered(sig: Uint8Array): Uint8Array {
  const t = sig.slice();
  t[7] ^= 0x10;
  return t;
}

function ed25519Passes(e: Ed25519Native): boolean {
  return ED25519_KAT.every(([seed, pub, msg, sig]) => {
    const sk = new Uint8Array(64);
    sk.set(seed);
    sk.set(pub, 32);
    return same(e.publicKey(seed), pub) && same(e.sign(msg, sk), sig)
      && e.verify(msg, sig, pub) === true && e.verify(msg, tampered(sig), pub) === false;
  });
}

function x25519Passes(x: X25519Native): boolean {
  const [a, aPub, bPub, k] = X25519_KAT;
  const e = x.ephemeral(bPub);
  return same(x.publicKey(a), aPub) && same(x.shared(a, bPub), k) && e !== undefined && e.publicKey.length === 32;
}

async function webPasses(w: Ed25519Web): Promise<boolean> {
  for (const [, pub, msg, sig] of ED25519_KAT) {
    if ((await w.verify(msg, sig, pub)) !== true || (await w.verify(msg, tampered(sig), pub)) !== false) return false;
  }
  return true;
}

// ---- detection, once ----

let forced = false;
let ed: Ed25519Native | null | undefined;
let x: X25519Native | null | undefined;
let web: Promise<Ed25519Web | null> | undefined;
/** What the WebCrypto probe settled on; undefined while it has not. */
let webReady: Ed25519Web | null | undefined;

/** Binds and checks one primitive of node:crypto: what passes its known answers, else null. */
function probe<T>(bind: (c: NodeCrypto) => T, passes: (t: T) => boolean): T | null {
  const c = nodeCrypto();
  if (!c) return null;
  try {
    const t = bind(c);
    return passes(t) ? t : null;
  } catch {
    return null; // a node:crypto without this curve, or one that computes something else: tweetnacl
  }
}

/** node:crypto's Ed25519 where it passed the known answers (and the fallback is not forced), else null. */
export function ed25519Native(): Ed25519Native | null {
  if (forced) return null;
  if (ed === undefined) ed = probe(bindEd25519, ed25519Passes);
  return ed;
}

/** node:crypto's X25519 where it passed the known answers (and the fallback is not forced), else null. */
export function x25519Native(): X25519Native | null {
  if (forced) return null;
  if (x === undefined) x = probe(bindX25519, x25519Passes);
  return x;
}

/** WebCrypto's Ed25519 where it passed the known answers (and the fallback is not forced), else null. */
export function ed25519Web(): Promise<Ed25519Web | null> {
  if (forced) return Promise.resolve(null);
  web ??= (async () => {
    const subtle = (globalThis as { crypto?: Crypto }).crypto?.subtle;
    let found: Ed25519Web | null = null;
    if (subtle) {
      let last: { pub: Uint8Array; key: Promise<CryptoKey> } | undefined;
      const w: Ed25519Web = {
        async verify(message, signature, publicKey) {
          if (!last || !same(last.pub, publicKey)) {
            last = { pub: publicKey.slice(), key: subtle.importKey('raw', publicKey.slice() as Uint8Array<ArrayBuffer>, { name: 'Ed25519' }, false, ['verify']) };
            last.key.catch(() => { last = undefined; });
          }
          return subtle.verify({ name: 'Ed25519' }, await last.key, signature as Uint8Array<ArrayBuffer>, message as Uint8Array<ArrayBuffer>);
        },
      };
      try {
        if (await webPasses(w)) found = w;
      } catch {
        // no Ed25519 in this engine (NotSupportedError), or one that misbehaves: tweetnacl
      }
    }
    webReady = found;
    return found;
  })();
  return web;
}

/**
 * Makes every Ed25519 and X25519 operation use tweetnacl (`true`) or the
 * native implementations where they passed their checks (`false`, the
 * default). For tests and benchmarks that compare the two, as
 * `forceSecretboxJs` does for the secretbox; a setting in code, because the
 * device runtime reads no environment.
 */
export function forceCryptoFallback(on: boolean): void {
  forced = on;
}

/** Which implementation each primitive uses here (finds them, if no operation has yet). */
export function cryptoInfo(): CryptoInfo {
  if (ed === undefined) ed = probe(bindEd25519, ed25519Passes);
  if (x === undefined) x = probe(bindX25519, x25519Passes);
  const sync = !forced && ed ? 'node:crypto' : 'tweetnacl';
  const hasSubtle = (globalThis as { crypto?: Crypto }).crypto?.subtle !== undefined;
  const async: CryptoInfo['ed25519'] = forced ? 'tweetnacl'
    : ed ? 'node:crypto'
      : webReady ? 'webcrypto'
        : webReady === null || !hasSubtle ? 'tweetnacl' : 'pending';
  return Object.freeze({ ed25519: async, ed25519Sync: sync, x25519: !forced && x ? 'node:crypto' : 'tweetnacl', forced });
}

/** Runs every probe, WebCrypto's included, and returns `cryptoInfo()` (never 'pending'). */
export async function prepareCrypto(): Promise<CryptoInfo> {
  const info = cryptoInfo();
  if (!ed && !forced) await ed25519Web();
  return info.ed25519 === 'pending' ? cryptoInfo() : info;
}
