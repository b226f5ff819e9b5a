/**
 * Key recovery against `signflip` (HPNN): greedy coordinate search over the
 * key bits with a small stolen labelled set.
 *
 * The attacker holds the locked file. In input mode the graph multiplies each
 * locked layer's output by a ±1 key input, which the attacker feeds with
 * guesses; in fold mode the keyed channels are stored negated, and the attacker
 * negates channels back in the weights (the manifest names the ranges). Both
 * reduce to the same unknowns: one sign per channel (or per MAC unit).
 *
 * The search starts from "no channel flipped" (the file as is), then visits the
 * layers in a fixed order (last to first, or first to last) and flips each bit
 * in turn, keeping the flip when the stolen set's mean cross-entropy drops;
 * sweeps repeat until one changes nothing. Optional kicks then escape the
 * typical local minimum (one output unit with the wrong sign). Every loss
 * evaluation is one query: a forward pass of the locked model over the whole
 * stolen set.
 */
import * as tf from '@tensorflow/tfjs';
import type { SignflipLock } from '../../runtime/klm.ts';
import { layerBits } from '../../runtime/keys/signflip.ts';
import type { MnistSet } from '../../models/train/mnist.ts';
import { OnnxTfModel, softmaxCrossEntropy, type TensorFeeds } from '../../models/tfjs/onnx-exec.ts';

/** One keyed layer as the attacker sees it in the manifest. */
interface OracleLayer {
  weight: string;
  channels: number;
  keyInput?: string;
  keyDims?: number[];
  /** Fold mode: initializers to negate per channel. */
  ranges: { name: string; layout: 'outer' | 'inner' }[];
}

/**
 * The locked model with the attacker's guessed signs applied: per-channel bits
 * (1 = channel believed negated). Counts its forward evaluations.
 */
export class SignflipOracle {
  readonly layers: OracleLayer[];
  readonly mode: 'input' | 'fold';
  /** MAC units of the lock (0: one bit per channel). */
  readonly units: number;
  /** Forward evaluations over a whole set so far. */
  queries = 0;
  /** Images run through the model so far. */
  images = 0;
  private readonly model: OnnxTfModel;
  /** Fold mode: current CPU copy of each negatable initializer and the bits applied to it. */
  private readonly copies = new Map<string, Float32Array>();
  private readonly applied: Uint8Array[];

  constructor(lockedOnnx: Uint8Array, lock: SignflipLock) {
    this.model = OnnxTfModel.fromBytes(lockedOnnx);
    this.mode = lock.mode;
    this.units = lock.units;
    this.layers = lock.layers.map((l) => ({ weight: l.weight, channels: l.channels, keyInput: l.keyInput, keyDims: l.keyDims, ranges: l.ranges.map((r) => ({ name: r.name, layout: r.layout })) }));
    this.applied = this.layers.map((l) => new Uint8Array(l.channels));
    if (this.mode === 'fold') {
      for (const l of this.layers) for (const r of l.ranges) this.copies.set(r.name, Float32Array.from(this.model.params.get(r.name)!.dataSync() as Float32Array));
    }
  }

  /** The true channel bits of each layer (for scoring only; the attack never reads them). */
  static truth(lock: SignflipLock, modelKey: Uint8Array): Uint8Array[] {
    return lock.layers.map((l) => layerBits(lock, l, modelKey));
  }

  private syncFold(bits: readonly Uint8Array[]): void {
    this.layers.forEach((l, li) => {
      const want = bits[li];
      const have = this.applied[li];
      const changed: number[] = [];
      for (let j = 0; j < l.channels; j++) if (want[j] !== have[j]) changed.push(j);
      if (!changed.length) return;
      for (const r of l.ranges) {
        const d = this.copies.get(r.name)!;
        const per = d.length / l.channels;
        for (const j of changed) {
          if (r.layout === 'outer') for (let k = j * per; k < (j + 1) * per; k++) d[k] = -d[k];
          else for (let k = j; k < d.length; k += l.channels) d[k] = -d[k];
        }
        const v = this.model.params.get(r.name)!;
        tf.tidy(() => v.assign(tf.tensor(d, v.shape)));
      }
      for (const j of changed) have[j] = want[j];
    });
  }

