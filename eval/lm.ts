/**
 * Section "lm": the locks on a transformer language model, and the attacks on it.
 *
 *   npm run eval -- --lm                 # = --only lm,lm-advparams (the model `npm run train -- --lm` made; section times in the markdown)
 *   npm run eval -- --quick              # includes a tiny config trained in-process (seconds)
 *
 * The model is keylock's character-level transformer (models/train/lm.ts),
 * exported to ONNX and TFLite (models/train/lm-export.ts). The section
 * measures, on held-out words (bits per character, lower is better):
 * 1. Locks: every scheme on both files; with the key, logits bit-identical to
 *    the plain file on the same backend; a wrong key stopped before inference;
 *    the copied locked file run without the key (signflip key inputs fed ones),
 *    and what it generates (greedy, from the same prompt).
 * 2. Fine-tuning the copy (no key) with 1/2/5/10 % of the training words, vs
 *    training the architecture from scratch on the same words with the same
 *    steps, batch and step sizes. Sealed and Deep-Lock copies get the obvious
 *    repair first: every non-finite or |w| > 1 value replaced by a draw of the
 *    architecture's own init (N(0, 0.02); LayerNorm gains 1, biases 0).
 * 3. The sign-flip key search (greedy coordinate descent over the key bits, as
 *    eval/attacks/signflip.ts does on MNIST) on a fold-mode copy with a stolen
 *    1 % of the training words.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { KeyMismatchError, KeylockError } from '../keystore/errors.ts';
import { randomBytes } from '../keystore/nacl.ts';
import { lockModel, type LockRequest } from '../models/lock/index.ts';
import { initTfjsWasm } from '../models/tfjs/setup.ts';
import {
  bitsPerChar, disposeLm, fitLm, lmForwardFrom, lmStreamTo, initLmWeights, LM_CONFIG, LM_RECIPE, LM_TINY, lmShapes, lmWeights, loadLmCorpus, makeLm, trainLm, trainSubset,
  VOCAB_SIZE, type Lm, type LmConfig, type LmCorpus,
} from '../models/train/lm.ts';
import { LM_INPUT, LM_NEXT_OUTPUT, LM_OUTPUT, lmToOnnx, lmToTflite, lmWeightsFromOnnx } from '../models/train/lm-export.ts';
import { robustStats } from './attacks/advparams.ts';
import { bitsFromLogits, checkLmExports, LM_DIR, LM_FILES, windowsOf } from '../models/train/lm-train.ts';
import { mulberry32 } from '../models/prng.ts';
import { generateText, type TextModel } from '../runtime/generate.ts';
import { openKlm, type SignflipLock } from '../runtime/klm.ts';
import { layerBits } from '../runtime/keys/signflip.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import { createTfliteSession } from '../runtime/tflite.ts';
import type { BackendSession } from '../runtime/backend.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import { labelKey, stolenFeeds } from './harness.ts';
import { check, type Check, type Section, type SectionContext } from './section.ts';
import { lineChart } from './svg.ts';

/** Sizes of a run: the full evaluation and the CI one. */
const FULL = {
  config: LM_CONFIG, evalWindows: 256, tfliteWindows: 16, genTokens: 40,
  fractions: [0.01, 0.02, 0.05, 0.1], finetune: { steps: 100, batch: 16, lr: 2e-3 },
  search: { windows: 32, sweeps: 1 },
};
const QUICK = {
  config: LM_TINY, evalWindows: 64, tfliteWindows: 4, genTokens: 16,
  fractions: [0.01, 0.1], finetune: { steps: 20, batch: 16, lr: 2e-3 },
  search: { windows: 16, sweeps: 1 }, trainSteps: 60,
};
type Sizes = typeof FULL;

const PROMPT = 'th';
const f3 = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : 'NaN / inf');
const show = (s: string): string => `\`${JSON.stringify(s).slice(1, -1).replace(/\\n/g, '⏎').replace(/`/g, "'")}\``;

/** Feeds the copied file: tokens plus ones for any key input. */
function copiedModel(s: BackendSession): TextModel {
  return { inputs: s.inputs, run: (x: TensorMap) => s.run(stolenFeeds(s, x)) };
}

