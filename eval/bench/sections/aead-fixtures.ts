/**
 * The bytes section 8 opens, in Node and in Chromium alike: `TENSORS` float32
 * tensors of `total / TENSORS` bytes each at odd offsets (as raw_data sits in a
 * protobuf), sealed once per cipher under one model key and id.
 */
import { secretboxDetached } from '../../../keystore/nacl.ts';
import { sealedNonce, sealedSecretboxKey } from '../../../runtime/keys/derive.ts';
import type { SealedLock } from '../../../runtime/keys/sealed.ts';
import { sealRanges } from '../../../models/lock/onnx/sealed.ts';
import { seededFloats } from '../stats.ts';

export const TENSORS = 8;

/** A model of its bytes and the lock entry that opens it. */
export interface SealedFixture { model: Uint8Array; lock: SealedLock }

/** The plain bytes and the same bytes sealed with XChaCha20-Poly1305, AES-256-GCM and XSalsa20-Poly1305 (the files before the `cipher` field). */
export function sealedFixtures(total: number, seed: number, modelId: string, modelKey: Uint8Array): { plain: Uint8Array; xc: SealedFixture; aes: SealedFixture; xs: SealedFixture } {
  const per = total / TENSORS;
  const size = TENSORS * (per + 3) + 1;
  const plain = new Uint8Array(seededFloats(Math.ceil(size / 4), seed).buffer, 0, size);
  const ranges = Array.from({ length: TENSORS }, (_, i) => ({ name: `t${i}`, offset: i * (per + 3) + 1, length: per, dtype: 'float32' }));
  const sealWith = (sealedCipher: 'xchacha20-poly1305' | 'aes-256-gcm'): SealedFixture => {
    const model = plain.slice();
    return { model, lock: sealRanges(model, ranges, { modelId, modelKey, opts: { sealedCipher } }) };
  };
  const xsModel = plain.slice();
  const xsKey = sealedSecretboxKey(modelKey);
  const xs: SealedLock = { scheme: 'sealed', tensors: [] };
  for (const r of ranges) {
    const d = xsModel.subarray(r.offset, r.offset + r.length);
    const { cipher, mac } = secretboxDetached(d, sealedNonce(modelId, r.name), xsKey);
    d.set(cipher);
    xs.tensors.push({ ...r, mac: mac.slice() });
  }
  return { plain, xc: sealWith('xchacha20-poly1305'), aes: sealWith('aes-256-gcm'), xs: { model: xsModel, lock: xs } };
}
