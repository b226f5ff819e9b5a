/**
 * `sealed`, vendor side: every learned-parameter tensor is encrypted in place
 * with XSalsa20-Poly1305 under a key derived from the model key and a nonce
 * derived from (model id, tensor name). The MACs go to the manifest, so the file
 * keeps its length and stays a structurally valid model of the same shape.
 */
import { secretboxDetached, wipe } from '../../../keystore/nacl.ts';
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import { sealedNonce, sealedSecretboxKey } from '../../../runtime/keys/derive.ts';
import type { SealedLock, TensorRange } from '../../../runtime/klm.ts';
import { PARAMETER_DTYPES, rangeOf, type OnnxLocker } from '../types.ts';

/** The `sealed` locker for ONNX (byte stage). */
export const onnxSealed: OnnxLocker<'sealed'> = {
  scheme: 'sealed',
  // Byte stage, after every graph-stage lock; no order among byte locks.
  phase: 0,
  bytes(bytes, inits, ctx): SealedLock {
    const targets = inits.filter((i) => PARAMETER_DTYPES.has(i.dtype) && i.byteLength > 0);
    if (!targets.length) throw new UnsupportedModelError('sealed: the model has no parameter tensors (float or int8/uint8 initializers) to encrypt');
    const unaddressable = targets.filter((i) => !i.inRawData);
    if (unaddressable.length) throw new UnsupportedModelError(`sealed: tensor "${unaddressable[0].name}" has no contiguous raw_data range`);
    const lock = sealRanges(bytes, targets.map(rangeOf), ctx);
    ctx.report(`sealed: encrypted ${lock.tensors.length} tensor(s), ${lock.tensors.reduce((n, t) => n + t.length, 0)} bytes`);
    return lock;
  },
};

/**
 * Encrypts each range of `bytes` in place (ciphertext has the plaintext's
 * length) and returns the manifest entry with the MACs: the vendor-side twin
 * of runtime/keys/sealed.ts `restoreSealed`, shared by the ONNX and TFLite lockers.
 */
export function sealRanges(bytes: Uint8Array, ranges: readonly TensorRange[], ctx: { modelId: string; modelKey: Uint8Array }): SealedLock {
  const key = sealedSecretboxKey(ctx.modelKey);
  try {
    const tensors = ranges.map((r) => {
      const range = bytes.subarray(r.offset, r.offset + r.length);
      const { cipher, mac } = secretboxDetached(range, sealedNonce(ctx.modelId, r.name), key);
      range.set(cipher);
      return { ...r, mac: new Uint8Array(mac) };
    });
    return { scheme: 'sealed', tensors };
  } finally {
    wipe(key);
  }
}
