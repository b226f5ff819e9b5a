/**
 * keylock's reference language model: a small decoder-only transformer over
 * characters, trained with tfjs (wasm backend) on the English word list of the
 * npm package an-array-of-english-words 2.0.0 (274,937 words, a–z), words
 * joined by newlines.
 *
 * Architecture (GPT-2 style, pre-LayerNorm): token and position embeddings,
 * LM_CONFIG.layers blocks of [LayerNorm → multi-head causal self-attention →
 * residual, LayerNorm → Linear → GELU (tanh form) → Linear → residual], a final
 * LayerNorm and a linear head to the vocabulary. The forward pass is written
 * with the same elementary operations, in the same order, as the ONNX graph
 * (models/train/lm-export.ts), so the exports can be compared to it.
 *
 * Layouts: every linear weight is [in, out] (ONNX MatMul's B), embeddings
 * [vocab, width] and [context, width]. The input is int32 token ids [N, T] with
 * T = context; the output is logits [N, T, vocab], position t predicting the
 * character after t. A shorter prompt sits at positions 0.. and the rest is
 * padding: attention is causal, so padding never changes earlier positions.
 *
 * Everything is seeded (the split, init, batch windows), and the wasm backend
 * runs single-threaded, so a rerun gives the same weights on this machine.
 */
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { mulberry32, shuffleInPlace } from '../prng.ts';
import type { Progress } from './progress.ts';

/** Sizes of the model. */
export interface LmConfig {
  /** Context length in characters (T). */
  context: number;
  /** Residual width (d). */
  width: number;
  heads: number;
  layers: number;
  /** Hidden width of the MLP. */
  hidden: number;
}

/** The reference model's sizes (about 110k weights). */
export const LM_CONFIG: LmConfig = { context: 32, width: 64, heads: 4, layers: 2, hidden: 256 };

/** A tiny configuration for CI checks (seconds). */
export const LM_TINY: LmConfig = { context: 16, width: 32, heads: 2, layers: 1, hidden: 64 };

/** The vocabulary: id 0 is the newline between words, ids 1–26 are a–z. */
export const VOCAB = '\nabcdefghijklmnopqrstuvwxyz';
export const VOCAB_SIZE = VOCAB.length;

/** Seed of the word split. */
export const LM_SPLIT_SEED = 0x1a17;
/** Share of the words held out for bits per character. */
export const LM_HELD_OUT = 0.05;
/** LayerNorm epsilon (ONNX and TFLite graphs use the same). */
export const LN_EPS = 1e-5;
/** Additive causal mask value for future positions; exp of it underflows to 0 in float32. */
export const MASK_VALUE = -1e9;
/** sqrt(2/π) and the cubic coefficient of GELU's tanh form. */
export const GELU_C = { a: 0.7978845608028654, b: 0.044715 } as const;

/** Token ids of `text`; RangeError for a character outside the vocabulary. */
export function encodeText(text: string): Int32Array {
  const out = new Int32Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const id = VOCAB.indexOf(text[i]);
    if (id < 0) throw new RangeError(`expected characters a–z or a newline, got ${JSON.stringify(text[i])} at ${i}`);
    out[i] = id;
  }
  return out;
}

export function decodeIds(ids: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < ids.length; i++) s += VOCAB[ids[i]] ?? '?';
  return s;
}

/** The corpus split by word: token streams (words joined by newlines, one leading newline). */
export interface LmCorpus {
  trainWords: string[];
  heldOutWords: string[];
  train: Int32Array;
  heldOut: Int32Array;
}

function stream(words: readonly string[]): Int32Array {
  return encodeText(`\n${words.join('\n')}\n`);
}

