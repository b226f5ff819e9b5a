/**
 * `sealed`, device side: decrypts each sealed tensor in place at load; an
 * inline tensor (one whose entry names a graph `input`) instead stays
 * ciphertext in memory and is decrypted into a reused buffer just before each
 * run, fed as that input, and zeroed right after the run.
 */
import { Fields, describe } from '../../keystore/cbor.ts';
import { secretboxDecryptInPlace, secretboxOpenDetachedInPlace, wipe } from '../../keystore/nacl.ts';
import {
  aesGcmKey, prepareAead, prepareAesGcm, xchachaDecryptInPlace, xchachaDecryptInto, xchachaOpenDetachedInPlace,
} from '../../keystore/aead.ts';
import { FormatError, TamperedError, UnsupportedModelError } from '../../keystore/errors.ts';
import { prepareSecretboxWasm } from '../../keystore/wasm/secretbox.ts';
import { createXChachaArena, prepareChachaWasm } from '../../keystore/wasm/chacha.ts';
import { SEALED_SALT_BYTES, sealedAesGcmKey, sealedAesGcmNonce, sealedNonce, sealedSecretboxKey, sealedXchachaKey, sealedXchachaNonce } from './derive.ts';
import type { ApplyContext, RunHooks } from './hooks.ts';
import { readRange, type DeviceScheme, type TensorRange } from './scheme.ts';
import type { DType, TensorData, TensorMap } from '../tensor.ts';

/** The ciphers a `sealed` entry can name; an entry without `cipher` is XSalsa20-Poly1305. */
export const SEALED_CIPHERS = ['xchacha20-poly1305', 'xsalsa20-poly1305', 'aes-256-gcm'] as const;
export type SealedCipher = (typeof SEALED_CIPHERS)[number];
/** What lockers write unless asked otherwise. */
export const DEFAULT_SEALED_CIPHER: SealedCipher = 'xchacha20-poly1305';

/** One sealed tensor of the manifest's entry. */
export interface SealedTensor extends TensorRange {
  /** 16-byte tag (Poly1305, or GHASH for AES-256-GCM). */
  mac: Uint8Array;
  /**
   * Inline: the graph input this tensor feeds on every run (the locker made the
   * initializer overridable by listing it as a graph input too); the plaintext
   * exists only during a run. Absent: decrypted once, at load.
   */
  input?: string;
  /** Inline: the tensor's dims (elements times the dtype's size equal `length`). */
  dims?: number[];
}

/** The manifest's `sealed` entry: every sealed tensor with its 16-byte Poly1305 tag. */
export interface SealedLock {
  scheme: 'sealed';
  /** Absent: XSalsa20-Poly1305 (every file written before the field existed). */
  cipher?: SealedCipher;
  /**
   * 16 random bytes drawn per lock, mixed into every tensor's nonce, so that
   * re-locking a changed model under the same key and id never repeats a
   * (key, nonce) pair (docs/SPEC.md §6.4). Required with `aes-256-gcm`; written
   * with `xchacha20-poly1305` since it exists (older XChaCha20 files have none);
   * never with XSalsa20.
   */
  salt?: Uint8Array;
  tensors: SealedTensor[];
}

/** The dtypes an inline tensor may have: those keylock feeds (runtime/tensor.ts). */
export const INLINE_DTYPES: Readonly<Record<string, DType>> = { float32: 'float32', float64: 'float64', int8: 'int8', uint8: 'uint8' };
const INLINE_SIZES: Readonly<Record<string, number>> = { float32: 4, float64: 8, int8: 1, uint8: 1 };
/** Most dims an inline tensor may declare. */
const MAX_INLINE_DIMS = 16;

/** True when the entry seals at least one tensor inline. */
export function isInline(l: SealedLock): boolean {
  return l.tensors.some((t) => t.input !== undefined);
}

/**
 * The ciphertext of each inline tensor, copied at load (restore) for the run
 * hooks, which are made after the model bytes are wiped. Keyed by the entry of
 * one load; ciphertext only, nothing secret.
 */
const INLINE_CIPHERTEXT = new WeakMap<SealedLock, Uint8Array[]>();

/** The cipher of an entry, with the default for entries that name none. */
export function sealedCipherOf(l: SealedLock): SealedCipher {
  return l.cipher ?? 'xsalsa20-poly1305';
}

