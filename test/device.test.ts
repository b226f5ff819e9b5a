// The device path: keystore + loadModel. The network is trapped before anything
// loads, so the first test can prove that loading ORT's wasm, opening the
// keystore, unlocking and running make no request at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import dns from 'node:dns';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const calls: string[] = [];
const trap = (what: string) => (..._a: unknown[]): never => { calls.push(what); throw new Error(`network use: ${what}`); };
globalThis.fetch = trap('fetch') as typeof fetch;
for (const [mod, name] of [[http, 'http'], [https, 'https']] as const) {
  (mod as { request: unknown }).request = trap(`${name}.request`);
  (mod as { get: unknown }).get = trap(`${name}.get`);
}
(net as { connect: unknown }).connect = trap('net.connect');
(net as { createConnection: unknown }).createConnection = trap('net.createConnection');
net.Socket.prototype.connect = trap('net.Socket.connect') as never;
(dns as { lookup: unknown }).lookup = trap('dns.lookup');

const { Keystore } = await import('../keystore/keystore.ts');
const { makeGrant } = await import('../keystore/grant.ts');
const { makeRevocation } = await import('../keystore/revocation.ts');
const { makeReinstate } = await import('../keystore/reinstate.ts');
const { randomBytes, signKeyPair } = await import('../keystore/nacl.ts');
const { lockOnnx } = await import('../models/lock/index.ts');
const { loadModel } = await import('../runtime/load.ts');
const errors = await import('../keystore/errors.ts');

const MLP = new Uint8Array(readFileSync(new URL('../models/reference/mnist-mlp.onnx', import.meta.url)));
const dir = mkdtempSync(join(tmpdir(), 'keylock-device-'));
const vendorSeed = randomBytes(32);
const vendorPub = signKeyPair(vendorSeed).publicKey;
const locked = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, modelId: 'mlp-test', policy: { onInvalidKey: 'disable', maxFailures: 2 } });
const x = { input: { dtype: 'float32' as const, dims: [1, 1, 28, 28], data: new Float32Array(784).fill(0.5) } };
const now = () => Math.floor(Date.now() / 1000);
let n = 0;

async function device(vendorKeys = [vendorPub]) {
  const i = n++;
  return Keystore.create(join(dir, `d${i}.kls`), { vendorKeys, unlock: { kind: 'file', path: join(dir, `d${i}.secret`) } });
}
function grantFor(ks: { devicePub: Uint8Array; deviceId: string }, opts: { modelKey?: Uint8Array; notBefore?: number; notAfter?: number; seed?: Uint8Array } = {}) {
  return makeGrant({
    modelId: locked.modelId, modelKey: opts.modelKey ?? locked.modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId,
    notBefore: opts.notBefore ?? now() - 60, notAfter: opts.notAfter ?? now() + 3600, vendorSeed: opts.seed ?? vendorSeed,
  });
}

test('a device with a valid grant runs, and no network request happens on the way', async () => {
  const ks = await device();
  await ks.installGrant(grantFor(ks));
  const m = await loadModel(locked.klm, { keystore: ks });
  assert.equal(m.state, 'ready', m.error?.message);
  const out = await m.run(x);
  assert.deepEqual(out.logits.dims, [1, 10]);
  assert.ok(m.stats.p50 > 0 && m.stats.p99 >= m.stats.p50);
  await m.release();
  assert.deepEqual(calls, [], 'no fetch/http/https/net/dns call');
});

test('no grant, another device\'s grant, an unpinned vendor: typed refusals, keystore unchanged', async () => {
  const a = await device();
  const b = await device();
  const m = await loadModel(locked.klm, { keystore: b });
  assert.ok(m.error instanceof errors.NoGrantError);
  const before = readFileSync(b.where);
  await assert.rejects(b.installGrant(grantFor(a)), errors.WrongDeviceError);
  const other = randomBytes(32);
  await assert.rejects(b.installGrant(grantFor(b, { seed: other })), errors.UntrustedSignerError);
  assert.deepEqual(readFileSync(b.where), before, 'failed installs leave the file as it was');
  const untrusting = await device([signKeyPair(randomBytes(32)).publicKey]);
  const m2 = await loadModel(locked.klm, { keystore: untrusting });
  assert.ok(m2.error instanceof errors.UntrustedSignerError, m2.error?.name);
});

