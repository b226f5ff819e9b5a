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
 *
 * Section "partial-inline-lm" (below) asks the same of the transformer language model.
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
import { barChart } from './svg.ts';
import { bitsPerChar, disposeLm, fitLm, initLmWeights, LM_RECIPE, lmShapes, loadLmCorpus, makeLm, trainSubset } from '../models/train/lm.ts';
import { lmWeightsFromOnnx } from '../models/train/lm-export.ts';
import { lmSizes, theModel } from './lm.ts';

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

/** A named set of the language model's tensors sealed inline. */
interface LmSet { label: string; names: string[] }

/**
 * The sets tried on the transformer: none, each kind of layer across the blocks (embeddings,
 * attention, MLP, LayerNorms, the head with its final LayerNorm), each block, and the natural
 * groupings (all the blocks' linear layers, the blocks, embeddings + head, all but one kind), all.
 */
export function lmSets(names: readonly string[], layers: number): LmSet[] {
  const pick = (f: (n: string) => boolean): string[] => names.filter(f);
  const emb = (n: string): boolean => n.startsWith('tok.') || n.startsWith('pos.');
  const attn = (n: string): boolean => /^h\d+\.attn\./.test(n);
  const mlp = (n: string): boolean => /^h\d+\.mlp\./.test(n);
  const ln = (n: string): boolean => /^(h\d+\.ln[12]|lnf)\./.test(n);
  const head = (n: string): boolean => n.startsWith('head.') || n.startsWith('lnf.');
  const block = (n: string): boolean => /^h\d+\./.test(n);
  const sets: LmSet[] = [
    { label: 'none (all at load)', names: [] },
    { label: 'embeddings (tok, pos)', names: pick(emb) },
    { label: 'attention (q, k, v, o of every block)', names: pick(attn) },
    { label: 'MLP (fc, proj of every block)', names: pick(mlp) },
    { label: 'LayerNorms', names: pick(ln) },
    { label: 'head (lnf, head)', names: pick(head) },
  ];
  for (let l = 0; l < layers; l++) sets.push({ label: `block ${l} (h${l}.*)`, names: pick((n) => n.startsWith(`h${l}.`)) });
  sets.push(
    { label: 'attention + MLP', names: pick((n) => attn(n) || mlp(n)) },
    { label: 'every block', names: pick(block) },
    { label: 'embeddings + head', names: pick((n) => emb(n) || head(n)) },
    { label: 'all but embeddings', names: pick((n) => !emb(n)) },
    { label: 'all but the head', names: pick((n) => !head(n)) },
    { label: 'all', names: [...names] },
  );
  return sets;
}

/**
 * `bpc`: fine-tuning every tensor; `bpcOnly`: training only the inline tensors, the plaintext ones
 * frozen; `bpcOnlyHi`: the same at 10× the step size (a few tensors take larger steps). NaN: not run.
 */
interface LmRun { set: string; names: number; share: number; fraction: number; start: number; bpc: number; bpcOnly: number; bpcOnlyHi: number; scratch: number }

/** Tolerance in bits/char for "within noise of all inline" (one seed). */
const LM_NOISE = 0.03;

/**
 * Section "partial-inline-lm": the same question on the transformer language model (eval/lm.ts's
 * model). The attacker gets the plain weights of every tensor not sealed inline; the inline ones
 * are replaced by a seeded draw of the architecture's own init (N(0, 0.02), LayerNorm gains 1,
 * biases 0); then it trains with the LM fine-tuning attack's budget on 1 % or 10 % of the
 * training words, two ways (every tensor; only the inline tensors, the plaintext ones frozen),
 * against training from scratch, in held-out bits/char; the better way counts.
 *
 *   npm run eval -- --only partial-inline-lm     (about 15 minutes on 2 loaded cores)
 *   npm run eval -- --quick                      (tiny model, none / all / attention only; invariants)
 */