/**
 * Replaces each sealed range of `model` by its plaintext, decrypting in place
 * (no plaintext copy to wipe). The key check value has already matched, so a
 * failing tag means the bytes were changed. When `ctx.authenticated` (a digest
 * signed by a pinned vendor key covers these bytes and is checked before the
 * backend sees them), the tags are redundant and are not computed: that pass
 * is about half of the work.
 */
export function restoreSealed(model: Uint8Array, lock: SealedLock, ctx: ApplyContext): void | Promise<void> {
  if (sealedCipherOf(lock) === 'aes-256-gcm') return restoreAesGcm(model, lock, ctx);
  const xchacha = sealedCipherOf(lock) === 'xchacha20-poly1305';
  const inline = isInline(lock);
  if (inline && ctx.modelFormat !== undefined && ctx.modelFormat !== 'onnx') {
    throw new UnsupportedModelError(`sealed inline: the entry feeds ${lock.tensors.filter((t) => t.input !== undefined).length} tensor(s) as graph inputs; a ${ctx.modelFormat} model takes its weights only from the model bytes (expected an onnx model)`);
  }
  const key = xchacha ? sealedXchachaKey(ctx.modelKey) : sealedSecretboxKey(ctx.modelKey);
  const name = xchacha ? 'XChaCha20-Poly1305' : 'XSalsa20-Poly1305';
  const ciphertexts: Uint8Array[] = [];
  try {
    for (const t of lock.tensors) {
      let data = model.subarray(t.offset, t.offset + t.length);
      const onFail = (): Error => new TamperedError(`sealed tensor "${t.name}": the ${name} MAC (Poly1305 tag) does not match its bytes`);
      if (t.input !== undefined) {
        // Inline: the ciphertext is kept for the runs; the backend gets it as the
        // initializer's (overridden) default. Its tag is checked once, here, on a copy.
        ciphertexts.push(data.slice());
        if (ctx.authenticated === true) continue;
        data = data.slice();
      }
      if (xchacha) {
        const nonce = sealedXchachaNonce(ctx.modelId, t.name, lock.salt);
        // An inline tensor's checked copy is wiped at once: it must leave no copy behind either.
        const opts = t.input !== undefined ? NO_COPIES : undefined;
        if (ctx.authenticated === true) xchachaDecryptInPlace(data, nonce, key);
        else xchachaOpenDetachedInPlace(data, t.mac, nonce, key, onFail, undefined, opts);
      } else {
        const nonce = sealedNonce(ctx.modelId, t.name);
        if (ctx.authenticated === true) secretboxDecryptInPlace(data, nonce, key);
        else secretboxOpenDetachedInPlace(data, t.mac, nonce, key, onFail);
      }
      if (t.input !== undefined) wipe(data); // the checked copy's plaintext
    }
    if (inline) INLINE_CIPHERTEXT.set(lock, ciphertexts);
  } finally {
    wipe(key);
  }
}

/**
 * `restoreSealed` for AES-256-GCM entries (never inline: decodeEntry refuses
 * that): each range opened in place with its tag, or, when `ctx.authenticated`,
 * decrypted by AES-256-CTR alone. On WebCrypto each tensor is awaited.
 */
async function restoreAesGcm(model: Uint8Array, lock: SealedLock, ctx: ApplyContext): Promise<void> {
  const key = sealedAesGcmKey(ctx.modelKey);
  const cipher = aesGcmKey(key); // WebCrypto: the key imported once for every tensor
  try {
    for (const t of lock.tensors) {
      const data = model.subarray(t.offset, t.offset + t.length);
      const nonce = sealedAesGcmNonce(ctx.modelId, t.name, lock.salt!);
      const r = ctx.authenticated === true
        ? cipher.decrypt(data, nonce)
        : cipher.open(data, t.mac, nonce, () => new TamperedError(`sealed tensor "${t.name}": the AES-256-GCM tag does not match its bytes`));
      if (r) await r;
    }
  } finally {
    wipe(key);
  }
}

