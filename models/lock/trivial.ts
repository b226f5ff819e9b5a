/**
 * Keys that lock nothing. A shuffle key is drawn uniformly among the m*m*C!
 * block permutations, so for a small block the identity comes up (1 in 24 keys
 * for a 2x2x1 block), and a signflip key over U units negates no channel with
 * probability 2^-U. Such a key gives a "locked" model equal to the plain one.
 * The pipeline checks every lock entry with the key it was locked under, once
 * the entries are final, for ONNX and TFLite alike (models/lock/index.ts).
 */
import { UnsupportedModelError } from '../../keystore/errors.ts';
import type { LockEntry } from '../../runtime/klm.ts';
import { layerBits } from '../../runtime/keys/signflip.ts';
import { shuffleBlockKey, wipeShuffleKey } from '../../runtime/keys/shuffle-key.ts';
import { signflipUnitBits } from '../../runtime/keys/derive.ts';

/**
 * Why `entry`, under `modelKey`, leaves the model unchanged, or undefined when it
 * does not. Only shuffle and signflip can: the other schemes encrypt or perturb
 * with key material that is never the identity.
 * @throws UnsupportedModelError for a shuffle block of one element without
 * negative/positive, which has no key but the identity.
 */
export function trivialLock(modelKey: Uint8Array, entry: LockEntry): string | undefined {
  if (entry.scheme === 'shuffle') {
    const size = entry.block * entry.block * entry.channels;
    if (size === 1 && !entry.negpos) {
      throw new UnsupportedModelError('shuffle: a 1x1 block of 1 channel has one permutation, the identity; use a block size above 1 or negative/positive (--negpos)');
    }
    const key = shuffleBlockKey(modelKey, entry.block, entry.channels, entry.negpos);
    try {
      const identity = key.perm.every((v, i) => v === i);
      const flips = key.flip?.includes(1) ?? false;
      if (identity && !flips) {
        return `shuffle: the key's permutation of the ${entry.block}x${entry.block}x${entry.channels} block (${size} positions) is the identity${entry.negpos ? ' and it flips no position' : ''}`;
      }
      return undefined;
    } finally {
      wipeShuffleKey(key);
    }
  }
  if (entry.scheme === 'signflip') {
    const units = entry.units ? signflipUnitBits(modelKey, entry.units) : undefined;
    try {
      for (const layer of entry.layers) {
        const bits = layerBits(entry, layer, modelKey, units);
        const keyed = bits.includes(1);
        bits.fill(0);
        if (keyed) return undefined;
      }
    } finally {
      units?.fill(0);
    }
    const over = entry.units ? `${entry.units} MAC unit bit(s)` : `${entry.layers.reduce((a, l) => a + l.channels, 0)} channel bit(s)`;
    return `signflip: the key negates no channel of the ${entry.layers.length} locked layer(s) (all ${over} are 0)`;
  }
  return undefined;
}
