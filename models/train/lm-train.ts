/**
 * Trains the reference character-level transformer (models/train/lm.ts) and
 * exports it to ONNX and TFLite:
 *
 *   npm run train -- --lm                      # → eval/.cache/lm/char-transformer.{onnx,tflite,json}
 *   npm run train -- --lm --out DIR --steps N
 *
 * After export, the ONNX file is run by onnxruntime-web and the TFLite file by
 * tfjs-tflite on held-out windows, and both are compared with tfjs's logits
 * (max |Δ| stated, and required to be under 1e-3); the held-out bits per
 * character are measured on the ONNX file, the artefact that ships. The JSON
 * beside the models records the recipe and these numbers.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { createOrtSession } from '../../runtime/ort.ts';
import { createTfliteSession } from '../../runtime/tflite.ts';
import { initTfjsWasm } from '../tfjs/setup.ts';
import {
  bitsPerChar, disposeLm, LM_CONFIG, LM_HELD_OUT, LM_RECIPE, LM_SPLIT_SEED, lmForward, lmParamCount, lmWeights, loadLmCorpus, trainLm,
  VOCAB_SIZE, type Lm, type LmConfig,
} from './lm.ts';
import { LM_INPUT, LM_OUTPUT, lmToOnnx, lmToTflite } from './lm-export.ts';
import { createProgress } from './progress.ts';

/** Where `npm run train -- --lm` writes, relative to the repository. */
export const LM_DIR = fileURLToPath(new URL('../../eval/.cache/lm/', import.meta.url));
export const LM_FILES = { onnx: 'char-transformer.onnx', tflite: 'char-transformer.tflite', meta: 'char-transformer.json' } as const;

/** Bits per character of logits [k, T, V] against the next tokens of consecutive windows of `data`. */
export function bitsFromLogits(logits: Float32Array, data: Int32Array, t: number, windows: number): number {
  let nats = 0;
  for (let w = 0; w < windows; w++) {
    for (let i = 0; i < t; i++) {
      const row = logits.subarray((w * t + i) * VOCAB_SIZE, (w * t + i + 1) * VOCAB_SIZE);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      nats += Math.log(sum) + max - row[data[w * t + i + 1]];
    }
  }
  return nats / (windows * t) / Math.LN2;
}

/** The first `windows` consecutive windows of `data` as ids [windows·T]. */
export function windowsOf(data: Int32Array, t: number, windows: number): Int32Array {
  const x = new Int32Array(windows * t);
  for (let w = 0; w < windows; w++) x.set(data.subarray(w * t, w * t + t), w * t);
  return x;
}

function tfjsLogits(lm: Lm, ids: Int32Array, rows: number): Float32Array {
  const out = tf.tidy(() => lmForward(lm, tf.tensor2d(ids, [rows, lm.config.context], 'int32')));
  const d = Float32Array.from(out.dataSync() as Float32Array);
  out.dispose();
  return d;
}

function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** What the export check measured. */
export interface LmExportCheck { onnxMaxDiff: number; tfliteMaxDiff: number; onnxBpc: number; windows: number; tfliteWindows: number }

/** Runs the exports on held-out windows and compares them with tfjs. */
export async function checkLmExports(lm: Lm, onnx: Uint8Array, tflite: Uint8Array, heldOut: Int32Array, windows = 256, tfliteWindows = 16): Promise<LmExportCheck> {
  const t = lm.config.context;
  const ids = windowsOf(heldOut, t, windows);
  const ref = tfjsLogits(lm, ids, windows);
  const ort = await createOrtSession(onnx);
  let ortLogits: Float32Array;
  try {
    const out = await ort.run({ [LM_INPUT]: { dtype: 'int32', dims: [windows, t], data: ids } });
    const l = out[LM_OUTPUT];
    if (!l || l.dims.join(',') !== `${windows},${t},${VOCAB_SIZE}`) throw new Error(`lm export: expected logits [${windows},${t},${VOCAB_SIZE}], got ${l ? `[${l.dims.join(',')}]` : 'none'}`);
    ortLogits = l.data as Float32Array;
  } finally {
    await ort.release();
  }
  const tfl = await createTfliteSession(tflite);
  let tfliteMaxDiff = 0;
  try {
    for (let w = 0; w < tfliteWindows; w++) {
      const out = await tfl.run({ [LM_INPUT]: { dtype: 'int32', dims: [1, t], data: ids.slice(w * t, w * t + t) } });
      const l = out[LM_OUTPUT] ?? Object.values(out)[0];
      tfliteMaxDiff = Math.max(tfliteMaxDiff, maxAbs(l.data as Float32Array, ref.subarray(w * t * VOCAB_SIZE, (w + 1) * t * VOCAB_SIZE)));
    }
  } finally {
    await tfl.release();
  }
  return { onnxMaxDiff: maxAbs(ortLogits, ref), tfliteMaxDiff, onnxBpc: bitsFromLogits(ortLogits, heldOut, t, windows), windows, tfliteWindows };
}

