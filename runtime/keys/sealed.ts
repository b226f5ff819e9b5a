/** `sealed`, device side: decrypts each sealed tensor in place at load. */
import { Fields } from '../../keystore/cbor.ts';
import { secretboxDecryptInPlace, secretboxOpenDetachedInPlace, wipe } from '../../keystore/nacl.ts';
import { prepareAead, xchachaDecryptInPlace, xchachaOpenDetachedInPlace } from '../../keystore/aead.ts';
import { FormatError, TamperedError } from '../../keystore/errors.ts';
import { prepareSecretboxWasm } from '../../keystore/wasm/secretbox.ts';
import { sealedNonce, sealedSecretboxKey, sealedXchachaKey, sealedXchachaNonce } from './derive.ts';
import type { ApplyContext } from './hooks.ts';
import { readRange, type DeviceScheme, type TensorRange } from './scheme.ts';

/** The ciphers a `sealed` entry can name; an entry without `cipher` is XSalsa20-Poly1305. */
export const SEALED_CIPHERS = ['xchacha20-poly1305', 'xsalsa20-poly1305'] as const;
export type SealedCipher = (typeof SEALED_CIPHERS)[number];
/** What lockers write unless asked otherwise. */
export const DEFAULT_SEALED_CIPHER: SealedCipher = 'xchacha20-poly1305';

/** The manifest's `sealed` entry: every sealed tensor with its 16-byte Poly1305 tag. */
export interface SealedLock {
  scheme: 'sealed';
  /** Absent: XSalsa20-Poly1305 (every file written before the field existed). */
  cipher?: SealedCipher;
  tensors: (TensorRange & { mac: Uint8Array })[];
}

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
export function restoreSealed(model: Uint8Array, lock: SealedLock, ctx: ApplyContext): void {
  const xchacha = sealedCipherOf(lock) === 'xchacha20-poly1305';
  const key = xchacha ? sealedXchachaKey(ctx.modelKey) : sealedSecretboxKey(ctx.modelKey);
  const name = xchacha ? 'XChaCha20-Poly1305' : 'XSalsa20-Poly1305';
  try {
    for (const t of lock.tensors) {
      const data = model.subarray(t.offset, t.offset + t.length);
      const onFail = (): Error => new TamperedError(`sealed tensor "${t.name}": the ${name} MAC (Poly1305 tag) does not match its bytes`);
      if (xchacha) {
        const nonce = sealedXchachaNonce(ctx.modelId, t.name);
        if (ctx.authenticated === true) xchachaDecryptInPlace(data, nonce, key);
        else xchachaOpenDetachedInPlace(data, t.mac, nonce, key, onFail);
      } else {
        const nonce = sealedNonce(ctx.modelId, t.name);
        if (ctx.authenticated === true) secretboxDecryptInPlace(data, nonce, key);
        else secretboxOpenDetachedInPlace(data, t.mac, nonce, key, onFail);
      }
    }
  } finally {
    wipe(key);
  }
}

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
    const tensors = f.array('tensors').map((tv, j) => {
      const g = Fields.of(`${f.what}.tensors[${j}]`, tv);
      return { ...readRange(g, modelBytes), mac: g.bytes('mac', { len: 16 }) };
    });
    return cipher === undefined ? { scheme: 'sealed', tensors } : { scheme: 'sealed', cipher, tensors };
  },
  // XSalsa20: a browser's main thread may refuse to compile WebAssembly synchronously, so
  // the module is compiled here first. XChaCha20: Node's ciphers are looked up here.
  prepare: (entry?: SealedLock) => (entry && sealedCipherOf(entry) === 'xchacha20-poly1305' ? prepareAead() : prepareSecretboxWasm()),
  restore: restoreSealed,
};

/** One line for `keylock inspect`: public parameters only. */
export function describeSealed(l: SealedLock): string {
  const cipher = sealedCipherOf(l);
  const name = cipher === 'xchacha20-poly1305' ? 'XChaCha20-Poly1305' : 'XSalsa20-Poly1305';
  return `sealed   ${l.tensors.length} tensor(s), ${l.tensors.reduce((n, t) => n + t.length, 0)} bytes, ${name} (cipher ${cipher}${l.cipher === undefined ? ', by default: the entry names none' : ''})`;
}
