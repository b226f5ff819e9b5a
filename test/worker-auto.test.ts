// `worker: 'auto'`: a model whose run at load is at most AUTO_IN_THREAD_MS runs on the caller's thread
// (loaded again there, the worker ended), a longer one stays in its worker; stats say which and why; a
// cooperative in-thread model lets the event loop turn while it runs back to back on a backend that never
// yields (wasm), where the same model loaded with `worker: false` holds the loop until the caller stops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, Keystore, memoryStorage } from '../targets/node/index.ts';
import { AUTO_IN_THREAD_MS, Model } from '../runtime/model.ts';
import { makeGrant } from '../keystore/grant.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { encodeModel, makeModel, makeNode, makeTensor, makeValueInfo } from '../models/onnx/index.ts';
import { createNativeSession } from '../runtime/ort-native.ts';
import { createOrtSession } from '../runtime/ort.ts';
import { skipWithoutNative } from './helpers.ts';

const MLP = new Uint8Array(readFileSync(new URL('../models/reference/mnist-mlp.onnx', import.meta.url)));
const vendorSeed = randomBytes(32);
const vendorPub = signKeyPair(vendorSeed).publicKey;
const mlp = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, modelId: 'auto-mlp' });
// About 0.5 GFLOP per run: milliseconds on any backend, far above the in-thread limit.
const K = 512;
const W = Float32Array.from({ length: K * K }, (_, i) => ((i * 7919) % 1000) / 1e5);
const slow = await lockOnnx(encodeModel(makeModel({
  nodes: [makeNode('MatMul', ['x', 'w'], ['h']), makeNode('MatMul', ['h', 'w'], ['y'])],
  inputs: [makeValueInfo('x', 'float32', [K, K])], outputs: [makeValueInfo('y', 'float32', [K, K])],
  initializers: [makeTensor('w', 'float32', [K, K], W)],
})), { schemes: ['sealed'], vendorSeed, modelId: 'auto-slow' });
const x = () => ({ input: { dtype: 'float32' as const, dims: [1, 1, 28, 28], data: Float32Array.from({ length: 784 }, (_, i) => (i % 13) / 13) } });
const now = () => Math.floor(Date.now() / 1000);

async function device(...models: { modelId: string; modelKey: Uint8Array }[]) {
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock: { kind: 'hook', getKey: async () => new Uint8Array(32).fill(5) } });
  for (const m of models) {
    await ks.installGrant(makeGrant({ modelId: m.modelId, modelKey: m.modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: now() - 60, notAfter: now() + 3600, vendorSeed }));
  }
  return ks;
}

test("worker: 'auto' runs a 20 µs model in-thread and a millisecond model in its worker; stats say which and why", async () => {
  const ks = await device(mlp, slow);
  let asked = 0;
  const source = {
    vendorKeys: ks.vendorKeys, modelKeyFor: (id: string) => { asked++; return ks.modelKeyFor(id); },
    failureCount: (id: string) => ks.failureCount(id), recordFailure: ks.recordFailure.bind(ks), resetFailures: ks.resetFailures.bind(ks),
    licenceFor: ks.licenceFor.bind(ks), onChange: ks.onChange.bind(ks),
  };
  const bytes = mlp.klm.slice();
  const small = await loadModel(bytes, { keystore: source, worker: 'auto', consume: true });
  assert.equal(small.state, 'ready', small.error?.message);
  assert.equal(small.stats.mode, 'in-thread', JSON.stringify(small.stats));
  assert.ok(small instanceof Model, 'the in-thread model itself, not a worker proxy');
  const ms = small.stats.autoRunMs!;
  assert.ok(ms > 0 && ms <= AUTO_IN_THREAD_MS, `measured ${ms} ms`);
  assert.equal(asked, 2, 'the key was asked for by the worker load and by the in-thread one');
  const direct = mlp.klm.slice();
  await (await loadModel(direct, { keystore: ks, worker: false, consume: true })).release();
  assert.deepEqual(bytes, direct, 'consume: the in-thread load took the bytes over, as a load with worker: false does');
  const ref = await loadModel(mlp.klm, { keystore: ks, worker: false });
  assert.equal(ref.stats.autoRunMs, undefined, 'a named mode reports no probe');
  assert.deepEqual(Array.from((await small.run(x())).logits.data as Float32Array), Array.from((await ref.run(x())).logits.data as Float32Array));
  assert.equal(small.stats.runs, 1, 'the probe runs are not counted');

  const big = slow.klm.slice();
  const long = await loadModel(big, { keystore: ks, worker: 'auto', consume: true });
  assert.equal(long.state, 'ready', long.error?.message);
  assert.equal(long.stats.mode, 'worker');
  assert.ok(long.stats.autoRunMs! > AUTO_IN_THREAD_MS, `measured ${long.stats.autoRunMs} ms`);
  assert.equal(long.stats.runs, 0);
  assert.ok(big.every((b) => b === 0), 'consume: the bytes kept for the choice are wiped once the worker keeps the model');
  const y = await long.run({ x: { dtype: 'float32', dims: [K, K], data: new Float32Array(K * K).fill(0.01) } });
  assert.deepEqual(y.y.dims, [K, K]);
  await Promise.all([small.release(), ref.release(), long.release()]);
});

