/**
 * The block-shuffle key and its application to NCHW float32 images, shared by the
 * vendor (training data, post-hoc locking, attacks) and the device (every input).
 * Labels and the permutation come from derive.ts.
 *
 * The image is cut into m x m blocks; a block is flattened row, column, channel,
 * so block position k = (p1*m + p2)*C + c. The locked block is y[k] = x[perm[k]];
 * with negative/positive on, y[k] becomes 1 - y[k] (binary32 subtraction) where
 * flip[k] = 1. The same permutation and flips apply to every block.
 */
import { invertPermutation, shuffleNegposBits, shufflePermutation } from './derive.ts';

/** The key of the shuffle lock for one block size and channel count. */
export interface ShuffleBlockKey {
  /** Block side in pixels. */
  readonly m: number;
  /** Channels C; the key only fits images with this many channels. */
  readonly channels: number;
  /** Output block position k takes input block position perm[k]. */
  readonly perm: Uint32Array;
  /** inverse[perm[k]] = k. */
  readonly inverse: Uint32Array;
  /** 1 where output position k is mapped x -> 1 - x; null without negative/positive. */
  readonly flip: Uint8Array | null;
}

/**
 * Derives the shuffle key: permutation purpose `perm/m=<m>/c=<C>` and, with
 * `negpos`, flip bits purpose `negpos/m=<m>/c=<C>`.
 * @throws RangeError on a wrong-size key or bad m / C.
 */
export function shuffleBlockKey(modelKey: Uint8Array, m: number, channels: number, negpos: boolean): ShuffleBlockKey {
  const perm = shufflePermutation(modelKey, m, channels);
  const flip = negpos ? shuffleNegposBits(modelKey, m, channels) : null;
  return { m, channels, perm, inverse: invertPermutation(perm), flip };
}

/**
 * Per-image index tables, built once per (key, H, W) and reused for every input.
 * Cached by key object identity, so a key must not be mutated after first use.
 */
interface ImagePlan {
  /** Locked image[o] = plain image[gather[o]] within one C*H*W image. */
  readonly gather: Uint32Array;
  /** Output positions o (within one image) that take 1 - value. */
  readonly flipAt: Uint32Array;
}

const plans = new WeakMap<ShuffleBlockKey, Map<number, ImagePlan>>();

function buildPlan(key: ShuffleBlockKey, h: number, w: number): ImagePlan {
  const { m, channels: c, perm, flip } = key;
  const hw = h * w;
  const gather = new Uint32Array(c * hw);
  const flips: number[] = [];
  for (let ch = 0; ch < c; ch++) {
    for (let y = 0; y < h; y++) {
      const by = y - (y % m);
      const p1 = y % m;
      for (let x = 0; x < w; x++) {
        const bx = x - (x % m);
        const k = (p1 * m + (x % m)) * c + ch;
        const src = perm[k];
        const sc = src % c;
        const sp2 = ((src - sc) / c) % m;
        const sp1 = Math.floor(src / (m * c));
        const o = ch * hw + y * w + x;
        gather[o] = sc * hw + (by + sp1) * w + bx + sp2;
        if (flip !== null && flip[k] === 1) flips.push(o);
      }
    }
  }
  return { gather, flipAt: Uint32Array.from(flips) };
}

/** The plan used last: one input shape per model is the common case, and this skips two map lookups per call. */
let last: { key: ShuffleBlockKey; h: number; w: number; plan: ImagePlan } | undefined;

function planFor(key: ShuffleBlockKey, h: number, w: number): ImagePlan {
  if (last !== undefined && last.key === key && last.h === h && last.w === w) return last.plan;
  let byShape = plans.get(key);
  if (byShape === undefined) {
    byShape = new Map();
    plans.set(key, byShape);
  }
  const id = h * 0x1_0000_0000 + w;
  let plan = byShape.get(id);
  if (plan === undefined) {
    plan = buildPlan(key, h, w);
    byShape.set(id, plan);
  }
  last = { key, h, w, plan };
  return plan;
}

function checkDim(what: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 1 || v > 0xffff_ffff) throw new RangeError(`shuffle: ${what} must be a positive integer, got ${v}`);
}

