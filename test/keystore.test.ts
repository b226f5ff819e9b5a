import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Keystore, makeGrant, makeReinstate, makeRevocation, memoryStorage, decodeKlsOuter, inspectGrant,
  encodeCbor, decodeCbor, decodeDevicePub, type UnlockProvider, type KeystoreStorage,
} from '../keystore/index.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import {
  DisabledError, ExpiredGrantError, FormatError, KeylockError, NoGrantError, ReplayError, RevokedError,
  RollbackError, SizeLimitError, TamperedError, UnlockError, UnsupportedVersionError, UntrustedSignerError, WrongDeviceError,
} from '../keystore/errors.ts';

const T0 = 1_750_000_000; // a fixed "now" so tests do not depend on the clock
const DAY = 86_400;

function vendor() {
  const seed = randomBytes(32);
  return { seed, pub: signKeyPair(seed).publicKey };
}
function hook(key = randomBytes(32)): UnlockProvider & { key: Uint8Array } {
  return { kind: 'hook', key, getKey: async () => key.slice() };
}
const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'keylock-ks-'));
  dirs.push(d);
  return d;
}
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
const policy = { onInvalidKey: 'disable', maxFailures: 3 } as const;

async function memKeystore(v = vendor(), unlock = hook()) {
  const storage = memoryStorage();
  const ks = await Keystore.create(storage, { vendorKeys: [v.pub], unlock });
  return { ks, storage, v, unlock };
}
function grantFor(ks: Keystore, v: { seed: Uint8Array }, modelId = 'm1', window: { notBefore?: number; notAfter?: number; issued?: number } = {}, modelKey = randomBytes(32)) {
  const bytes = makeGrant({
    modelId, modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId,
    notBefore: window.notBefore ?? T0 - DAY, notAfter: window.notAfter ?? T0 + DAY, issued: window.issued ?? T0 - DAY, vendorSeed: v.seed,
  });
  return { bytes, modelKey };
}
/** Runs a failing operation and checks that the stored bytes did not move. */
async function refusedUnchanged(storage: { read(): Promise<Uint8Array> }, op: () => Promise<unknown>, cls: new (...a: never[]) => Error) {
  const before = await storage.read();
  await assert.rejects(op, cls);
  assert.deepEqual(await storage.read(), before, 'stored keystore changed after a refused operation');
}

test('create, open, round trip on disk; key file and keystore are 0600; create refuses an existing keystore', async () => {
  const dir = tmp();
  const v = vendor();
  const path = join(dir, 'device.kls');
  const keyPath = join(dir, 'storage.key');
  const unlock: UnlockProvider = { kind: 'file', path: keyPath };
  const ks = await Keystore.create(path, { vendorKeys: [v.pub], unlock, deviceId: 'car-7' });
  assert.equal(statSync(keyPath).mode & 0o777, 0o600);
  assert.equal(statSync(keyPath).size, 32);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(ks.deviceId, 'car-7');
  assert.equal(ks.generation, 1);
  const pub = decodeDevicePub(ks.devicePubFile());
  assert.equal(pub.deviceId, 'car-7');
  assert.deepEqual(pub.key, ks.devicePub);

  const { bytes, modelKey } = grantFor(ks, v);
  await ks.installGrant(bytes, T0);
  assert.equal(ks.generation, 2);

  const again = await Keystore.open(path, { unlock });
  assert.equal(again.deviceId, 'car-7');
  assert.deepEqual(again.devicePub, ks.devicePub);
  assert.deepEqual(again.vendorKeys, [v.pub]);
  assert.equal(again.generation, 2);
  assert.deepEqual(again.modelKeyFor('m1', T0), modelKey);
  assert.equal(again.grants().length, 1);

  const before = readFileSync(path);
  await assert.rejects(Keystore.create(path, { vendorKeys: [v.pub], unlock }), (e: KeylockError) => e.code === 'exists');
  assert.deepEqual(readFileSync(path), before);
  // The outer map is readable without the key and says who the device is.
  const outer = decodeKlsOuter(new Uint8Array(before));
  assert.equal(outer.deviceId, 'car-7');
  assert.equal(outer.generation, 2);
});

