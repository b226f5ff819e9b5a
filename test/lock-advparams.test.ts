/**
 * The `advparams` lock end to end: a builder-made classifier (always) and the
 * MNIST reference models (when present) are locked through lockOnnx; with the
 * key the runtime's outputs are bit-identical to the plain model's, without it
 * accuracy collapses; the sealed key list opens only under the right model key;
 * only the listed elements' bytes differ from the plain encoding.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomBytes } from '../keystore/nacl.ts';
import { ADVPARAMS_DEFAULTS, advparamsCandidates, advparamsKnobs } from '../models/lock/onnx/advparams.ts';
import { lockOnnx, type LockRequest } from '../models/lock/index.ts';
import { decodeModel, encodeModel, getInitializer, listInitializers, makeModel, makeNode, makeTensor, makeValueInfo, normalizeModel } from '../models/onnx/index.ts';
import { mnistSamples } from '../models/train/make-fixtures.ts';
import { loadMnist } from '../models/train/mnist.ts';
import { mulberry32 } from '../models/prng.ts';
import { KeyMismatchError, TamperedError, UnsupportedModelError } from '../keystore/errors.ts';
import { openAdvparamsKey, restoreAdvparams } from '../runtime/keys/advparams.ts';
import { openKlm, type AdvparamsLock } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import type { Sample } from '../runtime/recorded.ts';
import type { TensorData, TensorMap } from '../runtime/tensor.ts';

const VENDOR_SEED = new Uint8Array(32).fill(7);

// ---------------------------------------------------------------- helpers

function argmaxAccuracy(logits: TensorData, labels: ArrayLike<number>): number {
  const n = labels.length;
  const k = logits.dims[1];
  const d = logits.data as Float32Array;
  let c = 0;
  for (let i = 0; i < n; i++) {
    let b = 0;
    for (let j = 1; j < k; j++) if (d[i * k + j] > d[i * k + b]) b = j;
    if (b === labels[i]) c++;
  }
  return c / n;
}

async function ortRun(model: Uint8Array, feeds: TensorMap): Promise<TensorMap> {
  const s = await createOrtSession(model);
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

function bytesOf(t: TensorData): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function advEntry(klm: Uint8Array): { lock: AdvparamsLock; modelId: string } {
  const { manifest } = openKlm(klm);
  const lock = manifest.locks.find((l) => l.scheme === 'advparams');
  assert.ok(lock && lock.scheme === 'advparams', 'the manifest carries an advparams entry');
  return { lock, modelId: manifest.modelId };
}

/**
 * Checks the properties every advparams lock must have and returns the
 * number of modified parameters: the key list opens with the right key and
 * names every byte that differs from the plain encoding; originals are the
 * plain values; locked values lie strictly inside the layer's original range.
 */
function checkKeyList(plain: Uint8Array, locked: Uint8Array, klm: Uint8Array, modelKey: Uint8Array): number {
  const { lock, modelId } = advEntry(klm);
  const list = openAdvparamsKey(lock, { modelId, modelKey });
  assert.ok(list.length > 0);
  const reference = encodeModel(decodeModel(normalizeModel(plain)));
  assert.equal(locked.byteLength, reference.byteLength, 'perturbing weights keeps the file length');
  const listed = new Set<number>();
  const plainModel = decodeModel(normalizeModel(plain));
  for (const [ti, ei, orig] of list) {
    const t = lock.tensors[ti];
    assert.equal(t.dtype, 'float32');
    assert.equal(orig.byteLength, 4);
    const at = t.offset + 4 * ei;
    assert.deepEqual(orig, reference.subarray(at, at + 4), `original of ${t.name}[${ei}] is the plain value`);
    for (let b = 0; b < 4; b++) listed.add(at + b);
    const w = getInitializer(plainModel, t.name).data as Float32Array;
    const lo = Math.min(...w);
    const hi = Math.max(...w);
    const v = new DataView(locked.buffer, locked.byteOffset).getFloat32(at, true);
    assert.ok(v > lo && v < hi, `${t.name}[${ei}] = ${v} lies strictly inside (${lo}, ${hi})`);
    assert.notEqual(v, w[ei], `${t.name}[${ei}] was changed`);
  }
  for (let i = 0; i < locked.byteLength; i++) {
    if (locked[i] !== reference[i]) assert.ok(listed.has(i), `byte ${i} changed but no key entry covers it`);
  }
  // The restore puts back exactly the plain encoding.
  const restored = new Uint8Array(locked);
  restoreAdvparams(restored, lock, { modelId, modelKey });
  assert.deepEqual(restored, reference);
  // Under another model key the list does not open.
  assert.throws(() => restoreAdvparams(new Uint8Array(locked), lock, { modelId, modelKey: randomBytes(32) }), TamperedError);
  // Nor under the right key for another model id (the nonce binds the id).
  assert.throws(() => openAdvparamsKey(lock, { modelId: `${modelId}x`, modelKey }), TamperedError);
  return list.length;
}

