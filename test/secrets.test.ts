// Secrets in memory (docs/THREATS.md, "Memory dump"): what JavaScript lets keylock
// wipe is wiped. Observed from outside through a backend that wraps the real
// onnxruntime-web one and keeps references to what it is handed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../runtime/load.ts';
import { registerBackend } from '../runtime/backends.ts';
import { ortWasmBackend } from '../runtime/ort.ts';
import type { Backend } from '../runtime/backend.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { randomBytes } from '../keystore/nacl.ts';
import { Keystore, makeGrant, memoryStorage } from '../keystore/index.ts';
import { KeyMismatchError } from '../keystore/errors.ts';
import { tinyOnnx } from '../eval/fixtures/tiny.ts';

/** The real backend, with the bytes and feeds it was given kept for inspection. */
function spy(): Backend & { models: Uint8Array[]; feeds: TensorMap[] } {
  const s = {
    name: 'spy', models: [] as Uint8Array[], feeds: [] as TensorMap[],
    async create(model: Uint8Array, opts?: Parameters<Backend['create']>[1]) {
      s.models.push(model);
      const inner = await ortWasmBackend.create(model, opts);
      return {
        inputs: inner.inputs, outputs: inner.outputs,
        run: (f: TensorMap) => { s.feeds.push(f); return inner.run(f); },
        release: () => inner.release(),
      };
    },
  };
  return s;
}
const x = { x: { dtype: 'float32' as const, dims: [1, 4], data: Float32Array.from([1, 2, 3, 4]) } };
const nonZero = (b: ArrayLike<number>): number => Array.prototype.filter.call(b, (v: number) => v !== 0).length;

test('the decrypted model copy handed to the backend is zeroed once the session exists', async () => {
  const vendorSeed = randomBytes(32);
  const locked = await lockOnnx(tinyOnnx(), { schemes: ['sealed'], vendorSeed });
  const s = spy();
  const unregister = registerBackend('spy', s);
  try {
    const m = await loadModel(locked.klm, { modelKey: locked.modelKey, backend: 'spy' });
    assert.equal(m.state, 'ready', m.error?.message);
    assert.equal(s.models.length, 1);
    assert.equal(s.models[0].byteLength, locked.locked.byteLength);
    assert.equal(nonZero(s.models[0]), 0, 'the plaintext model bytes keylock held are all zero now');
    assert.equal((await m.run(x)).y.data.length, 3, 'and the session (holding its own copy) still runs');
    await m.release();
  } finally {
    unregister();
  }
});

test('run-time key tensors (signflip input mode) are zeroed on release, and a wrong key never reaches the backend', async () => {
  const vendorSeed = randomBytes(32);
  const locked = await lockOnnx(tinyOnnx(), { schemes: ['signflip'], signflipMode: 'input', vendorSeed });
  const s = spy();
  const unregister = registerBackend('spy', s);
  try {
    const m = await loadModel(locked.klm, { modelKey: locked.modelKey, backend: 'spy' });
    assert.equal(m.state, 'ready', m.error?.message);
    await m.run(x);
    const keyFeeds = Object.entries(s.feeds[0]).filter(([name]) => name !== 'x');
    assert.ok(keyFeeds.length >= 1, 'a ±1 key tensor is fed');
    assert.ok(keyFeeds.every(([, t]) => nonZero(t.data as Float32Array) === t.data.length), 'every key entry is ±1 while running');
    await m.release();
    assert.ok(keyFeeds.every(([, t]) => nonZero(t.data as Float32Array) === 0), 'zeroed by release()');

    const before = s.models.length;
    const wrong = await loadModel(locked.klm, { modelKey: randomBytes(32), backend: 'spy' });
    assert.ok(wrong.error instanceof KeyMismatchError);
    assert.equal(s.models.length, before, 'the key check value stops a wrong key before anything is decrypted or created');
  } finally {
    unregister();
  }
});

test('modelKeyFor hands out copies; close() leaves the keystore unusable', async () => {
  const vendorSeed = randomBytes(32);
  const { signKeyPair } = await import('../keystore/nacl.ts');
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [signKeyPair(vendorSeed).publicKey], unlock: { kind: 'hook', getKey: async () => new Uint8Array(32).fill(7) } });
  const key = randomBytes(32);
  const T = Math.floor(Date.now() / 1000);
  await ks.installGrant(makeGrant({ modelId: 'm', modelKey: key, devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: T - 10, notAfter: T + 100, vendorSeed }));
  const a = ks.modelKeyFor('m');
  a.fill(0);
  assert.deepEqual(ks.modelKeyFor('m'), key, 'wiping a copy (as loadModel does) leaves the stored key');
  ks.close();
  assert.throws(() => ks.modelKeyFor('m'), TypeError);
});
