/**
 * `deeplock` (Deep-Lock, Alam et al. 2020), vendor side, as published:
 * every float32 parameter byte is substituted, w' = S(w xor k_i), with k_i the
 * i-th word of an AES-128 key schedule continued past 44 words. float16 and
 * bfloat16 parameters take the first two bytes of their word (keylock's
 * extension, docs/SPEC.md §6.3). Weak by design (docs/SPEC.md says why);
 * keylock ships it to reproduce and attack the paper.
 */
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import { DeeplockKeystream, deeplockWidthOf } from '../../../runtime/keys/deeplock-key.ts';
import type { DeeplockLock } from '../../../runtime/klm.ts';
import type { DeeplockRange } from '../../../runtime/keys/deeplock.ts';
import type { InitializerInfo } from '../../onnx/layout.ts';
import { placesNote } from './sealed.ts';
import { PARAMETER_DTYPES, rangeOf, type OnnxLocker } from '../types.ts';

/**
 * Locks every range in order, in place (parameters counted across them, whatever
 * their width), and returns the entry, the parameter count and how many of
 * them are 2-byte; shared by the ONNX and TFLite lockers.
 */
export function deeplockRanges(bytes: Uint8Array, targets: readonly DeeplockRange[], modelKey: Uint8Array): { lock: DeeplockLock; params: number; half: number } {
  const ks = new DeeplockKeystream(modelKey);
  let half = 0;
  for (const t of targets) {
    const w = t.width ?? 4;
    if (w === 2) half += t.length / 2;
    ks.lock(bytes.subarray(t.offset, t.offset + t.length), w);
  }
  return { lock: { scheme: 'deeplock', tensors: targets.map((t) => ({ ...t })) }, params: ks.paramIndex, half };
}

/** The manifest range of a deeplock target: `width: 2` for 2-byte floats only, so float32 entries read as they always did. */
export function deeplockRange<R extends { dtype: string }>(r: R): R & { width?: 2 } {
  return deeplockWidthOf(r.dtype) === 2 ? { ...r, width: 2 } : r;
}

/** The `deeplock` locker for ONNX (byte stage). */
export const onnxDeeplock: OnnxLocker<'deeplock'> = {
  scheme: 'deeplock',
  // Byte stage, after every graph-stage lock; no order among byte locks.
  phase: 0,
  bytes(bytes, inits, ctx): DeeplockLock {
    const targets = inits.filter((i) => deeplockWidthOf(i.dtype) !== undefined && i.inRawData && i.byteLength > 0);
    if (!targets.length) throw new UnsupportedModelError('deeplock: the model has no float32, float16 or bfloat16 parameter tensors; the construction substitutes float bytes (a quantized model needs sealed)');
    const skipped = inits.filter((i) => deeplockWidthOf(i.dtype) === undefined && i.byteLength > 0 && PARAMETER_DTYPES.has(i.dtype));
    if (skipped.length) ctx.report(`deeplock: left ${skipped.length} parameter tensor(s) of other dtypes unlocked (${[...new Set(skipped.map((s) => s.dtype))].join(', ')}); sealed covers them`);
    const { lock, params, half } = deeplockRanges(bytes, targets.map((t: InitializerInfo) => deeplockRange(rangeOf(t))), ctx.modelKey);
    ctx.report(`deeplock: locked ${targets.length} tensor(s), ${params} parameters${half ? ` (${half} float16/bfloat16, 2 bytes of their word each)` : ' (float32)'}${placesNote(targets)}`);
    return lock;
  },
};
