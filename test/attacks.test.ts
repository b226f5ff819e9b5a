/**
 * The evaluation's attacks (eval/attacks/) on small cases whose right answer
 * is known: the Deep-Lock key recovered from synthetic locked weights, the
 * shuffle map and assignment against the device's own shuffle, the sign-flip
 * key bits of a locked reference model, AdvParams' perturbed weights against
 * the locker's own list, and FGSM/PGD against a linear model whose gradient
 * is known in closed form.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { advparamsCandidates, advparamsKnobs, perturbAdvparams } from '../models/lock/onnx/advparams.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { decodeModel, encodeModel, normalizeModel } from '../models/onnx/codec.ts';
import { mnistSamples } from '../models/train/make-fixtures.ts';
import { loadMnist } from '../models/train/mnist.ts';
import { mulberry32 } from '../models/prng.ts';
import { TrainableOnnxModel } from '../models/train/fine-tune.ts';
import { initTfjsWasm } from '../models/tfjs/setup.ts';
import { aesExpandKeyWords } from '../runtime/keys/aes.ts';
import { deeplockLock, deeplockSchedule } from '../runtime/keys/deeplock-key.ts';
import { deeplockMasterKey } from '../runtime/keys/derive.ts';
import { shuffleBlockKey, shuffleImageNCHW } from '../runtime/keys/shuffle-key.ts';
import { openKlm, type SignflipLock } from '../runtime/klm.ts';
import { accuracyUnder, fgsm, marginLoss, pgd } from '../eval/attacks/adversarial.ts';
import { detectAdvparams, precisionRecall, robustStats } from '../eval/attacks/advparams.ts';
import {
  ciphertextOnlyAttack, decryptWithMaster, guessedPlaintextAttack, knownPlaintextAttack, masterFromWords, scheduleT, type DeeplockCiphertext,
} from '../eval/attacks/deeplock.ts';
import { applyBlockMap, hungarian, permutationMatrix, roundToPermutation } from '../eval/attacks/shuffle.ts';
import { bitAgreement, greedySignflip, SignflipOracle } from '../eval/attacks/signflip.ts';
import { subsetOf } from '../eval/harness.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const MODEL_KEY = new Uint8Array(32).map((_, i) => (i * 29 + 3) & 0xff);
const same = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** Synthetic trained-looking weights (normal, sd 0.05), locked with Deep-Lock under MODEL_KEY. */
function lockedWeights(count: number, seed: number, plant?: (w: Float32Array) => void): { plain: Float32Array; cipher: DeeplockCiphertext } {
  const rand = mulberry32(seed);
  const plain = new Float32Array(count);
  for (let i = 0; i < count; i++) plain[i] = 0.05 * Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand());
  plant?.(plain);
  const bytes = new Uint8Array(plain.buffer.slice(0));
  deeplockLock(bytes, 0, deeplockSchedule(MODEL_KEY, count));
  return { plain, cipher: { bytes, count } };
}

test('deeplock: the schedule runs backwards from any four consecutive words', () => {
  const key = new Uint8Array(16).map((_, i) => (i * 41 + 7) & 0xff);
  const w = aesExpandKeyWords(key, 400);
  for (const i of [0, 1, 4, 13, 44, 200, 396]) assert.ok(same(masterFromWords(w.subarray(i, i + 4), i), key), `from words ${i}..${i + 3}`);
  // The last word of each round obeys d_t = d_(t-4) xor T_t(d_(t-1)) from t = 4 on: what the ciphertext-only search relies on.
  for (let t = 4; t < 100; t++) assert.equal(w[4 * t + 3], (w[4 * (t - 4) + 3] ^ scheduleT(t, w[4 * (t - 1) + 3])) >>> 0, `round ${t}`);
});

test('deeplock: known, guessed and no plaintext all give the master key', () => {
  const master = deeplockMasterKey(MODEL_KEY);
  // 1% of the weights out of the 2^-15..2 range the ciphertext-only attack assumes, and one run of four zeros.
  const { plain, cipher } = lockedWeights(4000, 11, (w) => {
    for (let i = 5; i < w.length; i += 97) w[i] = 3.5;
    w.fill(0, 2500, 2504);
  });
  assert.ok(same(knownPlaintextAttack(cipher, 1234, plain.subarray(1234, 1238)), master), 'known plaintext, unaligned');
  const guess = guessedPlaintextAttack(cipher);
  assert.equal(guess.hit?.index, 2500);
  assert.ok(same(guess.hit!.master, master), 'guessed zeros');
  const co = ciphertextOnlyAttack(cipher);
  assert.ok(co.master && same(co.master, master), 'ciphertext only');
  assert.ok(co.phases.every((p) => p.agreement > 0.95 && p.agreement < 1), `agreement reflects the 1% out-of-range weights: ${co.phases.map((p) => p.agreement).join(', ')}`);
  assert.ok(same(decryptWithMaster(cipher, co.master), new Uint8Array(plain.buffer)), 'every parameter decrypted');
});