test('default device id is the key id of the device key', async () => {
  const { ks } = await memKeystore();
  assert.match(ks.deviceId, /^[0-9a-f]{16}$/);
});

test('wrong storage key is UnlockError; the stored file is unchanged', async () => {
  const dir = tmp();
  const v = vendor();
  const path = join(dir, 'd.kls');
  await Keystore.create(path, { vendorKeys: [v.pub], unlock: hook() });
  const before = readFileSync(path);
  await assert.rejects(Keystore.open(path, { unlock: hook() }), UnlockError);
  await assert.rejects(Keystore.open(path, { unlock: { kind: 'pass', passphrase: () => 'x' } }), UnlockError);
  assert.deepEqual(readFileSync(path), before);
  await assert.rejects(Keystore.open(join(dir, 'missing.kls'), { unlock: hook() }), (e: KeylockError) => e.code === 'not-found');
});

test('truncated, oversized and every single-bit-flipped .kls is refused with a typed error', async () => {
  const unlock = hook();
  const { ks, v } = await memKeystore(vendor(), unlock);
  await ks.installGrant(grantFor(ks, v).bytes, T0);
  const good = ks.toBytes();
  assert.deepEqual((await Keystore.fromBytes(good, unlock)).modelKeyFor('m1', T0).byteLength, 32);

  for (const n of [0, 1, 10, good.byteLength >> 1, good.byteLength - 1]) {
    await assert.rejects(Keystore.fromBytes(good.subarray(0, n), unlock), FormatError, `truncated to ${n}`);
  }
  const trailing = new Uint8Array(good.byteLength + 1);
  trailing.set(good);
  await assert.rejects(Keystore.fromBytes(trailing, unlock), FormatError);
  await assert.rejects(Keystore.fromBytes(new Uint8Array((16 << 20) + 1), unlock), SizeLimitError);

  const seen = new Map<string, number>();
  for (let i = 0; i < good.byteLength * 8; i++) {
    const bad = good.slice();
    bad[i >> 3] ^= 1 << (i & 7);
    try {
      await Keystore.fromBytes(bad, unlock);
      assert.fail(`bit ${i} flipped: the keystore still opened`);
    } catch (e) {
      assert.ok(e instanceof FormatError || e instanceof TamperedError || e instanceof UnlockError || e instanceof SizeLimitError || e instanceof UnsupportedVersionError,
        `bit ${i}: expected a typed keylock error, got ${(e as Error).name}: ${(e as Error).message}`);
      seen.set((e as Error).name, (seen.get((e as Error).name) ?? 0) + 1);
    }
  }
  assert.ok((seen.get('TamperedError') ?? 0) > good.byteLength * 4, `most flips land in the sealed body: ${JSON.stringify([...seen])}`);
  assert.ok((seen.get('UnlockError') ?? 0) >= 128, 'every kcv bit flip reads as a wrong key');
});

test('outer fields swapped for well-formed other values are TamperedError', async () => {
  const unlock = hook();
  const { ks } = await memKeystore(vendor(), unlock);
  const good = ks.toBytes();
  const outer = decodeCbor(good, 'kls', 1 << 20) as Record<string, unknown>;
  const swaps: Record<string, unknown> = {
    deviceId: 'someone-else', devicePub: randomBytes(32), vendorKeys: [vendor().pub], generation: 7,
  };
  for (const [k, v] of Object.entries(swaps)) {
    await assert.rejects(Keystore.fromBytes(encodeCbor({ ...outer, [k]: v }), unlock), TamperedError, k);
  }
  await assert.rejects(Keystore.fromBytes(encodeCbor({ ...outer, nonce: randomBytes(24) }), unlock), TamperedError);
  await assert.rejects(Keystore.fromBytes(encodeCbor({ ...outer, version: 2 }), unlock), UnsupportedVersionError);
  await assert.rejects(Keystore.fromBytes(encodeCbor({ ...outer, format: 'keylock/klm' }), unlock), FormatError);
  await assert.rejects(Keystore.fromBytes(encodeCbor({ ...outer, unlock: { kind: 'pass', kdf: 'scrypt', N: 1 << 30, r: 8, p: 1, salt: randomBytes(16) } }), unlock), FormatError);
});