// ---------------------------------------------------------------- a builder-made classifier

const FEATURES = 12;
const HIDDEN = 16;
const CLASSES = 4;

/**
 * x [N,12] → MatMul [12,16] → Relu → Gemm (transB) [4,16] + bias → logits.
 * Class c's samples are high on features 3c..3c+2; hidden unit j copies
 * feature j (j < 12) and the output sums each class's three units, so the plain
 * model is nearly always right. Small seeded noise keeps gradients generic.
 */
function tinyModel(): Uint8Array {
  const r = mulberry32(99);
  const w1 = new Float32Array(FEATURES * HIDDEN).map(() => (r() - 0.5) * 0.1);
  for (let j = 0; j < FEATURES; j++) w1[j * HIDDEN + j] += 1;
  const w2 = new Float32Array(CLASSES * HIDDEN).map(() => (r() - 0.5) * 0.1);
  for (let c = 0; c < CLASSES; c++) for (let k = 0; k < 3; k++) w2[c * HIDDEN + 3 * c + k] += 1;
  const model = makeModel({
    nodes: [
      makeNode('MatMul', ['x', 'w1'], ['h'], {}, 'fc1'),
      makeNode('Relu', ['h'], ['a'], {}, 'relu'),
      makeNode('Gemm', ['a', 'w2', 'b2'], ['logits'], { transB: 1 }, 'fc2'),
    ],
    inputs: [makeValueInfo('x', 'float32', ['N', FEATURES])],
    outputs: [makeValueInfo('logits', 'float32', ['N', CLASSES])],
    initializers: [
      makeTensor('w1', 'float32', [FEATURES, HIDDEN], w1),
      makeTensor('w2', 'float32', [CLASSES, HIDDEN], w2),
      makeTensor('b2', 'float32', [CLASSES], new Float32Array(CLASSES)),
    ],
  });
  return encodeModel(model);
}

function tinyData(n: number, seed: number): { samples: Sample[]; x: Float32Array; y: Uint8Array } {
  const r = mulberry32(seed);
  const x = new Float32Array(n * FEATURES);
  const y = new Uint8Array(n);
  const samples: Sample[] = [];
  for (let i = 0; i < n; i++) {
    const c = Math.floor(r() * CLASSES);
    y[i] = c;
    const row = x.subarray(i * FEATURES, (i + 1) * FEATURES);
    for (let f = 0; f < FEATURES; f++) row[f] = r() * 0.4 + (Math.floor(f / 3) === c ? 0.6 : 0);
    samples.push({ inputs: { x: { dtype: 'float32', dims: [1, FEATURES], data: row.slice() } }, label: c });
  }
  return { samples, x, y };
}