test('shuffle: the permutation block map is the device shuffle; the assignment is optimal', async () => {
  await initTfjsWasm();
  for (const m of [2, 4, 7]) {
    const key = shuffleBlockKey(MODEL_KEY, m, 1, false);
    const x = new Float32Array(3 * 784).map((_, i) => ((i * 7919) % 1000) / 1000);
    const want = new Float32Array(x.length);
    shuffleImageNCHW(x, want, 3, 1, 28, 28, key);
    const got = tf.tidy(() => applyBlockMap(tf.tensor4d(x, [3, 1, 28, 28]), tf.tensor2d(permutationMatrix(key.perm), [m * m, m * m]), null, m).dataSync());
    assert.deepEqual(Array.from(got), Array.from(want), `m=${m}`);
    // A noisy version of the key's matrix rounds back to the key.
    const rand = mulberry32(m);
    const noisy = permutationMatrix(key.perm).map((v) => 0.6 * v + 0.3 * rand());
    assert.deepEqual(Array.from(roundToPermutation(noisy, m * m)), Array.from(key.perm));
  }
  // Hungarian against brute force on random 6×6 costs.
  const rand = mulberry32(5);
  for (let trial = 0; trial < 20; trial++) {
    const n = 6;
    const cost = Array.from({ length: n * n }, () => Math.round(rand() * 20));
    let best = Infinity;
    const perm = [0, 1, 2, 3, 4, 5];
    const visit = (k: number): void => {
      if (k === n) { best = Math.min(best, perm.reduce((s, c, r) => s + cost[r * n + c], 0)); return; }
      for (let i = k; i < n; i++) { [perm[k], perm[i]] = [perm[i], perm[k]]; visit(k + 1); [perm[k], perm[i]] = [perm[i], perm[k]]; }
    };
    visit(0);
    const a = hungarian(cost, n);
    assert.equal(new Set(a).size, n);
    assert.equal(Array.from(a).reduce((s, c, r) => s + cost[r * n + c], 0), best);
  }
});

test('signflip: the greedy search recovers a locked MLP\'s key bits, the same in fold and input mode; the unit search finds MAC-unit keys', async () => {
  await initTfjsWasm();
  const { train, test: held } = loadMnist();
  const onnx = new Uint8Array(readFileSync(`${root}models/reference/mnist-mlp.onnx`));
  const data = subsetOf(train, 300, mulberry32(3));
  const evalSet = { x: held.x.subarray(0, 1000 * 784), y: held.y.subarray(0, 1000), n: 1000 };
  const found: number[][][] = [];
  for (const mode of ['input', 'fold'] as const) {
    const res = await lockOnnx(onnx, { schemes: ['signflip'], signflipMode: mode, vendorSeed: new Uint8Array(32).fill(1), modelKey: MODEL_KEY });
    const lock = openKlm(res.klm).manifest.locks[0] as SignflipLock;
    const oracle = new SignflipOracle(res.locked, lock);
    try {
      const truth = SignflipOracle.truth(lock, MODEL_KEY);
      assert.ok(truth.some((b) => b.some((v) => v === 1)), 'some channels are keyed');
      assert.ok(oracle.accuracy(truth.map((b) => new Uint8Array(b.length)), evalSet) < 0.3, `${mode}: the file as is`);
      const r = greedySignflip(oracle, data, { order: 'last-first' });
      const ag = bitAgreement(r.bits, truth);
      assert.equal(ag.perLayer[ag.perLayer.length - 1], 1, `${mode}: output layer bits`);
      assert.ok(ag.all >= 0.85, `${mode}: ${ag.all} of the bits`);
      assert.ok(oracle.accuracy(r.bits, evalSet) >= oracle.accuracy(truth, evalSet) - 0.02, `${mode}: accuracy near the key's`);
      assert.ok(r.queries > 0 && r.queries === oracle.queries, 'every loss evaluation is counted, accuracy checks are not');
      found.push(r.bits.map((b) => Array.from(b)));
    } finally {
      oracle.dispose();
    }
  }
  assert.deepEqual(found[1], found[0], 'fold mode takes the same search path as input mode');
  // Four MAC units: the exhaustive search over 16 keys finds them.
  const res = await lockOnnx(onnx, { schemes: ['signflip'], units: 4, vendorSeed: new Uint8Array(32).fill(1), modelKey: MODEL_KEY });
  const lock = openKlm(res.klm).manifest.locks[0] as SignflipLock;
  const oracle = new SignflipOracle(res.locked, lock);
  try {
    const r = greedySignflip(oracle, subsetOf(train, 100, mulberry32(4)), { order: 'last-first' });
    assert.equal(r.queries, 16);
    assert.deepEqual(r.bits.map((b) => Array.from(b)), SignflipOracle.truth(lock, MODEL_KEY).map((b) => Array.from(b)));
  } finally {
    oracle.dispose();
  }
});

