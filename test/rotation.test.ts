// Key compromise (docs/THREATS.md): vendor key rotation TUF-style, backup keys that
// only sign rotations, recovery from a stolen key, and model key rotation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Keystore, makeGrant, makeRevocation, makeRotation, memoryStorage, encodeCbor, decodeCbor, type UnlockProvider,
} from '../keystore/index.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { packKlm, type ManifestDraft } from '../models/klm.ts';
import { openKlm } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import { KeylockError, RevokedError, RollbackError, TamperedError, UntrustedSignerError } from '../keystore/errors.ts';
import { tinyOnnx } from '../eval/fixtures/tiny.ts';

const T0 = Math.floor(Date.now() / 1000);
const DAY = 86_400;

function key() {
  const seed = randomBytes(32);
  return { seed, pub: signKeyPair(seed).publicKey };
}
const unlock: UnlockProvider = (() => { const k = randomBytes(32); return { kind: 'hook', getKey: async () => k.slice() }; })();
async function device(vendors: Uint8Array[], backups: Uint8Array[] = []) {
  return Keystore.create(memoryStorage(), { vendorKeys: vendors, backupKeys: backups, unlock });
}
function grantBy(ks: Keystore, signer: { seed: Uint8Array }, modelId = 'm1', modelKey = randomBytes(32), issued = T0) {
  return makeGrant({ modelId, modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: T0 - DAY, notAfter: T0 + DAY, issued, vendorSeed: signer.seed });
}
const x = { x: { dtype: 'float32' as const, dims: [1, 4], data: Float32Array.from([1, 2, 3, 4]) } };

test('planned rotation: signed by the old key and cross-signed by the new one; old-key files refused after; installed grants stay; replays refused', async () => {
  const a = key();
  const b = key();
  const locked = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed: a.seed });
  const ks = await device([a.pub]);
  await ks.installGrant(grantBy(ks, a, locked.modelId, locked.modelKey), T0);
  const before = await loadModel(locked.klm, { keystore: ks });
  assert.equal(before.state, 'ready', before.error?.message);
  await before.release();

  const r = makeRotation({ signerSeed: a.seed, newSeed: b.seed, issued: T0 });
  assert.deepEqual(await ks.installRotation(r), { role: 'vendor', oldKey: a.pub, newKey: b.pub });
  assert.deepEqual(ks.vendorKeys, [b.pub]);
  assert.deepEqual(ks.retiredKeys, [a.pub]);
  const again = await Keystore.fromBytes(ks.toBytes(), unlock);
  assert.deepEqual(again.vendorKeys, [b.pub], 'the new pin is persisted');

  await assert.rejects(ks.installGrant(grantBy(ks, a, 'm2'), T0), UntrustedSignerError);
  await assert.rejects(ks.installRevocation(makeRevocation({ listVersion: 1, vendorSeed: a.seed })), UntrustedSignerError);
  const stale = await loadModel(locked.klm, { keystore: ks });
  assert.ok(stale.error instanceof UntrustedSignerError, 'a .klm signed only by the rotated-out key is refused');
  const { manifest, model } = openKlm(locked.klm);
  const { vendorKey: _v, digest: _d, modelBytes: _n, ...draft } = manifest;
  const resigned = packKlm(draft as ManifestDraft, model, b.seed);
  const fresh = await loadModel(resigned, { keystore: ks });
  assert.equal(fresh.state, 'ready', 're-signed with the new key, the installed grant (signed by the old key) still opens it');
  assert.equal((await fresh.run(x)).y.data.length, 3);
  await fresh.release();
  await ks.installGrant(grantBy(ks, b, 'm2'), T0);

  await assert.rejects(ks.installRotation(r), (e: unknown) => e instanceof UntrustedSignerError, 'a replay: its signer is no longer pinned');
  const back = makeRotation({ signerSeed: b.seed, newSeed: a.seed, issued: T0 + 1 });
  await assert.rejects(ks.installRotation(back), (e: unknown) => e instanceof RollbackError && /rotated out before/.test((e as Error).message));
});

