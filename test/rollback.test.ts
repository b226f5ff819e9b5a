// Rollback and brute force (docs/THREATS.md): older keystores, grants and clocks,
// the monotonic counter, and the wrong-secret lockout, across restarts.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Keystore, makeGrant, makeReinstate, memoryStorage, memoryCounter, memoryAttempts, retryAt, DEFAULT_LOCKOUT,
  type UnlockProvider, type KeystoreStorage,
} from '../keystore/index.ts';
import { decodeAttempts } from '../keystore/attempts.ts';
import { decodeCounter } from '../keystore/counter.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { ExpiredGrantError, LockoutError, RollbackError, UnlockError } from '../keystore/errors.ts';

const T0 = 1_750_000_000;
const DAY = 86_400;
const root = fileURLToPath(new URL('..', import.meta.url));
const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'keylock-rb-'));
  dirs.push(d);
  return d;
}
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
function vendor() {
  const seed = randomBytes(32);
  return { seed, pub: signKeyPair(seed).publicKey };
}
function hook(key = randomBytes(32)): UnlockProvider {
  return { kind: 'hook', getKey: async () => key.slice() };
}
function grant(ks: Keystore, v: { seed: Uint8Array }, modelId: string, issued: number, notAfter = T0 + 30 * DAY) {
  return makeGrant({ modelId, modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: T0 - DAY, notAfter, issued, vendorSeed: v.seed });
}

test('keystore rollback: an older .kls put back while no process has it open is RollbackError (file counter); restoring the counter too is the documented limit', async () => {
  const dir = tmp();
  const path = join(dir, 'd.kls');
  const v = vendor();
  const unlock = hook();
  const ks = await Keystore.create(path, { vendorKeys: [v.pub], unlock });
  assert.equal(decodeCounter(readFileSync(`${path}.counter`)), 1, 'the counter starts at the first generation');
  await ks.installGrant(grant(ks, v, 'm1', T0), T0);
  const oldKls = readFileSync(path);
  const oldCounter = readFileSync(`${path}.counter`);
  await ks.recordFailure('m1', { onInvalidKey: 'disable', maxFailures: 1 }, T0); // disables m1
  assert.equal(ks.isDisabled('m1'), true);
  assert.equal(decodeCounter(readFileSync(`${path}.counter`)), ks.generation);
  ks.close();

  writeFileSync(path, oldKls); // undo the disable by restoring the file alone
  await assert.rejects(Keystore.open(path, { unlock }), (e: unknown) => e instanceof RollbackError && /older copy/.test((e as Error).message));

  writeFileSync(`${path}.counter`, oldCounter); // ... and the counter file too: a file counter cannot tell
  const rolled = await Keystore.open(path, { unlock });
  assert.equal(rolled.isDisabled('m1'), false, 'documented limit: restoring both files rolls back (a hardware counter is needed)');
  rolled.close();

  rmSync(`${path}.counter`);
  writeFileSync(path, readFileSync(path));
  const lost = await Keystore.open(path, { unlock }).then(() => 'opened', (e) => e);
  assert.ok(lost instanceof RollbackError && /reset, replaced or lost/.test(lost.message), 'a missing counter next to generation >= 2 is refused');
});

test('a hardware-style counter that cannot be set back catches a restore of every file', async () => {
  const tpm = memoryCounter(41); // a counter already used by something else: the generation starts after it
  const v = vendor();
  const unlock = hook();
  const store = memoryStorage();
  const storage: KeystoreStorage = { ...store, read: () => store.read(), write: (b) => store.write(b), create: (b) => store.create(b), counter: tpm };
  const ks = await Keystore.create(storage, { vendorKeys: [v.pub], unlock });
  assert.equal(ks.generation, 42);
  assert.equal(tpm.value, 42);
  const snapshot = ks.toBytes();
  await ks.installGrant(grant(ks, v, 'm1', T0), T0);
  assert.equal(tpm.value, 43, 'every write advances the counter to the new generation');
  await store.write(snapshot);
  await assert.rejects(Keystore.open(storage, { unlock }), RollbackError);
  await assert.rejects(ks.recordFailure('m1', { onInvalidKey: 'halt', maxFailures: 0 }, T0), RollbackError, 'the open instance refuses too');
});

