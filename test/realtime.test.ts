// The real-time runtime, in-thread: deadlines and cancellation, run statistics, licences enforced while a
// model runs (expiry timer, grace period, revocation installed while running, the clock floor), warm-up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Keystore } from '../keystore/keystore.ts';
import { memoryStorage } from '../keystore/storage.ts';
import { inspectGrant, makeGrant } from '../keystore/grant.ts';
import { makeRevocation } from '../keystore/revocation.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { loadModel } from '../runtime/load.ts';
import * as errors from '../keystore/errors.ts';

const MLP = new Uint8Array(readFileSync(new URL('../models/reference/mnist-mlp.onnx', import.meta.url)));
const vendorSeed = randomBytes(32);
const vendorPub = signKeyPair(vendorSeed).publicKey;
const locked = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, modelId: 'rt-mlp' });
const x = () => ({ input: { dtype: 'float32' as const, dims: [1, 1, 28, 28], data: new Float32Array(784).fill(0.5) } });
const now = () => Math.floor(Date.now() / 1000);
const hookUnlock = { kind: 'hook' as const, getKey: async () => new Uint8Array(32).fill(7) };

async function device(grant: { notAfter?: number; grace?: number } = {}) {
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock: hookUnlock });
  const g = await ks.installGrant(makeGrant({
    modelId: locked.modelId, modelKey: locked.modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId,
    notBefore: now() - 60, notAfter: grant.notAfter ?? now() + 3600, grace: grant.grace, vendorSeed,
  }));
  return { ks, grantId: g.grantId };
}

test('abort and deadline: typed rejections, queued runs behind them still run, stats count them', async () => {
  const { ks } = await device();
  const m = await loadModel(locked.klm, { keystore: ks, backend: 'wasm' });
  assert.equal(m.state, 'ready', m.error?.message);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(m.run(x(), { signal: ac.signal }), errors.RunAbortedError);
  // Queued behind a run: aborted while waiting (never runs), late by its turn (never runs); the last one runs.
  const ac2 = new AbortController();
  const first = m.run(x());
  const aborted = m.run(x(), { signal: ac2.signal });
  const late = m.run(x(), { deadlineMs: 0 });
  const after = m.run(x(), { deadlineMs: 60_000 });
  ac2.abort();
  await first;
  await assert.rejects(aborted, (e) => e instanceof errors.RunAbortedError && /while queued/.test(e.message));
  await assert.rejects(late, (e) => e instanceof errors.DeadlineError && e.code === 'deadline' && (e as errors.DeadlineError).started === false);
  assert.deepEqual((await after).logits.dims, [1, 10]);
  const st = m.stats;
  assert.equal(st.runs, 2, 'the aborted and late runs never ran');
  assert.equal(st.deadlineMisses, 1);
  assert.equal(st.aborted, 2);
  assert.ok(st.max >= st.p99 && st.p99 >= st.p50 && st.p50 > 0, JSON.stringify(st));
  assert.equal(st.mode, 'in-thread');
  await assert.rejects(m.run(x(), { deadlineMs: -1 }), RangeError);
  await m.release();
});

test('a grant that expires while the model is loaded halts it: timer fires, halt event says why, run rejects', async () => {
  // notAfter is the next whole second but one: the model loads, then the timer halts it.
  const { ks } = await device({ notAfter: now() + 2 });
  const m = await loadModel(locked.klm, { keystore: ks, backend: 'wasm' });
  assert.equal(m.state, 'ready', m.error?.message);
  await m.run(x());
  // The licence timer is unref'd (it never keeps a device's process alive): the test holds the loop open.
  const keepAlive = setTimeout(() => undefined, 10_000);
  const e = await new Promise<errors.KeylockError>((resolve) => m.on('halt', resolve));
  clearTimeout(keepAlive);
  assert.ok(e instanceof errors.ExpiredGrantError, e.name);
  assert.match(e.message, /has expired/);
  assert.equal(m.state, 'halted');
  await assert.rejects(m.run(x()), errors.ExpiredGrantError);
});