test('a grant for another device is WrongDeviceError; unpinned signer is UntrustedSignerError; a changed grant is TamperedError', async () => {
  const { ks, storage, v } = await memKeystore();
  const other = await memKeystore(v);
  const mk = randomBytes(32);
  const forOther = makeGrant({ modelId: 'm1', modelKey: mk, devicePub: other.ks.devicePub, deviceId: other.ks.deviceId, notBefore: T0 - 1, notAfter: T0 + DAY, vendorSeed: v.seed });
  await refusedUnchanged(storage, () => ks.installGrant(forOther, T0), WrongDeviceError);
  // Right id, other key (and the box would not open either).
  const mixed = makeGrant({ modelId: 'm1', modelKey: mk, devicePub: other.ks.devicePub, deviceId: ks.deviceId, notBefore: T0 - 1, notAfter: T0 + DAY, vendorSeed: v.seed });
  await refusedUnchanged(storage, () => ks.installGrant(mixed, T0), WrongDeviceError);

  const stranger = vendor();
  await refusedUnchanged(storage, () => ks.installGrant(grantFor(ks, stranger).bytes, T0), UntrustedSignerError);

  const g = grantFor(ks, v).bytes;
  const outer = decodeCbor(g, 'klg', 1 << 16) as Record<string, unknown>;
  const signed = (outer.signed as Uint8Array).slice();
  signed[signed.length - 5] ^= 1;
  await refusedUnchanged(storage, () => ks.installGrant(encodeCbor({ ...outer, signed }), T0), TamperedError);
  // Claiming a pinned key in the outer map does not help an unpinned signer.
  const forged = decodeCbor(grantFor(ks, stranger).bytes, 'klg', 1 << 16) as Record<string, unknown>;
  await refusedUnchanged(storage, () => ks.installGrant(encodeCbor({ ...forged, vendorKey: v.pub }), T0), TamperedError);
  assert.throws(() => ks.modelKeyFor('m1', T0), NoGrantError);
  assert.equal(ks.generation, 1);

  // The vendor can inspect a grant without the device secret.
  const meta = inspectGrant(g, [v.pub]);
  assert.equal(meta.modelId, 'm1');
  assert.equal(meta.deviceId, ks.deviceId);
});

test('licence window: expired at install refused; not-yet-valid kept and refused until valid; clock rollback does not revive', async () => {
  const { ks, storage, v } = await memKeystore();
  await refusedUnchanged(storage, () => ks.installGrant(grantFor(ks, v, 'old', { notBefore: T0 - 2 * DAY, notAfter: T0 - DAY }).bytes, T0), ExpiredGrantError);
  assert.throws(() => makeGrant({ modelId: 'x', modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: T0, notAfter: T0, vendorSeed: v.seed }), RangeError);

  const { bytes, modelKey } = grantFor(ks, v, 'later', { notBefore: T0 + DAY, notAfter: T0 + 2 * DAY, issued: T0 - 10 });
  await ks.installGrant(bytes, T0);
  assert.throws(() => ks.modelKeyFor('later', T0), (e: Error) => e instanceof ExpiredGrantError && /not valid yet/.test(e.message) && e.message.includes(String(T0 + DAY)));
  assert.deepEqual(ks.modelKeyFor('later', T0 + DAY), modelKey);
  assert.throws(() => ks.modelKeyFor('later', T0 + 2 * DAY), (e: Error) => e instanceof ExpiredGrantError && /expired/.test(e.message));

  // A vendor-signed time (here a revocation list's `issued`) moves the keystore's clock floor.
  await ks.installRevocation(makeRevocation({ listVersion: 1, issued: T0 + 3 * DAY, vendorSeed: v.seed }));
  assert.throws(() => ks.modelKeyFor('later', T0 + DAY), ExpiredGrantError, 'setting the clock back must not revive an expired grant');
});

