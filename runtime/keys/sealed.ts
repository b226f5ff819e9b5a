/** `sealed`, device side: decrypts each sealed tensor in place at load. */
import { secretboxOpenDetached, wipe } from '../../keystore/nacl.ts';
import { TamperedError } from '../errors.ts';
import type { SealedLock } from '../klm.ts';
import { sealedNonce, sealedSecretboxKey } from './derive.ts';
import type { ApplyContext } from './hooks.ts';

/**
 * Replaces each sealed range of `model` by its plaintext. The key check value
 * has already matched, so a failing MAC means the bytes were changed.
 */
export function restoreSealed(model: Uint8Array, lock: SealedLock, ctx: ApplyContext): void {
  const key = sealedSecretboxKey(ctx.modelKey);
  try {
    for (const t of lock.tensors) {
      const range = model.subarray(t.offset, t.offset + t.length);
      const plain = secretboxOpenDetached(range, t.mac, sealedNonce(ctx.modelId, t.name), key,
        () => new TamperedError(`sealed tensor "${t.name}": the Poly1305 MAC does not match its bytes`));
      range.set(plain);
      wipe(plain);
    }
  } finally {
    wipe(key);
  }
}
