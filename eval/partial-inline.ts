/**
 * Section "partial-inline": which layers must be sealed inline so that a memory image between
 * runs buys a fine-tuning attacker nothing over training from scratch.
 *
 * With `sealedInline: [names]` only the named tensors stay encrypted in memory; the other
 * layers are decrypted at load and sit in the backend's memory, so a memory image between
 * runs gives them to the attacker in plaintext (docs/RESULTS.md, plaintext residency). The
 * attacker here holds exactly that: the plain weights of every layer not sealed inline, and,
 * for the inline layers, ciphertext, which it replaces by seeded glorot-uniform draws (biases
 * by 0), as the "garbage reset" row of the fine-tuning section does. It then fine-tunes every
 * weight on its stolen digits with the fine-tuning section's budget (Adam, about 300 steps of
 * 32), and is compared with the same architecture trained from scratch on the same digits.
 * Every subset of the layers is tried (a layer = its weight and bias), on the MNIST MLP and CNN.
 *
 *   npm run eval -- --only partial-inline      (about 5 minutes on 2 idle cores)
 *   npm run eval -- --quick                    (the MLP, 2 %, 60 steps; invariants only)
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { loadMnist, TRAIN_SIZE } from '../models/train/mnist.ts';
import { mulberry32 } from '../models/prng.ts';
import { TrainableOnnxModel } from '../models/train/fine-tune.ts';
import { initTfjsWasm } from '../models/tfjs/setup.ts';
import { epochsFor } from './attacks/common.ts';
import { pct, subsetOf } from './harness.ts';
import { FINETUNE } from './finetune.ts';
import { check, type Check, type Section } from './section.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const QUICK = { steps: 60, batch: 32, lr: 1e-3 } as const;

function glorotLimit(shape: readonly number[]): number {
  if (shape.length < 2) return 0;
  const rf = shape.slice(2).reduce((a, b) => a * b, 1);
  return Math.sqrt(6 / (shape[1] * rf + shape[0] * rf));
}

/** The layers of a reference net, in graph order: `conv1`, `fc` ... (a tensor's name up to its last dot). */
function layersOf(m: TrainableOnnxModel): string[] {
  return [...new Set([...m.params.keys()].map((n) => n.replace(/\.[^.]*$/, '')))];
}

/** Replaces the tensors of `layers` by seeded glorot-uniform draws (biases: 0): what ciphertext is worth. */
function resetLayers(m: TrainableOnnxModel, layers: ReadonlySet<string>, rand: () => number): void {
  for (const [name, v] of m.params) {
    if (!layers.has(name.replace(/\.[^.]*$/, ''))) continue;
    const limit = glorotLimit(v.shape);
    const d = new Float32Array(v.size);
    if (limit > 0) for (let i = 0; i < d.length; i++) d[i] = (rand() * 2 - 1) * limit;
    v.assign(tf.tensor(d, v.shape));
  }
}

interface Run { arch: string; sealed: string[]; share: number; fraction: number; start: number; acc: number; scratch: number }