test('revoked grant, model and device fail modelKeyFor; older or conflicting lists are RollbackError', async () => {
  const { ks, storage, v } = await memKeystore();
  const a = grantFor(ks, v, 'a');
  const b = grantFor(ks, v, 'b');
  const c = grantFor(ks, v, 'c');
  const ga = await ks.installGrant(a.bytes, T0);
  await ks.installGrant(b.bytes, T0);
  await ks.installGrant(c.bytes, T0);

  const r1 = makeRevocation({ listVersion: 1, issued: T0, grants: [ga.grantId], models: ['b'], vendorSeed: v.seed });
  assert.deepEqual(await ks.installRevocation(r1), { listVersion: 1, changed: true });
  assert.throws(() => ks.modelKeyFor('a', T0), (e: Error) => e instanceof RevokedError && e.message.includes(ga.grantId));
  assert.throws(() => ks.modelKeyFor('b', T0), (e: Error) => e instanceof RevokedError && /model "b"/.test(e.message));
  assert.deepEqual(ks.modelKeyFor('c', T0), c.modelKey);
  // A revoked grant cannot be installed again.
  await refusedUnchanged(storage, () => ks.installGrant(a.bytes, T0), RevokedError);

  // Same version, same ids (any order): accepted, nothing written.
  const gen = ks.generation;
  const r1again = makeRevocation({ listVersion: 1, issued: T0 + 5, models: ['b'], grants: [ga.grantId, ga.grantId], vendorSeed: v.seed });
  assert.deepEqual(await ks.installRevocation(r1again), { listVersion: 1, changed: false });
  assert.equal(ks.generation, gen);
  await refusedUnchanged(storage, () => ks.installRevocation(makeRevocation({ listVersion: 1, issued: T0, models: ['c'], vendorSeed: v.seed })), RollbackError);

  const r2 = makeRevocation({ listVersion: 2, issued: T0, devices: [ks.deviceId], vendorSeed: v.seed });
  await ks.installRevocation(r2);
  assert.throws(() => ks.modelKeyFor('c', T0), (e: Error) => e instanceof RevokedError && /device/.test(e.message));
  // List 2 no longer names grant a or model b: an un-revoke is a new version, by design.
  await refusedUnchanged(storage, () => ks.installRevocation(r1), RollbackError);
  await refusedUnchanged(storage, () => ks.installRevocation(makeRevocation({ listVersion: 5, vendorSeed: vendor().seed })), UntrustedSignerError);
  assert.equal(ks.revocationVersion, 2);
});

