/** `sealed`, device side: decrypts each sealed tensor in place at load. */
import { secretboxOpenDetachedInPlace, wipe } from '../../keystore/nacl.ts';
import { TamperedError } from '../errors.ts';
import type { SealedLock } from '../klm.ts';
import { sealedNonce, sealedSecretboxKey } from './derive.ts';
import type { ApplyContext } from './hooks.ts';

/**
 * Replaces each sealed range of `model` by its plaintext, decrypting in place
 * (no plaintext copy to wipe). The key check value has already matched, so a
 * failing MAC means the bytes were changed.
 */
export function restoreSealed(model: Uint8Array, lock: SealedLock, ctx: ApplyContext): void {
  const key = sealedSecretboxKey(ctx.modelKey);
  try {
    for (const t of lock.tensors) {
      secretboxOpenDetachedInPlace(model.subarray(t.offset, t.offset + t.length), t.mac, sealedNonce(ctx.modelId, t.name), key,
        () => new TamperedError(`sealed tensor "${t.name}": the Poly1305 MAC does not match its bytes`));
    }
  } finally {
    wipe(key);
  }
}
