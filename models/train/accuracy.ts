/**
 * Accuracy of MNIST ONNX models on the project's 2,000 test digits, measured by
 * onnxruntime-web on the exported file (the artefact that ships), not by tfjs.
 *
 *   node --import tsx models/train/accuracy.ts [model.onnx ...]
 *
 * Without arguments it measures models/reference/mnist-mlp.onnx and mnist-cnn.onnx.
 * A model must take `input` float32 [N,1,28,28] and give `logits` float32 [N,10].
 */
import { readFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createOrtSession } from '../../runtime/ort.ts';
import { loadMnist, PIXELS, type MnistSet } from './mnist.ts';

/** The committed reference models, absolute paths. */
export const REFERENCE_MODELS = ['mnist-mlp.onnx', 'mnist-cnn.onnx']
  .map((f) => fileURLToPath(new URL(`../reference/${f}`, import.meta.url)));

/** Digits per ORT run: large enough that per-run overhead is negligible. */
const DEFAULT_BATCH = 500;

/** Runs `model` over all of `set` and returns the logits, [n,10] row-major. */
export async function onnxLogits(model: Uint8Array, set: MnistSet, batch = DEFAULT_BATCH): Promise<Float32Array> {
  const session = await createOrtSession(model);
  try {
    const logits = new Float32Array(set.n * 10);
    for (let i = 0; i < set.n; i += batch) {
      const m = Math.min(batch, set.n - i);
      const out = await session.run({ input: { dtype: 'float32', dims: [m, 1, 28, 28], data: set.x.slice(i * PIXELS, (i + m) * PIXELS) } });
      const l = out.logits;
      if (!l || l.dtype !== 'float32' || l.dims.length !== 2 || l.dims[0] !== m || l.dims[1] !== 10) {
        throw new Error(`expected output logits float32 [${m},10], got ${l ? `${l.dtype} [${l.dims.join(',')}]` : `outputs ${Object.keys(out).join(', ')}`}`);
      }
      logits.set(l.data as Float32Array, i * 10);
    }
    return logits;
  } finally {
    await session.release();
  }
}

/** Number of rows whose argmax equals the label (first maximum wins ties). */
export function countCorrect(logits: Float32Array, labels: Uint8Array): number {
  let correct = 0;
  for (let i = 0; i < labels.length; i++) {
    let best = 0;
    for (let k = 1; k < 10; k++) if (logits[i * 10 + k] > logits[i * 10 + best]) best = k;
    if (best === labels[i]) correct++;
  }
  return correct;
}

/** One model's measured accuracy. */
export interface AccuracyResult {
  correct: number;
  n: number;
  accuracy: number;
  seconds: number;
}

/** Accuracy of ONNX `model` on `set` (default: the 2,000 test digits). */
export async function onnxAccuracy(model: Uint8Array, set: MnistSet = loadMnist().test): Promise<AccuracyResult> {
  const t0 = performance.now();
  const logits = await onnxLogits(model, set);
  const correct = countCorrect(logits, set.y);
  return { correct, n: set.n, accuracy: correct / set.n, seconds: (performance.now() - t0) / 1000 };
}

async function main(paths: string[]): Promise<void> {
  const files = paths.length > 0 ? paths.map((p) => resolve(p)) : REFERENCE_MODELS;
  const test = loadMnist().test;
  for (const f of files) {
    const r = await onnxAccuracy(new Uint8Array(readFileSync(f)), test);
    console.log(`${relative(process.cwd(), f)}: ${(r.accuracy * 100).toFixed(2)}% (${r.correct}/${r.n} test digits, onnxruntime-web wasm, ${r.seconds.toFixed(2)} s)`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
  });
}