test('the grace period: expiring at notAfter, halt at notAfter + grace; the trusted-time floor moves the clock', async () => {
  const t = now();
  const { ks } = await device({ notAfter: t + 3600, grace: 600 });
  assert.equal(ks.grantFor(locked.modelId)!.grace, 600);
  const m = await loadModel(locked.klm, { keystore: ks, backend: 'wasm' });
  assert.equal(m.state, 'ready', m.error?.message);
  const seen: string[] = [];
  m.on('expiring', (e) => seen.push(`expiring:${e.code}`)).on('halt', (e) => seen.push(`halt:${e.code}`));
  // A vendor-signed time past notAfter (a revocation list's `issued`) is the device's clock floor from now on.
  await ks.installRevocation(makeRevocation({ listVersion: 1, issued: t + 3700, vendorSeed }));
  assert.deepEqual(seen, ['expiring:expired']);
  assert.equal(m.state, 'ready', 'inside the grace period the model runs');
  await m.run(x());
  // A new load is refused past notAfter, grace or not.
  const again = await loadModel(locked.klm, { keystore: ks, backend: 'wasm' });
  assert.ok(again.error instanceof errors.ExpiredGrantError);
  await ks.installRevocation(makeRevocation({ listVersion: 2, issued: t + 4300, vendorSeed }));
  assert.deepEqual(seen, ['expiring:expired', 'halt:expired']);
  await assert.rejects(m.run(x()), errors.ExpiredGrantError);
});

test('a revocation list installed while the model runs halts it with RevokedError; a run already started finishes', async () => {
  const { ks, grantId } = await device();
  const m = await loadModel(locked.klm, { keystore: ks, backend: 'wasm' });
  assert.equal(m.state, 'ready', m.error?.message);
  const reasons: string[] = [];
  m.on('halt', (e) => reasons.push(e.name));
  const running = m.run(x());
  await ks.installRevocation(makeRevocation({ listVersion: 3, grants: [grantId], vendorSeed }));
  await running; // a run already started finishes; the next is refused
  assert.deepEqual(reasons, ['RevokedError']);
  assert.equal(m.state, 'halted');
  await assert.rejects(m.run(x()), errors.RevokedError);
});

test('grants carry an optional vendor-signed grace: absent reads as 0; out of range is refused', () => {
  const dev = { devicePub: signKeyPair(randomBytes(32)).publicKey.slice(0, 32), deviceId: 'd1' };
  const base = { modelId: 'm', modelKey: randomBytes(32), devicePub: dev.devicePub, deviceId: 'd1', notBefore: 1, notAfter: 2, issued: 1, grantId: 'a'.repeat(32), vendorSeed };
  assert.equal(inspectGrant(makeGrant({ ...base, grace: 90 }), [vendorPub]).grace, 90);
  assert.equal(inspectGrant(makeGrant(base), [vendorPub]).grace, 0);
  assert.throws(() => makeGrant({ ...base, grace: 31 * 86400 }), RangeError);
  assert.throws(() => makeGrant({ ...base, grace: -1 }), RangeError);
});

test('a keystore closed after the load leaves the model running under the licence last read (grace included)', async () => {
  const { ks } = await device({ notAfter: now() + 2, grace: 600 });
  const m = await loadModel(locked.klm, { keystore: ks, backend: 'wasm' });
  assert.equal(m.state, 'ready', m.error?.message);
  ks.close(); // wipes the keystore's keys; the model holds what it needs
  const keepAlive = setTimeout(() => undefined, 10_000);
  const e = await new Promise<errors.KeylockError>((resolve) => m.on('expiring', resolve));
  clearTimeout(keepAlive);
  assert.ok(e instanceof errors.ExpiredGrantError);
  assert.equal(m.state, 'ready', `still in the grace period: ${m.error?.message}`);
  await m.run(x());
  await m.release();
});

test('warm-up runs once at load and is not counted', async () => {
  const { ks } = await device();
  const m = await loadModel(locked.klm, { keystore: ks, backend: 'wasm', warmup: true });
  assert.equal(m.state, 'ready', m.error?.message);
  assert.equal(m.stats.runs, 0);
  await m.run(x());
  assert.equal(m.stats.runs, 1);
  await m.release();
});