test('expired and not-yet-valid grants halt with ExpiredGrantError; run() never returns numbers', async () => {
  const ks = await device();
  await ks.installGrant(grantFor(ks, { notBefore: now() + 3600, notAfter: now() + 7200 }));
  const early = await loadModel(locked.klm, { keystore: ks });
  assert.ok(early.error instanceof errors.ExpiredGrantError);
  assert.match(early.error!.message, /not valid yet/);
  await assert.rejects(early.run(x), errors.ExpiredGrantError);
  const ks2 = await device();
  await ks2.installGrant(grantFor(ks2, { notAfter: now() + 1 }));
  await new Promise((r) => setTimeout(r, 1100));
  const late = await loadModel(locked.klm, { keystore: ks2 });
  assert.equal(late.state, 'halted');
  assert.match(late.error!.message, /has expired/);
  await assert.rejects(late.run(x), errors.ExpiredGrantError);
});

test('a revoked grant halts at the next load; an older revocation list is a rollback', async () => {
  const ks = await device();
  const g = await ks.installGrant(grantFor(ks));
  assert.equal((await loadModel(locked.klm, { keystore: ks })).state, 'ready');
  await ks.installRevocation(makeRevocation({ listVersion: 2, grants: [g.grantId], vendorSeed }));
  const m = await loadModel(locked.klm, { keystore: ks });
  assert.ok(m.error instanceof errors.RevokedError);
  const before = readFileSync(ks.where);
  await assert.rejects(ks.installRevocation(makeRevocation({ listVersion: 1, vendorSeed })), errors.RollbackError);
  assert.deepEqual(readFileSync(ks.where), before);
});

test('repeated key mismatches disable the model persistently; a reinstate token and a fresh grant lift it once', async () => {
  const ks = await device();
  await ks.installGrant(grantFor(ks, { modelKey: randomBytes(32) }));
  const first = await loadModel(locked.klm, { keystore: ks });
  assert.ok(first.error instanceof errors.KeyMismatchError);
  const second = await loadModel(locked.klm, { keystore: ks });
  assert.equal(second.state, 'disabled');
  assert.ok(second.error instanceof errors.DisabledError);
  await assert.rejects(second.run(x), errors.DisabledError);
  // The state survives a restart: reopen the keystore from disk.
  const reopened = await Keystore.open(ks.where, { unlock: { kind: 'file', path: join(dir, `d${n - 1}.secret`) } });
  const third = await loadModel(locked.klm, { keystore: reopened });
  assert.equal(third.state, 'disabled');
  assert.ok(reopened.isDisabled(locked.modelId));
  await assert.rejects(reopened.installGrant(grantFor(reopened)), errors.DisabledError);
  const token = makeReinstate({ modelId: locked.modelId, deviceId: reopened.deviceId, devicePub: reopened.devicePub, vendorSeed });
  await reopened.installReinstate(token);
  await assert.rejects(reopened.installReinstate(token), errors.ReplayError);
  await reopened.installGrant(grantFor(reopened));
  const back = await loadModel(locked.klm, { keystore: reopened });
  assert.equal(back.state, 'ready');
  await back.release();
});

test('halt events fire with the typed reason', async () => {
  const ks = await device();
  const m = await loadModel(locked.klm, { keystore: ks });
  const seen: string[] = [];
  m.on('halt', (e) => seen.push(e.code));
  m.halt(new errors.RevokedError('test'));
  assert.deepEqual(seen, ['revoked']);
});
