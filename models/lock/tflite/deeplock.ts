/**
 * `deeplock` for TFLite models, vendor side: the published byte substitution
 * (models/lock/onnx/deeplock.ts) on every float32 weight buffer, and keylock's
 * 2-byte extension on float16/bfloat16 buffers (weights exported the mobile
 * way, behind DEQUANTIZE), in place.
 */
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import { deeplockWidthOf } from '../../../runtime/keys/deeplock-key.ts';
import type { DeeplockLock } from '../../../runtime/klm.ts';
import { deeplockRange, deeplockRanges } from '../onnx/deeplock.ts';
import { PARAMETER_DTYPES, tfliteRange, type TfliteLocker } from '../types.ts';

/** The `deeplock` locker for TFLite. */
export const tfliteDeeplock: TfliteLocker<'deeplock'> = {
  scheme: 'deeplock',
  // With the other byte locks, after shuffle and advparams, which need the plain weights.
  phase: 2,
  lock(bytes, ctx): DeeplockLock {
    const targets = ctx.weights.filter((w) => deeplockWidthOf(w.dtype) !== undefined && w.length > 0);
    if (!targets.length) throw new UnsupportedModelError('deeplock: the TFLite model has no float32, float16 or bfloat16 buffers; the construction substitutes float bytes (a quantized model needs sealed)');
    const skipped = ctx.weights.filter((w) => !targets.includes(w) && PARAMETER_DTYPES.has(w.dtype));
    if (skipped.length) ctx.report(`deeplock: left ${skipped.length} parameter buffer(s) unlocked (${[...new Set(skipped.map((s) => s.dtype))].join(', ')}); sealed covers them`);
    const { lock, params, half } = deeplockRanges(bytes, targets.map((w) => deeplockRange(tfliteRange(w))), ctx.modelKey);
    ctx.report(`deeplock: locked ${targets.length} buffer(s), ${params} parameters${half ? ` (${half} float16/bfloat16, 2 bytes of their word each)` : ' (float32)'}`);
    return lock;
  },
};