test('crash between the keystore write and the counter increment: the next open accepts one ahead, the next write repairs', async () => {
  const v = vendor();
  const unlock = hook();
  const counter = memoryCounter();
  const store = memoryStorage();
  const storage: KeystoreStorage = { where: 'memory', read: () => store.read(), write: (b) => store.write(b), create: (b) => store.create(b), counter };
  const ks = await Keystore.create(storage, { vendorKeys: [v.pub], unlock });
  await ks.installGrant(grant(ks, v, 'm1', T0), T0);
  counter.value -= 1; // as if the process died right after the rename
  const again = await Keystore.open(storage, { unlock });
  assert.equal(again.generation, counter.value + 1);
  await again.recordFailure('m1', { onInvalidKey: 'halt', maxFailures: 0 }, T0);
  assert.equal(counter.value, again.generation, 'caught up and advanced');
  counter.value -= 2;
  await assert.rejects(Keystore.open(storage, { unlock }), (e: unknown) => e instanceof RollbackError && /reset, replaced or lost/.test((e as Error).message));
});

test('grant rollback: a grant issued before the installed one for the model is RollbackError, also after a disable removed it', async () => {
  const v = vendor();
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [v.pub], unlock: hook() });
  const older = grant(ks, v, 'm1', T0 - 10, T0 + 365 * DAY); // the long licence the vendor later shortened
  const newer = grant(ks, v, 'm1', T0, T0 + 7 * DAY);
  await ks.installGrant(newer, T0);
  const gen = ks.generation;
  await assert.rejects(ks.installGrant(older, T0), (e: unknown) => e instanceof RollbackError && /issued at or after/.test((e as Error).message));
  assert.equal(ks.generation, gen, 'nothing written');
  await ks.installGrant(grant(ks, v, 'm1', T0), T0); // same second: accepted (ties cannot be ordered)
  await ks.installGrant(grant(ks, v, 'm2', T0 - 100), T0); // other models have their own floor

  await ks.recordFailure('m1', { onInvalidKey: 'disable', maxFailures: 1 }, T0);
  assert.equal(ks.grantFor('m1'), undefined, 'the disable removed the grant');
  await ks.installReinstate(makeReinstate({ modelId: 'm1', deviceId: ks.deviceId, devicePub: ks.devicePub, vendorSeed: v.seed, issued: T0 + 1 }));
  await assert.rejects(ks.installGrant(older, T0 + 2), RollbackError, 'the floor outlives the grant');
  await ks.installGrant(grant(ks, v, 'm1', T0 + 1), T0 + 2);
});

test('clock rollback: time never counts as earlier than the latest vendor-signed time seen', async () => {
  const v = vendor();
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [v.pub], unlock: hook() });
  await ks.installGrant(makeGrant({ modelId: 'm1', modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: T0, notAfter: T0 + DAY, issued: T0, vendorSeed: v.seed }), T0);
  assert.equal(ks.modelKeyFor('m1', T0 + 10).byteLength, 32);
  assert.throws(() => ks.modelKeyFor('m1', T0 + DAY), ExpiredGrantError);
  // A later vendor file (here a grant for another model) carries a later trusted time ...
  await ks.installGrant(makeGrant({ modelId: 'm2', modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: T0, notAfter: T0 + 9 * DAY, issued: T0 + 2 * DAY, vendorSeed: v.seed }), T0 + 2 * DAY);
  // ... so setting the clock back into m1's window does not revive it.
  assert.throws(() => ks.modelKeyFor('m1', T0 + 10), (e: unknown) => e instanceof ExpiredGrantError && e.now === T0 + 2 * DAY);
  assert.throws(() => ks.modelKeyFor('m1', 0), ExpiredGrantError);
});

