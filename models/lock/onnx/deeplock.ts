/**
 * `deeplock` (Deep-Lock, Alam et al. 2020), vendor side, as published:
 * every float32 parameter byte is substituted, w' = S(w xor k_i), with k_i the
 * i-th word of an AES-128 key schedule continued past 44 words. Weak by design
 * (docs/SPEC.md says why); keylock ships it to reproduce and attack the paper.
 */
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import { DeeplockKeystream } from '../../../runtime/keys/deeplock-key.ts';
import type { DeeplockLock } from '../../../runtime/klm.ts';
import { rangeOf, type OnnxLocker } from '../types.ts';

/** The `deeplock` locker for ONNX (byte stage). */
export const onnxDeeplock: OnnxLocker<'deeplock'> = {
  scheme: 'deeplock',
  // Byte stage, after every graph-stage lock; no order among byte locks.
  phase: 0,
  bytes(bytes, inits, ctx): DeeplockLock {
    const targets = inits.filter((i) => i.dtype === 'float32' && i.inRawData && i.byteLength > 0);
    if (!targets.length) throw new UnsupportedModelError('deeplock: the model has no float32 parameter tensors; the published construction locks float32 only');
    const skipped = inits.filter((i) => i.dtype !== 'float32' && i.byteLength > 0 && ['float16', 'bfloat16', 'float64', 'int8', 'uint8'].includes(i.dtype));
    if (skipped.length) ctx.report(`deeplock: left ${skipped.length} non-float32 parameter tensor(s) unlocked (${skipped.map((s) => s.dtype).join(', ')})`);
    const ks = new DeeplockKeystream(ctx.modelKey);
    for (const i of targets) ks.lock(bytes.subarray(i.byteOffset, i.byteOffset + i.byteLength));
    ctx.report(`deeplock: locked ${targets.length} tensor(s), ${ks.paramIndex} float32 parameters`);
    return { scheme: 'deeplock', tensors: targets.map(rangeOf) };
  },
};