  private feeds(x: tf.Tensor, bits: readonly Uint8Array[]): TensorFeeds {
    const f: TensorFeeds = { input: x };
    if (this.mode === 'input') {
      this.layers.forEach((l, li) => {
        const d = new Float32Array(l.channels);
        for (let j = 0; j < l.channels; j++) d[j] = bits[li][j] ? -1 : 1;
        f[l.keyInput!] = tf.tensor(d, l.keyDims!);
      });
    } else {
      this.syncFold(bits);
    }
    return f;
  }

  private logits(x: tf.Tensor, bits: readonly Uint8Array[]): tf.Tensor {
    this.queries++;
    this.images += x.shape[0]!;
    const f = this.feeds(x, bits);
    try {
      return this.model.predict(f, [this.model.outputNames[0]])[this.model.outputNames[0]];
    } finally {
      for (const [k, t] of Object.entries(f)) if (k !== 'input') t.dispose();
    }
  }

  /** Mean cross-entropy on (x, y) with the guessed bits: one query. */
  loss(bits: readonly Uint8Array[], x: tf.Tensor, y: tf.Tensor1D): number {
    const l = tf.tidy(() => softmaxCrossEntropy(this.logits(x, bits), y));
    const v = l.dataSync()[0];
    l.dispose();
    return v;
  }

