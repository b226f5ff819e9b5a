/**
 * Turns a hand-drawn digit into an MNIST-like 28×28 input, the way the MNIST
 * digits themselves were made: crop to the ink, scale the longer side to 20
 * pixels keeping the aspect ratio (area averaging, which gives the soft grey
 * edges the model was trained on), then place it so that its centre of mass
 * sits at the centre of the 28×28 field. Pure functions on grey levels in
 * [0,1] (ink = 1), so they run and are tested anywhere.
 */

/** MNIST side. */
export const SIDE = 28;
/** The box the longer side of the ink is scaled to. */
export const BOX = 20;
/** Grey level below which a pixel counts as background when cropping. */
const INK = 0.05;

/** Bounding box of the ink, or undefined for an empty drawing. */
export function inkBox(gray: Float32Array, w: number, h: number): { x0: number; y0: number; x1: number; y1: number } | undefined {
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (gray[y * w + x] > INK) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  return x1 < 0 ? undefined : { x0, y0, x1: x1 + 1, y1: y1 + 1 };
}

/** Weights of source cells [0, n) covered by each of `m` equal target cells spanning [a, b). */
function coverage(a: number, b: number, m: number): { start: number; w: number[] }[] {
  const step = (b - a) / m;
  const out: { start: number; w: number[] }[] = [];
  for (let t = 0; t < m; t++) {
    const lo = a + t * step, hi = lo + step;
    const start = Math.floor(lo);
    const w: number[] = [];
    for (let s = start; s < hi; s++) w.push((Math.min(hi, s + 1) - Math.max(lo, s)) / step);
    out.push({ start, w });
  }
  return out;
}

/** Area-averages the region [x0,x1)×[y0,y1) of `gray` into a tw×th image. */
export function resample(gray: Float32Array, w: number, box: { x0: number; y0: number; x1: number; y1: number }, tw: number, th: number): Float32Array {
  const cx = coverage(box.x0, box.x1, tw);
  const cy = coverage(box.y0, box.y1, th);
  const out = new Float32Array(tw * th);
  for (let ty = 0; ty < th; ty++) {
    const ry = cy[ty];
    for (let tx = 0; tx < tw; tx++) {
      const rx = cx[tx];
      let acc = 0;
      for (let j = 0; j < ry.w.length; j++) {
        const row = (ry.start + j) * w;
        let r = 0;
        for (let i = 0; i < rx.w.length; i++) r += gray[row + rx.start + i] * rx.w[i];
        acc += r * ry.w[j];
      }
      out[ty * tw + tx] = acc;
    }
  }
  return out;
}

/** Centre of mass (pixel centres at i + 0.5), or the image centre when it is empty. */
export function centreOfMass(img: Float32Array, w: number, h: number): { x: number; y: number } {
  let m = 0, sx = 0, sy = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = img[y * w + x];
      m += v;
      sx += v * (x + 0.5);
      sy += v * (y + 0.5);
    }
  }
  return m > 0 ? { x: sx / m, y: sy / m } : { x: w / 2, y: h / 2 };
}

/**
 * A drawing (grey levels in [0,1], ink = 1, `w`×`h`) as a 28×28 MNIST input
 * (row-major, values in [0,1]); all zeros when nothing is drawn.
 */
export function toMnist(gray: Float32Array, w: number, h: number): Float32Array {
  if (gray.length !== w * h) throw new RangeError(`toMnist: expected ${w}×${h} = ${w * h} grey levels, got ${gray.length}`);
  const out = new Float32Array(SIDE * SIDE);
  const box = inkBox(gray, w, h);
  if (!box) return out;
  const bw = box.x1 - box.x0, bh = box.y1 - box.y0;
  const s = BOX / Math.max(bw, bh);
  const tw = Math.max(1, Math.round(bw * s)), th = Math.max(1, Math.round(bh * s));
  const small = resample(gray, w, box, tw, th);
  const c = centreOfMass(small, tw, th);
  const ox = Math.round(SIDE / 2 - c.x), oy = Math.round(SIDE / 2 - c.y);
  for (let y = 0; y < th; y++) {
    const yy = y + oy;
    if (yy < 0 || yy >= SIDE) continue;
    for (let x = 0; x < tw; x++) {
      const xx = x + ox;
      if (xx >= 0 && xx < SIDE) out[yy * SIDE + xx] = Math.min(1, Math.max(0, small[y * tw + x]));
    }
  }
  return out;
}

/** Softmax of logits, computed stably (subtract the max first). */
export function softmax(logits: ArrayLike<number>): number[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  const e = Array.from(logits, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

/** Index of the largest value (the first one on ties). */
export function argmax(v: ArrayLike<number>): number {
  let b = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[b]) b = i;
  return b;
}
