// Mix-and-match (docs/THREATS.md): a model with another model's grant or key, a
// manifest relabelled to borrow a grant, a grant or keystore moved to another device.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Keystore, makeGrant, memoryStorage, encodeCbor, decodeCbor } from '../keystore/index.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { loadModel } from '../runtime/load.ts';
import { KeyMismatchError, NoGrantError, TamperedError, UnlockError, UntrustedSignerError, WrongDeviceError } from '../keystore/errors.ts';
import { tinyOnnx } from '../eval/fixtures/tiny.ts';

const T = Math.floor(Date.now() / 1000);
const vendorSeed = randomBytes(32);
const vendorPub = signKeyPair(vendorSeed).publicKey;
const unlock = { kind: 'hook' as const, getKey: async () => new Uint8Array(32).fill(1) };
const a = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed, modelId: 'model-a' });
const b = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed, modelId: 'model-b' });
const grantFor = (ks: Keystore, modelId: string, modelKey: Uint8Array) =>
  makeGrant({ modelId, modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: T - 60, notAfter: T + 3600, vendorSeed });

test('a grant for model A does not open model B: the key is looked up by the signed model id', async () => {
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock });
  await ks.installGrant(grantFor(ks, 'model-a', a.modelKey));
  const mb = await loadModel(b.klm, { keystore: ks });
  assert.ok(mb.error instanceof NoGrantError, String(mb.error));
  assert.equal(ks.failureCount('model-b'), 0, 'no grant is no guess: nothing counted');
  const ma = await loadModel(a.klm, { keystore: ks });
  assert.equal(ma.state, 'ready');
  await ma.release();
});

test('B relabelled as A (to borrow A\'s grant) breaks the signature; re-signed by another key it is untrusted', async () => {
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock });
  await ks.installGrant(grantFor(ks, 'model-a', a.modelKey));
  const outer = decodeCbor(b.klm, 'klm', 1 << 24) as Record<string, Uint8Array>;
  const signed = outer.signed;
  const text = Buffer.from(signed).toString('latin1').replace('model-b', 'model-a');
  const relabelled = encodeCbor({ ...outer, signed: new Uint8Array(Buffer.from(text, 'latin1')) });
  const m1 = await loadModel(relabelled, { keystore: ks });
  assert.ok(m1.error instanceof TamperedError, String(m1.error));
  const thief = randomBytes(32);
  const forged = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed: thief, modelId: 'model-a' });
  const m2 = await loadModel(forged.klm, { keystore: ks });
  assert.ok(m2.error instanceof UntrustedSignerError, String(m2.error));
});

test('the same model id locked twice by mistake: the other lock\'s key fails the key check and counts as a failure', async () => {
  const again = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed, modelId: 'model-a' });
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock });
  await ks.installGrant(grantFor(ks, 'model-a', a.modelKey));
  const m = await loadModel(again.klm, { keystore: ks });
  assert.ok(m.error instanceof KeyMismatchError);
  assert.equal(ks.failureCount('model-a'), 1);
});

test('a grant or a keystore moved to another device does not open there', async () => {
  const one = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock, deviceId: 'car-1' });
  const two = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock: { kind: 'hook', getKey: async () => new Uint8Array(32).fill(2) }, deviceId: 'car-1' });
  await assert.rejects(two.installGrant(grantFor(one, 'model-a', a.modelKey)), WrongDeviceError, 'same device id, other device key');
  await assert.rejects(Keystore.fromBytes(one.toBytes(), { kind: 'hook', getKey: async () => new Uint8Array(32).fill(2) }), UnlockError, 'the copied keystore needs the first device\'s storage key');
});