test("worker: 'auto' on a file that does not verify comes back halted with the typed reason, from the worker", async () => {
  const ks = await device(mlp);
  const bad = mlp.klm.slice();
  bad[bad.length - 10] ^= 1;
  const m = await loadModel(bad, { keystore: ks, worker: 'auto' });
  assert.equal(m.state, 'halted');
  assert.equal(m.error?.name, 'TamperedError');
  assert.equal(m.stats.mode, 'worker');
});

/** Runs `run` back to back until a timer set before the first run fires (or `max` runs): the runs it took and the time. */
async function runsUntilTimer(run: () => Promise<unknown>, max: number): Promise<{ runs: number; ms: number; fired: boolean }> {
  let fired = false;
  const t = setTimeout(() => { fired = true; }, 0);
  const t0 = performance.now();
  let runs = 0;
  while (!fired && runs < max) { await run(); runs++; }
  clearTimeout(t);
  return { runs, ms: performance.now() - t0, fired };
}

test('a cooperative in-thread model lets the event loop turn while it runs back to back on wasm; worker: false does not', async () => {
  const ks = await device(mlp);
  const plain = await loadModel(mlp.klm, { keystore: ks, worker: false, backend: 'wasm' });
  const coop = await loadModel(mlp.klm, { keystore: ks, worker: false, backend: 'wasm' });
  assert.ok(coop instanceof Model);
  coop.cooperate(0.05); // what 'auto' does for a model it keeps on this thread
  for (let i = 0; i < 50; i++) { await plain.run(x()); await coop.run(x()); }
  // onnxruntime-web runs in the caller's turn: a timer due now waits for all the runs.
  const blocked = await runsUntilTimer(() => plain.run(x()), 300);
  assert.equal(blocked.fired, false, `worker: false on wasm: the timer fired after ${blocked.runs} runs`);
  // Cooperative: the loop turns once it has not for YIELD_MS (a marker turn, then a turn of the run's own).
  const turned = await runsUntilTimer(() => coop.run(x()), 10_000);
  assert.ok(turned.fired, `cooperative: no turn in ${turned.runs} runs (${turned.ms.toFixed(1)} ms)`);
  assert.ok(turned.runs < blocked.runs, `cooperative: the timer fired after ${turned.runs} runs, ${turned.ms.toFixed(2)} ms`);
  assert.equal(coop.stats.mode, 'in-thread');
  assert.equal(coop.stats.autoRunMs, 0.05);
  // Runs issued together still run in order, one at a time, across the yields.
  const order: number[] = [];
  await Promise.all(Array.from({ length: 200 }, (_, i) => coop.run(x()).then(() => { order.push(i); })));
  assert.deepEqual(order, Array.from({ length: 200 }, (_, i) => i));
  await Promise.all([plain.release(), coop.release()]);
});

test('onnxruntime-node turns the event loop in every run (turnsEventLoop: a cooperative model makes no turns of its own there); onnxruntime-web does not', { skip: skipWithoutNative }, async () => {
  const native = await createNativeSession(MLP, { threads: 1 });
  const web = await createOrtSession(MLP, { threads: 1 });
  assert.equal(native.turnsEventLoop, true);
  assert.equal(web.turnsEventLoop, undefined);
  const turnedDuring = async (run: () => Promise<unknown>): Promise<boolean> => {
    let turned = false;
    setImmediate(() => { turned = true; });
    await run();
    return turned;
  };
  for (let i = 0; i < 5; i++) { await native.run(x()); await web.run(x()); } // first runs may do more
  for (let i = 0; i < 20; i++) {
    assert.equal(await turnedDuring(() => native.run(x())), true, `native run ${i}: the loop turned`);
    assert.equal(await turnedDuring(() => web.run(x())), false, `wasm run ${i}: no turn (why a cooperative model yields there)`);
  }
  await Promise.all([native.release(), web.release()]);
});
