/**
 * `deeplock` for TFLite models, vendor side: the published byte substitution
 * (models/lock/onnx/deeplock.ts) on every float32 weight buffer, in place.
 */
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import { DeeplockKeystream } from '../../../runtime/keys/deeplock-key.ts';
import type { DeeplockLock } from '../../../runtime/klm.ts';
import { PARAMETER_DTYPES, tfliteRange, type TfliteLocker } from '../types.ts';

/** The `deeplock` locker for TFLite. */
export const tfliteDeeplock: TfliteLocker<'deeplock'> = {
  scheme: 'deeplock',
  // With the other byte locks, after shuffle and advparams, which need the plain weights.
  phase: 2,
  lock(bytes, ctx): DeeplockLock {
    const targets = ctx.weights.filter((w) => w.dtype === 'float32' && w.length > 0);
    if (!targets.length) throw new UnsupportedModelError('deeplock: the TFLite model has no float32 buffers; the published construction locks float32 only (a quantized model needs sealed)');
    const skipped = ctx.weights.filter((w) => w.dtype !== 'float32' && PARAMETER_DTYPES.has(w.dtype));
    if (skipped.length) ctx.report(`deeplock: left ${skipped.length} non-float32 parameter buffer(s) unlocked (${[...new Set(skipped.map((s) => s.dtype))].join(', ')})`);
    const ks = new DeeplockKeystream(ctx.modelKey);
    for (const w of targets) ks.lock(bytes.subarray(w.offset, w.offset + w.length));
    ctx.report(`deeplock: locked ${targets.length} float32 buffer(s), ${ks.paramIndex} parameters`);
    return { scheme: 'deeplock', tensors: targets.map(tfliteRange) };
  },
};