/** Reads an-array-of-english-words and splits it by word with a seeded shuffle. */
export function loadLmCorpus(): LmCorpus {
  const require = createRequire(import.meta.url);
  const words = [...(require('an-array-of-english-words/index.json') as string[])];
  const order = new Uint32Array(words.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  shuffleInPlace(order, mulberry32(LM_SPLIT_SEED));
  const nHeld = Math.round(words.length * LM_HELD_OUT);
  const heldOutWords = Array.from(order.subarray(0, nHeld), (i) => words[i]);
  const trainWords = Array.from(order.subarray(nHeld), (i) => words[i]);
  return { trainWords, heldOutWords, train: stream(trainWords), heldOut: stream(heldOutWords) };
}

/** The first `fraction` of the (already shuffled) training words as a token stream, at least one word. */
export function trainSubset(c: LmCorpus, fraction: number): Int32Array {
  const n = Math.max(1, Math.round(c.trainWords.length * fraction));
  return stream(c.trainWords.slice(0, n));
}

/** Named weights of the model; names are the ONNX initializer names. */
export type LmParams = Record<string, tf.Variable>;

/** The model: its config and weights. */
export interface Lm {
  config: LmConfig;
  params: LmParams;
}

/** Weight names and shapes in a fixed order ([in,out] for linear layers). */
export function lmShapes(c: LmConfig): [string, number[]][] {
  const d = c.width;
  const s: [string, number[]][] = [['tok.weight', [VOCAB_SIZE, d]], ['pos.weight', [c.context, d]]];
  for (let l = 0; l < c.layers; l++) {
    const p = `h${l}.`;
    s.push([`${p}ln1.weight`, [d]], [`${p}ln1.bias`, [d]]);
    for (const m of ['q', 'k', 'v', 'o']) s.push([`${p}attn.${m}.weight`, [d, d]], [`${p}attn.${m}.bias`, [d]]);
    s.push([`${p}ln2.weight`, [d]], [`${p}ln2.bias`, [d]]);
    s.push([`${p}mlp.fc.weight`, [d, c.hidden]], [`${p}mlp.fc.bias`, [c.hidden]]);
    s.push([`${p}mlp.proj.weight`, [c.hidden, d]], [`${p}mlp.proj.bias`, [d]]);
  }
  s.push(['lnf.weight', [d]], ['lnf.bias', [d]], ['head.weight', [d, VOCAB_SIZE]], ['head.bias', [VOCAB_SIZE]]);
  return s;
}

/**
 * Initial weights, seeded: N(0, 0.02) for embeddings and linear weights (the
 * residual projections scaled by 1/sqrt(2·layers), as GPT-2), LayerNorm gains 1,
 * every bias 0.
 */
export function initLmWeights(c: LmConfig, seed: number): Map<string, Float32Array> {
  const rand = mulberry32(seed);
  const gauss = (): number => {
    const u = Math.max(rand(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  };
  const out = new Map<string, Float32Array>();
  for (const [name, shape] of lmShapes(c)) {
    const a = new Float32Array(shape.reduce((x, y) => x * y, 1));
    if (shape.length === 2) {
      const std = name.endsWith('o.weight') || name.endsWith('proj.weight') ? 0.02 / Math.sqrt(2 * c.layers) : 0.02;
      for (let i = 0; i < a.length; i++) a[i] = gauss() * std;
    } else if (/ln[12f]?\.weight$/.test(name)) a.fill(1);
    out.set(name, a);
  }
  return out;
}

/** A model with weights from `w` (missing names: RangeError). */
export function makeLm(c: LmConfig, w: Map<string, Float32Array>): Lm {
  const params: LmParams = {};
  for (const [name, shape] of lmShapes(c)) {
    const a = w.get(name);
    const n = shape.reduce((x, y) => x * y, 1);
    if (!a || a.length !== n) throw new RangeError(`lm: expected weight ${name} of ${n} values, got ${a ? a.length : 'none'}`);
    params[name] = tf.variable(tf.tensor(a, shape), true, `${name}_${Math.random().toString(36).slice(2, 8)}`);
  }
  return { config: c, params };
}

/** The model's weights as plain arrays. */
export function lmWeights(m: Lm): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, v] of Object.entries(m.params)) out.set(name, Float32Array.from(v.dataSync() as Float32Array));
  return out;
}

export function disposeLm(m: Lm): void {
  for (const v of Object.values(m.params)) v.dispose();
}

export function lmParamCount(c: LmConfig): number {
  return lmShapes(c).reduce((n, [, s]) => n + s.reduce((x, y) => x * y, 1), 0);
}

/** The additive causal mask [T,T]: 0 on and below the diagonal, MASK_VALUE above. */
export function causalMask(t: number): Float32Array {
  const m = new Float32Array(t * t);
  for (let i = 0; i < t; i++) for (let j = i + 1; j < t; j++) m[i * t + j] = MASK_VALUE;
  return m;
}

function layerNorm(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const mu = tf.mean(x, -1, true);
  const c = tf.sub(x, mu);
  const v = tf.mean(tf.mul(c, c), -1, true);
  return tf.add(tf.mul(tf.div(c, tf.sqrt(tf.add(v, LN_EPS))), g), b);
}

function gelu(x: tf.Tensor): tf.Tensor {
  const x3 = tf.mul(tf.mul(x, x), x);
  const t = tf.tanh(tf.mul(tf.add(x, tf.mul(x3, GELU_C.b)), GELU_C.a));
  return tf.mul(tf.mul(x, 0.5), tf.add(t, 1));
}

