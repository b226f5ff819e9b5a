/**
 * PNG and JPEG images as model inputs: decoded to 8-bit RGBA (pngjs, jpeg-js),
 * turned gray or kept RGB by the model's channel count, resized to the input's
 * H×W with bilinear sampling, scaled and normalised, written NCHW or NHWC.
 *
 * Resizing uses half-pixel centres without antialiasing (OpenCV INTER_LINEAR,
 * `tf.image.resize(..., antialias=False)`), so an image already at the input
 * size passes through unchanged. Alpha is ignored. Gray from colour is BT.601
 * luma (PIL's `convert('L')` weights).
 */
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import { FormatError, UnsupportedModelError } from '../../keystore/errors.ts';
import { shapeSize, type TensorData } from '../../runtime/tensor.ts';
import { RecordOptionError } from './options.ts';
import { convert, isDynamic, sampleDims, showDims, showInput, type Dim, type InputSpec } from './spec.ts';

/** A decoded image: 8-bit RGBA, row-major. */
export interface Raster {
  width: number;
  height: number;
  rgba: Uint8Array;
  format: 'PNG' | 'JPEG';
}

/** Decodes a PNG or JPEG, told apart by their magic bytes. FormatError for anything else or a broken file. */
export function decodeImage(bytes: Uint8Array, what: string): Raster {
  const isPng = bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
  const isJpeg = bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
  try {
    if (isPng) {
      // pngjs scales 16-bit samples to 8 bits and expands palettes and gray to RGBA.
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      return { width: png.width, height: png.height, rgba: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.byteLength), format: 'PNG' };
    }
    if (isJpeg) {
      const j = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true });
      return { width: j.width, height: j.height, rgba: j.data, format: 'JPEG' };
    }
  } catch (e) {
    throw new FormatError(`${what}: not a readable ${isPng ? 'PNG' : 'JPEG'} (${(e as Error).message})`, { cause: e });
  }
  const head = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
  throw new FormatError(`${what}: expected a PNG (89 50 4e 47) or JPEG (ff d8 ff), got bytes ${head || '(empty file)'}`);
}

/** Where an image goes in a model input. */
export interface ImageGeometry {
  layout: 'nchw' | 'nhwc';
  channels: 1 | 3;
  /** One sample's dims; the H and W axes may be dynamic (the image's size then). */
  dims: Dim[];
  /** Axis indices in `dims`; `c` is absent for a 2-D or [N,H,W] input (gray, no channel axis). */
  c?: number;
  h: number;
  w: number;
  notes: string[];
}

const isChan = (d: Dim): boolean => d === 1 || d === 3;

/**
 * Reads the image layout off an input shape: NCHW when the axis after batch is
 * 1 or 3 and the last is not, NHWC the other way round; `layout` overrides.
 * [C,H,W] / [H,W,C] without batch and [H,W] (gray) work too.
 */
export function imageGeometry(spec: InputSpec, layout?: 'nchw' | 'nhwc'): ImageGeometry {
  const dims = sampleDims(spec);
  const notes: string[] = [];
  const ambiguous = (): never => {
    throw new RecordOptionError(`cannot tell whether ${showInput(spec)} is NCHW or NHWC`, 'give --layout nchw or --layout nhwc');
  };
  let g: Omit<ImageGeometry, 'channels' | 'notes' | 'dims'>;
  if (dims.length === 4) {
    const first = isChan(dims[1]);
    const last = isChan(dims[3]);
    const l = layout ?? (first && !last ? 'nchw' : last && !first ? 'nhwc' : ambiguous());
    g = l === 'nchw' ? { layout: l, c: 1, h: 2, w: 3 } : { layout: l, c: 3, h: 1, w: 2 };
  } else if (dims.length === 3) {
    const l = layout ?? (isChan(dims[2]) && !isChan(dims[0]) ? 'nhwc' : isChan(dims[0]) ? 'nchw' : ambiguous());
    g = l === 'nchw' ? { layout: l, c: 0, h: 1, w: 2 } : { layout: l, c: 2, h: 0, w: 1 };
  } else if (dims.length === 2) {
    g = { layout: layout ?? 'nchw', h: 0, w: 1 };
  } else {
    throw new UnsupportedModelError(`${showInput(spec)} is not an image input: expected [N,C,H,W], [N,H,W,C], [C,H,W], [H,W,C] or [H,W]`);
  }
  let channels: 1 | 3 = 1;
  if (g.c !== undefined) {
    const c = dims[g.c];
    if (isDynamic(c)) {
      channels = 3;
      notes.push(`${showInput(spec)}: the channel axis is dynamic; images written as RGB (3 channels)`);
    } else if (c === 1 || c === 3) {
      channels = c;
    } else {
      throw new UnsupportedModelError(`${showInput(spec)} takes ${c} channels (${g.layout.toUpperCase()}); images give 1 (gray) or 3 (RGB)`);
    }
  }
  const other = dims.findIndex((d, i) => isDynamic(d) && i !== g.h && i !== g.w && i !== g.c);
  if (other >= 0) throw new UnsupportedModelError(`${showInput(spec)}: axis ${other} is dynamic and is not H, W or C; an image cannot size it`);
  return { ...g, channels, dims, notes };
}

