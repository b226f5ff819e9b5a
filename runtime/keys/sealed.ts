/** `sealed`, device side: decrypts each sealed tensor in place at load. */
import { secretboxDecryptInPlace, secretboxOpenDetachedInPlace, wipe } from '../../keystore/nacl.ts';
import { TamperedError } from '../../keystore/errors.ts';
import type { SealedLock } from '../klm.ts';
import { sealedNonce, sealedSecretboxKey } from './derive.ts';
import type { ApplyContext } from './hooks.ts';

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