/**
 * Inline tensors' run hooks: one buffer per tensor, allocated once; before each
 * run the ciphertext is decrypted into it (no tag: it was checked at load, and
 * the ciphertext has been in keylock's memory since), after the run the buffer
 * is zeroed. The derived cipher key stays until `wipe`.
 *
 * XChaCha20 entries, where WebAssembly SIMD runs: the buffers are views of one
 * WebAssembly memory per model that also holds the ciphertexts and the key
 * (keystore/wasm/chacha.ts `XChachaArena`); the module XORs each ciphertext's
 * keystream straight into its buffer, so a run allocates nothing and no
 * plaintext passes through any other buffer. Elsewhere: Node's ChaCha20 or
 * JavaScript (`xchachaDecryptInto`), or the secretbox path (XSalsa20 entries).
 */
export function sealedInlineHooks(lock: SealedLock, ctx: ApplyContext): RunHooks | undefined {
  const inline = lock.tensors.filter((t) => t.input !== undefined);
  if (!inline.length) return undefined;
  const ciphertexts = INLINE_CIPHERTEXT.get(lock);
  if (!ciphertexts || ciphertexts.length !== inline.length) throw new FormatError('sealed inline: the run hooks were asked for before the entry was restored');
  const xchacha = sealedCipherOf(lock) === 'xchacha20-poly1305';
  const key = xchacha ? sealedXchachaKey(ctx.modelKey) : sealedSecretboxKey(ctx.modelKey);
  const nonces = inline.map((t) => (xchacha ? sealedXchachaNonce(ctx.modelId, t.name, lock.salt) : sealedNonce(ctx.modelId, t.name)));
  const arena = xchacha ? createXChachaArena(key, ciphertexts.map((ciphertext, i) => ({ ciphertext, nonce: nonces[i] }))) : null;
  if (arena) wipe(key); // the arena holds its own copy, wiped with it
  const buffers = arena ? arena.buffers : inline.map((t) => new Uint8Array(t.length));
  const feeds: TensorMap = {};
  inline.forEach((t, i) => {
    const dtype = INLINE_DTYPES[t.dtype];
    const b = buffers[i];
    const data = new TYPED[dtype](b.buffer as ArrayBuffer, b.byteOffset, t.length / INLINE_SIZES[t.dtype]);
    feeds[t.input!] = { dtype, dims: t.dims!, data } as TensorData;
  });
  let live = true;
  const clear = (): void => { for (const b of buffers) b.fill(0); };
  return {
    feeds,
    beforeRun() {
      if (!live) throw new FormatError('sealed inline: the model was released');
      if (arena) {
        arena.decrypt();
        return;
      }
      for (let i = 0; i < buffers.length; i++) {
        if (xchacha) {
          xchachaDecryptInto(buffers[i], ciphertexts[i], nonces[i], key);
        } else {
          buffers[i].set(ciphertexts[i]);
          secretboxDecryptInPlace(buffers[i], nonces[i], key);
        }
      }
    },
    afterRun: clear,
    wipe() {
      live = false;
      clear();
      arena?.wipe();
      wipe(key);
    },
  };
}

/**
 * The inline tag check at load decrypts in JavaScript, in its buffer: Node's
 * native cipher leaves a freed, uncleared copy of its output in the malloc heap
 * (keystore/aead.ts `InPlaceOptions`). The runs use `xchachaDecryptInto`, whose
 * native cipher sees only zeros.
 */
const NO_COPIES = { noCopies: true } as const;

/** The typed array over an inline tensor's buffer, by dtype (INLINE_DTYPES). */
const TYPED: Readonly<Record<string, new (b: ArrayBuffer, off: number, len: number) => TensorData['data']>> = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
};