test('wrong unlock secrets: counted outside the keystore, exponential lockout, reset on success', async () => {
  const right = randomBytes(32);
  const attempts = memoryAttempts();
  const store = memoryStorage();
  const storage: KeystoreStorage = { where: 'memory', read: () => store.read(), write: (b) => store.write(b), create: (b) => store.create(b), attempts };
  const v = vendor();
  (await Keystore.create(storage, { vendorKeys: [v.pub], unlock: hook(right) })).close();
  const policy = { free: 3, baseSeconds: 10, maxSeconds: 60 };
  let t = T0;
  for (let i = 1; i <= 3; i++) {
    await assert.rejects(Keystore.open(storage, { unlock: hook(), now: t, lockout: policy }), (e: unknown) => e instanceof UnlockError && new RegExp(`${i} wrong secret`).test((e as Error).message));
  }
  assert.deepEqual(attempts.record, { failures: 3, last: T0 });
  // The 4th try is refused before any key is derived, even with the right key.
  await assert.rejects(Keystore.open(storage, { unlock: hook(right), now: t + 9, lockout: policy }), (e: unknown) => e instanceof LockoutError && e.retryAt === T0 + 10);
  t += 10;
  await assert.rejects(Keystore.open(storage, { unlock: hook(), now: t, lockout: policy }), UnlockError); // 4th wrong: wait 20 s
  assert.equal(retryAt(attempts.record, policy), t + 20);
  for (let i = 0; i < 5; i++) { t = retryAt(attempts.record, policy); await assert.rejects(Keystore.open(storage, { unlock: hook(), now: t, lockout: policy }), UnlockError); }
  assert.equal(retryAt(attempts.record, policy) - attempts.record.last, 60, 'capped at maxSeconds');
  const ok = await Keystore.open(storage, { unlock: hook(right), now: retryAt(attempts.record, policy), lockout: policy });
  ok.close();
  assert.equal(attempts.record.failures, 0, 'a success clears the count');
  assert.deepEqual(DEFAULT_LOCKOUT, { free: 5, baseSeconds: 1, maxSeconds: 3600 });
});

test('the lockout survives restarts: wrong keys through the CLI, one process each, are remembered in F.kls.attempts', async () => {
  const dir = tmp();
  const run = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...args], { encoding: 'utf8', cwd: dir });
  assert.equal(run('keygen', '--out', join(dir, 'vendor')).status, 0);
  const init = run('device', 'init', '--keystore', join(dir, 'd.kls'), '--unlock', `file:${join(dir, 'right.key')}`, '--trust', join(dir, 'vendor.pub'), '--pub-out', join(dir, 'd.pub'));
  assert.equal(init.status, 0, init.stderr);
  writeFileSync(join(dir, 'wrong.key'), randomBytes(32));
  const started = Math.floor(Date.now() / 1000);
  for (let i = 1; i <= 3; i++) {
    const r = run('device', 'show', '--keystore', join(dir, 'd.kls'), '--unlock', `file:${join(dir, 'wrong.key')}`);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`${i} wrong secret\\(s\\) in a row \\(unlock-failed\\)`));
  }
  const rec = decodeAttempts(readFileSync(join(dir, 'd.kls.attempts')));
  assert.equal(rec.failures, 3);
  assert.ok(rec.last >= started);
  // A fresh process with the default policy: two more wrong keys reach the limit, the next try waits.
  const path = join(dir, 'd.kls');
  const wrong: UnlockProvider = { kind: 'file', path: join(dir, 'wrong.key') };
  const rightKey: UnlockProvider = { kind: 'file', path: join(dir, 'right.key') };
  await assert.rejects(Keystore.open(path, { unlock: wrong, now: rec.last }), UnlockError);
  await assert.rejects(Keystore.open(path, { unlock: wrong, now: rec.last }), /5 wrong secret\(s\) in a row, next attempt allowed in 1 s/);
  await assert.rejects(Keystore.open(path, { unlock: rightKey, now: rec.last }), LockoutError);
  while (Date.now() / 1000 < rec.last + 1) await new Promise((r) => setTimeout(r, 50));
  const show = run('device', 'show', '--keystore', path, '--unlock', `file:${join(dir, 'right.key')}`);
  assert.equal(show.status, 0, `one second later the right key opens it: ${show.stderr}`);
  assert.equal(existsSync(join(dir, 'd.kls.attempts')), false, 'and the record is gone');
});
