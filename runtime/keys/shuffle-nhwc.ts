/**
 * The block shuffle of docs/SPEC.md §6.1 on NHWC float32 images (TFLite's
 * layout). The key is the same (runtime/keys/shuffle-key.ts) and so is the
 * image it produces: only the memory order differs from shuffleImageNCHW.
 * Within a block, position k = (p1·m + p2)·C + c is already NHWC order.
 *
 * The index tables reveal the permutation: their owner (a run hook, the
 * vendor's absorption) wipes them with `wipeNhwcPlan`.
 */
import type { ShuffleBlockKey } from './shuffle-key.ts';

/** Index tables for one H×W×C image. */
export interface NhwcPlan {
  readonly h: number;
  readonly w: number;
  readonly c: number;
  /** Locked pixel o (NHWC order within one image) takes plain pixel gather[o]. */
  readonly gather: Uint32Array;
  /** Output positions that take 1 − value (negative/positive). */
  readonly flipAt: Uint32Array;
}

/**
 * Builds the tables for an image of H×W with the key's C channels.
 * RangeError when H or W is not a multiple of the block size.
 */
export function nhwcPlan(key: ShuffleBlockKey, h: number, w: number): NhwcPlan {
  const { m, channels: c, perm, flip } = key;
  for (const [what, v] of [['H', h], ['W', w]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`shuffle: ${what} must be a positive integer, got ${v}`);
  }
  if (h % m !== 0 || w % m !== 0) throw new RangeError(`shuffle: expected H and W divisible by block size ${m}, got ${h}x${w}`);
  const gather = new Uint32Array(h * w * c);
  const flips: number[] = [];
  for (let y = 0; y < h; y++) {
    const by = y - (y % m);
    const p1 = y % m;
    for (let x = 0; x < w; x++) {
      const bx = x - (x % m);
      const p2 = x % m;
      for (let ch = 0; ch < c; ch++) {
        const k = (p1 * m + p2) * c + ch;
        const src = perm[k];
        const sc = src % c;
        const sp2 = ((src - sc) / c) % m;
        const sp1 = Math.floor(src / (m * c));
        const o = (y * w + x) * c + ch;
        gather[o] = ((by + sp1) * w + bx + sp2) * c + sc;
        if (flip !== null && flip[k] === 1) flips.push(o);
      }
    }
  }
  return { h, w, c, gather, flipAt: Uint32Array.from(flips) };
}

/**
 * Locks `n` NHWC images from `src` into `dst` (same length, not overlapping).
 * RangeError on a length mismatch.
 */
export function shuffleNHWC(src: Float32Array, dst: Float32Array, n: number, plan: NhwcPlan): void {
  const size = plan.gather.length;
  if (src.length !== n * size || dst.length !== n * size) {
    throw new RangeError(`shuffle: expected src and dst of ${n * size} floats (N*H*W*C), got ${src.length} and ${dst.length}`);
  }
  if (src.buffer === dst.buffer && src.byteOffset < dst.byteOffset + dst.byteLength && dst.byteOffset < src.byteOffset + src.byteLength) {
    throw new RangeError('shuffle: src and dst must not overlap');
  }
  const { gather, flipAt } = plan;
  for (let img = 0, base = 0; img < n; img++, base += size) {
    for (let o = 0; o < size; o++) dst[base + o] = src[base + gather[o]];
    for (let f = 0; f < flipAt.length; f++) {
      const o = base + flipAt[f];
      dst[o] = 1 - dst[o];
    }
  }
}

/** Zeroes a plan's tables. */
export function wipeNhwcPlan(plan: NhwcPlan): void {
  plan.gather.fill(0);
  plan.flipAt.fill(0);
}
