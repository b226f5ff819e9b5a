/**
 * Models trained with a shuffle key, cached on disk: training takes minutes,
 * and the published-table and fine-tuning sections need the same ones. The
 * cache file name holds every input of the training run (arch, block, key
 * label, epochs, digits, seed), so a changed recipe never reuses a stale file.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256 } from '../keystore/nacl.ts';
import { trainWithShuffleKey } from '../models/train/shuffle-train.ts';
import { TRAIN_SIZE } from '../models/train/mnist.ts';
import { labelKey } from './harness.ts';

/** One shuffle-trained model. */
export interface ShuffleModelSpec {
  arch: 'mlp' | 'cnn';
  block: number;
  epochs: number;
  /** Training digits (the first `limit` of the train set). */
  limit: number;
  seed: number;
}

/** Epochs of the full evaluation's shuffle training (the reference recipe's first 10 epochs; see eval/published.ts). */
export const SHUFFLE_EPOCHS = 10;

/** The model key a shuffle-trained model is trained and locked with. */
export function shuffleModelKey(s: ShuffleModelSpec): Uint8Array {
  return labelKey(`shuffle-trained/${s.arch}/m${s.block}`);
}

/** The cached ONNX of a model trained with its key; trains it (and stores it) when absent. */
export async function shuffleTrained(cache: string, s: ShuffleModelSpec): Promise<{ onnx: Uint8Array; cached: boolean; seconds: number }> {
  const key = shuffleModelKey(s);
  const tag = Array.from(sha256(key).subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join('');
  const dir = join(cache, 'shuffle');
  const file = join(dir, `${s.arch}-m${s.block}-e${s.epochs}-n${s.limit === TRAIN_SIZE ? 'all' : s.limit}-s${s.seed}-k${tag}.onnx`);
  if (existsSync(file)) return { onnx: new Uint8Array(readFileSync(file)), cached: true, seconds: 0 };
  const t0 = performance.now();
  const onnx = await trainWithShuffleKey({ arch: s.arch, block: s.block, negpos: false, modelKey: key, epochs: s.epochs, seed: s.seed, limit: s.limit });
  mkdirSync(dir, { recursive: true });
  writeFileSync(file + '.part', onnx);
  renameSync(file + '.part', file);
  return { onnx, cached: false, seconds: (performance.now() - t0) / 1000 };
}
