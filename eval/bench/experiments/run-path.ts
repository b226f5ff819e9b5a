/**
 * Where keylock's in-thread per-run time goes on the native backend, beside a
 * bare onnxruntime-node `session.run` of the same model: sides interleaved call
 * by call (eval/bench/stats.ts `interleaveCallsShuffled`), median µs per call of each
 * side and its excess over plain, per model:
 *
 *   node --import tsx eval/bench/experiments/run-path.ts [--with-worker]
 *
 * - plain: onnxruntime-node `InferenceSession.run` with a new `Tensor` per call;
 * - backend session: keylock's `native` backend session alone (runtime/ort-native.ts);
 * - model.run: a `sealed` model loaded in-thread with its model key;
 * - model.run, licence guard: the same model with the licence watch's per-run guard of a `Keystore` load;
 * - model.run, cooperative: the same model with the yield check `worker: 'auto'` gives a model it keeps on the
 *   caller's thread when its backend does not turn the event loop itself (wasm, tflite; native needs none);
 * - model.run, deadline: the same model with `{ deadlineMs: 1000 }` (the bounded path);
 * - other session, model.run: a second in-thread load of the same file (what a second session differs by).
 * With `--with-worker` the worker-mode model is a further side (what section 10 interleaves).
 */
import { readFileSync } from 'node:fs';
import { decodeRecorded } from '../../../runtime/recorded.ts';
import { createNativeSession } from '../../../runtime/ort-native.ts';
import { loadModel } from '../../../targets/node/index.ts';
import { lockOnnx } from '../../../models/lock/index.ts';
import { signKeyPair } from '../../../keystore/nacl.ts';
import { MODELS, ROOT, seeded } from '../plan.ts';
import { interleaveCallsShuffled, quantile, seededFloats } from '../stats.ts';
import { Keystore } from '../../../keystore/keystore.ts';
import { memoryStorage } from '../../../keystore/storage.ts';
import { makeGrant } from '../../../keystore/grant.ts';

const withWorker = process.argv.includes('--with-worker');
const ort = (await import('onnxruntime-node')) as any;
const o = ort.InferenceSession ? ort : ort.default;
const digits = decodeRecorded(new Uint8Array(readFileSync(`${ROOT}test/fixtures/mnist-test.cbor`)));
const vendorSeed = seeded('vendor');
const trust = [signKeyPair(vendorSeed).publicKey];
for (const id of ['mnist-cnn', 'mnist-mlp', 'embedding_model']) {
  const def = MODELS.find((m) => m.id === id)!;
  const bytes = new Uint8Array(readFileSync(`${ROOT}${def.file}`));
  const x = def.mnist ? digits[0].inputs! : { [def.input.name]: { dtype: 'float32' as const, dims: def.input.dims, data: seededFloats(def.input.dims.reduce((a, b) => a * b, 1), 7) } };
  const [name] = Object.keys(x);
  const plain = await o.InferenceSession.create(bytes, { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 1, interOpNumThreads: 1 });
  const sess = await createNativeSession(bytes, { threads: 1 });
  const r = await lockOnnx(bytes, { schemes: ['sealed'], vendorSeed, modelKey: seeded(`key/run-path/${id}`), modelId: `run-path-${id}`, canary: def.mnist ? digits.slice(0, 2) : [{ inputs: x }] });
  const m = await loadModel(r.klm, { modelKey: r.modelKey, trust, worker: false, backend: 'native' });
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [trust[0]], unlock: { kind: 'hook', getKey: async () => seeded('storage') } });
  const now = Math.floor(Date.now() / 1000);
  await ks.installGrant(makeGrant({ modelId: r.modelId, modelKey: r.modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: now - 3600, notAfter: now + 86_400, vendorSeed }));
  const mk = await loadModel(r.klm, { keystore: ks, worker: false, backend: 'native' });
  const mc = await loadModel(r.klm, { modelKey: r.modelKey, trust, worker: false, backend: 'native' });
  if (m.state !== 'ready' || mk.state !== 'ready' || mc.state !== 'ready') throw m.error ?? mk.error ?? mc.error;
  // One session for every model.run side, so that what differs between them is keylock's code alone
  // (two sessions of the same model can differ by microseconds per run); the licence guard and the
  // cooperative flag are switched on around the call (both are read when run() starts).
  const guard = (mk as unknown as { guard?: () => void }).guard;
  if (!guard) throw new Error('the keystore load has no licence guard');
  const inner = m as unknown as { guard?: () => void; coop: boolean };
  const withGuard = (): Promise<unknown> => { inner.guard = guard; const p = m.run(x); inner.guard = undefined; return p; };
  const cooperative = (): Promise<unknown> => { inner.coop = true; const p = m.run(x); inner.coop = false; return p; };
  const sides: [string, () => Promise<unknown>][] = [
    ['plain ORT-node', () => plain.run({ [name]: new o.Tensor(x[name].dtype, x[name].data, x[name].dims) })],
    ['backend session', () => sess.run(x)],
    ['model.run', () => m.run(x)],
    ['model.run, licence guard', withGuard],
    ['model.run, cooperative', cooperative],
    ['model.run, deadline', () => m.run(x, { deadlineMs: 1000 })],
    ['other session, model.run', () => mc.run(x)],
  ];
  let w: Awaited<ReturnType<typeof loadModel>> | undefined;
  if (withWorker) {
    w = await loadModel(r.klm, { modelKey: r.modelKey, trust, backend: 'native' });
    sides.push(['worker mode', () => w!.run(x)]);
  }
  for (let i = 0; i < 200; i++) for (const [, f] of sides) await f();
  const t = await interleaveCallsShuffled(sides.map((s) => s[1]), 15, id === 'embedding_model' ? 60 : 1500);
  const med = t.sides.map((s) => quantile(s, 0.5) * 1000);
  console.log(`${id}:`);
  sides.forEach(([label], k) => console.log(`  ${label.padEnd(22)} ${med[k].toFixed(2).padStart(8)} µs  (+${(med[k] - med[0]).toFixed(2)} µs, ${(med[k] / med[0]).toFixed(3)}×)`));
  await Promise.all([plain.release(), sess.release(), m.release(), mk.release(), mc.release(), w?.release()]);
}
process.exit(0);