test('failures persist across reopen, disable at the limit and wipe the key; reinstate lifts once; replay and other devices refused', async () => {
  const dir = tmp();
  const path = join(dir, 'd.kls');
  const v = vendor();
  const unlock = hook();
  let ks = await Keystore.create(path, { vendorKeys: [v.pub], unlock });
  const g = grantFor(ks, v);
  await ks.installGrant(g.bytes, T0);

  assert.deepEqual(await ks.recordFailure('m1', policy, T0), { failures: 1, disabled: false });
  assert.deepEqual(await ks.recordFailure('m1', policy, T0), { failures: 2, disabled: false });
  ks = await Keystore.open(path, { unlock });
  assert.equal(ks.failureCount('m1'), 2);
  assert.deepEqual(await ks.recordFailure('m1', policy, T0), { failures: 3, disabled: true });
  assert.ok(ks.isDisabled('m1'));
  assert.throws(() => ks.modelKeyFor('m1', T0), DisabledError);

  ks = await Keystore.open(path, { unlock });
  assert.ok(ks.isDisabled('m1'));
  assert.equal(ks.grants().length, 0, 'the disabled model\'s grant and key are gone from the keystore');
  const gen = ks.generation;
  assert.deepEqual(await ks.recordFailure('m1', policy, T0), { failures: 3, disabled: true });
  assert.equal(ks.generation, gen, 'no write for a model already disabled');

  // A fresh grant cannot be installed while disabled.
  const storage = { read: async () => new Uint8Array(readFileSync(path)) };
  await refusedUnchanged(storage, () => ks.installGrant(grantFor(ks, v).bytes, T0), DisabledError);

  const other = await memKeystore(v);
  await refusedUnchanged(storage, () => ks.installReinstate(makeReinstate({ modelId: 'm1', deviceId: other.ks.deviceId, devicePub: other.ks.devicePub, vendorSeed: v.seed })), WrongDeviceError);
  await refusedUnchanged(storage, () => ks.installReinstate(makeReinstate({ modelId: 'm1', deviceId: ks.deviceId, devicePub: ks.devicePub, vendorSeed: vendor().seed })), UntrustedSignerError);

  const token = makeReinstate({ modelId: 'm1', deviceId: ks.deviceId, devicePub: ks.devicePub, vendorSeed: v.seed, issued: T0 });
  const r = await ks.installReinstate(token);
  assert.equal(r.modelId, 'm1');
  assert.equal(r.wasDisabled, true);
  assert.equal(ks.isDisabled('m1'), false);
  assert.equal(ks.failureCount('m1'), 0);
  assert.throws(() => ks.modelKeyFor('m1', T0), NoGrantError, 'reinstate does not restore the wiped key');
  await refusedUnchanged(storage, () => ks.installReinstate(token), ReplayError);

  const fresh = grantFor(ks, v);
  await ks.installGrant(fresh.bytes, T0);
  ks = await Keystore.open(path, { unlock });
  assert.deepEqual(ks.modelKeyFor('m1', T0), fresh.modelKey);
  await assert.rejects(ks.installReinstate(token), ReplayError, 'used tokens persist');
});

test('halt policy and maxFailures 0 never disable; resetFailures clears without needless writes', async () => {
  const { ks, v } = await memKeystore();
  await ks.installGrant(grantFor(ks, v).bytes, T0);
  for (let i = 0; i < 5; i++) await ks.recordFailure('m1', { onInvalidKey: 'halt', maxFailures: 2 }, T0);
  await ks.recordFailure('m1', { onInvalidKey: 'disable', maxFailures: 0 }, T0);
  assert.equal(ks.failureCount('m1'), 6);
  assert.equal(ks.isDisabled('m1'), false);
  await ks.resetFailures('m1');
  assert.equal(ks.failureCount('m1'), 0);
  const gen = ks.generation;
  await ks.resetFailures('m1');
  assert.equal(ks.generation, gen);
  await assert.rejects(ks.recordFailure('m1', { onInvalidKey: 'nope' as 'halt', maxFailures: 1 }), RangeError);
});

