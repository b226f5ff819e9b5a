/**
 * Text generation with a character-level causal language model on the device:
 * the loop around `model.run` that turns a prompt into more text.
 *
 * The model takes token ids int32 [1, T] (or [N, T]; row 0 is used) and gives
 * logits float32 [1, T, V], position t predicting the character after t — the
 * layout of keylock's reference transformer (models/train/lm.ts). A prompt
 * shorter than T sits at positions 0.. and the rest is padding, which a causal
 * model never looks at; once the text is longer than T, the window slides and
 * the model sees the last T characters.
 *
 * Decoding is greedy (argmax, first maximum on ties) or sampled at a
 * temperature from a seeded generator (xorshift32), so a run is reproducible
 * on the same backend. Anything with a `run(TensorMap)` works: a `LockedModel`
 * or a bare backend session.
 */
import { InputMismatchError, UnsupportedModelError } from '../keystore/errors.ts';
import type { TensorMap } from './tensor.ts';

/** What generation needs of a model. */
export interface TextModel {
  run(inputs: TensorMap): Promise<TensorMap>;
  /** Declared inputs (a `LockedModel`'s or a session's); used to find the input name and context length. */
  readonly inputs?: readonly { name: string; dtype?: string; shape?: readonly (number | string)[]; dims?: readonly (number | string)[] }[];
}

/** The reference model's vocabulary: id 0 is a newline, 1–26 are a–z. */
export const DEFAULT_VOCAB = '\nabcdefghijklmnopqrstuvwxyz';

export interface GenerateOptions {
  prompt: string;
  /** Characters to generate. */
  tokens: number;
  /** Id i is vocab[i] (default: {@link DEFAULT_VOCAB}). */
  vocab?: string;
  /** Argmax decoding (the default when no temperature is given). */
  greedy?: boolean;
  /** Sampling temperature (> 0); sampling needs it. */
  temperature?: number;
  /** Seed of the sampler (default 1). */
  seed?: number;
  /** Input name (default: the model's only int32 input, else `tokens`). */
  input?: string;
  /** Output name (default: `logits`, else the first output). */
  output?: string;
  /** Context length T (default: the input's declared second dimension). */
  context?: number;
  /** Called with each character as it is made. */
  onToken?(ch: string): void;
}

export interface GenerateResult {
  /** The generated characters only (not the prompt). */
  text: string;
  ids: number[];
  /** Milliseconds per generated character (median). */
  msPerToken: number;
}

/** A seeded xorshift32 generator: floats in [0, 1). Not for cryptography. */
function xorshift(seed: number): () => number {
  let s = (seed >>> 0) || 0x9e3779b9;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

function contextOf(model: TextModel, input: string, given: number | undefined): number {
  if (given !== undefined) {
    if (!Number.isSafeInteger(given) || given < 1) throw new RangeError(`generate: context must be a positive integer, got ${given}`);
    return given;
  }
  const spec = model.inputs?.find((i) => i.name === input);
  const dims = spec?.shape ?? spec?.dims;
  const t = dims?.[1];
  if (typeof t !== 'number' || !(t > 0)) {
    throw new UnsupportedModelError(`generate: expected input '${input}' int32 [N, T] with a fixed T, got ${dims ? `[${dims.join(',')}]` : 'no declared shape'}; pass context`);
  }
  return t;
}

/** Generates `opts.tokens` characters after `opts.prompt`. */
export async function generateText(model: TextModel, opts: GenerateOptions): Promise<GenerateResult> {
  const vocab = opts.vocab ?? DEFAULT_VOCAB;
  if (!Number.isSafeInteger(opts.tokens) || opts.tokens < 0) throw new RangeError(`generate: tokens must be a non-negative integer, got ${opts.tokens}`);
  if (opts.temperature !== undefined && !(opts.temperature > 0 && Number.isFinite(opts.temperature))) {
    throw new RangeError(`generate: temperature must be a positive number, got ${opts.temperature}`);
  }
  if (opts.greedy && opts.temperature !== undefined) throw new RangeError('generate: greedy decoding takes no temperature');
  const ids: number[] = [];
  for (const [i, ch] of [...opts.prompt].entries()) {
    const id = vocab.indexOf(ch);
    if (id < 0) throw new InputMismatchError(`generate: expected prompt characters from the model's vocabulary ${JSON.stringify(vocab)}, got ${JSON.stringify(ch)} at ${i}`);
    ids.push(id);
  }
  if (ids.length === 0) ids.push(0); // an empty prompt starts a new word
  const ints = model.inputs?.filter((i) => i.dtype === 'int32') ?? [];
  const input = opts.input ?? (ints.length === 1 ? ints[0].name : 'tokens');
  const t = contextOf(model, input, opts.context);
  const rand = xorshift(opts.seed ?? 1);
  const start = ids.length;
  const times: number[] = [];
  const window = new Int32Array(t);
  for (let n = 0; n < opts.tokens; n++) {
    const from = Math.max(0, ids.length - t);
    const used = ids.length - from;
    window.fill(0);
    for (let i = 0; i < used; i++) window[i] = ids[from + i];
    const t0 = performance.now();
    const out = await model.run({ [input]: { dtype: 'int32', dims: [1, t], data: window.slice() } });
    times.push(performance.now() - t0);
    const y = out[opts.output ?? 'logits'] ?? Object.values(out)[0];
    const v = vocab.length;
    if (!y || y.dtype !== 'float32' || y.data.length < t * v || y.dims[y.dims.length - 1] !== v) {
      throw new UnsupportedModelError(`generate: expected logits float32 [1, ${t}, ${v}], got ${y ? `${y.dtype} [${y.dims.join(',')}]` : 'no output'}`);
    }
    const row = (y.data as Float32Array).subarray((used - 1) * v, used * v);
    let next = 0;
    if (opts.temperature === undefined) {
      for (let k = 1; k < v; k++) if (row[k] > row[next]) next = k;
    } else {
      let max = -Infinity;
      for (const z of row) if (z > max) max = z;
      const p = Array.from(row, (z) => Math.exp((z - max) / opts.temperature!));
      const sum = p.reduce((a, b) => a + b, 0);
      let r = rand() * sum;
      next = v - 1;
      for (let k = 0; k < v; k++) {
        r -= p[k];
        if (r < 0) { next = k; break; }
      }
      // A copied file's NaN logits give NaN weights: no character is drawn, and the last one stands.
    }
    ids.push(next);
    opts.onToken?.(vocab[next]);
  }
  times.sort((a, b) => a - b);
  const made = ids.slice(start);
  return { text: made.map((i) => vocab[i]).join(''), ids: made, msPerToken: times.length ? times[times.length >> 1] : 0 };
}