test('advparams: the greedy detector finds the perturbed weights and the reset restores accuracy', async () => {
  await initTfjsWasm();
  const { train, test: held } = loadMnist();
  assert.deepEqual(robustStats(Float32Array.from([1, 2, 3, 4, 100])), { median: 3, sigma: 1.4826 });
  assert.deepEqual(precisionRecall([{ tensor: 'a', element: 1 }, { tensor: 'a', element: 2 }], [
    { tensor: 'a', element: 1, original: 0, originalBytes: new Uint8Array(4), locked: 1, steps: 1 },
    { tensor: 'b', element: 1, original: 0, originalBytes: new Uint8Array(4), locked: 1, steps: 1 },
  ]), { precision: 0.5, recall: 0.5, found: 1 });
  const model = decodeModel(normalizeModel(new Uint8Array(readFileSync(`${root}models/reference/mnist-mlp.onnx`))));
  const out = await perturbAdvparams(model, mnistSamples(train, 512), advparamsKnobs({}), 1);
  const locked = TrainableOnnxModel.fromBytes(encodeModel(model));
  try {
    const evalSet = { x: held.x.subarray(0, 1000 * 784), y: held.y.subarray(0, 1000), n: 1000 };
    const opts = { inputName: 'input', sampleShape: [1, 28, 28] };
    assert.ok(locked.accuracy(evalSet.x, evalSet.y, 500, opts) < 0.3, 'locked without the key');
    const det = detectAdvparams(locked, subsetOf(train, 300, mulberry32(8)), advparamsCandidates(model), 'greedy');
    const pr = precisionRecall(det.located, out.changes);
    assert.ok(pr.precision >= 0.8 && pr.recall >= 0.5, `precision ${pr.precision}, recall ${pr.recall} of ${out.changes.length}`);
    assert.ok(locked.accuracy(evalSet.x, evalSet.y, 500, opts) >= 0.9, 'after the reset');
  } finally {
    locked.dispose();
  }
});

test('adversarial: FGSM and PGD on a linear model follow the closed-form gradient', async () => {
  await initTfjsWasm();
  // logits = [sum(x), -sum(x)]: class 0 wins on bright images; the margin gradient for label 0 is -2 per pixel.
  const f = (x: tf.Tensor): tf.Tensor => tf.tidy(() => {
    const s = tf.sum(tf.reshape(x, [x.shape[0]!, -1]), 1, true);
    return tf.concat([s, tf.neg(s)], 1);
  });
  const x = tf.fill([2, 1, 28, 28], 0.5);
  const y = tf.tensor1d([0, 1], 'int32');
  const margin = marginLoss(f(x), y).dataSync()[0];
  assert.equal(margin, (-392 - 392) + (392 - -392), 'margin of both rows');
  const a = fgsm(f, x, y, 0.1);
  const d = a.dataSync();
  for (let i = 0; i < 784; i++) assert.ok(Math.abs(d[i] - 0.4) < 1e-6 && Math.abs(d[784 + i] - 0.6) < 1e-6);
  const p = pgd(f, x, y, 0.3, 10);
  const e = p.dataSync();
  for (let i = 0; i < 784; i++) assert.ok(Math.abs(e[i] - 0.2) < 1e-6 && Math.abs(e[784 + i] - 0.8) < 1e-6, 'PGD ends on the ball');
  assert.equal(accuracyUnder(f, x, Uint8Array.from([0, 1])), 0.5);
  for (const t of [x, y, a, p]) t.dispose();
});