function checkArgs(src: Float32Array, dst: Float32Array, n: number, c: number, h: number, w: number, key: ShuffleBlockKey): void {
  if (!(src instanceof Float32Array) || !(dst instanceof Float32Array)) {
    throw new TypeError('shuffle: src and dst must be Float32Array');
  }
  // Called on every input: checked one by one, without building a list per call.
  checkDim('N', n);
  checkDim('C', c);
  checkDim('H', h);
  checkDim('W', w);
  if (c !== key.channels) throw new RangeError(`shuffle: expected ${key.channels} channels (the key's C), got ${c}`);
  if (h % key.m !== 0 || w % key.m !== 0) {
    throw new RangeError(`shuffle: expected H and W divisible by block size ${key.m}, got ${h}x${w}`);
  }
  const len = n * c * h * w;
  if (src.length !== len || dst.length !== len) {
    throw new RangeError(`shuffle: expected src and dst of ${len} floats (N*C*H*W), got ${src.length} and ${dst.length}`);
  }
  if (
    src.buffer === dst.buffer &&
    src.byteOffset < dst.byteOffset + dst.byteLength &&
    dst.byteOffset < src.byteOffset + src.byteLength
  ) {
    throw new RangeError('shuffle: src and dst must not overlap');
  }
}

/**
 * Locks N images (NCHW float32) from `src` into `dst`. Allocation-free after the
 * first call for a given (key, H, W).
 * @throws RangeError on shape mismatch (C not the key's, H or W not divisible by m,
 * wrong lengths) or if src and dst overlap.
 */
export function shuffleImageNCHW(
  src: Float32Array,
  dst: Float32Array,
  n: number,
  c: number,
  h: number,
  w: number,
  key: ShuffleBlockKey,
): void {
  checkArgs(src, dst, n, c, h, w, key);
  shuffleImagesChecked(src, dst, n, h, w, key);
}

/**
 * shuffleImageNCHW without the argument checks, for a caller that has made
 * them (the device's run hook checks dtype, layout, C and divisibility, and
 * `run()` the lengths; its buffer is its own). Wrong arguments here give wrong
 * output, not an error.
 */
export function shuffleImagesChecked(src: Float32Array, dst: Float32Array, n: number, h: number, w: number, key: ShuffleBlockKey): void {
  const { gather, flipAt } = planFor(key, h, w);
  const size = gather.length;
  if (n === 1) {
    // One image (the usual inference): the same loops without the image offset, measurably faster.
    for (let o = 0; o < size; o++) dst[o] = src[gather[o]];
    for (let f = 0; f < flipAt.length; f++) {
      const o = flipAt[f];
      dst[o] = 1 - dst[o];
    }
    return;
  }
  for (let img = 0, base = 0; img < n; img++, base += size) {
    for (let o = 0; o < size; o++) dst[base + o] = src[base + gather[o]];
    for (let f = 0; f < flipAt.length; f++) {
      const o = base + flipAt[f];
      dst[o] = 1 - dst[o];
    }
  }
}

/**
 * Inverse of shuffleImageNCHW. Exact without negative/positive; with it, values
 * in [0, 1] come back within 2^-25 (exactly when 1 - x is exact, e.g. multiples of 2^-24).
 * @throws RangeError as shuffleImageNCHW.
 */
export function unshuffleImageNCHW(
  src: Float32Array,
  dst: Float32Array,
  n: number,
  c: number,
  h: number,
  w: number,
  key: ShuffleBlockKey,
): void {
  checkArgs(src, dst, n, c, h, w, key);
  const { gather, flipAt } = planFor(key, h, w);
  const size = gather.length;
  for (let img = 0, base = 0; img < n; img++, base += size) {
    for (let o = 0; o < size; o++) dst[base + gather[o]] = src[base + o];
    for (let f = 0; f < flipAt.length; f++) {
      const o = flipAt[f];
      dst[base + gather[o]] = 1 - src[base + o];
    }
  }
}

/**
 * Zeroes a shuffle key and the index tables cached for it (they reveal the
 * permutation). Call when the model is unloaded or the device disables itself.
 */
export function wipeShuffleKey(key: ShuffleBlockKey): void {
  key.perm.fill(0);
  key.inverse.fill(0);
  key.flip?.fill(0);
  if (last?.key === key) last = undefined;
  const byShape = plans.get(key);
  if (byShape !== undefined) {
    for (const plan of byShape.values()) {
      plan.gather.fill(0);
      plan.flipAt.fill(0);
    }
    plans.delete(key);
  }
}