test('tiny classifier: advparams locks, the key restores it bit for bit, the key list is exact', async () => {
  const plain = tinyModel();
  const enc = tinyData(256, 1);
  const held = tinyData(500, 2);
  const req: LockRequest = { schemes: ['advparams'], vendorSeed: VENDOR_SEED, data: enc.samples, seed: 3 };
  const result = await lockOnnx(plain, req);
  console.log(result.report.join('\n'));
  assert.ok(result.report.some((l) => /advparams: modified \d+ parameter/.test(l)));

  const feeds: TensorMap = { x: { dtype: 'float32', dims: [held.y.length, FEATURES], data: held.x } };
  const want = (await ortRun(plain, feeds)).logits;
  const plainAcc = argmaxAccuracy(want, held.y);
  const lockedAcc = argmaxAccuracy((await ortRun(result.locked, feeds)).logits, held.y);
  const encAcc = argmaxAccuracy((await ortRun(result.locked, { x: { dtype: 'float32', dims: [enc.y.length, FEATURES], data: enc.x } })).logits, enc.y);
  console.log(`tiny: plain ${plainAcc}, locked ${lockedAcc} (held-out), ${encAcc} (encryption set)`);
  assert.ok(plainAcc > 0.95, `the plain model works (${plainAcc})`);
  assert.ok(encAcc <= ADVPARAMS_DEFAULTS.targetAccuracy + 0.02, `locked accuracy on the encryption set ${encAcc} reaches the target`);
  assert.ok(lockedAcc < 0.3, `locked held-out accuracy ${lockedAcc} is at chance or below`);

  const m = await loadModel(result.klm, { modelKey: result.modelKey });
  assert.equal(m.state, 'ready', m.error?.message);
  const got = (await m.run(feeds)).logits;
  await m.release();
  assert.deepEqual(bytesOf(got), bytesOf(want), 'with the key the outputs are bit-identical');

  const count = checkKeyList(plain, result.locked, result.klm, result.modelKey);
  assert.ok(count <= ADVPARAMS_DEFAULTS.maxParams);

  // Same seed, same data, same key: the same locked bytes.
  const again = await lockOnnx(plain, { ...req, modelKey: result.modelKey, modelId: result.modelId });
  assert.deepEqual(again.locked, result.locked);

  // A wrong key is caught by the key check before anything runs.
  const wrong = await loadModel(result.klm, { modelKey: randomBytes(32) });
  assert.equal(wrong.state, 'halted');
  assert.ok(wrong.error instanceof KeyMismatchError);
});

test('tiny classifier: advparams composes with sealed and signflip (fold; input mode after it)', async () => {
  const plain = tinyModel();
  const enc = tinyData(256, 1);
  const held = tinyData(200, 4);
  const feeds: TensorMap = { x: { dtype: 'float32', dims: [held.y.length, FEATURES], data: held.x } };
  const want = (await ortRun(plain, feeds)).logits;
  for (const schemes of [['advparams', 'sealed'], ['signflip', 'advparams'], ['advparams', 'signflip']] as const) {
    const r = await lockOnnx(plain, { schemes: [...schemes], vendorSeed: VENDOR_SEED, data: enc.samples, seed: 3, signflipMode: 'fold' });
    const m = await loadModel(r.klm, { modelKey: r.modelKey });
    assert.equal(m.state, 'ready', `${schemes.join('+')}: ${m.error?.message}`);
    const got = (await m.run(feeds)).logits;
    await m.release();
    assert.deepEqual(bytesOf(got), bytesOf(want), `${schemes.join('+')}: bit-identical with the key`);
  }
  const input = await lockOnnx(plain, { schemes: ['advparams', 'signflip'], vendorSeed: VENDOR_SEED, data: enc.samples, seed: 3, signflipMode: 'input' });
  const m = await loadModel(input.klm, { modelKey: input.modelKey });
  assert.equal(m.state, 'ready', m.error?.message);
  assert.deepEqual(bytesOf((await m.run(feeds)).logits), bytesOf(want), 'advparams+signflip (input mode): bit-identical with the key');
  await m.release();
  // The encryption set carries no signflip key inputs, and advparams must measure the weights before
  // signflip negates them: asked the other way round, the pipeline runs advparams first and says so.
  const swapped = await lockOnnx(plain, { schemes: ['signflip', 'advparams'], vendorSeed: VENDOR_SEED, data: enc.samples, seed: 3, signflipMode: 'input' });
  assert.ok(swapped.report.some((l) => /^order: applied advparams\+signflip/.test(l)), swapped.report.join('\n'));
  assert.deepEqual(openKlm(swapped.klm).manifest.locks.map((l) => l.scheme), ['advparams', 'signflip']);
  const sm = await loadModel(swapped.klm, { modelKey: swapped.modelKey });
  assert.deepEqual(bytesOf((await sm.run(feeds)).logits), bytesOf(want), 'signflip+advparams (input mode, reordered): bit-identical with the key');
  await sm.release();
});

test('the published procedure (correctOnly 0, minGain 0) steps every chosen layer', async () => {
  const plain = tinyModel();
  const enc = tinyData(128, 1);
  const r = await lockOnnx(plain, {
    schemes: ['advparams'], vendorSeed: VENDOR_SEED, data: enc.samples, seed: 5,
    advparams: { correctOnly: 0, minGain: 0, maxParams: 6 },
  });
  const { lock, modelId } = advEntry(r.klm);
  const list = openAdvparamsKey(lock, { modelId, modelKey: r.modelKey });
  assert.ok(list.length <= 6);
  assert.deepEqual(lock.tensors.map((t) => t.name).sort(), ['w1', 'w2'], 'both layers were perturbed');
  checkKeyList(plain, r.locked, r.klm, r.modelKey);
});