/** The permutation that swaps the last two axes. */
function swapLast(rank: number): number[] {
  return [...Array.from({ length: rank - 2 }, (_, i) => i), rank - 1, rank - 2];
}

/**
 * a × b (same rank, same leading axes) whose gradients transpose explicitly: tfjs's wasm
 * BatchMatMul with a transpose flag (what tf.matMul's own gradient uses) measured about 9×
 * slower here than a Transpose followed by a plain BatchMatMul, and the backward pass was most
 * of a training step. Same products, so the same model; the rounding of the gradients may differ.
 */
export const lmMatMul = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc): { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[] } => {
  save([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved;
      return [tf.matMul(dy, tf.transpose(sb, swapLast(sb.rank))), tf.matMul(tf.transpose(sa, swapLast(sa.rank)), dy)];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;

/** [N·T, in] × [in, out] + bias, reshaped back to [N, T, out]. */
function linear(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const [n, t, d] = x.shape;
  return tf.reshape(tf.add(lmMatMul(tf.reshape(x, [n * t, d]), w), b), [n, t, w.shape[1]!]);
}

/** The residual stream after the embeddings, [N, T, width], for token ids [N, T] (int32). */
export function lmEmbed(m: Lm, ids: tf.Tensor2D): tf.Tensor3D {
  const { config: c, params: p } = m;
  return tf.tidy(() => {
    const [n, t] = ids.shape;
    if (t !== c.context) throw new RangeError(`lm: expected ${c.context} tokens per row, got ${t}`);
    // One-hot × table equals a gather; tfjs's wasm backend has no gradient kernel for gather.
    return tf.add(tf.reshape(lmMatMul(tf.reshape(tf.oneHot(ids, VOCAB_SIZE), [n * t, VOCAB_SIZE]), p['tok.weight']), [n, t, c.width]), p['pos.weight']) as tf.Tensor3D;
  });
}

/** Block `l` on the residual stream h [N, T, width] (call inside a tidy). */
function lmBlock(m: Lm, h: tf.Tensor, l: number): tf.Tensor {
  const { config: c, params: p } = m;
  const [n, t] = h.shape;
  const dh = c.width / c.heads;
  const mask = tf.tensor2d(causalMask(t), [t, t]);
  const scale = 1 / Math.sqrt(dh);
  const q = (k: string): tf.Tensor => p[`h${l}.${k}`];
  const a = layerNorm(h, q('ln1.weight'), q('ln1.bias'));
  const heads = (x: tf.Tensor, perm: number[]): tf.Tensor4D => tf.transpose(tf.reshape(x, [n, t, c.heads, dh]), perm) as tf.Tensor4D;
  const qh = heads(linear(a, q('attn.q.weight'), q('attn.q.bias')), [0, 2, 1, 3]);
  const kt = heads(linear(a, q('attn.k.weight'), q('attn.k.bias')), [0, 2, 3, 1]);
  const vh = heads(linear(a, q('attn.v.weight'), q('attn.v.bias')), [0, 2, 1, 3]);
  const s = tf.add(tf.mul(lmMatMul(qh, kt), scale), mask);
  const o = tf.reshape(tf.transpose(lmMatMul(tf.softmax(s, -1), vh), [0, 2, 1, 3]), [n, t, c.width]);
  const h1 = tf.add(h, linear(o, q('attn.o.weight'), q('attn.o.bias')));
  const b = layerNorm(h1, q('ln2.weight'), q('ln2.bias'));
  return tf.add(h1, linear(gelu(linear(b, q('mlp.fc.weight'), q('mlp.fc.bias'))), q('mlp.proj.weight'), q('mlp.proj.bias')));
}

/**
 * Logits [N, T, vocab] from the residual stream `h0` entering block `from` (0: the embeddings'
 * output; `layers`: the final LayerNorm and head only). A search that changes only blocks ≥ `from`
 * computes the stream before them once ({@link lmStreamTo}).
 */
export function lmForwardFrom(m: Lm, h0: tf.Tensor3D, from: number): tf.Tensor3D {
  const p = m.params;
  return tf.tidy(() => {
    let h: tf.Tensor = h0;
    for (let l = from; l < m.config.layers; l++) h = lmBlock(m, h, l);
    return linear(layerNorm(h, p['lnf.weight'], p['lnf.bias']), p['head.weight'], p['head.bias']) as tf.Tensor3D;
  });
}

/** The residual stream entering block `to` (`to` = layers: what the final LayerNorm gets). */
export function lmStreamTo(m: Lm, ids: tf.Tensor2D, to: number): tf.Tensor3D {
  return tf.tidy(() => {
    let h: tf.Tensor = lmEmbed(m, ids);
    for (let l = 0; l < to; l++) h = lmBlock(m, h, l);
    return h as tf.Tensor3D;
  });
}

/** Logits [N, T, vocab] for token ids [N, T] (int32). */
export function lmForward(m: Lm, ids: tf.Tensor2D): tf.Tensor3D {
  return tf.tidy(() => lmForwardFrom(m, lmEmbed(m, ids), 0));
}

/** Mean cross-entropy in nats of logits [N,T,V] against targets [N,T]. */
function crossEntropy(logits: tf.Tensor3D, targets: tf.Tensor2D): tf.Scalar {
  const [n, t, v] = logits.shape;
  const flat = tf.reshape(logits, [n * t, v]);
  return tf.mean(tf.neg(tf.sum(tf.mul(tf.oneHot(tf.reshape(targets, [n * t]), v), tf.logSoftmax(flat, -1)), -1))) as tf.Scalar;
}

/**
 * Held-out bits per character: the stream cut into consecutive windows of
 * `context` + 1 characters (at most `maxWindows`), every position of each window
 * predicting its next character (so early positions see little context).
 */
export function bitsPerChar(m: Lm, data: Int32Array, maxWindows = 1024, chunk = 128): number {
  const t = m.config.context;
  const windows = Math.min(maxWindows, Math.floor((data.length - 1) / t));
  if (windows < 1) throw new RangeError(`lm: expected at least ${t + 1} held-out tokens, got ${data.length}`);
  let nats = 0;
  for (let w0 = 0; w0 < windows; w0 += chunk) {
    const k = Math.min(chunk, windows - w0);
    const x = new Int32Array(k * t);
    const y = new Int32Array(k * t);
    for (let i = 0; i < k; i++) {
      x.set(data.subarray((w0 + i) * t, (w0 + i) * t + t), i * t);
      y.set(data.subarray((w0 + i) * t + 1, (w0 + i) * t + t + 1), i * t);
    }
    const loss = tf.tidy(() => crossEntropy(lmForward(m, tf.tensor2d(x, [k, t], 'int32')), tf.tensor2d(y, [k, t], 'int32')));
    nats += loss.dataSync()[0] * k;
    loss.dispose();
  }
  const bpc = nats / windows / Math.LN2;
  return Number.isFinite(bpc) ? bpc : Infinity;
}

/** Training hyper-parameters. */
export interface LmFitOptions {
  steps: number;
  batch: number;
  /** Peak Adam step size; linear warm-up over the first `warmup` share of steps, cosine decay to 10 % after. */
  lr: number;
  /** Share of the steps spent warming up (default 0.05). */
  warmup?: number;
  /** Seed of the window offsets. */
  seed: number;
  progress?: Progress;
  /** Name on the progress line. */
  label?: string;
  /** Evaluated at the end, for the progress line. */
  heldOut?: Int32Array;
  /** Gradient clipping by global norm (default 1). */
  clip?: number;
  /** Names of the weights to train (default: all; the others stay as they are). */
  train?: ReadonlySet<string>;
}

/** What a run measured. */
/** What a run measured; `cpuSeconds` is the process's CPU time (tfjs wasm runs on one thread: about the wall time on an idle core). */
export interface LmFitResult { seconds: number; cpuSeconds: number; finalLoss: number; steps: number }

/** Step size at `step` (0-based) of `steps`. */
export function lmLearningRate(step: number, steps: number, peak: number, warmup = 0.05): number {
  const warm = Math.max(1, Math.round(steps * warmup));
  if (step < warm) return peak * (step + 1) / warm;
  const f = (step - warm) / Math.max(1, steps - warm);
  return peak * (0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * f)));
}

/** Trains `m` in place on random windows of `data` with Adam. */
export function fitLm(m: Lm, data: Int32Array, o: LmFitOptions): LmFitResult {
  const t = m.config.context;
  if (data.length < t + 2) throw new RangeError(`lm: expected at least ${t + 2} training tokens, got ${data.length}`);
  const rand = mulberry32(o.seed);
  const vars = Object.entries(m.params).filter(([n]) => !o.train || o.train.has(n)).map(([, v]) => v);
  if (!vars.length) throw new RangeError('lm: expected at least one weight to train, got none');
  const optimizer = tf.train.adam(o.lr, 0.9, 0.99);
  const x = new Int32Array(o.batch * t);
  const y = new Int32Array(o.batch * t);
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const clip = o.clip ?? 1;
  let ema = NaN;
  let emaAcc = NaN;
  const block = Math.min(o.steps, 100);
  const report = Math.max(1, Math.floor(block / 25));
  for (let step = 0; step < o.steps; step++) {
    for (let i = 0; i < o.batch; i++) {
      const s = Math.floor(rand() * (data.length - t - 1));
      x.set(data.subarray(s, s + t), i * t);
      y.set(data.subarray(s + 1, s + t + 1), i * t);
    }
    (optimizer as unknown as { learningRate: number }).learningRate = lmLearningRate(step, o.steps, o.lr, o.warmup);
    let hits: tf.Tensor | undefined;
    const loss = tf.tidy(() => {
      const xs = tf.tensor2d(x, [o.batch, t], 'int32');
      const ys = tf.tensor2d(y, [o.batch, t], 'int32');
      const { value, grads } = tf.variableGrads(() => {
        const logits = lmForward(m, xs);
        // Accuracy for the progress line only.
        if (o.progress) hits = tf.keep(tf.sum(tf.cast(tf.equal(tf.argMax(logits, -1), ys), 'int32')));
        return crossEntropy(logits, ys);
      }, vars);
      // Clip by global norm: a copied file's garbage weights must not blow the first steps up.
      const norm = tf.sqrt(tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g)))));
      const f = tf.div(clip, tf.maximum(norm, clip));
      const clipped: Record<string, tf.Tensor> = {};
      for (const [k, g] of Object.entries(grads)) clipped[k] = tf.where(tf.isFinite(g), tf.mul(g, f), tf.zerosLike(g));
      optimizer.applyGradients(clipped as unknown as tf.NamedTensorMap & Record<string, tf.Variable>);
      return value;
    });
    const l = loss.dataSync()[0];
    loss.dispose();
    const acc = hits ? hits.dataSync()[0] / (o.batch * t) : NaN;
    hits?.dispose();
    ema = Number.isNaN(ema) ? l : 0.95 * ema + 0.05 * l;
    emaAcc = Number.isNaN(emaAcc) ? acc : 0.95 * emaAcc + 0.05 * acc;
    // One progress line per block of steps, so a log (not a terminal) shows the run as it goes.
    if (o.progress && ((step + 1) % report === 0 || (step + 1) % block === 0 || step + 1 === o.steps)) {
      const epoch = Math.floor(step / block) + 1;
      const inBlock = Math.min(block, o.steps - (epoch - 1) * block);
      const state = {
        model: o.label ?? 'lm', epoch, epochs: Math.ceil(o.steps / block), batch: step - (epoch - 1) * block + 1, batches: inBlock,
        loss: ema / Math.LN2, acc: emaAcc, seconds: (performance.now() - t0) / 1000,
      };
      if (state.batch < inBlock) o.progress.update(state);
      else o.progress.epochEnd(state, step + 1 === o.steps && o.heldOut ? `held-out ${bitsPerChar(m, o.heldOut, 256).toFixed(3)} bits/char` : 'train loss in bits/char');
    }
  }
  optimizer.dispose();
  const cpu = process.cpuUsage(cpu0);
  return { seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6, finalLoss: ema / Math.LN2, steps: o.steps };
}

/** The reference recipe (steps, batch, peak step size, warm-up share, seeds). */
export const LM_RECIPE = { steps: 3000, batch: 32, lr: 1e-2, warmup: 0.05, seed: 17, windowSeed: 1017 } as const;

/** What a caller may change in the recipe (trials, CI). */
export interface LmRecipeOptions { config?: LmConfig; steps?: number; batch?: number; lr?: number; warmup?: number; progress?: Progress }

/** Trains the reference (or `config`) model from the seeded init. */
export function trainLm(corpus: LmCorpus, opts: LmRecipeOptions = {}): { lm: Lm; fit: LmFitResult } {
  const c = opts.config ?? LM_CONFIG;
  const lm = makeLm(c, initLmWeights(c, LM_RECIPE.seed));
  const fit = fitLm(lm, corpus.train, {
    steps: opts.steps ?? LM_RECIPE.steps, batch: opts.batch ?? LM_RECIPE.batch, lr: opts.lr ?? LM_RECIPE.lr, warmup: opts.warmup ?? LM_RECIPE.warmup,
    seed: LM_RECIPE.windowSeed, progress: opts.progress, label: 'lm', heldOut: corpus.heldOut,
  });
  return { lm, fit };
}