/** Held-out bits/char and logits of something that runs [rows, T] token windows (rows at a time). */
async function heldOutOf(run: (x: TensorMap) => Promise<TensorMap>, ids: Int32Array, t: number, rows: number, perRun: number): Promise<Float32Array> {
  const out = new Float32Array(rows * t * VOCAB_SIZE);
  for (let r = 0; r < rows; r += perRun) {
    const k = Math.min(perRun, rows - r);
    const y = await run({ [LM_INPUT]: { dtype: 'int32', dims: [k, t], data: ids.slice(r * t, (r + k) * t) } });
    const l = y[LM_OUTPUT] ?? Object.values(y)[0];
    if (!l || l.data.length !== k * t * VOCAB_SIZE) throw new Error(`lm: expected logits [${k},${t},${VOCAB_SIZE}], got ${l ? `[${l.dims.join(',')}]` : 'none'}`);
    out.set(l.data as Float32Array, r * t * VOCAB_SIZE);
  }
  return out;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

interface LockRow { format: string; lock: string; identical: boolean | undefined; wrongKey: string; noKeyBpc: number; withKey: string; noKey: string; note: string }

interface Case { label: string; req: Omit<LockRequest, 'vendorSeed'> }

const CASES: Record<'onnx' | 'tflite', Case[]> = {
  onnx: [
    { label: 'sealed', req: { schemes: ['sealed'] } },
    { label: 'deeplock', req: { schemes: ['deeplock'] } },
    { label: 'signflip (input)', req: { schemes: ['signflip'], signflipMode: 'input' } },
    { label: 'signflip (fold)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
    { label: 'signflip+deeplock+sealed', req: { schemes: ['signflip', 'deeplock', 'sealed'] } },
    { label: 'advparams', req: { schemes: ['advparams'] } },
    { label: 'shuffle', req: { schemes: ['shuffle'], block: 2 } },
  ],
  tflite: [
    { label: 'sealed', req: { schemes: ['sealed'] } },
    { label: 'deeplock', req: { schemes: ['deeplock'] } },
    { label: 'signflip (fold)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
    { label: 'signflip+deeplock+sealed', req: { schemes: ['signflip', 'deeplock', 'sealed'] } },
    { label: 'advparams', req: { schemes: ['advparams'] } },
    { label: 'shuffle', req: { schemes: ['shuffle'], block: 2 } },
  ],
};

/** The advparams encryption set: held-out windows labelled with the character after them. */
function advparamsData(heldOut: Int32Array, t: number, n: number): { inputs: TensorMap; label: number }[] {
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push({ inputs: { [LM_INPUT]: { dtype: 'int32' as const, dims: [1, t], data: heldOut.slice(i * (t + 1), i * (t + 1) + t) } }, label: heldOut[i * (t + 1) + t] });
  }
  return out;
}

const vendorSeed = labelKey('lm/vendor');

/** Part 1: the lock table. Returns the rows and the fold-mode signflip lock (ONNX) for the key search. */
async function lockTable(files: { onnx: Uint8Array; tflite: Uint8Array }, c: LmConfig, corpus: LmCorpus, z: Sizes, ctx: SectionContext, checks: Check[]):
  Promise<{ rows: LockRow[]; plainBpc: Record<string, number>; plainText: Record<string, string>; fold?: { klm: Uint8Array; locked: Uint8Array; modelKey: Uint8Array }; lockedOnnx: Record<string, Uint8Array> }> {
  const t = c.context;
  const rows: LockRow[] = [];
  const plainBpc: Record<string, number> = {};
  const plainText: Record<string, string> = {};
  let fold: { klm: Uint8Array; locked: Uint8Array; modelKey: Uint8Array } | undefined;
  const lockedOnnx: Record<string, Uint8Array> = {};
  for (const format of ['onnx', 'tflite'] as const) {
    const windows = format === 'onnx' ? z.evalWindows : z.tfliteWindows;
    const perRun = format === 'onnx' ? windows : 1;
    const ids = windowsOf(corpus.heldOut, t, windows);
    const bytes = files[format];
    const open = format === 'onnx' ? createOrtSession : createTfliteSession;
    const backend = format === 'onnx' ? 'wasm' : 'tflite';
    const plain = await open(bytes);
    const ref = await heldOutOf((x) => plain.run(x), ids, t, windows, perRun);
    plainText[format] = (await generateText(plain, { prompt: PROMPT, tokens: z.genTokens })).text;
    await plain.release();
    plainBpc[format] = bitsFromLogits(ref, corpus.heldOut, t, windows);
    for (const k of CASES[format]) {
      ctx.progress.tick(`lm: ${format} ${k.label}`);
      const req = { ...k.req, ...(k.req.schemes.includes('advparams') ? { data: advparamsData(corpus.heldOut, t, 64), seed: 1 } : {}) };
      let res;
      try {
        res = await lockModel(bytes, { ...req, vendorSeed, modelKey: labelKey(`lm/${format}/${k.label}`), modelId: `lm-${format}-eval` });
      } catch (e) {
        if (!(e instanceof KeylockError)) throw e;
        rows.push({ format, lock: k.label, identical: undefined, wrongKey: '–', noKeyBpc: NaN, withKey: '–', noKey: '–', note: `refused: ${e.name}: ${e.message}` });
        if (k.label === 'shuffle') checks.push(check(`lm ${format}: shuffle refuses token inputs with a typed error`, e.name === 'UnsupportedModelError', `${e.name}: ${e.message}`));
        continue;
      }
      const m = await loadModel(res.klm, { modelKey: res.modelKey, backend });
      if (m.state !== 'ready') throw m.error!;
      const got = await heldOutOf((x) => m.run(x), ids, t, windows, perRun);
      const withKey = (await generateText(m, { prompt: PROMPT, tokens: z.genTokens })).text;
      await m.release();
      const wrong = await loadModel(res.klm, { modelKey: randomBytes(32), backend });
      const wrongKey = wrong.error instanceof KeyMismatchError && wrong.stats.runs === 0 ? 'stopped before inference' : `NOT stopped (${wrong.state})`;
      await wrong.release();
      let noKeyBpc = NaN;
      let noKey = '–';
      try {
        const copy = await open(res.locked);
        noKeyBpc = bitsFromLogits(await heldOutOf((x) => copy.run(stolenFeeds(copy, x)), ids, t, windows, perRun), corpus.heldOut, t, windows);
        noKey = (await generateText(copiedModel(copy), { prompt: PROMPT, tokens: z.genTokens })).text;
        await copy.release();
      } catch (e) {
        noKey = `does not run: ${(e as Error).message.split('\n')[0].slice(0, 80)}`;
      }
      const identical = sameBits(got, ref);
      checks.push(check(`lm ${format} ${k.label}: with the key, logits bit-identical to the plain file`, identical, `${windows} held-out windows on ${backend}`));
      checks.push(check(`lm ${format} ${k.label}: wrong key stopped`, wrongKey === 'stopped before inference', wrongKey));
      checks.push(check(`lm ${format} ${k.label}: the copy without the key is worse than the plain model by ≥ 0.5 bits/char`, !(noKeyBpc < plainBpc[format] + 0.5), `${f3(noKeyBpc)} vs plain ${f3(plainBpc[format])}`));
      const note = res.report.filter((l) => /^signflip: (MatMul|FULLY)|^advparams: modified/.test(l)).length;
      rows.push({ format, lock: k.label, identical, wrongKey, noKeyBpc, withKey, noKey, note: note ? `${note} keyed layers` : '' });
      if (format === 'onnx' && k.label === 'signflip (fold)') fold = { klm: res.klm, locked: res.locked, modelKey: res.modelKey };
      if (format === 'onnx') lockedOnnx[k.label] = res.locked;
    }
  }
  return { rows, plainBpc, plainText, fold, lockedOnnx };
}

/** The attacker's repair of a random-looking copy: non-finite or |w| > 1 values replaced by the architecture's own init. */
function repaired(c: LmConfig, w: Map<string, Float32Array>, seed: number): { w: Map<string, Float32Array>; replaced: number } {
  const init = initLmWeights(c, seed);
  let replaced = 0;
  const out = new Map<string, Float32Array>();
  for (const [name] of lmShapes(c)) {
    const a = Float32Array.from(w.get(name) ?? init.get(name)!);
    const fresh = init.get(name)!;
    for (let i = 0; i < a.length; i++) if (!(Math.abs(a[i]) <= 1)) { a[i] = fresh[i]; replaced++; }
    out.set(name, a);
  }
  return { w: out, replaced };
}

interface TuneRow { start: string; fraction: number; chars: number; bpc: number; seconds: number }

/** Part 2: fine-tuning copies vs scratch. */
async function finetune(files: Record<string, Uint8Array>, c: LmConfig, corpus: LmCorpus, z: Sizes, ctx: SectionContext): Promise<{ rows: TuneRow[]; replaced: Record<string, number> }> {
  const rows: TuneRow[] = [];
  const replaced: Record<string, number> = {};
  const starts: { label: string; weights: () => Map<string, Float32Array> }[] = [
    { label: 'scratch', weights: () => initLmWeights(c, LM_RECIPE.seed + 100) },
  ];
  for (const [label, bytes] of Object.entries(files)) {
    const raw = lmWeightsFromOnnx(c, bytes);
    if (label.startsWith('signflip')) starts.push({ label: `${label} copy, as is`, weights: () => raw });
    else {
      const r = repaired(c, raw, LM_RECIPE.seed + 200);
      replaced[label] = r.replaced;
      starts.push({ label: `${label} copy, repaired`, weights: () => r.w });
    }
  }
  for (const fraction of z.fractions) {
    const data = trainSubset(corpus, fraction);
    for (const s of starts) {
      ctx.progress.tick(`lm: fine-tune ${s.label} on ${fraction * 100}%`);
      const lm = makeLm(c, s.weights());
      const r = fitLm(lm, data, { ...z.finetune, seed: 7 });
      rows.push({ start: s.label, fraction, chars: data.length, bpc: bitsPerChar(lm, corpus.heldOut, z.evalWindows), seconds: r.seconds });
      disposeLm(lm);
    }
  }
  return { rows, replaced };
}

interface SearchResult { bits: number; agree: number; queries: number; before: number; after: number; seconds: number; qk: number; qkAgree: number }

/**
 * Part 3: greedy sign-flip key search on a fold-mode copy. The manifest names
 * the keyed layers and the ranges negated per channel; the attacker flips one
 * channel at a time (weight column and bias entry) and keeps the flip when the
 * stolen windows' cross-entropy drops. Layers last to first, `sweeps` passes.
 */
async function keySearch(fold: { klm: Uint8Array; locked: Uint8Array; modelKey: Uint8Array }, c: LmConfig, corpus: LmCorpus, z: Sizes, ctx: SectionContext): Promise<SearchResult> {
  const t0 = performance.now();
  const lock = openKlm(fold.klm).manifest.locks.find((l) => l.scheme === 'signflip') as SignflipLock;
  const w = lmWeightsFromOnnx(c, fold.locked);
  const lm = makeLm(c, w);
  const shapes = new Map(lmShapes(c));
  const stolen = trainSubset(corpus, 0.01);
  const t = c.context;
  const n = Math.min(z.search.windows, Math.floor((stolen.length - 1) / t));
  const x = tf.tensor2d(windowsOf(stolen, t, n), [n, t], 'int32');
  const yIds = new Int32Array(n * t);
  for (let i = 0; i < n; i++) yIds.set(stolen.subarray(i * t + 1, i * t + t + 1), i * t);
  const y = tf.oneHot(tf.tensor2d(yIds, [n, t], 'int32'), VOCAB_SIZE);
  let queries = 0;
  // The layers are searched last to first, so the residual stream entering the block being
  // searched is fixed while that layer is: it is computed once per layer, and each query runs
  // from that block on (the same logits as a full forward pass).
  let from = 0;
  let stream = lmStreamTo(lm, x, 0);
  const restart = (block: number): void => {
    stream.dispose();
    from = block;
    stream = lmStreamTo(lm, x, block);
  };
  const loss = (): number => {
    queries++;
    const l = tf.tidy(() => tf.mean(tf.neg(tf.sum(tf.mul(y, tf.logSoftmax(lmForwardFrom(lm, stream, from), -1)), -1))));
    const v = l.dataSync()[0];
    l.dispose();
    return Number.isFinite(v) ? v : Infinity;
  };
  const blockOf = (name: string): number => {
    const m = /^h(\d+)\./.exec(name);
    return m ? Number(m[1]) : name.startsWith('head.') || name.startsWith('lnf.') ? c.layers : 0;
  };
  const flip = (layer: SignflipLock['layers'][number], j: number): void => {
    for (const r of layer.ranges) {
      const a = w.get(r.name)!;
      const shape = shapes.get(r.name)!;
      if (shape.length === 1) a[j] = -a[j];
      else if (r.layout === 'inner') for (let i = 0; i < shape[0]; i++) a[i * shape[1] + j] = -a[i * shape[1] + j];
      else for (let k = 0; k < shape[1]; k++) a[j * shape[1] + k] = -a[j * shape[1] + k];
      lm.params[r.name].assign(tf.tensor(a, shape));
    }
  };
  const before = bitsPerChar(lm, corpus.heldOut, z.evalWindows);
  const guess = new Map(lock.layers.map((l) => [l.weight, new Uint8Array(l.channels)]));
  let best = loss();
  const order = [...lock.layers].reverse();
  const total = order.reduce((s, l) => s + l.channels, 0);
  for (let sweep = 0; sweep < z.search.sweeps; sweep++) {
    let changed = 0;
    for (const layer of order) {
      ctx.progress.tick(`lm: key search sweep ${sweep + 1}, ${layer.weight}`);
      restart(Math.min(...layer.ranges.map((r) => blockOf(r.name))));
      const g = guess.get(layer.weight)!;
      for (let j = 0; j < layer.channels; j++) {
        flip(layer, j);
        const l = loss();
        if (l < best) { best = l; g[j] ^= 1; changed++; } else flip(layer, j);
      }
    }
    if (!changed) break;
  }
  const after = bitsPerChar(lm, corpus.heldOut, z.evalWindows);
  let agree = 0;
  let qk = 0;
  let qkAgree = 0;
  const truth = new Map(lock.layers.map((l) => [l.weight, layerBits(lock, l, fold.modelKey)]));
  for (const l of lock.layers) {
    const g = guess.get(l.weight)!;
    const k = truth.get(l.weight)!;
    for (let j = 0; j < l.channels; j++) if (g[j] === k[j]) agree++;
    // Q and K channels enter attention only through q_j·k_j: what matters is their relative sign.
    const m = /^(h\d+)\.attn\.q\.weight$/.exec(l.weight);
    if (m) {
      const kw = `${m[1]}.attn.k.weight`;
      const gk = guess.get(kw);
      const tk = truth.get(kw);
      if (gk && tk) for (let j = 0; j < l.channels; j++) { qk++; if ((g[j] ^ gk[j]) === (k[j] ^ tk[j])) qkAgree++; }
    }
  }
  x.dispose();
  y.dispose();
  stream.dispose();
  disposeLm(lm);
  return { bits: total, agree, queries, before, after, seconds: (performance.now() - t0) / 1000, qk, qkAgree };
}


/** The sizes of a run (quick: the CI ones); the fine-tuning budget is shared with eval/partial-inline.ts. */
export function lmSizes(quick: boolean): Sizes {
  return quick ? { ...FULL, ...QUICK } : FULL;
}

/** The model: the cached one `npm run train -- --lm` wrote (trained here if missing), or a tiny one in quick mode. */
export async function theModel(ctx: SectionContext, corpus: LmCorpus): Promise<LmModelFiles> {
  // The sections of one run share the model (quick mode trains it once).
  const key = `${ctx.quick}:${ctx.cache}`;
  let p = models.get(key);
  if (!p) { p = loadOrTrain(ctx, corpus); models.set(key, p); }
  return p;
}

interface LmModelFiles { onnx: Uint8Array; tflite: Uint8Array; meta: Record<string, unknown>; source: string }
const models = new Map<string, Promise<LmModelFiles>>();

async function loadOrTrain(ctx: SectionContext, corpus: LmCorpus): Promise<LmModelFiles> {
  if (ctx.quick) {
    const { lm, fit } = trainLm(corpus, { config: QUICK.config, steps: QUICK.trainSteps });
    const w = lmWeights(lm);
    const onnx = lmToOnnx(QUICK.config, w, 'keylock tiny CI language model');
    const tflite = lmToTflite(QUICK.config, w, 'keylock tiny CI language model');
    const chk = await checkLmExports(lm, onnx, tflite, corpus.heldOut, 32, 2);
    const meta = { config: QUICK.config, steps: QUICK.trainSteps, seconds: fit.seconds, heldOutBpc: bitsPerChar(lm, corpus.heldOut, 256), ...chk };
    disposeLm(lm);
    return { onnx, tflite, meta, source: `a tiny model trained here (${QUICK.trainSteps} steps)` };
  }
  const dir = join(ctx.cache, 'lm');
  const paths = [join(dir, LM_FILES.onnx), join(dir, LM_FILES.tflite), join(dir, LM_FILES.meta)];
  if (!paths.every(existsSync)) {
    const { lmTrainMain } = await import('../models/train/lm-train.ts');
    await lmTrainMain({ out: dir });
  }
  return {
    onnx: new Uint8Array(readFileSync(paths[0])), tflite: new Uint8Array(readFileSync(paths[1])),
    meta: JSON.parse(readFileSync(paths[2], 'utf8')) as Record<string, unknown>, source: `\`npm run train -- --lm\` (${join('eval/.cache/lm', LM_FILES.onnx)})`,
  };
}

export const lmSection: Section = async (ctx) => {
  const z: Sizes = ctx.quick ? { ...FULL, ...QUICK } : FULL;
  await initTfjsWasm();
  const corpus = loadLmCorpus();
  const c = z.config;
  const lockSteps = CASES.onnx.length + CASES.tflite.length;
  ctx.progress.plan(lockSteps + z.fractions.length * 4 + c.layers * 6 + 1 + 1);
  const checks: Check[] = [];
  // Wall and CPU seconds of each part (tfjs and onnxruntime-web run on one thread: CPU ≈ wall on an idle core).
  const times: { part: string; wall: number; cpu: number }[] = [];
  const timed = async <T>(part: string, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    try { return await f(); } finally {
      const cu = process.cpuUsage(c0);
      times.push({ part, wall: (performance.now() - t0) / 1000, cpu: (cu.user + cu.system) / 1e6 });
    }
  };
  const model = await timed('model', () => theModel(ctx, corpus));
  ctx.progress.tick('lm: model ready');
  const meta = model.meta as { config: LmConfig; steps: number; batch?: number; lr?: number; seconds: number; cpuSeconds?: number; heldOutBpc: number; onnxMaxDiff: number; tfliteMaxDiff: number; onnxBpc: number };
  checks.push(check('lm: ONNX export matches tfjs', meta.onnxMaxDiff < 1e-3, `max |Δ logit| ${meta.onnxMaxDiff.toExponential(2)} < 1e-3`));
  checks.push(check('lm: TFLite export matches tfjs', meta.tfliteMaxDiff < 1e-3, `max |Δ logit| ${meta.tfliteMaxDiff.toExponential(2)} < 1e-3`));

  const locks = await timed('lock table', () => lockTable(model, c, corpus, z, ctx, checks));
  // The locked files of the table, as a copier would hold them.
  const copies: Record<string, Uint8Array> = {};
  for (const label of ['signflip (input)', 'deeplock', 'sealed']) copies[label] = locks.lockedOnnx[label];
  const tune = await timed('fine-tuning', () => finetune(copies, c, corpus, z, ctx));
  const search = locks.fold ? await timed('key search', () => keySearch(locks.fold!, c, corpus, z, ctx)) : undefined;
  ctx.progress.tick('lm: done');

  // ---- markdown
  const md: string[] = ['## Transformer language model', ''];
  md.push(`Command: \`npm run eval -- --lm\` (model: ${model.source}; \`npm run eval -- --quick\` runs the same section on a tiny configuration as a CI check). ` +
    `Machine loaded (2 cores shared by several jobs): seconds are indicative only.`, '');
  md.push(`Model: decoder-only transformer, ${c.layers} layers, width ${c.width}, ${c.heads} heads, MLP ${c.hidden}, context ${c.context} characters, vocabulary newline + a–z ` +
    `(${lmShapes(c).reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0)} weights); trained ${meta.steps} Adam steps${meta.batch ? ` of ${meta.batch}×${c.context} characters, peak step size ${meta.lr}` : ''} (${meta.seconds.toFixed(0)} s wall${meta.cpuSeconds ? `, ${meta.cpuSeconds.toFixed(0)} s CPU` : ''}, tfjs wasm, one thread) on ` +
    `an-array-of-english-words 2.0.0 (${corpus.trainWords.length} words; ${corpus.heldOutWords.length} held out by word). ` +
    `Held-out ${meta.heldOutBpc.toFixed(3)} bits/char (tfjs, ${'1024'} windows of ${c.context}, every position scored). ` +
    `Exports: ONNX under onnxruntime-web max |Δ logit| ${meta.onnxMaxDiff.toExponential(2)} and TFLite under tfjs-tflite ${meta.tfliteMaxDiff.toExponential(2)} against tfjs.`, '');
  md.push(`Greedy text from the prompt ${show(PROMPT)} (⏎ = newline): plain ONNX ${show(locks.plainText.onnx)}, plain TFLite ${show(locks.plainText.tflite)}.`, '');
  md.push('### Locks', '');
  md.push(`Held-out bits/char over ${z.evalWindows} windows (ONNX, onnxruntime-web wasm) or ${z.tfliteWindows} (TFLite, tfjs-tflite); plain: ONNX ${f3(locks.plainBpc.onnx)}, TFLite ${f3(locks.plainBpc.tflite)}. ` +
    '"Copy without the key" runs the locked bytes as a copier would (plain runtime, signflip key inputs fed ones).', '');
  md.push('| file | lock | with the key vs plain | wrong key | copy without the key: bits/char | greedy text with the key | greedy text from the copy | notes |', '| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of locks.rows) {
    md.push(`| ${r.format} | ${r.lock} | ${r.identical === undefined ? '–' : r.identical ? 'bit-identical' : 'DIFFERENT'} | ${r.wrongKey} | ${r.identical === undefined ? '–' : f3(r.noKeyBpc)} | ` +
      `${r.withKey === '–' ? '–' : show(r.withKey)} | ${r.noKey === '–' || r.noKey.startsWith('does not') ? r.noKey : show(r.noKey)} | ${r.note.replace(/\|/g, '\\|')} |`);
  }
  md.push('', '### Fine-tuning the copy', '');
  md.push(`Every run: ${z.finetune.steps} Adam steps of ${z.finetune.batch}×${c.context} characters, peak step size ${z.finetune.lr} (warm-up, cosine decay), the same for every start. ` +
    `Repaired copies: ${Object.entries(tune.replaced).map(([k, v]) => `${k} ${v} values replaced`).join(', ')}. The key holder's model: ${f3(locks.plainBpc.onnx)} bits/char.`, '');
  const startNames = [...new Set(tune.rows.map((r) => r.start))];
  md.push(`| share of training words (characters) | ${startNames.join(' | ')} |`, `| --- | ${startNames.map(() => '---').join(' | ')} |`);
  for (const f of z.fractions) {
    const rs = tune.rows.filter((r) => r.fraction === f);
    md.push(`| ${f * 100}% (${rs[0].chars}) | ${startNames.map((s) => f3(rs.find((r) => r.start === s)!.bpc)).join(' | ')} |`);
  }
  const scratch = (f: number): number => tune.rows.find((r) => r.fraction === f && r.start === 'scratch')!.bpc;
  const adv = startNames.filter((s) => s !== 'scratch').map((s) => {
    const d = z.fractions.map((f) => tune.rows.find((r) => r.fraction === f && r.start === s)!.bpc - scratch(f));
    return `${s}: ${d.map((x) => (x >= 0 ? '+' : '') + x.toFixed(3)).join(' / ')}`;
  });
  md.push('', `Copy minus scratch, bits/char (negative: the copy helped) at ${z.fractions.map((f) => `${f * 100}%`).join(' / ')}: ${adv.join('; ')}.`, '');
  md.push('![held-out bits/char after fine-tuning](img/lm-finetune.svg)', '');
  if (search) {
    md.push('### Sign-flip key search', '');
    md.push(`Greedy coordinate search over the ${search.bits} key bits of a fold-mode copy (ONNX), layers last to first, ${z.search.sweeps === 1 ? 'one sweep' : `up to ${z.search.sweeps} sweeps`}, ` +
      `loss on ${z.search.windows} stolen windows from 1 % of the training words: ${search.queries} queries (forward passes), ${search.seconds.toFixed(0)} s. ` +
      `Held-out bits/char: copy as is ${f3(search.before)}, after the search ${f3(search.after)}, the key holder ${f3(locks.plainBpc.onnx)}. ` +
      `Bits equal to the key: ${search.agree}/${search.bits} (${(100 * search.agree / search.bits).toFixed(1)}%); ` +
      `query/key channel pairs whose relative sign is right: ${search.qkAgree}/${search.qk} (attention sees q_j·k_j only, so that is what a search can find for those two layers).`, '');
  }
  md.push('### Section times', '',
    `Wall / CPU seconds of this run's parts (the machine was loaded; tfjs and onnxruntime-web run on one thread, so the CPU seconds are about what an idle core takes): ` +
    `${times.map((x) => `${x.part} ${x.wall.toFixed(0)} / ${x.cpu.toFixed(0)} s`).join(', ')}. ` +
    'The key search runs each query from the block being searched on, the residual stream before it computed once per layer; the copies fine-tuned are the lock table\'s own files.', '');
  md.push('### Where each scheme applies', '',
    '- `sealed`, `deeplock`: every float32 weight, on both formats; the file is noise without the key.',
    '- `signflip` keys every MatMul (ONNX) or FULLY_CONNECTED (TFLite) with a weight: the q, k, v and output projections of attention, both MLP layers and the head. ' +
    'The two attention products (QKᵀ, softmax·V) multiply activations, have no weight, and are skipped. In input mode the ±1 key multiplies each projection right after its bias, ' +
    'before Reshape, GELU or the residual Add, none of which is sign-odd per channel; fold mode restores the weights at load. Either way the key holder gets the plain logits bit for bit.',
    '- `advparams` needs a classifier: the ONNX locker takes float inputs and logits [N, K] with one label per sample, and refuses the int32 token input; ' +
    'the gradient-free TFLite locker reads the output as one flat [1, K] vector, on which the next-character labels (held-out windows) mean nothing, and finds no perturbation that raises its loss. ' +
    'The same weights exported as a next-character classifier (float ids, logits of the last position) can be locked, and are, with the reset attack, in the next section; ' +
    'a sequence-aware loss (cross-entropy per position) in the lockers would lift this for the full model.',
    '- `shuffle` permutes image blocks of a float input; token ids have none, so it refuses.');
  const svg = lineChart({
    title: 'Fine-tuning a copied locked language model vs training from scratch',
    xLabel: 'share of training words (%)', yLabel: 'held-out bits per character', xLog: true,
    xTicks: z.fractions.map((f) => f * 100), xFormat: (v) => `${v}`,
    series: startNames.map((s) => ({ name: s, points: z.fractions.map((f) => [f * 100, tune.rows.find((r) => r.fraction === f && r.start === s)!.bpc] as const), dashed: s === 'scratch' })),
    refLines: [{ y: locks.plainBpc.onnx, label: 'key holder' }],
  });
  for (const r of tune.rows) checks.push(check(`lm fine-tune ${r.start} ${r.fraction * 100}%: finite held-out bits/char`, Number.isFinite(r.bpc), f3(r.bpc)));
  return { id: 'lm', title: 'Transformer language model', markdown: md.join('\n'), svgs: { 'lm-finetune.svg': svg }, checks };
};

/**
 * Section "lm-advparams": AdvParams on the language model's next-character
 * head (the same weights exported as a classifier: float32 ids [N, T] →
 * logits of the last position [N, vocab], models/train/lm-export.ts), the only
 * form keylock's advparams locker takes. Locked with the default knobs and an
 * encryption set of training windows labelled with their next character; then
 * the outlier reset (eval/attacks/advparams.ts): the attacker flags the weights
 * of every candidate layer (all weight matrices: which ones were chosen is not
 * in the file) farthest from their layer's median in robust standard
 * deviations, and resets them to the median.
 */
export const lmAdvparamsSection: Section = async (ctx) => {
  const z: Sizes = ctx.quick ? { ...FULL, ...QUICK } : FULL;
  await initTfjsWasm();
  const corpus = loadLmCorpus();
  const c = z.config;
  const t = c.context;
  ctx.progress.plan(4);
  const model = await theModel(ctx, corpus);
  ctx.progress.tick('lm-advparams: model ready');
  const w = lmWeightsFromOnnx(c, model.onnx);
  const next = lmToOnnx(c, w, 'keylock reference language model, next-character head', { nextChar: true });
  const samples = ctx.quick ? 32 : 256;
  const rand = mulberry32(ctx.seed + 17);
  const data = [];
  for (let i = 0; i < samples; i++) {
    const s = Math.floor(rand() * (corpus.train.length - t - 1));
    data.push({ inputs: { [LM_INPUT]: { dtype: 'float32' as const, dims: [1, t], data: Float32Array.from(corpus.train.subarray(s, s + t)) } }, label: corpus.train[s + t] });
  }
  // Held-out full windows, each scored on the character after it.
  const windows = z.evalWindows;
  const hx = new Float32Array(windows * t);
  const hy = new Int32Array(windows);
  for (let i = 0; i < windows; i++) {
    hx.set(corpus.heldOut.subarray(i * (t + 1), i * (t + 1) + t), i * t);
    hy[i] = corpus.heldOut[i * (t + 1) + t];
  }
  const feeds = { [LM_INPUT]: { dtype: 'float32' as const, dims: [windows, t], data: hx } };
  const nextBits = (logits: Float32Array): number => {
    let nats = 0;
    for (let i = 0; i < windows; i++) {
      const row = logits.subarray(i * VOCAB_SIZE, (i + 1) * VOCAB_SIZE);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      nats += Math.log(sum) + max - row[hy[i]];
    }
    const b = nats / windows / Math.LN2;
    return Number.isFinite(b) ? b : Infinity;
  };
  const run = async (bytes: Uint8Array): Promise<Float32Array> => {
    const s = await createOrtSession(bytes);
    try {
      return Float32Array.from((await s.run(feeds))[LM_NEXT_OUTPUT].data as Float32Array);
    } finally {
      await s.release();
    }
  };
  const plain = await run(next);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const res = await lockModel(next, { schemes: ['advparams'], data, seed: 1, vendorSeed, modelKey: labelKey('lm/onnx/advparams-next'), modelId: 'lm-next-eval' });
  const lockSeconds = (performance.now() - t0) / 1000;
  const lockCpu = process.cpuUsage(c0);
  ctx.progress.tick('lm-advparams: locked');
  const m = await loadModel(res.klm, { modelKey: res.modelKey, backend: 'wasm' });
  if (m.state !== 'ready') throw m.error!;
  const withKey = Float32Array.from((await m.run(feeds))[LM_NEXT_OUTPUT].data as Float32Array);
  await m.release();
  const wrong = await loadModel(res.klm, { modelKey: randomBytes(32), backend: 'wasm' });
  const wrongStopped = wrong.error instanceof KeyMismatchError && wrong.stats.runs === 0;
  await wrong.release();
  const copy = await run(res.locked);

  // The truth, for scoring only: which elements differ between the plain and locked weights.
  const lockedW = lmWeightsFromOnnx(c, res.locked);
  const truth = new Set<string>();
  for (const [name, a] of w) {
    const b = lockedW.get(name)!;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) truth.add(`${name}#${i}`);
  }
  // The attacker: every weight matrix of a MatMul is a candidate layer.
  const candidates = lmShapes(c).filter(([name, s]) => s.length === 2 && !name.startsWith('tok.') && !name.startsWith('pos.')).map(([name]) => name);
  const scored: { key: string; name: string; i: number; z: number; median: number }[] = [];
  for (const name of candidates) {
    const a = lockedW.get(name)!;
    const { median, sigma } = robustStats(a);
    for (let i = 0; i < a.length; i++) scored.push({ key: `${name}#${i}`, name, i, z: Math.abs(a[i] - median) / sigma, median });
  }
  scored.sort((p, q) => q.z - p.z);
  const budgets = [truth.size, 2 * truth.size, 5 * truth.size];
  const resets: { budget: number; found: number; bpc: number }[] = [];
  for (const budget of budgets) {
    const fixed = new Map([...lockedW].map(([k, v]) => [k, Float32Array.from(v)]));
    let found = 0;
    for (const s of scored.slice(0, budget)) {
      fixed.get(s.name)![s.i] = s.median;
      if (truth.has(s.key)) found++;
    }
    resets.push({ budget, found, bpc: nextBits(await run(lmToOnnx(c, fixed, 'reset', { nextChar: true }))) });
  }
  ctx.progress.tick('lm-advparams: reset');
  const checks: Check[] = [
    check('lm advparams (next-character head): with the key, logits bit-identical to the plain file', sameBits(withKey, plain), `${windows} held-out windows on wasm`),
    check('lm advparams (next-character head): wrong key stopped', wrongStopped, wrongStopped ? 'stopped before inference' : 'NOT stopped'),
    check('lm advparams: the lock changed weights and the copy scores worse than plain', truth.size > 0 && nextBits(copy) > nextBits(plain), `${truth.size} weights; ${f3(nextBits(copy))} vs ${f3(nextBits(plain))} bits/char`),
  ];
  const modified = res.report.find((l) => l.startsWith('advparams: modified')) ?? '';
  const enc = res.report.find((l) => l.startsWith('advparams: encryption set')) ?? '';
  const md = [
    '## Transformer language model: AdvParams on the next-character head', '',
    `Command: \`npm run eval -- --lm\` (section \`lm-advparams\`). The language model's weights exported as a next-character classifier ` +
    `(float32 ids [N, ${t}] → logits of the last position [N, ${VOCAB_SIZE}]), locked with \`advparams\` at its default knobs, seed 1, ` +
    `encryption set ${samples} training windows labelled with their next character (${lockSeconds.toFixed(0)} s wall, ${((lockCpu.user + lockCpu.system) / 1e6).toFixed(0)} s CPU to lock, machine loaded). ` +
    `Bits/char of the next character after ${windows} held-out windows (onnxruntime-web wasm).`, '',
    `- Lock report: ${modified.replace(/^advparams: /, '')}; ${enc.replace(/^advparams: /, '')}.`,
    `- With the key: ${sameBits(withKey, plain) ? 'bit-identical to the plain head' : 'DIFFERENT from the plain head'}; a wrong key ${wrongStopped ? 'is stopped before inference' : 'is NOT stopped'}.`,
    `- Plain ${f3(nextBits(plain))} bits/char; the copy without the key ${f3(nextBits(copy))}.`, '',
    `Outlier reset without the key (flag the weights farthest from their layer median in robust standard deviations, over all ${candidates.length} weight matrices; reset them to the median):`, '',
    '| weights reset | of them perturbed | bits/char after the reset |', '| --- | --- | --- |',
    ...resets.map((r) => `| ${r.budget} | ${r.found}/${truth.size} | ${f3(r.bpc)} |`), '',
    'AdvParams on the full-sequence model (int32 ids, logits at every position) is refused by the lockers; see "Where each scheme applies" above.',
  ];
  ctx.progress.tick('lm-advparams: done');
  return { id: 'lm-advparams', title: 'Transformer language model: AdvParams', markdown: md.join('\n'), checks };
};
