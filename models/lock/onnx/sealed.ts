/**
 * `sealed`, vendor side: every learned-parameter tensor is encrypted in place
 * with XChaCha20-Poly1305 (the default; XSalsa20-Poly1305 on request, as files
 * were before) under a key derived from the model key and a nonce derived from
 * (model id, tensor name). The tags go to the manifest, so the file keeps its
 * length and stays a structurally valid model of the same shape.
 */
import { secretboxDetached, wipe } from '../../../keystore/nacl.ts';
import { xchachaSealDetached } from '../../../keystore/aead.ts';
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import { sealedNonce, sealedSecretboxKey, sealedXchachaKey, sealedXchachaNonce } from '../../../runtime/keys/derive.ts';
import { DEFAULT_SEALED_CIPHER, SEALED_CIPHERS, type SealedCipher } from '../../../runtime/keys/sealed.ts';
import type { SealedLock, TensorRange } from '../../../runtime/klm.ts';
import type { InitializerInfo, TensorPlace } from '../../onnx/layout.ts';
import { LockOptionError, PARAMETER_DTYPES, rangeOf, type OnnxLocker } from '../types.ts';

/** The `sealed` locker for ONNX (byte stage). */
export const onnxSealed: OnnxLocker<'sealed'> = {
  scheme: 'sealed',
  // Byte stage, after every graph-stage lock; no order among byte locks.
  phase: 0,
  bytes(bytes, inits, ctx): SealedLock {
    // Learned parameters of every float and 8-bit type, and the int32 biases of quantized layers.
    const targets = inits.filter((i) => (PARAMETER_DTYPES.has(i.dtype) || (i as Partial<TensorPlace>).learnedInteger === true) && i.byteLength > 0);
    if (!targets.length) throw new UnsupportedModelError('sealed: the model has no parameter tensors (float or int8/uint8 initializers or Constant values, in the main graph or any If/Loop/Scan body) to encrypt');
    const unaddressable = targets.filter((i) => !i.inRawData);
    if (unaddressable.length) throw new UnsupportedModelError(`sealed: tensor "${unaddressable[0].name}" has no contiguous raw_data range`);
    const lock = sealRanges(bytes, targets.map(rangeOf), ctx);
    ctx.report(`sealed: encrypted ${lock.tensors.length} tensor(s), ${lock.tensors.reduce((n, t) => n + t.length, 0)} bytes with ${lock.cipher ?? 'xsalsa20-poly1305'}${placesNote(targets)}`);
    return lock;
  },
};

/** ' (12 in If/Loop/Scan bodies, 3 Constant values)', or '' when every tensor is a main-graph initializer. */
export function placesNote(targets: readonly InitializerInfo[]): string {
  const places = targets as readonly Partial<TensorPlace>[];
  const bodies = places.filter((t) => t.scope).length;
  const attrs = places.filter((t) => t.place === 'attribute').length;
  const parts = [bodies ? `${bodies} in If/Loop/Scan bodies or functions` : '', attrs ? `${attrs} Constant/attribute value(s)` : ''].filter(Boolean);
  return parts.length ? ` (${parts.join(', ')})` : '';
}

/**
 * Encrypts each range of `bytes` in place (ciphertext has the plaintext's
 * length) and returns the manifest entry with the MACs: the vendor-side twin
 * of runtime/keys/sealed.ts `restoreSealed`, shared by the ONNX and TFLite lockers.
 */
export function sealRanges(
  bytes: Uint8Array, ranges: readonly TensorRange[], ctx: { modelId: string; modelKey: Uint8Array; opts?: { sealedCipher?: SealedCipher } },
): SealedLock {
  const cipher = sealedCipherOption(ctx.opts?.sealedCipher);
  const xchacha = cipher === 'xchacha20-poly1305';
  const key = xchacha ? sealedXchachaKey(ctx.modelKey) : sealedSecretboxKey(ctx.modelKey);
  try {
    const tensors = ranges.map((r) => {
      const range = bytes.subarray(r.offset, r.offset + r.length);
      if (xchacha) return { ...r, mac: xchachaSealDetached(range, sealedXchachaNonce(ctx.modelId, r.name), key) };
      const { cipher: c, mac } = secretboxDetached(range, sealedNonce(ctx.modelId, r.name), key);
      range.set(c);
      return { ...r, mac: new Uint8Array(mac) };
    });
    // XSalsa20 entries stay as they always were (no `cipher` field), byte for byte.
    return xchacha ? { scheme: 'sealed', cipher, tensors } : { scheme: 'sealed', tensors };
  } finally {
    wipe(key);
  }
}

/** The `sealedCipher` lock option, checked; the default when unset. */
export function sealedCipherOption(v: string | undefined): SealedCipher {
  if (v === undefined) return DEFAULT_SEALED_CIPHER;
  if (!(SEALED_CIPHERS as readonly string[]).includes(v)) {
    throw new LockOptionError('sealedCipher', '--cipher', SEALED_CIPHERS.join(' or '), v, `sealed: unknown cipher "${v}"; expected ${SEALED_CIPHERS.join(' or ')}`);
  }
  return v as SealedCipher;
}
