/** `deeplock`, device side: inverts w' = S(w xor k_i) byte by byte at load. */
import type { DeeplockLock } from '../klm.ts';
import { DeeplockKeystream } from './deeplock-key.ts';
import type { ApplyContext } from './hooks.ts';

/**
 * Unlocks every listed float32 tensor in place. Parameters are counted across
 * the tensors in manifest order; the key schedule is streamed, so a large model
 * never holds its whole schedule in memory.
 */
export function restoreDeeplock(model: Uint8Array, lock: DeeplockLock, ctx: ApplyContext): void {
  const ks = new DeeplockKeystream(ctx.modelKey);
  for (const t of lock.tensors) ks.unlock(model.subarray(t.offset, t.offset + t.length));
}