  /** Accuracy on a set with the guessed bits (evaluation; not counted as an attack query). */
  accuracy(bits: readonly Uint8Array[], set: MnistSet): number {
    const q = this.queries, im = this.images;
    let ok = 0;
    for (let i = 0; i < set.n; i += 500) {
      const k = Math.min(500, set.n - i);
      const p = tf.tidy(() => tf.argMax(this.logits(tf.tensor4d(set.x.subarray(i * 784, (i + k) * 784), [k, 1, 28, 28]), bits), 1));
      const d = p.dataSync();
      p.dispose();
      for (let r = 0; r < k; r++) if (d[r] === set.y[i + r]) ok++;
    }
    this.queries = q;
    this.images = im;
    return ok / set.n;
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** What a greedy run found. */
export interface GreedyResult {
  /** Channel bits per layer. */
  bits: Uint8Array[];
  /** The searched key bits: per channel (concatenated layers) or per MAC unit. */
  keyBits: Uint8Array;
  loss: number;
  sweeps: number;
  /** Output-bit kicks tried (0 without kicks). */
  kicks: number;
  queries: number;
  images: number;
  seconds: number;
}

/** Channel bits per layer from MAC-unit bits (channel j uses unit j mod U). */
export function channelBitsFromUnits(layers: readonly { channels: number }[], units: Uint8Array): Uint8Array[] {
  return layers.map((l) => Uint8Array.from({ length: l.channels }, (_, j) => units[j % units.length]));
}

/**
 * Greedy coordinate search. `order` picks the layer order of each sweep;
 * with MAC units the unknowns are the U unit bits (searched exhaustively
 * when U <= `exhaustiveUnits`, else greedily).
 */
export function greedySignflip(oracle: SignflipOracle, data: MnistSet, opts: { order: 'last-first' | 'first-last'; maxSweeps?: number; exhaustiveUnits?: number; kicks?: boolean }): GreedyResult {
  const t0 = performance.now();
  const q0 = oracle.queries, i0 = oracle.images;
  const maxSweeps = opts.maxSweeps ?? 10;
  const x = tf.tensor4d(data.x, [data.n, 1, 28, 28]);
  const y = tf.tensor1d(Int32Array.from(data.y), 'int32');
  try {
    if (oracle.units > 0) {
      const U = oracle.units;
      const unit = new Uint8Array(U);
      let best = oracle.loss(channelBitsFromUnits(oracle.layers, unit), x, y);
      let sweeps = 0;
      if (U <= (opts.exhaustiveUnits ?? 10)) {
        let bestCode = 0;
        for (let code = 1; code < 1 << U; code++) {
          for (let u = 0; u < U; u++) unit[u] = (code >> u) & 1;
          const l = oracle.loss(channelBitsFromUnits(oracle.layers, unit), x, y);
          if (l < best) { best = l; bestCode = code; }
        }
        for (let u = 0; u < U; u++) unit[u] = (bestCode >> u) & 1;
        sweeps = 1;
      } else {
        for (let changed = true; changed && sweeps < maxSweeps; sweeps++) {
          changed = false;
          for (let u = 0; u < U; u++) {
            unit[u] ^= 1;
            const l = oracle.loss(channelBitsFromUnits(oracle.layers, unit), x, y);
            if (l < best) { best = l; changed = true; } else unit[u] ^= 1;
          }
        }
      }
      return { bits: channelBitsFromUnits(oracle.layers, unit), keyBits: unit, loss: best, sweeps, kicks: 0, queries: oracle.queries - q0, images: oracle.images - i0, seconds: (performance.now() - t0) / 1000 };
    }
    const order = oracle.layers.map((_, i) => i);
    if (opts.order === 'last-first') order.reverse();
    let sweeps = 0;
    /** Coordinate descent from `bits` (changed in place, bit `frozen` left alone) until a sweep changes nothing; returns the final loss. */
    const descend = (bits: Uint8Array[], start: number, frozen?: readonly [number, number], limit = maxSweeps): number => {
      let best = start;
      for (let changed = true, k = 0; changed && k < limit; k++, sweeps++) {
        changed = false;
        for (const li of order) {
          for (let j = 0; j < bits[li].length; j++) {
            if (frozen && frozen[0] === li && frozen[1] === j) continue;
            bits[li][j] ^= 1;
            const l = oracle.loss(bits, x, y);
            if (l < best) { best = l; changed = true; } else bits[li][j] ^= 1;
          }
        }
      }
      return best;
    };
    let bits = oracle.layers.map((l) => new Uint8Array(l.channels));
    let best = descend(bits, oracle.loss(bits, x, y));
    // Kicks: a wrong sign on an output unit is a local minimum (the hidden units adapt to it, and
    // flipping it back alone costs more than it gains). So flip each output bit in turn, hold it
    // and run one sweep over the other bits; when that ends below the best loss, descend freely
    // from there and keep the result. Passes repeat until no kick helps.
    const last = oracle.layers.length - 1;
    let kicks = 0;
    for (let improved = opts.kicks === true; improved;) {
      improved = false;
      for (let j = 0; j < bits[last].length; j++) {
        const trial = bits.map((b) => b.slice());
        trial[last][j] ^= 1;
        kicks++;
        let l = descend(trial, oracle.loss(trial, x, y), [last, j], 1);
        if (l >= best) continue;
        l = descend(trial, l);
        if (l < best - 1e-6) { best = l; bits = trial; improved = true; }
      }
    }
    const keyBits = new Uint8Array(bits.reduce((a, b) => a + b.length, 0));
    let at = 0;
    for (const b of bits) { keyBits.set(b, at); at += b.length; }
    return { bits, keyBits, loss: best, sweeps, kicks, queries: oracle.queries - q0, images: oracle.images - i0, seconds: (performance.now() - t0) / 1000 };
  } finally {
    x.dispose();
    y.dispose();
  }
}

/** Fraction of equal bits, overall and per layer. */
export function bitAgreement(guess: readonly Uint8Array[], truth: readonly Uint8Array[]): { all: number; perLayer: number[] } {
  let same = 0, total = 0;
  const perLayer = truth.map((t, li) => {
    let s = 0;
    for (let j = 0; j < t.length; j++) if (guess[li][j] === t[j]) s++;
    same += s;
    total += t.length;
    return s / t.length;
  });
  return { all: total ? same / total : 1, perLayer };
}