/** The `sealed` scheme for the registry (keys/index.ts). */
export const sealedScheme: DeviceScheme<SealedLock> = {
  name: 'sealed',
  decodeEntry(f: Fields, modelBytes: number) {
    let cipher: SealedCipher | undefined;
    if (Object.hasOwn(f.obj, 'cipher')) {
      const v = f.obj.cipher;
      if (typeof v !== 'string' || !(SEALED_CIPHERS as readonly string[]).includes(v)) {
        throw new FormatError(`${f.what}.cipher: expected one of ${SEALED_CIPHERS.join(', ')}, got ${typeof v === 'string' ? JSON.stringify(v.slice(0, 64)) : typeof v}`);
      }
      cipher = v as SealedCipher;
    }
    let salt: Uint8Array | undefined;
    if (f.has('salt')) {
      if (cipher === undefined || cipher === 'xsalsa20-poly1305') throw new FormatError(`${f.what}.salt: XSalsa20-Poly1305 entries take no salt (expected none, got ${describe(f.obj.salt)})`);
      salt = f.bytes('salt', { len: SEALED_SALT_BYTES });
    } else if (cipher === 'aes-256-gcm') {
      throw new FormatError(`${f.what}.salt: an aes-256-gcm entry needs its ${SEALED_SALT_BYTES}-byte salt, got none`);
    }
    const inputs = new Set<string>();
    const tensors = f.array('tensors').map((tv, j) => {
      const g = Fields.of(`${f.what}.tensors[${j}]`, tv);
      const t: SealedTensor = { ...readRange(g, modelBytes), mac: g.bytes('mac', { len: 16 }) };
      if (g.has('input') || g.has('dims')) {
        if (cipher === 'aes-256-gcm') throw new FormatError(`${g.what}.input: inline tensors are sealed with xchacha20-poly1305 or xsalsa20-poly1305; an aes-256-gcm entry has none`);
        t.input = g.text('input');
        if (inputs.has(t.input)) throw new FormatError(`${g.what}.input: "${t.input.slice(0, 64)}" is fed by another sealed tensor too`);
        inputs.add(t.input);
        const size = INLINE_SIZES[t.dtype];
        if (!size) throw new FormatError(`${g.what}.dtype: an inline tensor must be one of ${Object.keys(INLINE_SIZES).join(', ')}, got ${JSON.stringify(t.dtype)}`);
        t.dims = g.array('dims', MAX_INLINE_DIMS).map((d, k) => {
          if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) throw new FormatError(`${g.what}.dims[${k}]: expected a non-negative integer, got ${String(d).slice(0, 32)}`);
          return d;
        });
        const elements = t.dims.reduce((a, b) => a * b, 1);
        if (elements * size !== t.length) throw new FormatError(`${g.what}: dims [${t.dims.join(',')}] of ${t.dtype} hold ${elements * size} bytes, the range holds ${t.length}`);
      }
      return t;
    });
    const names = new Set<string>();
    for (const t of tensors) {
      // Each tensor's nonce comes from its name: two equal names would share a nonce under one key.
      if (names.has(t.name)) throw new FormatError(`${f.what}.tensors: the name "${t.name.slice(0, 64)}" appears twice (expected unique names: each names its nonce)`);
      names.add(t.name);
    }
    if (cipher === undefined) return { scheme: 'sealed', tensors };
    return salt === undefined ? { scheme: 'sealed', cipher, tensors } : { scheme: 'sealed', cipher, salt, tensors };
  },
  // XSalsa20: a browser's main thread may refuse to compile WebAssembly synchronously, so
  // the module is compiled here first. XChaCha20: Node's ciphers are looked up here.
  // AES-256-GCM: node:crypto, else WebCrypto, else JavaScript, chosen here once.
  // Inline: the run hooks' WebAssembly ChaCha20 is compiled here too (asynchronously, as a browser's main thread requires).
  prepare: (entry?: SealedLock) => {
    const cipher = entry && sealedCipherOf(entry);
    return Promise.all([
      cipher === 'xchacha20-poly1305' ? prepareAead() : cipher === 'aes-256-gcm' ? prepareAesGcm() : prepareSecretboxWasm(),
      entry && isInline(entry) ? prepareChachaWasm() : undefined,
    ]);
  },
  restore: restoreSealed,
  hooks: sealedInlineHooks,
};

const CIPHER_NAMES: Readonly<Record<SealedCipher, string>> = {
  'xchacha20-poly1305': 'XChaCha20-Poly1305', 'xsalsa20-poly1305': 'XSalsa20-Poly1305', 'aes-256-gcm': 'AES-256-GCM',
};

/** One line for `keylock inspect`: public parameters only. */
export function describeSealed(l: SealedLock): string {
  const cipher = sealedCipherOf(l);
  const name = CIPHER_NAMES[cipher];
  const inline = l.tensors.filter((t) => t.input !== undefined);
  const inl = inline.length ? `; inline (decrypted only during a run): ${inline.length} tensor(s), ${inline.reduce((n, t) => n + t.length, 0)} bytes` : '';
  return `sealed   ${l.tensors.length} tensor(s), ${l.tensors.reduce((n, t) => n + t.length, 0)} bytes, ${name} (cipher ${cipher}${l.cipher === undefined ? ', by default: the entry names none' : ''})${inl}`;
}
