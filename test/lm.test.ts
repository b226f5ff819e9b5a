/**
 * The character-level transformer: its exports against tfjs, locking it,
 * generating text with the key (API and `keylock generate`), and the TFLite
 * writer's new options. Uses a tiny seeded-init model (no training) so the
 * suite takes seconds; the trained model is measured by `npm run eval -- --lm`.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { InputMismatchError } from '../keystore/errors.ts';
import { encodeModelKey, encodeVendorSecret } from '../keystore/keyfiles.ts';
import { sha256 } from '../keystore/nacl.ts';
import { lockModel } from '../models/lock/index.ts';
import { initTfjsWasm } from '../models/tfjs/setup.ts';
import { encodeText, initLmWeights, LM_TINY, lmForward, lmForwardFrom, lmMatMul, lmStreamTo, makeLm, disposeLm, VOCAB, type Lm } from '../models/train/lm.ts';
import { LM_INPUT, LM_OUTPUT, lmToOnnx, lmToTflite, lmWeightsFromOnnx } from '../models/train/lm-export.ts';
import { checkLmExports } from '../models/train/lm-train.ts';
import { writeTflite } from '../models/tflite/writer.ts';
import { generateText } from '../runtime/generate.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import { cli } from './helpers.ts';

const c = LM_TINY;
let lm: Lm;
let weights: Map<string, Float32Array>;
let onnx: Uint8Array;
let tflite: Uint8Array;
const dir = mkdtempSync(join(tmpdir(), 'keylock-lm-'));
const vendorSeed = sha256(new TextEncoder().encode('keylock/test/lm/vendor'));

// A held-out-like stream: real words, so the logits are not all alike.
const text = encodeText('\nthe\nquick\nbrown\nfox\njumps\nover\nthe\nlazy\ndog\nkeylock\nlocks\nmodels\nwith\nkeys\n'.repeat(4));

before(async () => {
  await initTfjsWasm();
  // Larger-than-init weights (std 0.3) so the output depends on the input strongly enough to tell runs apart.
  weights = initLmWeights(c, 5);
  for (const [k, v] of weights) if (v.length > c.width) for (let i = 0; i < v.length; i++) v[i] *= 15;
  lm = makeLm(c, weights);
  onnx = lmToOnnx(c, weights, 'test');
  tflite = lmToTflite(c, weights, 'test');
});
after(() => {
  disposeLm(lm);
  rmSync(dir, { recursive: true, force: true });
});

test('the ONNX (onnxruntime-web) and TFLite (tfjs-tflite) exports give the tfjs logits within 1e-4', async () => {
  const r = await checkLmExports(lm, onnx, tflite, text, 8, 2);
  assert.ok(r.onnxMaxDiff < 1e-4, `ONNX max |Δ| ${r.onnxMaxDiff}`);
  assert.ok(r.tfliteMaxDiff < 1e-4, `TFLite max |Δ| ${r.tfliteMaxDiff}`);
  assert.ok(Number.isFinite(r.onnxBpc) && r.onnxBpc > 0, `bits/char ${r.onnxBpc}`);
});

test('the weights read back from the ONNX file are the ones exported', () => {
  const back = lmWeightsFromOnnx(c, onnx);
  assert.equal(back.size, weights.size);
  for (const [k, v] of weights) assert.deepEqual(back.get(k), v, k);
});

test('attention is causal: changing a later token leaves earlier logits bit for bit', () => {
  const a = Int32Array.from(text.subarray(0, c.context));
  const b = Int32Array.from(a);
  b[c.context - 1] = (b[c.context - 1] + 1) % VOCAB.length;
  const run = (ids: Int32Array): Float32Array => {
    const y = tf.tidy(() => lmForward(lm, tf.tensor2d(ids, [1, c.context], 'int32')));
    const d = y.dataSync() as Float32Array;
    y.dispose();
    return d;
  };
  const ya = run(a);
  const yb = run(b);
  const before = (c.context - 1) * VOCAB.length;
  assert.deepEqual(yb.subarray(0, before), ya.subarray(0, before));
  assert.notDeepEqual(yb.subarray(before), ya.subarray(before));
});

test('a forward pass resumed at block l from the stream entering it gives the full pass\'s logits bit for bit', () => {
  const c2 = { ...c, layers: 2 };
  const w2 = initLmWeights(c2, 6);
  for (const v of w2.values()) if (v.length > c2.width) for (let i = 0; i < v.length; i++) v[i] *= 15;
  const m = makeLm(c2, w2);
  try {
    const ids = tf.tensor2d(Int32Array.from(text.subarray(0, 2 * c2.context)), [2, c2.context], 'int32');
    const full = tf.tidy(() => lmForward(m, ids)).dataSync() as Float32Array;
    for (let l = 0; l <= c2.layers; l++) {
      const h = lmStreamTo(m, ids, l);
      const y = tf.tidy(() => lmForwardFrom(m, h, l));
      assert.deepEqual(y.dataSync(), full, `from block ${l}`);
      h.dispose();
      y.dispose();
    }
    ids.dispose();
  } finally {
    disposeLm(m);
  }
});

test('the training matmul (explicit transposes in its gradient) has tf.matMul\'s value and gradients', () => {
  for (const [sa, sb] of [[[5, 7], [7, 3]], [[2, 3, 4, 6], [2, 3, 6, 5]]]) {
    const a = tf.randomNormal(sa, 0, 1, 'float32', 1);
    const b = tf.randomNormal(sb, 0, 1, 'float32', 2);
    const r = tf.randomNormal([...sa.slice(0, -1), sb[sb.length - 1]], 0, 1, 'float32', 3);
    const ours = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(lmMatMul(x, y), r)))([a, b]);
    const ref = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y), r)))([a, b]);
    const close = (p: tf.Tensor, q: tf.Tensor): number => tf.max(tf.abs(tf.sub(p, q))).dataSync()[0];
    assert.ok(close(lmMatMul(a, b), tf.matMul(a, b)) === 0, `value ${sa} × ${sb}`);
    assert.deepEqual(ours.map((g) => g.shape), [sa, sb]);
    for (let i = 0; i < 2; i++) assert.ok(close(ours[i], ref[i]) < 1e-4, `gradient ${i} of ${sa} × ${sb}: ${close(ours[i], ref[i])}`);
  }
});

test('generate: with the key a locked model (signflip input + sealed) generates what the plain file does; the copy does not', async () => {
  const res = await lockModel(onnx, { schemes: ['signflip', 'sealed'], signflipMode: 'input', vendorSeed });
  const plain = await createOrtSession(onnx);
  const m = await loadModel(res.klm, { modelKey: res.modelKey, backend: 'wasm' });
  assert.equal(m.state, 'ready', m.error?.message);
  try {
    for (const opts of [{ prompt: 'th', tokens: 24 }, { prompt: 'qu', tokens: 24, temperature: 0.9, seed: 3 }]) {
      const want = await generateText(plain, opts);
      const got = await generateText(m, opts);
      assert.equal(got.text, want.text, JSON.stringify(opts));
      assert.equal(got.ids.length, 24);
    }
    // A context longer than the model's: the window slides and generation goes on.
    const long = await generateText(m, { prompt: 'the', tokens: c.context + 5, greedy: true });
    assert.equal(long.text.length, c.context + 5);
    const s1 = await generateText(m, { prompt: 'a', tokens: 32, temperature: 1.5, seed: 1 });
    const s2 = await generateText(m, { prompt: 'a', tokens: 32, temperature: 1.5, seed: 2 });
    assert.notEqual(s1.text, s2.text, 'two seeds, same text');
    await assert.rejects(generateText(m, { prompt: 'The', tokens: 1 }), (e: unknown) => e instanceof InputMismatchError && /"T" at 0/.test(e.message));
    await assert.rejects(generateText(m, { prompt: 'a', tokens: 1, temperature: 0 }), RangeError);
  } finally {
    await m.release();
    await plain.release();
  }
});

test('keylock generate: text with the model key; usage and vocabulary errors say what was expected', () => {
  const { kl, ok } = cli(dir);
  const seed = sha256(new TextEncoder().encode('keylock/test/lm/cli-vendor'));
  writeFileSync(join(dir, 'v.key'), encodeVendorSecret(seed));
  writeFileSync(join(dir, 'lm.onnx'), onnx);
  ok('lock', 'lm.onnx', '--scheme', 'signflip+sealed', '--vendor', 'v.key', '--out', 'lm.klm', '--key-out', 'lm.key');
  const a = JSON.parse(ok('generate', 'lm.klm', '--model-key', 'lm.key', '--prompt', 'th', '--tokens', '12', '--json')) as { text: string; tokens: number };
  assert.equal(a.tokens, 12);
  assert.match(a.text, /^[\na-z]{12}$/);
  const b = JSON.parse(ok('generate', 'lm.klm', '--model-key', 'lm.key', '--prompt', 'th', '--tokens', '12', '--json', '--temperature', '1', '--seed', '4')) as { text: string };
  assert.match(b.text, /^[\na-z]{12}$/);
  const plainText = ok('generate', 'lm.klm', '--model-key', 'lm.key', '--prompt', 'th', '--tokens', '12');
  assert.equal(plainText, `th${a.text}`);
  const bad = kl('generate', 'lm.klm', '--model-key', 'lm.key', '--prompt', 'Th');
  assert.equal(bad.code, 1);
  assert.match(bad.err, /error: .*"T" at 0/);
  assert.match(bad.err, /hint: .*vocabulary/);
  assert.equal(bad.out, '', 'nothing printed before the error');
  const both = kl('generate', 'lm.klm', '--model-key', 'lm.key', '--prompt', 'th', '--greedy', '--temperature', '1');
  assert.equal(both.code, 2);
  assert.match(both.err, /error: give --greedy or --temperature/);
  writeFileSync(join(dir, 'other.key'), encodeModelKey('other', new Uint8Array(32).fill(7)));
  const other = kl('generate', 'lm.klm', '--model-key', 'other.key', '--prompt', 'th');
  assert.equal(other.code, 3, other.err);
  assert.match(other.err, /halted/);
});

test('TFLite writer: SOFTMAX needs its beta; reducer and gather options are written', () => {
  const t = [{ name: 'x', dtype: 'float32', shape: [1, 4] }, { name: 'y', dtype: 'float32', shape: [1, 4] }];
  assert.throws(() => writeTflite({ tensors: t, inputs: [0], outputs: [1], operators: [{ op: 'SOFTMAX', inputs: [0], outputs: [1] }] }), /softmax options/);
  assert.throws(() => writeTflite({ tensors: t, inputs: [0], outputs: [1], operators: [{ op: 'GATHER', inputs: [0], outputs: [1], options: { kind: 'reducer', keepDims: true } }] }), /gather options/);
  const a = writeTflite({ tensors: t, inputs: [0], outputs: [1], operators: [{ op: 'SOFTMAX', inputs: [0], outputs: [1], options: { kind: 'softmax', beta: 1 } }] });
  const b = writeTflite({ tensors: t, inputs: [0], outputs: [1], operators: [{ op: 'SOFTMAX', inputs: [0], outputs: [1], options: { kind: 'softmax', beta: 2 } }] });
  assert.notDeepEqual(a, b, 'beta is written');
});