/** The model's doc string. */
export function lmDoc(c: LmConfig, steps: number): string {
  return `keylock reference language model: decoder-only transformer, ${c.layers} layers, width ${c.width}, ${c.heads} heads, MLP ${c.hidden}, ` +
    `context ${c.context} characters, vocabulary newline + a–z. Trained with tfjs 4.22.0 (wasm) on an-array-of-english-words 2.0.0 ` +
    `(words joined by newlines, ${LM_HELD_OUT * 100}% of words held out, split seed 0x${LM_SPLIT_SEED.toString(16)}), ${steps} Adam steps of ` +
    `${LM_RECIPE.batch}×${c.context} characters, peak step size ${LM_RECIPE.lr}, seed ${LM_RECIPE.seed}. Input '${LM_INPUT}' int32 [N,${c.context}]; output '${LM_OUTPUT}' float32 [N,${c.context},${VOCAB_SIZE}].`;
}

export async function lmTrainMain(argv: { out?: string; steps?: string }): Promise<void> {
  const out = argv.out ?? LM_DIR;
  const steps = argv.steps === undefined ? LM_RECIPE.steps : Number(argv.steps);
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`--steps must be a positive integer, got ${argv.steps}`);
  mkdirSync(out, { recursive: true });
  await initTfjsWasm();
  const corpus = loadLmCorpus();
  const c = LM_CONFIG;
  process.stderr.write(`lm: ${lmParamCount(c)} weights, ${corpus.trainWords.length} train words (${corpus.train.length} characters), ` +
    `${corpus.heldOutWords.length} held out, ${steps} steps\n`);
  const { lm, fit } = trainLm(corpus, { steps, progress: createProgress() });
  const bpc = bitsPerChar(lm, corpus.heldOut);
  const doc = lmDoc(c, steps);
  const w = lmWeights(lm);
  const onnx = lmToOnnx(c, w, doc);
  const tflite = lmToTflite(c, w, doc);
  const check = await checkLmExports(lm, onnx, tflite, corpus.heldOut);
  disposeLm(lm);
  writeFileSync(join(out, LM_FILES.onnx), onnx);
  writeFileSync(join(out, LM_FILES.tflite), tflite);
  const meta = { config: c, steps, batch: LM_RECIPE.batch, lr: LM_RECIPE.lr, warmup: LM_RECIPE.warmup, seconds: fit.seconds, cpuSeconds: fit.cpuSeconds, trainBpc: fit.finalLoss, heldOutBpc: bpc, ...check, doc };
  writeFileSync(join(out, LM_FILES.meta), `${JSON.stringify(meta, null, 1)}\n`);
  console.log(`lm: ${relative(process.cwd(), join(out, LM_FILES.onnx))} ${onnx.byteLength} bytes, ${relative(process.cwd(), join(out, LM_FILES.tflite))} ${tflite.byteLength} bytes, ` +
    `${fit.seconds.toFixed(1)} s training (${fit.cpuSeconds.toFixed(1)} s CPU), held-out ${bpc.toFixed(3)} bits/char (tfjs, 1024 windows), ${check.onnxBpc.toFixed(3)} (onnxruntime-web, ${check.windows} windows), ` +
    `max |logit ort − tfjs| ${check.onnxMaxDiff.toExponential(2)}, max |logit tflite − tfjs| ${check.tfliteMaxDiff.toExponential(2)} (${check.tfliteWindows} windows)`);
  if (!(check.onnxMaxDiff < 1e-3) || !(check.tfliteMaxDiff < 1e-3)) {
    throw new Error(`lm: expected exported logits within 1e-3 of tfjs, got ONNX ${check.onnxMaxDiff}, TFLite ${check.tfliteMaxDiff}`);
  }
}
