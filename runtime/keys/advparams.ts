/** `advparams`, device side: puts the original values of the perturbed parameters back at load. */
import { decodeCbor, type Fields } from '../../keystore/cbor.ts';
import { open, wipe } from '../../keystore/nacl.ts';
import { FormatError, TamperedError } from '../../keystore/errors.ts';
import { dtypeSize, isDType } from '../tensor.ts';
import { advparamsNonce, advparamsSecretboxKey } from './derive.ts';
import type { ApplyContext } from './hooks.ts';
import { readRanges, type DeviceScheme, type TensorRange } from './scheme.ts';

/** The manifest's `advparams` entry. */
export interface AdvparamsLock {
  scheme: 'advparams';
  /** The tensors the sealed key list indexes into. */
  tensors: TensorRange[];
  /** secretbox(MAC || ciphertext) of the CBOR key list [[tensor index, element index, original value bytes], ...]. */
  sealedKey: Uint8Array;
}

/** One perturbed parameter: which listed tensor, which element, and its original bytes. */
export type AdvparamsEntry = [tensor: number, element: number, original: Uint8Array];

/** Opens the sealed key list (the AdvParams key). */
export function openAdvparamsKey(lock: AdvparamsLock, ctx: ApplyContext): AdvparamsEntry[] {
  const key = advparamsSecretboxKey(ctx.modelKey);
  let plain: Uint8Array;
  try {
    plain = open(lock.sealedKey, advparamsNonce(ctx.modelId), key,
      () => new TamperedError('advparams: the sealed key list does not open under this model key'));
  } finally {
    wipe(key);
  }
  const list = decodeCbor(plain, 'advparams key list', 1 << 24);
  if (!Array.isArray(list)) throw new FormatError('advparams key list: expected an array');
  return list.map((e, i) => {
    if (!Array.isArray(e) || e.length !== 3 || !Number.isSafeInteger(e[0]) || !Number.isSafeInteger(e[1]) || !(e[2] instanceof Uint8Array)) {
      throw new FormatError(`advparams key list[${i}]: expected [tensor, element, original bytes]`);
    }
    return [e[0], e[1], e[2]] as AdvparamsEntry;
  });
}

/** Restores the original values in place. */
export function restoreAdvparams(model: Uint8Array, lock: AdvparamsLock, ctx: ApplyContext): void {
  for (const [ti, ei, orig] of openAdvparamsKey(lock, ctx)) {
    const t = lock.tensors[ti];
    if (!t || !isDType(t.dtype)) throw new FormatError(`advparams: entry names tensor ${ti}, which the lock does not list`);
    const size = dtypeSize(t.dtype);
    if (orig.byteLength !== size || ei < 0 || (ei + 1) * size > t.length) {
      throw new FormatError(`advparams: element ${ei} of "${t.name}" (${t.length / size} elements of ${size} bytes) is out of range`);
    }
    model.set(orig, t.offset + ei * size);
  }
}

/** The `advparams` scheme for the registry (keys/index.ts). */
export const advparamsScheme: DeviceScheme<AdvparamsLock> = {
  name: 'advparams',
  decodeEntry(f: Fields, modelBytes: number) {
    return { scheme: 'advparams', tensors: readRanges(f, 'tensors', modelBytes), sealedKey: f.bytes('sealedKey', { max: 1 << 24 }) };
  },
  restore: restoreAdvparams,
};

/** One line for `keylock inspect`: public parameters only. */
export function describeAdvparams(l: AdvparamsLock): string {
  return `advparams sealed key list over ${l.tensors.length} tensor(s)`;
}