test('generation strictly increases; concurrent calls are serialised; a failed write changes nothing in memory', async () => {
  const { ks, storage, v, unlock } = await memKeystore();
  const gens = [ks.generation];
  await ks.installGrant(grantFor(ks, v).bytes, T0); gens.push(ks.generation);
  await ks.recordFailure('m1', policy, T0); gens.push(ks.generation);
  await ks.resetFailures('m1'); gens.push(ks.generation);
  await ks.installRevocation(makeRevocation({ listVersion: 1, issued: T0, vendorSeed: v.seed })); gens.push(ks.generation);
  for (let i = 1; i < gens.length; i++) assert.equal(gens[i], gens[i - 1] + 1);
  assert.equal(decodeKlsOuter(storage.bytes!).generation, ks.generation);

  await Promise.all(Array.from({ length: 8 }, () => ks.recordFailure('m2', { onInvalidKey: 'halt', maxFailures: 0 }, T0)));
  assert.equal(ks.failureCount('m2'), 8);
  assert.equal(ks.generation, gens.at(-1)! + 8);

  // A store whose write fails: the operation rejects and neither memory nor store moves.
  let failWrites = false;
  const flaky: KeystoreStorage = {
    where: 'flaky', read: storage.read, create: storage.create,
    write: async (b) => { if (failWrites) throw new Error('disk full'); await storage.write(b); },
  };
  const ks2 = await Keystore.open(flaky, { unlock });
  failWrites = true;
  const before = ks2.generation;
  await assert.rejects(ks2.installGrant(grantFor(ks2, v, 'm3').bytes, T0), /disk full/);
  assert.equal(ks2.generation, before);
  assert.equal(ks2.grantFor('m3'), undefined);
  assert.throws(() => ks2.modelKeyFor('m3', T0), NoGrantError);
});

test('two writers on one file: each change re-reads the file; a file restored to an older copy is RollbackError', async () => {
  const dir = tmp();
  const path = join(dir, 'd.kls');
  const v = vendor();
  const unlock = hook();
  const a = await Keystore.create(path, { vendorKeys: [v.pub], unlock });
  const b = await Keystore.open(path, { unlock });
  const old = readFileSync(path);
  const g = grantFor(a, v);
  await a.installGrant(g.bytes, T0);
  await b.recordFailure('m1', { onInvalidKey: 'halt', maxFailures: 0 }, T0);
  assert.deepEqual(b.modelKeyFor('m1', T0), g.modelKey, 'b picked up a\'s grant before writing');
  assert.equal(b.generation, 3);
  await a.reload();
  assert.equal(a.failureCount('m1'), 1);
  assert.equal(existsSync(`${path}.lock`), false);

  writeFileSync(path, old);
  await assert.rejects(a.recordFailure('m1', policy, T0), RollbackError);
  assert.deepEqual(readFileSync(path), old);
});

test('writer lock: a live holder makes writers wait (busy), a dead holder\'s lock is broken', async () => {
  const { fileStorage } = await import('../keystore/filestore.ts');
  const dir = tmp();
  const path = join(dir, 'd.kls');
  const v = vendor();
  const unlock = hook();
  await Keystore.create(path, { vendorKeys: [v.pub], unlock });
  const ks = await Keystore.open(fileStorage(path, { lockTimeoutMs: 200 }), { unlock });
  writeFileSync(`${path}.lock`, `${process.pid}\n`); // held by a live process (this one, via another handle)
  await assert.rejects(ks.recordFailure('m1', policy, T0), (e: KeylockError) => e.code === 'busy');
  writeFileSync(`${path}.lock`, '2147483646\n'); // a pid that does not exist
  await ks.recordFailure('m1', policy, T0);
  assert.equal(ks.failureCount('m1'), 1);
  assert.equal(existsSync(`${path}.lock`), false);
});

test('changeUnlock re-seals under a new provider', async () => {
  const dir = tmp();
  const path = join(dir, 'd.kls');
  const v = vendor();
  const first = hook();
  const ks = await Keystore.create(path, { vendorKeys: [v.pub], unlock: first });
  const pass: UnlockProvider = { kind: 'pass', passphrase: () => 'correct horse', cost: { N: 1 << 10 } };
  await ks.changeUnlock(pass);
  await assert.rejects(Keystore.open(path, { unlock: first }), UnlockError);
  const again = await Keystore.open(path, { unlock: pass });
  assert.equal(again.generation, 2);
  const outer = decodeKlsOuter(new Uint8Array(readFileSync(path)));
  assert.equal(outer.unlock.kind, 'pass');
});
