/**
 * `signflip` (HPNN), device side. Fold mode flips the sign bit of every keyed
 * channel's elements at load; input mode builds the ±1 key tensors once and
 * feeds them on every run, so the weights stay locked in memory.
 */
import type { ChannelRange, SignflipLayer, SignflipLock } from '../klm.ts';
import { FormatError } from '../errors.ts';
import { signflipLayerBits, signflipUnitBits } from './derive.ts';
import type { ApplyContext, RunHooks } from './hooks.ts';
import type { TensorMap } from '../tensor.ts';

/** Key bit per output channel of `layer` (1 = negated). */
export function layerBits(lock: SignflipLock, layer: SignflipLayer, modelKey: Uint8Array, unitBits?: Uint8Array): Uint8Array {
  if (lock.units === 0) return (signflipLayerBits(modelKey, layer.weight, layer.channels));
  const units = unitBits ?? signflipUnitBits(modelKey, lock.units);
  const bits = new Uint8Array(layer.channels);
  for (let j = 0; j < layer.channels; j++) bits[j] = units[j % lock.units];
  return bits;
}

/**
 * Negates (flips the sign bit of) the elements of keyed channels in a float32
 * range. Negation is exact in IEEE arithmetic, so locking and unlocking are the
 * same operation; the locker uses this function too.
 */
export function negateChannels(model: Uint8Array, r: ChannelRange, channels: number, bits: Uint8Array): void {
  if (r.dtype !== 'float32') throw new FormatError(`signflip: range "${r.name}" is ${r.dtype}; only float32 can be negated by its sign bit`);
  const n = r.length / 4;
  if (n % channels !== 0) throw new FormatError(`signflip: "${r.name}" has ${n} elements, not a multiple of ${channels} channels`);
  const per = n / channels;
  // Little-endian float32: the sign bit is the top bit of the 4th byte.
  if (r.layout === 'outer') {
    for (let c = 0; c < channels; c++) {
      if (!bits[c]) continue;
      const start = r.offset + c * per * 4 + 3;
      for (let k = 0; k < per; k++) model[start + 4 * k] ^= 0x80;
    }
  } else {
    for (let i = 0; i < n; i++) if (bits[i % channels]) model[r.offset + 4 * i + 3] ^= 0x80;
  }
}

function unitBitsOf(lock: SignflipLock, modelKey: Uint8Array): Uint8Array | undefined {
  return lock.units ? signflipUnitBits(modelKey, lock.units) : undefined;
}

/** Fold mode: un-negates the keyed channels in place at load. */
export function restoreSignflip(model: Uint8Array, lock: SignflipLock, ctx: ApplyContext): void {
  if (lock.mode !== 'fold') return;
  const units = unitBitsOf(lock, ctx.modelKey);
  for (const layer of lock.layers) {
    const bits = layerBits(lock, layer, ctx.modelKey, units);
    for (const r of layer.ranges) negateChannels(model, r, layer.channels, bits);
    bits.fill(0);
  }
  units?.fill(0);
}

/** Input mode: the ±1 key tensors, built once per loaded model. */
export function signflipHooks(lock: SignflipLock, ctx: ApplyContext): RunHooks {
  const feeds: TensorMap = {};
  if (lock.mode === 'input') {
    const units = unitBitsOf(lock, ctx.modelKey);
    for (const layer of lock.layers) {
      if (!layer.keyInput || !layer.keyDims) throw new FormatError(`signflip: input-mode layer "${layer.weight}" names no key input`);
      // Caught here, at load, rather than as an opaque backend error on the first run.
      const elements = layer.keyDims.reduce((a, b) => a * b, 1);
      if (elements !== layer.channels) throw new FormatError(`signflip: key dims [${layer.keyDims.join(',')}] of layer "${layer.weight}" hold ${elements} values, expected ${layer.channels} (one per channel)`);
      const bits = layerBits(lock, layer, ctx.modelKey, units);
      const data = new Float32Array(layer.channels);
      for (let j = 0; j < layer.channels; j++) data[j] = bits[j] ? -1 : 1;
      bits.fill(0);
      feeds[layer.keyInput] = { dtype: 'float32', dims: layer.keyDims, data };
    }
    units?.fill(0);
  }
  return { feeds, wipe: () => { for (const t of Object.values(feeds)) (t.data as Float32Array).fill(0); } };
}