export const partialInlineSection: Section = async (ctx) => {
  const { quick, progress } = ctx;
  await initTfjsWasm();
  const { train, test } = loadMnist();
  const archs = quick ? (['mlp'] as const) : (['mlp', 'cnn'] as const);
  const fractions = quick ? [0.02] : [0.02, 0.1];
  const budget = quick ? QUICK : FINETUNE;
  const runs: Run[] = [];
  const checks: Check[] = [];
  const opts = { inputName: 'input', sampleShape: [1, 28, 28] };

  const plans = archs.map((arch) => {
    const onnx = new Uint8Array(readFileSync(`${root}models/reference/mnist-${arch}.onnx`));
    const probe = TrainableOnnxModel.fromBytes(onnx);
    const layers = layersOf(probe);
    const sizes = new Map<string, number>();
    for (const [n, v] of probe.params) sizes.set(n.replace(/\.[^.]*$/, ''), (sizes.get(n.replace(/\.[^.]*$/, '')) ?? 0) + v.size);
    probe.dispose();
    // Every subset, by bit mask; quick: none and all.
    const masks = quick ? [0, (1 << layers.length) - 1] : Array.from({ length: 1 << layers.length }, (_, i) => i);
    return { arch, onnx, layers, sizes, masks };
  });
  progress.plan(plans.reduce((n, p) => n + fractions.length * (p.masks.length + 1), 0));

  for (const p of plans) {
    const total = [...p.sizes.values()].reduce((a, b) => a + b, 0);
    for (const [fi, fraction] of fractions.entries()) {
      const data = subsetOf(train, Math.round(fraction * TRAIN_SIZE), mulberry32(ctx.seed * 7919 + fi + 1));
      const runSeed = ctx.seed + 100 * (fi + 1);
      const fit = (m: TrainableOnnxModel): { start: number; acc: number } => {
        const start = m.accuracy(test.x, test.y, 500, opts);
        m.fit(data.x, data.y, { ...opts, epochs: epochsFor(data.n, budget), batchSize: budget.batch, lr: budget.lr, seed: runSeed });
        return { start, acc: m.accuracy(test.x, test.y, 500, opts) };
      };
      let scratch: number;
      {
        const m = TrainableOnnxModel.fromBytes(p.onnx);
        try {
          resetLayers(m, new Set(p.layers), mulberry32(runSeed));
          scratch = fit(m).acc;
        } finally {
          m.dispose();
        }
        progress.tick(`partial-inline: ${p.arch} ${fraction * 100}% scratch ${pct(scratch)}`);
      }
      for (const mask of p.masks) {
        const sealed = p.layers.filter((_, i) => mask & (1 << i));
        const m = TrainableOnnxModel.fromBytes(p.onnx);
        try {
          resetLayers(m, new Set(sealed), mulberry32(runSeed + 1));
          const r = fit(m);
          const share = sealed.reduce((n, l) => n + p.sizes.get(l)!, 0) / total;
          runs.push({ arch: p.arch, sealed, share, fraction, ...r, scratch });
          progress.tick(`partial-inline: ${p.arch} ${fraction * 100}% inline [${sealed.join(',')}] ${pct(r.acc)}`);
        } finally {
          m.dispose();
        }
      }
    }
  }

  // Invariants (quick too): nothing sealed inline leaks the model (it starts where the plain
  // model is); everything sealed inline starts at chance, like a sealed file.
  for (const r of runs.filter((x) => x.sealed.length === 0)) {
    checks.push(check(`partial-inline ${r.arch} ${r.fraction * 100}% none inline: the leaked model works without training`, r.start > 0.8, `start ${pct(r.start)} > 80%`));
  }
  for (const r of runs.filter((x) => x.share === 1)) {
    checks.push(check(`partial-inline ${r.arch} ${r.fraction * 100}% all inline: starts at chance`, r.start <= 0.2, `start ${pct(r.start)} <= 20%`));
  }

  const adv = (r: Run): number => (r.acc - r.scratch) * 100;
  const pts = (d: number): string => `${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(1)}`;
  const lines: string[] = [
    '## Partial inline sealing against fine-tuning',
    '',
    `Command: \`npm run eval -- --only partial-inline\`.${quick ? ' **Quick mode:** MLP, 2%, none or all inline, 60 steps.' : ''} Which layers must be sealed inline so that a memory image between runs (which holds the other layers in plaintext, see "Plaintext residency") buys a fine-tuning attacker nothing over training from scratch. The attacker gets the plain weights of every layer not sealed inline and replaces the inline layers (ciphertext) by seeded glorot-uniform draws, biases by 0; then fine-tunes every weight with Adam lr ${budget.lr}, batch ${budget.batch}, about ${budget.steps} steps, on a seeded ${fractions.map((f) => `${f * 100}%`).join(' or ')} of the 8,000 training digits. Scratch: all layers drawn, same data and budget. Accuracy on the 2,000 held-out digits; advantage = attack − scratch in points (one seed: differences within about ±2 points are noise).`,
    '',
  ];
  for (const p of plans) {
    lines.push(`| ${p.arch.toUpperCase()}: sealed inline | share of weights | start (no training) | ${fractions.map((f) => `${f * 100}%: accuracy (advantage)`).join(' | ')} |`);
    lines.push(`| --- | ---: | ---: | ${fractions.map(() => '---').join(' | ')} |`);
    for (const mask of p.masks) {
      const rs = runs.filter((r) => r.arch === p.arch && r.sealed.join(',') === p.layers.filter((_, i) => mask & (1 << i)).join(','));
      if (!rs.length) continue;
      lines.push(`| ${rs[0].sealed.join(' + ') || 'none (all at load)'} | ${(rs[0].share * 100).toFixed(1)}% | ${pct(rs[0].start)} | ${fractions.map((f) => { const r = rs.find((x) => x.fraction === f); return r ? `${pct(r.acc)} (${pts(adv(r))})` : 'n/a'; }).join(' | ')} |`);
    }
    const sc = fractions.map((f) => runs.find((r) => r.arch === p.arch && r.fraction === f)?.scratch ?? NaN);
    lines.push(`| scratch | – | – | ${sc.map((s) => pct(s)).join(' | ')} |`, '');
  }
  // Sealing every layer inline leaves the attacker the architecture only: that row is training from
  // scratch with other random draws, so its advantage is this run's noise. A subset counts as enough
  // when its advantage is within 1 point of that row's at every data share.
  const suggest: string[] = [];
  for (const p of plans) {
    const rowsOf = (mask: number): Run[] => runs.filter((r) => r.arch === p.arch && r.sealed.join(',') === p.layers.filter((_, i) => mask & (1 << i)).join(','));
    const all = rowsOf((1 << p.layers.length) - 1);
    const excess = (rs: Run[]): number => Math.max(...rs.map((r) => adv(r) - adv(all.find((a) => a.fraction === r.fraction)!)));
    const sets = p.masks.map(rowsOf).filter((rs) => rs.length === all.length).sort((a, b) => a[0].share - b[0].share);
    const enough = sets.find((rs) => excess(rs) <= 1)!;
    const next = sets.filter((rs) => rs[0].share < 1).sort((a, b) => excess(a) - excess(b))[0];
    suggest.push(`${p.arch.toUpperCase()}: all layers inline is ${all.map((r) => `${pts(adv(r))}`).join(' / ')} points from scratch (the noise of one seed); the smallest set within 1 point of it at every data share is ${enough[0].sealed.join(' + ')} (${(enough[0].share * 100).toFixed(1)}% of the weights)${next ? `; the closest partial set, ${next[0].sealed.join(' + ') || 'none'} (${(next[0].share * 100).toFixed(1)}%), leaves up to ${excess(next).toFixed(1)} points more` : ''}`);
  }
  lines.push(...suggest.map((x) => `- ${x}.`));
  lines.push('- Suggested default: seal every layer inline (`sealedInline: true`, `keylock lock --inline`). A layer left at load gives a memory image its weights, and fine-tuning from them beats scratch by several points as soon as the layer is a large one; only the smallest layers (here the CNN\'s first convolution, 1.5% of the weights) come close, and leaving them out saves little decryption per run.');
  return { id: 'partial-inline', title: 'Partial inline sealing', markdown: lines.join('\n'), checks };
};