test('candidates are Conv/Gemm/MatMul float32 weights, never biases', () => {
  const model = decodeModel(tinyModel());
  assert.deepEqual(advparamsCandidates(model), ['w1', 'w2']);
});

test('misuse: no encryption set, bad knobs, unsupported ops', async () => {
  const plain = tinyModel();
  await assert.rejects(lockOnnx(plain, { schemes: ['advparams'], vendorSeed: VENDOR_SEED }),
    (e: Error) => e instanceof UnsupportedModelError && /--data/.test(e.message));
  assert.throws(() => advparamsKnobs({ thetaa: 1 }), /unknown knob "thetaa"/);
  assert.throws(() => advparamsKnobs({ theta: 0 }), RangeError);
  assert.throws(() => advparamsKnobs({ clip: 1 }), RangeError);
  assert.throws(() => advparamsKnobs({ maxParams: 2.5 }), RangeError);
  const data = tinyData(32, 1).samples;
  await assert.rejects(lockOnnx(plain, { schemes: ['advparams'], vendorSeed: VENDOR_SEED, data, advparams: { layers: 3 } }), RangeError);
  const odd = encodeModel(makeModel({
    nodes: [makeNode('MatMul', ['x', 'w'], ['h']), makeNode('Celu', ['h'], ['logits'])],
    inputs: [makeValueInfo('x', 'float32', ['N', FEATURES])],
    outputs: [makeValueInfo('logits', 'float32', ['N', CLASSES])],
    initializers: [makeTensor('w', 'float32', [FEATURES, CLASSES], new Float32Array(FEATURES * CLASSES).fill(0.1))],
  }));
  await assert.rejects(lockOnnx(odd, { schemes: ['advparams'], vendorSeed: VENDOR_SEED, data }),
    (e: Error) => e instanceof UnsupportedModelError && /Celu/.test(e.message));
  const wrongInput = data.map((s) => ({ inputs: { y: s.inputs!.x }, label: s.label }));
  await assert.rejects(lockOnnx(plain, { schemes: ['advparams'], vendorSeed: VENDOR_SEED, data: wrongInput }), /encryption set feeds \[y\]/);
});

// ---------------------------------------------------------------- the MNIST reference models

for (const net of ['mlp', 'cnn'] as const) {
  const path = fileURLToPath(new URL(`../models/reference/mnist-${net}.onnx`, import.meta.url));
  const skip = existsSync(path) ? false : `models/reference/mnist-${net}.onnx is absent (train it: npm run train)`;
  test(`MNIST ${net}: 512 training digits lock it below 20 % with <= 50 parameters; the key restores it bit for bit`, { skip }, async () => {
    const plain = new Uint8Array(readFileSync(path));
    const { train, test: held } = loadMnist();
    const t0 = performance.now();
    const r = await lockOnnx(plain, { schemes: ['advparams'], vendorSeed: VENDOR_SEED, data: mnistSamples(train, 512), seed: 1 });
    const lockSeconds = (performance.now() - t0) / 1000;
    const feeds: TensorMap = { input: { dtype: 'float32', dims: [held.n, 1, 28, 28], data: held.x } };
    const want = (await ortRun(plain, feeds)).logits;
    const lockedAcc = argmaxAccuracy((await ortRun(r.locked, feeds)).logits, held.y);
    const m = await loadModel(r.klm, { modelKey: r.modelKey });
    assert.equal(m.state, 'ready', m.error?.message);
    const got = (await m.run(feeds)).logits;
    await m.release();
    const count = checkKeyList(plain, r.locked, r.klm, r.modelKey);
    console.log(r.report.join('\n'));
    console.log(`MNIST ${net}: test accuracy plain ${argmaxAccuracy(want, held.y)}, with the key ${argmaxAccuracy(got, held.y)}, `
      + `without it ${lockedAcc}; ${count} parameters of ${listInitializers(plain).reduce((n, i) => n + i.elementCount, 0)} modified; lock ${lockSeconds.toFixed(1)} s`);
    assert.deepEqual(bytesOf(got), bytesOf(want), 'with the key the 2,000 test outputs are bit-identical');
    assert.ok(lockedAcc <= 0.2, `without the key test accuracy is ${lockedAcc}, expected <= 0.2`);
    assert.ok(count <= 50, `${count} parameters modified, expected <= 50`);
  });
}
