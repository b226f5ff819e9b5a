/**
 * Seeded pseudo-random numbers for the reference models: the data split and
 * batch shuffling must come out the same on every machine, which Math.random
 * cannot give.
 */

/**
 * mulberry32: a 32-bit-state generator, returns floats in [0,1). Small and
 * fast; statistically good enough for shuffling, never for cryptography.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Shuffles `a` in place with Fisher–Yates driven by `rand`, and returns it. */
export function shuffleInPlace<T extends { length: number; [i: number]: number }>(a: T, rand: () => number): T {
  for (let k = a.length - 1; k > 0; k--) {
    const j = Math.floor(rand() * (k + 1));
    const t = a[k]; a[k] = a[j]; a[j] = t;
  }
  return a;
}
