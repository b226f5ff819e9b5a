/**
 * The TFLite lock table: the reference CNN and MLP exported to TFLite by
 * keylock's own writer (models/tflite/export.ts), every applicable scheme,
 * run through the tflite backend (tfjs-tflite) on the 2,000 held-out digits.
 *
 *   node --import tsx eval/tflite.ts
 *
 * For each model and lock, side by side with the plain .tflite under the same
 * backend: accuracy with the key and whether every output is bit-identical,
 * whether a wrong key is stopped before inference, and the accuracy of the
 * locked file run without the key (the copied bytes on plain inputs). The ONNX
 * twin's accuracy (onnxruntime-web) is listed for comparison. Model keys are
 * derived from the case names, so the table is the same on every run.
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { randomBytes, sha256 } from '../keystore/nacl.ts';
import { lockModel, type LockRequest } from '../models/lock/index.ts';
import { mnistSamples } from '../models/train/make-fixtures.ts';
import { loadMnist } from '../models/train/mnist.ts';
import { onnxToTflite } from '../models/tflite/export.ts';
import { KeyMismatchError } from '../keystore/errors.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import type { TensorData, TensorMap } from '../runtime/tensor.ts';
import { createTfliteSession } from '../runtime/tflite.ts';

const root = fileURLToPath(new URL('..', import.meta.url));

/** One line of the table. */
export interface TfliteRow {
  model: string;
  lock: string;
  /** Accuracy with the key (plain row: the plain .tflite). */
  withKey: number;
  /** Outputs with the key equal the plain .tflite's bit for bit. */
  bitIdentical: boolean;
  /** Largest |locked − plain| with the key (0 when bit-identical). */
  maxDiff: number;
  wrongKey: string;
  /** Accuracy of the locked bytes run without the key. */
  withoutKey: number;
  /** Largest |out − plain| without the key (Infinity when NaN appears). */
  noKeyDiff: number;
  lockMs: number;
  /** Median ms per run through the runtime (LockedModel.stats; plain row: the bare session). */
  p50: number;
  notes: string;
}

interface Case { label: string; req: Omit<LockRequest, 'vendorSeed'> }

function argmax(d: ArrayLike<number>): number {
  let b = 0;
  for (let j = 1; j < d.length; j++) if (d[j] > d[b]) b = j;
  return b;
}

function diff(a: TensorData, b: TensorData): { max: number; bits: number } {
  const x = a.data as Float32Array, y = b.data as Float32Array;
  const xb = new Uint32Array(x.buffer, x.byteOffset, x.length), yb = new Uint32Array(y.buffer, y.byteOffset, y.length);
  let max = 0;
  let bits = 0;
  for (let i = 0; i < x.length; i++) {
    const d = Math.abs(x[i] - y[i]);
    if (!(d <= max)) max = Number.isNaN(d) ? Infinity : d;
    if (xb[i] !== yb[i]) bits++;
  }
  return { max, bits };
}

