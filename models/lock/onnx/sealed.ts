/**
 * `sealed`, vendor side: every learned-parameter tensor is encrypted in place
 * with XChaCha20-Poly1305 (the default; XSalsa20-Poly1305 on request, as files
 * were before) under a key derived from the model key and a nonce derived from
 * (model id, tensor name). The tags go to the manifest, so the file keeps its
 * length and stays a structurally valid model of the same shape.
 */
import { randomBytes, secretboxDetached, wipe } from '../../../keystore/nacl.ts';
import { aesGcmSealDetached, xchachaSealDetached } from '../../../keystore/aead.ts';
import { UnsupportedModelError } from '../../../keystore/errors.ts';
import {
  SEALED_SALT_BYTES, sealedAesGcmKey, sealedAesGcmNonce, sealedNonce, sealedSecretboxKey, sealedXchachaKey, sealedXchachaNonce,
} from '../../../runtime/keys/derive.ts';
import { DEFAULT_SEALED_CIPHER, INLINE_DTYPES, SEALED_CIPHERS, type SealedCipher } from '../../../runtime/keys/sealed.ts';
import type { SealedLock, TensorRange } from '../../../runtime/klm.ts';
import type { InitializerInfo, TensorPlace } from '../../onnx/layout.ts';
import { makeValueInfo } from '../../onnx/builder.ts';
import { dataTypeName } from '../../onnx/dtypes.ts';
import { isGraphOutput, replaceUses, uniqueName } from '../../onnx/graph.ts';
import { LockOptionError, PARAMETER_DTYPES, rangeOf, type LockContext, type OnnxLocker } from '../types.ts';

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
    // Inline: the ciphertext of each tensor prepareGraph moved out of the graph is
    // fed to the graph input that took its place.
    const moved = INLINE_MOVES.get(ctx);
    if (moved?.size) {
      const dims = new Map(targets.map((i) => [i.name, i.dims]));
      for (const t of lock.tensors) {
        const input = moved.get(t.name);
        if (input !== undefined) { t.input = input; t.dims = [...dims.get(t.name)!]; }
      }
      const n = lock.tensors.filter((t) => t.input !== undefined);
      ctx.report(`sealed inline: ${n.length} of ${lock.tensors.length} tensor(s), ${n.reduce((a, t) => a + t.length, 0)} bytes, are graph inputs the device decrypts only during a run`);
    }
    return lock;
  },
  /**
   * Inline: each chosen initializer stays where it is, under its name, and is
   * sealed like any other tensor, but no node reads it any more: its readers
   * read a new graph input instead. The backend drops the unread initializer
   * when it builds the session; the device feeds the input from the decrypted
   * bytes during each run. (An initializer that is also listed as a graph input
   * would be simpler, but onnxruntime-web lists only the non-initializer inputs
   * and refuses to feed the others.)
   */
  prepareGraph(model, ctx) {
    const params = model.graph.initializer
      .filter((t) => PARAMETER_DTYPES.has(dataTypeName(t.data_type ?? 0)) && (t.raw_data?.byteLength ?? 0) > 0)
      .map((t) => ({ name: t.name ?? '', dtype: dataTypeName(t.data_type ?? 0) }));
    const inline = inlineChoice(params, ctx);
    if (!inline.size) return;
    const moves = new Map<string, string>();
    const inputs = new Set(model.graph.input.map((v) => v.name));
    for (const t of model.graph.initializer) {
      const name = t.name ?? '';
      if (!inline.has(name)) continue;
      if (inputs.has(name)) throw new UnsupportedModelError(`sealed inline: initializer "${name}" is also a graph input (an overridable default); keylock cannot tell the caller's feed from its own`);
      if (isGraphOutput(model, name)) throw new UnsupportedModelError(`sealed inline: initializer "${name}" is a graph output; only weights that nodes read can be fed during a run`);
      const input = uniqueName(model, `keylock_inline/${name}`);
      model.graph.input.push(makeValueInfo(input, t.data_type!, (t.dims ?? []).map((d) => Number(d))));
      replaceUses(model, name, input);
      moves.set(name, input);
    }
    INLINE_MOVES.set(ctx, moves);
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

/** Per lock: each inline initializer and the graph input that took its readers (initializer name -> input name). */
const INLINE_MOVES = new WeakMap<LockContext, Map<string, string>>();

/** Schemes `sealed` inline combines with: those that leave the sealed bytes alone at load. */
const INLINE_WITH = new Set(['sealed', 'shuffle', 'signflip']);

/**
 * The tensors to seal inline (`sealedInline`), from the parameter initializers:
 * empty without the option; LockOptionError for a name that is not one of them
 * or a scheme it cannot combine with; UnsupportedModelError for a dtype keylock
 * does not feed.
 */
export function inlineChoice(params: readonly { name: string; dtype: string }[], ctx: Pick<LockContext, 'opts' | 'schemes'>): Set<string> {
  const opt = ctx.opts.sealedInline;
  if (opt === undefined || opt === false) return new Set();
  if (ctx.opts.sealedCipher === 'aes-256-gcm') {
    throw new LockOptionError('sealedInline', '--inline', 'sealedCipher xchacha20-poly1305 or xsalsa20-poly1305', 'aes-256-gcm',
      'sealed inline: inline tensors are decrypted synchronously before every run, which WebCrypto cannot do; seal them with xchacha20-poly1305 (the default) or drop sealedInline');
  }
  const other = (ctx.schemes ?? []).find((s) => !INLINE_WITH.has(s));
  if (other) {
    throw new LockOptionError('sealedInline', '--inline', 'sealed alone or with shuffle, signflip', other,
      `sealed inline: ${other} restores its bytes at load, inside the sealed ranges, and cannot be combined with inline tensors; lock with sealed alone or with shuffle/signflip`);
  }
  if (ctx.opts.signflipMode === 'fold' && ctx.schemes?.includes('signflip')) {
    throw new LockOptionError('sealedInline', '--inline', 'signflip in input mode', 'fold',
      'sealed inline: signflip in fold mode negates its channels back at load, inside the sealed ranges; use signflip input mode (the ONNX default) with inline tensors');
  }
  let chosen = params;
  if (opt !== true) {
    const byName = new Map(params.map((p) => [p.name, p]));
    const unknown = opt.find((n) => !byName.has(n));
    if (unknown !== undefined) {
      throw new LockOptionError('sealedInline', '--inline', `names of parameter initializers, e.g. ${params.slice(0, 3).map((p) => JSON.stringify(p.name)).join(', ')}`, unknown,
        `sealed inline: "${unknown}" is not a parameter initializer of the model (${params.length} are)`);
    }
    chosen = opt.map((n) => byName.get(n)!);
  }
  const bad = chosen.find((p) => !Object.hasOwn(INLINE_DTYPES, p.dtype));
  if (bad) throw new UnsupportedModelError(`sealed inline: tensor "${bad.name}" is ${bad.dtype}; inline tensors are fed as ${Object.keys(INLINE_DTYPES).join(', ')} (seal it at load instead: leave it out of the inline list)`);
  return new Set(chosen.map((p) => p.name));
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
  const names = new Set<string>();
  for (const r of ranges) {
    // The nonce comes from the name: two ranges of one name would share a nonce under one key.
    if (names.has(r.name)) throw new UnsupportedModelError(`sealed: two tensors are named "${r.name}"; each sealed tensor's nonce comes from its name, so names must be unique`);
    names.add(r.name);
  }
  const key = cipher === 'xchacha20-poly1305' ? sealedXchachaKey(ctx.modelKey) : cipher === 'aes-256-gcm' ? sealedAesGcmKey(ctx.modelKey) : sealedSecretboxKey(ctx.modelKey);
  // A fresh salt per lock (mixed into every nonce): re-locking a changed model under the same
  // key and model id never repeats a (key, nonce) pair. XSalsa20 entries take none (below).
  const salt = cipher === 'xsalsa20-poly1305' ? undefined : randomBytes(SEALED_SALT_BYTES);
  try {
    const tensors = ranges.map((r) => {
      const range = bytes.subarray(r.offset, r.offset + r.length);
      if (cipher === 'xchacha20-poly1305') return { ...r, mac: xchachaSealDetached(range, sealedXchachaNonce(ctx.modelId, r.name, salt), key) };
      if (cipher === 'aes-256-gcm') return { ...r, mac: aesGcmSealDetached(range, sealedAesGcmNonce(ctx.modelId, r.name, salt!), key) };
      const { cipher: c, mac } = secretboxDetached(range, sealedNonce(ctx.modelId, r.name), key);
      range.set(c);
      return { ...r, mac: new Uint8Array(mac) };
    });
    // XSalsa20 entries stay as they always were (no `cipher` field, no salt), byte for byte:
    // the cipher for runtimes that predate both, whose nonce depends on (model id, tensor name) alone.
    return salt ? { scheme: 'sealed', cipher, salt, tensors } : { scheme: 'sealed', tensors };
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
