/**
 * `sealed` for TFLite models, vendor side: XChaCha20-Poly1305 (or, on request,
 * XSalsa20-Poly1305) over every
 * learned-parameter buffer (float, int8, uint8) and the int32 biases of
 * CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, in place, as for ONNX
 * (models/lock/onnx/sealed.ts). Other int32/int64 buffers (shapes, paddings,
 * axes, indices) stay plain: the interpreter reads them to prepare the graph.
 */
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import type { SealedLock } from '../../../runtime/klm.ts';
import type { WeightInfo } from '../../tflite/weights.ts';
import { sealRanges } from '../onnx/sealed.ts';
import { PARAMETER_DTYPES, tfliteRange, type TfliteLocker } from '../types.ts';

const BIAS_OPS = new Set(['CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED']);

/** True when every reader of `w` uses it as the bias of a conv or fully connected layer. */
function isBias(w: WeightInfo): boolean {
  return w.uses.length > 0 && w.uses.every((u) => u.slot === 2 && BIAS_OPS.has(u.op));
}

/** The buffers `sealed` encrypts: learned parameters, never graph-structure integers. */
function sealedTargets(weights: readonly WeightInfo[]): WeightInfo[] {
  return weights.filter((w) => w.length > 0 && (PARAMETER_DTYPES.has(w.dtype) || (w.dtype === 'int32' && isBias(w))));
}

/** The `sealed` locker for TFLite. */
export const tfliteSealed: TfliteLocker<'sealed'> = {
  scheme: 'sealed',
  // With the other byte locks, after shuffle and advparams, which need the plain weights.
  phase: 2,
  lock(bytes, ctx): SealedLock {
    if (ctx.opts.sealedInline !== undefined && ctx.opts.sealedInline !== false) {
      throw new UnsupportedModelError('sealed inline: a TFLite model takes its weights only from the model buffer (tfjs-tflite has no way to feed a weight as an input), so they cannot stay encrypted between runs; lock it without inline, or convert the model to ONNX');
    }
    const targets = sealedTargets(ctx.weights);
    if (!targets.length) throw new UnsupportedModelError('sealed: the TFLite model has no parameter buffers (float, int8/uint8, or int32 biases) to encrypt');
    const plain = ctx.weights.filter((w) => !targets.includes(w));
    const lock = sealRanges(bytes, targets.map(tfliteRange), ctx);
    ctx.report(`sealed: encrypted ${lock.tensors.length} buffer(s), ${lock.tensors.reduce((n, t) => n + t.length, 0)} bytes with ${lock.cipher ?? 'xsalsa20-poly1305'}`
      + (plain.length ? `; left ${plain.length} graph-structure buffer(s) plain (${[...new Set(plain.map((w) => w.dtype))].join(', ')}: shapes, paddings, axes)` : ''));
    return lock;
  },
};