test('backup key: signs a rotation when the vendor key is lost, and nothing else', async () => {
  const a = key();
  const backup = key();
  const c = key();
  const ks = await device([a.pub], [backup.pub]);
  assert.deepEqual(ks.backupKeys, [backup.pub]);
  // A backup key is not a vendor key: grants, revocation lists and models signed by it are refused.
  await assert.rejects(ks.installGrant(grantBy(ks, backup), T0), UntrustedSignerError);
  await assert.rejects(ks.installRevocation(makeRevocation({ listVersion: 1, vendorSeed: backup.seed })), UntrustedSignerError);
  const byBackup = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed: backup.seed });
  assert.throws(() => openKlm(byBackup.klm, ks.vendorKeys), UntrustedSignerError);
  // A vendor key cannot replace the backup key (a thief of the vendor key must not lock the owner out).
  await assert.rejects(ks.installRotation(makeRotation({ signerSeed: a.seed, oldKey: backup.pub, newSeed: c.seed })), /expected a signature by a backup key/);
  // Nor another vendor key's: only the key itself or a backup replaces a vendor key.
  const two = await device([a.pub, c.pub], [backup.pub]);
  await assert.rejects(two.installRotation(makeRotation({ signerSeed: c.seed, oldKey: a.pub, newSeed: key().seed })), /expected a signature by that key or by a backup key/);

  // The vendor key is lost: the backup key rotates it to c.
  const r = await ks.installRotation(makeRotation({ signerSeed: backup.seed, oldKey: a.pub, newSeed: c.seed }));
  assert.equal(r.role, 'vendor');
  assert.deepEqual(ks.vendorKeys, [c.pub]);
  await ks.installGrant(grantBy(ks, c), T0);
  // The backup key rotates itself (e.g. after it was used once, or on schedule).
  const backup2 = key();
  assert.equal((await ks.installRotation(makeRotation({ signerSeed: backup.seed, newSeed: backup2.seed }))).role, 'backup');
  assert.deepEqual(ks.backupKeys, [backup2.pub]);
  assert.equal(ks.retiredKeys.length, 2);
});

test('vendor key stolen: the thief rotates to its own key; the backup key takes the device back', async () => {
  const a = key();
  const backup = key();
  const thief = key();
  const c = key();
  const ks = await device([a.pub], [backup.pub]);
  await ks.installRotation(makeRotation({ signerSeed: a.seed, newSeed: thief.seed }));
  assert.deepEqual(ks.vendorKeys, [thief.pub]);
  await ks.installRotation(makeRotation({ signerSeed: backup.seed, oldKey: thief.pub, newSeed: c.seed }));
  assert.deepEqual(ks.vendorKeys, [c.pub]);
  await assert.rejects(ks.installGrant(grantBy(ks, thief), T0), UntrustedSignerError);
  await assert.rejects(ks.installRotation(makeRotation({ signerSeed: a.seed, newSeed: key().seed })), UntrustedSignerError, 'the stolen original key is retired too');
});

test('malformed rotations: no cross-signature, a changed one, an unpinned signer, a new key already pinned', async () => {
  const a = key();
  const b = key();
  const ks = await device([a.pub, b.pub]);
  const r = makeRotation({ signerSeed: a.seed, newSeed: key().seed });
  const outer = decodeCbor(r, 'klv', 4096) as Record<string, Uint8Array>;
  const flipped = new Uint8Array(outer.newSig);
  flipped[5] ^= 1;
  await assert.rejects(ks.installRotation(encodeCbor({ ...outer, newSig: flipped })), (e: unknown) => e instanceof TamperedError && /cross-signature/.test((e as Error).message));
  const { newSig: _n, ...noCross } = outer;
  await assert.rejects(ks.installRotation(encodeCbor(noCross)), /newSig: expected a byte string/);
  await assert.rejects(ks.installRotation(makeRotation({ signerSeed: key().seed, newSeed: key().seed })), UntrustedSignerError);
  await assert.rejects(ks.installRotation(makeRotation({ signerSeed: a.seed, newSeed: b.seed })), (e: unknown) => e instanceof KeylockError && e.code === 'key-pinned');
  assert.throws(() => makeRotation({ signerSeed: a.seed, newSeed: a.seed }), RangeError);
  assert.equal(ks.generation, 1, 'nothing was written');
});

test('model key rotation: lock again (new model id and key), grant the new one, revoke the old model', async () => {
  const v = key();
  const ks = await device([v.pub]);
  const first = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed: v.seed });
  const second = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed: v.seed });
  assert.notEqual(first.modelId, second.modelId);
  assert.notDeepEqual(first.modelKey, second.modelKey);
  await ks.installGrant(grantBy(ks, v, first.modelId, first.modelKey), T0);
  await ks.installGrant(grantBy(ks, v, second.modelId, second.modelKey), T0);
  await ks.installRevocation(makeRevocation({ listVersion: 1, models: [first.modelId], vendorSeed: v.seed }));
  const old = await loadModel(first.klm, { keystore: ks });
  assert.ok(old.error instanceof RevokedError);
  const cur = await loadModel(second.klm, { keystore: ks });
  assert.equal(cur.state, 'ready');
  await cur.release();
  // The old key does not open the new model (a leaked old key is worth nothing against it).
  const cross = await loadModel(second.klm, { modelKey: first.modelKey });
  assert.equal(cross.error?.code, 'key-mismatch');
});