/** Image value options (see RecordOptions). */
export interface PixelOptions {
  scale: number;
  mean?: number[];
  std?: number[];
  invert?: boolean;
}

function axisMap(src: number, dst: number): { i0: Int32Array; i1: Int32Array; f: Float64Array } {
  const i0 = new Int32Array(dst);
  const i1 = new Int32Array(dst);
  const f = new Float64Array(dst);
  for (let k = 0; k < dst; k++) {
    const p = Math.min(Math.max((k + 0.5) * (src / dst) - 0.5, 0), src - 1);
    i0[k] = Math.floor(p);
    i1[k] = Math.min(i0[k] + 1, src - 1);
    f[k] = p - i0[k];
  }
  return { i0, i1, f };
}

/** Bilinear resize of one plane; returns `src` itself when the size is unchanged. */
export function resizeBilinear(src: Float64Array, sw: number, sh: number, dw: number, dh: number): Float64Array {
  if (sw === dw && sh === dh) return src;
  const xs = axisMap(sw, dw);
  const ys = axisMap(sh, dh);
  const out = new Float64Array(dw * dh);
  for (let y = 0; y < dh; y++) {
    const r0 = ys.i0[y] * sw;
    const r1 = ys.i1[y] * sw;
    const fy = ys.f[y];
    for (let x = 0; x < dw; x++) {
      const a = xs.i0[x];
      const b = xs.i1[x];
      const fx = xs.f[x];
      // a + (b - a) * f keeps a exactly when f is 0.
      const top = src[r0 + a] + (src[r0 + b] - src[r0 + a]) * fx;
      const bottom = src[r1 + a] + (src[r1 + b] - src[r1 + a]) * fx;
      out[y * dw + x] = top + (bottom - top) * fy;
    }
  }
  return out;
}

/** The image's planes: 3 of R, G, B, or 1 of gray; `colour` when some pixel had R, G, B differ. */
function planes(r: Raster, channels: 1 | 3): { planes: Float64Array[]; colour: boolean } {
  const n = r.width * r.height;
  const p = Array.from({ length: channels }, () => new Float64Array(n));
  let colour = false;
  for (let i = 0; i < n; i++) {
    const R = r.rgba[4 * i];
    const G = r.rgba[4 * i + 1];
    const B = r.rgba[4 * i + 2];
    const grey = R === G && G === B;
    if (!grey) colour = true;
    if (channels === 3) {
      p[0][i] = R; p[1][i] = G; p[2][i] = B;
    } else {
      p[0][i] = grey ? R : 0.299 * R + 0.587 * G + 0.114 * B;
    }
  }
  return { planes: p, colour };
}

function perChannel(list: number[] | undefined, channels: number, flag: string, fallback: number): number[] {
  if (!list) return new Array<number>(channels).fill(fallback);
  if (list.length === 1) return new Array<number>(channels).fill(list[0]);
  if (list.length !== channels) throw new RecordOptionError(`--${flag} has ${list.length} values; the model's images have ${channels} channel(s): expected ${channels === 1 ? '1 value' : `1 or ${channels}`}`);
  return list;
}

/** One image as one sample of `spec`, with what was done to it. */
export interface ImageSample {
  tensor: TensorData;
  resized: boolean;
  /** True when some pixel had R, G and B differ. */
  colour: boolean;
  /** True when colour was folded into one gray channel. */
  toGray: boolean;
}

/** Converts a decoded image to one sample of `spec`, laid out by `geo`. */
export function imageTensor(r: Raster, spec: InputSpec, geo: ImageGeometry, opts: PixelOptions, what: string): ImageSample {
  const dims = geo.dims.map((d, i) => (i === geo.h ? (isDynamic(d) ? r.height : d) : i === geo.w ? (isDynamic(d) ? r.width : d) : i === geo.c ? geo.channels : d)) as number[];
  const H = dims[geo.h];
  const W = dims[geo.w];
  if (!H || !W || !r.width || !r.height) throw new FormatError(`${what}: an image of ${r.width}×${r.height} cannot fill ${showInput(spec)} (${showDims(dims)})`);
  const { planes: src, colour } = planes(r, geo.channels);
  const mean = perChannel(opts.mean, geo.channels, 'mean', 0);
  const std = perChannel(opts.std, geo.channels, 'std', 1);
  const stride = dims.map((_, i) => shapeSize(dims.slice(i + 1)));
  const out = new Float64Array(shapeSize(dims));
  const integer = spec.dtype !== 'float32' && spec.dtype !== 'float64';
  for (let c = 0; c < geo.channels; c++) {
    const plane = resizeBilinear(src[c], r.width, r.height, W, H);
    const base = geo.c === undefined ? 0 : c * stride[geo.c];
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const v = opts.invert ? 255 - plane[y * W + x] : plane[y * W + x];
        const z = (v * opts.scale - mean[c]) / std[c];
        out[base + y * stride[geo.h] + x * stride[geo.w]] = integer ? Math.round(z) : z;
      }
    }
  }
  return {
    tensor: { dtype: spec.dtype, dims, data: convert(out, 'float64', spec.dtype, what) },
    resized: r.width !== W || r.height !== H,
    colour,
    toGray: colour && geo.channels === 1,
  };
}
