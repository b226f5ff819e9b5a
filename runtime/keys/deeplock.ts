/** `deeplock`, device side: inverts w' = S(w xor k_i) byte by byte at load. */
import type { Fields } from '../../keystore/cbor.ts';
import { DeeplockKeystream } from './deeplock-key.ts';
import type { ApplyContext } from './hooks.ts';
import { readRanges, type DeviceScheme, type TensorRange } from './scheme.ts';

/** The manifest's `deeplock` entry. */
export interface DeeplockLock {
  scheme: 'deeplock';
  /** float32 tensors in key-schedule order: parameter i (counted across them) uses round-key word i. */
  tensors: TensorRange[];
}

/**
 * Unlocks every listed float32 tensor in place. Parameters are counted across
 * the tensors in manifest order; the key schedule is streamed, so a large model
 * never holds its whole schedule in memory.
 */
export function restoreDeeplock(model: Uint8Array, lock: DeeplockLock, ctx: ApplyContext): void {
  const ks = new DeeplockKeystream(ctx.modelKey);
  for (const t of lock.tensors) ks.unlock(model.subarray(t.offset, t.offset + t.length));
}

/** The `deeplock` scheme for the registry (keys/index.ts). */
export const deeplockScheme: DeviceScheme<DeeplockLock> = {
  name: 'deeplock',
  decodeEntry(f: Fields, modelBytes: number) {
    return { scheme: 'deeplock', tensors: readRanges(f, 'tensors', modelBytes) };
  },
  restore: restoreDeeplock,
};

/** One line for `keylock inspect`: public parameters only. */
export function describeDeeplock(l: DeeplockLock): string {
  return `deeplock ${l.tensors.length} tensor(s), ${l.tensors.reduce((n, t) => n + t.length / 4, 0)} float32 parameters`;
}
