/**
 * `signflip` (HPNN), device side. Fold mode flips the sign bit of every keyed
 * channel's elements at load; input mode builds the ±1 key tensors once and
 * feeds them on every run, so the weights stay locked in memory.
 */
import { Fields } from '../../keystore/cbor.ts';
import { FormatError } from '../../keystore/errors.ts';
import { signflipLayerBits, signflipUnitBits } from './derive.ts';
import type { ApplyContext, RunHooks } from './hooks.ts';
import { readRange, type ChannelRange, type DeviceScheme } from './scheme.ts';
import type { TensorMap } from '../tensor.ts';

/** One locked layer of a `signflip` entry. */
export interface SignflipLayer {
  /** Name of the locked layer's weight tensor: it labels the layer's key bits. */
  weight: string;
  /** Output channels. */
  channels: number;
  /** Every range whose keyed channels were negated (weight, bias, batch-norm mean and bias). */
  ranges: ChannelRange[];
  /** Input mode: the graph input that takes this layer's ±1 key tensor, and its dims. */
  keyInput?: string;
  keyDims?: number[];
}

/** The manifest's `signflip` entry. */
export interface SignflipLock {
  scheme: 'signflip';
  mode: 'input' | 'fold';
  /** 0: one bit per channel of each layer; U > 0: channel j of any layer uses MAC-unit bit j mod U. */
  units: number;
  layers: SignflipLayer[];
}

/** Key bit per output channel of `layer` (1 = negated). */
export function layerBits(lock: SignflipLock, layer: SignflipLayer, modelKey: Uint8Array, unitBits?: Uint8Array): Uint8Array {
  if (lock.units === 0) return (signflipLayerBits(modelKey, layer.weight, layer.channels));
  const units = unitBits ?? signflipUnitBits(modelKey, lock.units);
  const bits = new Uint8Array(layer.channels);
  for (let j = 0; j < layer.channels; j++) bits[j] = units[j % lock.units];
  return bits;
}

/** Bytes per element of the dtypes a signflip range may have. */
const NEGATABLE: Readonly<Record<string, number>> = { float32: 4, float16: 2, bfloat16: 2, int8: 1, int32: 4 };

/**
 * Negates the elements of keyed channels in a range, in place:
 * - float32, float16, bfloat16: flips the sign bit (the top bit of the
 *   element's last byte, little-endian). IEEE negation is exact.
 * - int8 (quantized weights with zero point 0): two's complement, q -> -q.
 *   -128 has no positive counterpart in int8 and maps to itself (-(-128)
 *   wraps to -128), so such an element stays unnegated in the locked file.
 * - int32 (quantized biases): two's complement; -2^31 likewise maps to itself.
 * Each of these is its own inverse on every bit pattern, so locking and
 * unlocking are the same operation and unlocking is exact; the locker uses this
 * function too.
 */
export function negateChannels(model: Uint8Array, r: ChannelRange, channels: number, bits: Uint8Array): void {
  const size = NEGATABLE[r.dtype];
  if (!size) throw new FormatError(`signflip: range "${r.name}" is ${r.dtype}; expected float32, float16, bfloat16, int8 or int32`);
  if (r.length % size !== 0) throw new FormatError(`signflip: range "${r.name}" is ${r.length} bytes, not a whole number of ${r.dtype} elements`);
  const n = r.length / size;
  if (n % channels !== 0) throw new FormatError(`signflip: "${r.name}" has ${n} elements, not a multiple of ${channels} channels`);
  const per = n / channels;
  const negate = r.dtype === 'float32'
    // Little-endian float32: the sign bit is the top bit of the 4th byte.
    ? (i: number): void => { model[r.offset + 4 * i + 3] ^= 0x80; }
    : size === 2
      // float16 and bfloat16: the top bit of the 2nd byte.
      ? (i: number): void => { model[r.offset + 2 * i + 1] ^= 0x80; }
      : r.dtype === 'int8'
        ? (i: number): void => { model[r.offset + i] = (256 - model[r.offset + i]) & 0xff; }
        : int32Negator(model, r.offset);
  if (r.layout === 'outer') {
    for (let c = 0; c < channels; c++) {
      if (!bits[c]) continue;
      for (let k = c * per, end = k + per; k < end; k++) negate(k);
    }
  } else {
    for (let i = 0; i < n; i++) if (bits[i % channels]) negate(i);
  }
}

function int32Negator(model: Uint8Array, offset: number): (i: number) => void {
  const view = new DataView(model.buffer, model.byteOffset + offset);
  return (i) => view.setInt32(4 * i, -view.getInt32(4 * i, true) | 0, true);
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

/** The `signflip` scheme for the registry (keys/index.ts): fold mode restores at load, input mode feeds keys on every run. */
export const signflipScheme: DeviceScheme<SignflipLock> = {
  name: 'signflip',
  decodeEntry(f: Fields, modelBytes: number) {
    const layers = f.array('layers', 1 << 16).map((lv, j) => {
      const g = Fields.of(`${f.what}.layers[${j}]`, lv);
      const layer: SignflipLayer = {
        weight: g.text('weight'),
        channels: g.uint('channels'),
        ranges: g.array('ranges', 64).map((rv, k) => {
          const h = Fields.of(`${g.what}.ranges[${k}]`, rv);
          return { ...readRange(h, modelBytes), layout: h.oneOf('layout', ['outer', 'inner'] as const) };
        }),
      };
      if (g.has('keyInput')) {
        layer.keyInput = g.text('keyInput');
        layer.keyDims = g.array('keyDims', 8).map((d, k) => {
          if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1) throw new FormatError(`${g.what}.keyDims[${k}]: expected a positive integer`);
          return d;
        });
      }
      return layer;
    });
    return { scheme: 'signflip', mode: f.oneOf('mode', ['input', 'fold'] as const), units: f.uint('units'), layers };
  },
  restore: restoreSignflip,
  rewrites: (l) => l.mode === 'fold',
  hooks(l, ctx) {
    return l.mode === 'input' ? signflipHooks(l, ctx) : undefined;
  },
};

/** One line for `keylock inspect`: public parameters only. */
export function describeSignflip(l: SignflipLock): string {
  return `signflip ${l.mode} mode, ${l.units ? `${l.units} MAC units` : 'one bit per channel'}, ${l.layers.length} layer(s): ${l.layers.map((x) => `${x.weight}[${x.channels}]`).join(', ')}`;
}