/** The cases of a model; the CNN's first layer is a stride-1 conv, so shuffle cannot be absorbed there. */
function cases(arch: 'cnn' | 'mlp', enc: ReturnType<typeof mnistSamples>): Case[] {
  return [
    { label: 'sealed', req: { schemes: ['sealed'] } },
    { label: 'deeplock', req: { schemes: ['deeplock'] } },
    { label: 'signflip (fold)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
    { label: 'signflip (fold, 8 MAC units)', req: { schemes: ['signflip'], signflipMode: 'fold', units: 8 } },
    { label: 'advparams (gradient-free)', req: { schemes: ['advparams'], data: enc, seed: 1, advparams: { samples: 256 } } },
    { label: 'signflip+deeplock+sealed', req: { schemes: ['signflip', 'deeplock', 'sealed'] } },
    ...(arch === 'mlp'
      ? [
        { label: 'shuffle m=4 (absorbed, NHWC)', req: { schemes: ['shuffle' as const], block: 4 } },
        { label: 'shuffle m=7 (absorbed, NHWC)', req: { schemes: ['shuffle' as const], block: 7 } },
        { label: 'shuffle m=4 negpos (absorbed)', req: { schemes: ['shuffle' as const], block: 4, negpos: true } },
      ]
      : []),
  ];
}

/** Runs the whole table; `progress` gets one line per case. */
export async function tfliteTable(progress: (s: string) => void = () => {}): Promise<{ rows: TfliteRow[]; onnx: Record<string, number>; refused: string[] }> {
  const { test, train } = loadMnist();
  const enc = mnistSamples(train, 256);
  const inputs: TensorMap[] = [];
  for (let i = 0; i < test.n; i++) inputs.push({ input: { dtype: 'float32', dims: [1, 28, 28, 1], data: test.x.slice(i * 784, (i + 1) * 784) } });
  const vendorSeed = sha256(new TextEncoder().encode('keylock/eval/tflite/vendor'));
  const rows: TfliteRow[] = [];
  const onnx: Record<string, number> = {};
  const refused: string[] = [];
  for (const arch of ['cnn', 'mlp'] as const) {
    const name = `mnist-${arch}`;
    const onnxBytes = new Uint8Array(readFileSync(`${root}models/reference/${name}.onnx`));
    const ort = await createOrtSession(onnxBytes);
    let ok = 0;
    for (const [i, x] of inputs.entries()) {
      const out = await ort.run({ input: { ...x.input, dims: [1, 1, 28, 28] } });
      if (argmax(out.logits.data as Float32Array) === test.y[i]) ok++;
    }
    await ort.release();
    onnx[name] = ok / test.n;

    const tflite = onnxToTflite(onnxBytes);
    const plain = await createTfliteSession(tflite);
    const plainOut: TensorData[] = [];
    const times: number[] = [];
    ok = 0;
    for (const [i, x] of inputs.entries()) {
      const t0 = performance.now();
      const out = (await plain.run(x)).logits;
      times.push(performance.now() - t0);
      plainOut.push(out);
      if (argmax(out.data as Float32Array) === test.y[i]) ok++;
    }
    await plain.release();
    const model = `${name}.tflite`;
    rows.push({ model, lock: 'plain', withKey: ok / test.n, bitIdentical: true, maxDiff: 0, wrongKey: '–', withoutKey: ok / test.n, noKeyDiff: 0, lockMs: 0, p50: times.sort((a, b) => a - b)[times.length >> 1], notes: `${tflite.byteLength} bytes` });

    if (arch === 'cnn') {
      try {
        await lockModel(tflite, { schemes: ['shuffle'], block: 2, vendorSeed });
      } catch (e) {
        refused.push(`${model} shuffle: ${(e as Error).name}: ${(e as Error).message}`);
      }
    }
    for (const c of cases(arch, enc)) {
      progress(`${model}: ${c.label}`);
      const modelKey = sha256(new TextEncoder().encode(`keylock/eval/tflite/${name}/${c.label}`));
      const t0 = performance.now();
      const res = await lockModel(tflite, { ...c.req, vendorSeed, modelKey, modelId: `${name}-tflite-eval` });
      const lockMs = performance.now() - t0;
      const m = await loadModel(res.klm, { modelKey: res.modelKey });
      if (m.state !== 'ready') throw m.error!;
      let withKey = 0;
      let maxDiff = 0;
      let bits = 0;
      for (const [i, x] of inputs.entries()) {
        const out = (await m.run(x)).logits;
        if (argmax(out.data as Float32Array) === test.y[i]) withKey++;
        const d = diff(out, plainOut[i]);
        maxDiff = Math.max(maxDiff, d.max);
        bits += d.bits;
      }
      const p50 = m.stats.p50;
      await m.release();
      const wrong = await loadModel(res.klm, { modelKey: randomBytes(32) });
      const wrongKey = wrong.error instanceof KeyMismatchError && wrong.stats.runs === 0 ? 'stopped before inference' : `NOT stopped (${wrong.state})`;
      const stolen = await createTfliteSession(res.locked);
      let withoutKey = 0;
      let noKeyDiff = 0;
      for (const [i, x] of inputs.entries()) {
        const out = (await stolen.run(x)).logits;
        if (argmax(out.data as Float32Array) === test.y[i]) withoutKey++;
        noKeyDiff = Math.max(noKeyDiff, diff(out, plainOut[i]).max);
      }
      await stolen.release();
      const notes = res.report.filter((l) => /^advparams: modified|^signflip: fold|^shuffle:/.test(l)).map((l) => l.replace(/^\w+: /, '')).join('; ');
      rows.push({
        model, lock: c.label, withKey: withKey / test.n, bitIdentical: bits === 0, maxDiff, wrongKey, withoutKey: withoutKey / test.n, noKeyDiff, lockMs, p50, notes,
      });
    }
  }
  return { rows, onnx, refused };
}

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

/** The table as markdown. */
export function renderTfliteTable(t: Awaited<ReturnType<typeof tfliteTable>>): string {
  const lines = [
    '| model | lock | accuracy with the key | with the key vs plain .tflite | wrong key | accuracy without the key (copied file) | without the key: max \\|out − plain\\| | lock time | p50 per run | notes |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of t.rows) {
    const same = r.lock === 'plain' ? '–' : r.bitIdentical ? 'bit-identical' : `max |Δ| ${r.maxDiff.toExponential(2)}`;
    const nk = r.lock === 'plain' ? '–' : Number.isFinite(r.noKeyDiff) ? r.noKeyDiff.toExponential(2) : 'NaN / inf';
    lines.push(`| ${r.model} | ${r.lock} | ${pct(r.withKey)} | ${same} | ${r.wrongKey} | ${r.lock === 'plain' ? '–' : pct(r.withoutKey)} | ${nk} | ${r.lock === 'plain' ? '–' : `${(r.lockMs / 1000).toFixed(2)} s`} | ${r.p50.toFixed(3)} ms | ${r.notes} |`);
  }
  lines.push('', `ONNX twins (onnxruntime-web wasm, same 2,000 digits): ${Object.entries(t.onnx).map(([k, v]) => `${k}.onnx ${pct(v)}`).join(', ')}.`);
  for (const r of t.refused) lines.push('', `Refused: ${r}`);
  return lines.join('\n');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const t0 = performance.now();
  const t = await tfliteTable((s) => process.stderr.write(`${s}\n`));
  process.stdout.write(renderTfliteTable(t) + `\n\n(${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
}