export const partialInlineLmSection: Section = async (ctx) => {
  const { quick, progress } = ctx;
  const z = lmSizes(quick);
  await initTfjsWasm();
  const corpus = loadLmCorpus();
  const c = z.config;
  const model = await theModel(ctx, corpus);
  const plain = lmWeightsFromOnnx(c, model.onnx);
  const names = lmShapes(c).map(([n]) => n);
  const sizes = new Map(lmShapes(c).map(([n, s]) => [n, s.reduce((a, b) => a * b, 1)]));
  const total = [...sizes.values()].reduce((a, b) => a + b, 0);
  const all = lmSets(names, c.layers);
  const sets = quick ? all.filter((s) => s.names.length === 0 || s.names.length === names.length || s.label.startsWith('attention (')) : all;
  const fractions = quick ? [0.01] : [0.01, 0.1];
  const isPartial = (s: LmSet): boolean => s.names.length > 0 && s.names.length < names.length;
  progress.plan(fractions.length * (sets.length + 1 + 2 * sets.filter(isPartial).length));
  const runs: LmRun[] = [];
  const evalWindows = z.evalWindows;
  const plainBpc = (() => {
    const m = makeLm(c, plain);
    try { return bitsPerChar(m, corpus.heldOut, evalWindows); } finally { disposeLm(m); }
  })();
  for (const [fi, fraction] of fractions.entries()) {
    const data = trainSubset(corpus, fraction);
    const runSeed = ctx.seed + 100 * (fi + 1);
    const train = (w: Map<string, Float32Array>, only?: ReadonlySet<string>, lr = z.finetune.lr): { start: number; bpc: number } => {
      const m = makeLm(c, w);
      try {
        const start = bitsPerChar(m, corpus.heldOut, evalWindows);
        fitLm(m, data, { ...z.finetune, lr, seed: runSeed, train: only });
        return { start, bpc: bitsPerChar(m, corpus.heldOut, evalWindows) };
      } finally {
        disposeLm(m);
      }
    };
    // Scratch: the architecture's init with one seed; the sealed tensors of every attack: another.
    const scratch = train(initLmWeights(c, LM_RECIPE.seed + 300 + runSeed)).bpc;
    progress.tick(`partial-inline-lm: ${fraction * 100}% scratch ${scratch.toFixed(3)}`);
    const fresh = initLmWeights(c, LM_RECIPE.seed + 400 + runSeed);
    for (const set of sets) {
      const sealed = new Set(set.names);
      const w = new Map(names.map((n) => [n, sealed.has(n) ? fresh.get(n)! : plain.get(n)!]));
      const r = train(w);
      progress.tick(`partial-inline-lm: ${fraction * 100}% inline ${set.label} ${r.bpc.toFixed(3)}`);
      let bpcOnly = NaN;
      let bpcOnlyHi = NaN;
      if (isPartial(set)) {
        bpcOnly = train(w, sealed).bpc;
        progress.tick(`partial-inline-lm: ${fraction * 100}% inline ${set.label}, training those only ${bpcOnly.toFixed(3)}`);
        bpcOnlyHi = train(w, sealed, 10 * z.finetune.lr).bpc;
        progress.tick(`partial-inline-lm: ${fraction * 100}% inline ${set.label}, training those only at 10× the step ${bpcOnlyHi.toFixed(3)}`);
      }
      const share = set.names.reduce((n, x) => n + sizes.get(x)!, 0) / total;
      runs.push({ set: set.label, names: set.names.length, share, fraction, ...r, bpcOnly, bpcOnlyHi, scratch });
    }
  }

  // advantage = scratch − attack in bits/char: > 0, the plaintext layers helped the attacker.
  const adv = (r: LmRun): number => r.scratch - Math.min(...[r.bpc, r.bpcOnly, r.bpcOnlyHi].filter((x) => !Number.isNaN(x)));
  const sgn = (d: number): string => `${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(3)}`;
  const rowsOf = (label: string): LmRun[] => runs.filter((r) => r.set === label);
  const allRows = rowsOf('all');
  const noneRows = rowsOf('none (all at load)');
  const checks: Check[] = [];
  for (const r of noneRows) {
    checks.push(check(`partial-inline-lm ${r.fraction * 100}% none inline: the leaked model starts where the plain one is`, Math.abs(r.start - plainBpc) < 1e-3, `start ${r.start.toFixed(3)} vs plain ${plainBpc.toFixed(3)} bits/char`));
    checks.push(check(`partial-inline-lm ${r.fraction * 100}% none inline: clearly better than scratch`, adv(r) > 0.1, `advantage ${sgn(adv(r))} > +0.100 bits/char`));
  }
  for (const r of allRows) {
    checks.push(check(`partial-inline-lm ${r.fraction * 100}% all inline: no better than scratch beyond ${LM_NOISE} bits/char`, adv(r) <= LM_NOISE, `advantage ${sgn(adv(r))} <= +${LM_NOISE.toFixed(3)}`));
  }
  const excess = (rs: LmRun[]): number => Math.max(...rs.map((r) => adv(r) - adv(allRows.find((a) => a.fraction === r.fraction)!)));
  const bySize = sets.map((s) => rowsOf(s.label)).filter((rs) => rs.length === fractions.length).sort((a, b) => a[0].share - b[0].share);
  const enough = bySize.find((rs) => excess(rs) <= LM_NOISE)!;
  const partial = bySize.filter((rs) => rs[0].share < 1).sort((a, b) => excess(a) - excess(b))[0];

  const lines: string[] = [
    '## Partial inline sealing against fine-tuning: the transformer language model',
    '',
    `Command: \`npm run eval -- --only partial-inline-lm\`.${quick ? ' **Quick mode:** tiny model, 1 %, none / attention / all inline.' : ''} ` +
    `The question of the section above, on the transformer of "Transformer language model" (${c.layers} block${c.layers === 1 ? '' : 's'}, width ${c.width}, ${total} weights; model: ${model.source}). ` +
    'The attacker gets the plain weights of every tensor not sealed inline (a memory image between runs holds them) and replaces the inline tensors (ciphertext) by a seeded draw of the architecture\'s own init ' +
    `(N(0, 0.02), LayerNorm gains 1, biases 0); then trains with the LM fine-tuning attack's budget (${z.finetune.steps} Adam steps of ${z.finetune.batch}×${c.context} characters, peak step size ${z.finetune.lr}) ` +
    `on the first ${fractions.map((f) => `${f * 100} %`).join(' or ')} of the training words, three ways: every tensor; only the inline tensors, the plaintext ones frozen; the same at 10× the step size (${10 * z.finetune.lr}; the last two for a partial set only). Scratch: every tensor drawn (another seed), same data and budget. ` +
    `Held-out bits/char over ${evalWindows} windows (tfjs; lower is better); the key holder's model: ${plainBpc.toFixed(3)}. Advantage = scratch − the best of the three ways, in bits/char (> 0: the plaintext layers helped; ≤ 0: the attack is no better than scratch).`,
    '',
    `| sealed inline | tensors | share of weights | start (no training) | ${fractions.map((f) => `${f * 100} %: every tensor | ${f * 100} %: inline ones only | ${f * 100} %: inline only, 10× step | ${f * 100} %: advantage`).join(' | ')} |`,
    `| --- | ---: | ---: | ---: | ${fractions.map(() => '---: | ---: | ---: | ---:').join(' | ')} |`,
  ];
  for (const s of sets) {
    const rs = rowsOf(s.label);
    if (!rs.length) continue;
    lines.push(`| ${s.label} | ${rs[0].names} | ${(rs[0].share * 100).toFixed(1)}% | ${rs[0].start.toFixed(3)} | ${fractions.map((f) => { const r = rs.find((x) => x.fraction === f); const o = (x: number): string => (Number.isNaN(x) ? '–' : x.toFixed(3)); return r ? `${r.bpc.toFixed(3)} | ${o(r.bpcOnly)} | ${o(r.bpcOnlyHi)} | ${sgn(adv(r))}` : 'n/a | n/a | n/a | n/a'; }).join(' | ')} |`);
  }
  lines.push(`| scratch | – | – | – | ${fractions.map((f) => `${runs.find((r) => r.fraction === f)!.scratch.toFixed(3)} | – | – | –`).join(' | ')} |`, '');
  const within = bySize.filter((rs) => rs[0].share < 1 && excess(rs) <= LM_NOISE);
  const pctOf = (rs: LmRun[]): string => `${(rs[0].share * 100).toFixed(1)}%`;
  lines.push(
    `- All tensors inline is ${allRows.map((r) => sgn(adv(r))).join(' / ')} bits/char from scratch (the noise of one seed). ` +
    (within.length
      ? `Partial sets within ${LM_NOISE} bits/char of it at every data share: ${within.map((rs) => `**${rs[0].set}** (${pctOf(rs)})`).join(', ')}; the smallest is ${enough[0].set}.`
      : `No partial set comes within ${LM_NOISE} bits/char of it at every data share; the closest, ${partial[0].set} (${pctOf(partial)}), leaves up to ${excess(partial).toFixed(3)} bits/char more.`),
  );
  const names0 = (label: string): string[] => sets.find((x) => x.label === label)!.names;
  lines.push(enough[0].share === 1
    ? '- Suggested default for the transformer too: seal every tensor inline (`sealedInline: true`, `keylock lock --inline`). Every partial set leaves a memory image layers that train to a better model than scratch.'
    : `- Within this budget the smallest sufficient set is ${enough[0].set}: \`sealedInline: [${names0(enough[0].set).map((n) => `'${n}'`).join(', ')}]\`, ${pctOf(enough)} of the weights. ` +
      `The attackers have the fine-tuning attack's budget (${z.finetune.steps} steps): a set that holds here because its tensors are not re-learned within it is a bound for that budget, not for an attacker with more steps or a better repair, ` +
      'so the default stays every tensor inline (`sealedInline: true`); a vendor who needs the per-run cost down can seal a sufficient set knowing that limit.');
  lines.push('', '![advantage of the fine-tuning attack per set sealed inline](img/partial-inline-lm.svg)');
  const svg = barChart({
    title: "Transformer: the attacker's advantage over scratch, by the set sealed inline",
    yLabel: 'advantage, bits/char (scratch − attack)',
    categories: sets.map((x) => x.label.replace(/ \(.*\)$/, '')),
    series: fractions.map((f) => ({ name: `${f * 100} % of the training words`, values: sets.map((x) => { const r = rowsOf(x.label).find((y) => y.fraction === f); return r ? adv(r) : null; }) })),
    refLines: [{ y: 0, label: 'no better than scratch' }],
    width: 900,
  });
  return { id: 'partial-inline-lm', title: 'Partial inline sealing: the transformer', markdown: lines.join('\n'), svgs: { 'partial-inline-lm.svg': svg }, checks };
};
