/** `sealed`, device side: decrypts each sealed tensor in place at load. */
import { Fields } from '../../keystore/cbor.ts';
import { secretboxDecryptInPlace, secretboxOpenDetachedInPlace, wipe } from '../../keystore/nacl.ts';
import { TamperedError } from '../../keystore/errors.ts';
import { prepareSecretboxWasm } from '../../keystore/wasm/secretbox.ts';
import { sealedNonce, sealedSecretboxKey } from './derive.ts';
import type { ApplyContext } from './hooks.ts';
import { readRange, type DeviceScheme, type TensorRange } from './scheme.ts';

/** The manifest's `sealed` entry: every sealed tensor with its Poly1305 MAC. */
export interface SealedLock {
  scheme: 'sealed';
  tensors: (TensorRange & { mac: Uint8Array })[];
}

/**
 * Replaces each sealed range of `model` by its plaintext, decrypting in place
 * (no plaintext copy to wipe). The key check value has already matched, so a
 * failing MAC means the bytes were changed. When `ctx.authenticated` (a digest
 * signed by a pinned vendor key covers these bytes and is checked before the
 * backend sees them), the MACs are redundant and are not computed: that pass
 * is about half of the work.
 */
export function restoreSealed(model: Uint8Array, lock: SealedLock, ctx: ApplyContext): void {
  const key = sealedSecretboxKey(ctx.modelKey);
  try {
    for (const t of lock.tensors) {
      const data = model.subarray(t.offset, t.offset + t.length);
      const nonce = sealedNonce(ctx.modelId, t.name);
      if (ctx.authenticated === true) secretboxDecryptInPlace(data, nonce, key);
      else secretboxOpenDetachedInPlace(data, t.mac, nonce, key, () => new TamperedError(`sealed tensor "${t.name}": the Poly1305 MAC does not match its bytes`));
    }
  } finally {
    wipe(key);
  }
}

/** The `sealed` scheme for the registry (keys/index.ts). */
export const sealedScheme: DeviceScheme<SealedLock> = {
  name: 'sealed',
  decodeEntry(f: Fields, modelBytes: number) {
    const tensors = f.array('tensors').map((tv, j) => {
      const g = Fields.of(`${f.what}.tensors[${j}]`, tv);
      return { ...readRange(g, modelBytes), mac: g.bytes('mac', { len: 16 }) };
    });
    return { scheme: 'sealed', tensors };
  },
  // A browser's main thread may refuse to compile WebAssembly synchronously; sealed
  // tensors then open in JavaScript unless the module was compiled here first.
  prepare: prepareSecretboxWasm,
  restore: restoreSealed,
};

/** One line for `keylock inspect`: public parameters only. */
export function describeSealed(l: SealedLock): string {
  return `sealed   ${l.tensors.length} tensor(s), ${l.tensors.reduce((n, t) => n + t.length, 0)} bytes, XSalsa20-Poly1305`;
}
