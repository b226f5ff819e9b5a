/**
 * `auto` (the Node target's `env.backend`): a load that names no backend runs on
 * the first of `native`, `wasm` that inits, creates a session and reproduces the
 * canary, and says which (`model.backend`, `stats.backend`) and what it passed
 * over (`model.skippedBackends`). A backend named is never replaced; a key
 * failure is never a reason to try another backend; the runtime's own default
 * (browser bundles) stays wasm.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { skipWithoutNative } from './helpers.ts';
import { fileURLToPath } from 'node:url';
import { env, loadModel } from '../targets/node/index.ts';
import { BackendUnavailableError, CanaryMismatchError, KeyMismatchError } from '../keystore/errors.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { encodeModelKey } from '../keystore/keyfiles.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { packKlm } from '../models/klm.ts';
import type { Backend, BackendSession } from '../runtime/backend.ts';
import { autoBackends, registerBackend } from '../runtime/backends.ts';
import { CANARY_TOLERANCE } from '../runtime/canary.ts';
import { openKlm, type Policy } from '../runtime/klm.ts';
import type { ModelKeySource } from '../runtime/load.ts';
import { ortNativeBackend } from '../runtime/ort-native.ts';
import { decodeRecorded, encodeRecorded } from '../runtime/recorded.ts';
import type { TensorMap } from '../runtime/tensor.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string): Uint8Array => new Uint8Array(readFileSync(join(root, p)));
const skip = skipWithoutNative;

const digits = decodeRecorded(read('test/fixtures/mnist-test.cbor')).slice(0, 20);
const inputs = digits.map((s) => s.inputs!);
const cnn = read('models/reference/mnist-cnn.onnx');
const vendorSeed = randomBytes(32);
const vendorPub = signKeyPair(vendorSeed).publicKey;
const withCanary = await lockOnnx(cnn, { schemes: ['signflip', 'sealed'], vendorSeed, canary: digits.slice(0, 2) });
const noCanary = await lockOnnx(cnn, { schemes: ['deeplock', 'sealed'], vendorSeed });

/** A key source as a device's keystore is, counting the failures it is told of. */
function keySource(modelKey: Uint8Array): ModelKeySource & { failures: number } {
  return {
    vendorKeys: [vendorPub],
    failures: 0,
    modelKeyFor: () => new Uint8Array(modelKey),
    failureCount() { return this.failures; },
    async recordFailure(_id: string, _p: Policy) { this.failures++; return { failures: this.failures, disabled: false }; },
    async resetFailures() { this.failures = 0; },
  };
}

/** Registers `backend` as `native` for the length of `fn`, then puts onnxruntime-node back. */
async function asNative<T>(backend: Backend, fn: () => Promise<T>): Promise<T> {
  registerBackend('native', backend);
  try {
    return await fn();
  } finally {
    registerBackend('native', ortNativeBackend);
  }
}

const unavailable: Backend = { init: async () => { throw new Error('no native engine on this test machine'); }, create: () => { throw new Error('never called'); } };

/** onnxruntime-node with every float output scaled by 1 + `by`: a backend whose kernels round far off. */
function perturbing(by: number, calls = { create: 0 }): Backend {
  return {
    init: ortNativeBackend.init,
    async create(m, o): Promise<BackendSession> {
      calls.create++;
      const s = await ortNativeBackend.create(m, o);
      return {
        inputs: s.inputs, outputs: s.outputs, release: () => s.release(),
        async run(f: TensorMap): Promise<TensorMap> {
          const out = await s.run(f);
          for (const t of Object.values(out)) if (t.data instanceof Float32Array) for (let i = 0; i < t.data.length; i++) t.data[i] *= 1 + by;
          return out;
        },
      };
    },
  };
}

async function outputs(m: { run(x: TensorMap): Promise<TensorMap> }): Promise<TensorMap[]> {
  const r: TensorMap[] = [];
  for (const x of inputs) r.push(await m.run(x));
  return r;
}

function maxRel(a: TensorMap[], b: TensorMap[]): number {
  let worst = 0;
  for (let s = 0; s < a.length; s++) {
    const x = a[s].logits.data as Float32Array;
    const y = b[s].logits.data as Float32Array;
    const scale = Math.max(...Array.from(x, Math.abs));
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]) / scale);
  }
  return worst;
}

test('the node target sets auto; the preference lists are native then wasm for ONNX, tflite for TFLite', () => {
  assert.equal(env.backend, 'auto');
  assert.deepEqual(autoBackends('onnx'), ['native', 'wasm']);
  assert.deepEqual(autoBackends('tflite'), ['tflite']);
  assert.throws(() => registerBackend('auto', ortNativeBackend), TypeError);
});

test('auto picks native where onnxruntime-node is installed and says so; outputs within the canary tolerance of wasm', { skip }, async () => {
  const ks = keySource(withCanary.modelKey);
  const m = await loadModel(withCanary.klm, { keystore: ks });
  assert.equal(m.state, 'ready', m.error?.message);
  assert.equal(m.backend, 'native');
  assert.deepEqual(m.skippedBackends, []);
  const got = await outputs(m);
  assert.equal(m.stats.backend, 'native');
  assert.equal(m.stats.runs, inputs.length, 'the canary runs are not counted');
  await m.release();
  const w = await loadModel(withCanary.klm, { keystore: ks, backend: 'wasm' });
  assert.equal(w.backend, 'wasm');
  const want = await outputs(w);
  await w.release();
  const d = maxRel(want, got);
  assert.ok(d <= CANARY_TOLERANCE, `native vs wasm: ${d} of the output scale`);
  // Without a canary too.
  const n = await loadModel(noCanary.klm, { modelKey: noCanary.modelKey });
  assert.equal(n.backend, 'native');
  await n.release();
});

test('native unavailable: auto runs wasm and says why; an explicit native halts with BackendUnavailableError, no fallback', async () => {
  await asNative(unavailable, async () => {
    for (const lr of [withCanary, noCanary]) {
      const m = await loadModel(lr.klm, { modelKey: lr.modelKey });
      assert.equal(m.state, 'ready', m.error?.message);
      assert.equal(m.backend, 'wasm');
      assert.equal(m.stats.backend, 'wasm');
      assert.equal(m.skippedBackends.length, 1);
      assert.equal(m.skippedBackends[0].backend, 'native');
      assert.ok(m.skippedBackends[0].error instanceof BackendUnavailableError);
      assert.match(m.skippedBackends[0].error.message, /backend native is unavailable: no native engine/);
      await m.run(inputs[0]);
      await m.release();
    }
    const ks = keySource(withCanary.modelKey);
    const named = await loadModel(withCanary.klm, { keystore: ks, backend: 'native' });
    assert.equal(named.state, 'halted');
    assert.ok(named.error instanceof BackendUnavailableError, String(named.error));
    assert.equal(named.backend, undefined, 'no session was made anywhere else');
    assert.deepEqual(named.skippedBackends, []);
    await assert.rejects(named.run(inputs[0]), BackendUnavailableError);
    assert.equal(ks.failures, 0, 'an unavailable backend is not a failed unlock');
  });
});

test('a canary native does not reproduce: auto falls back to wasm and reports it; not counted as a failure', { skip }, async () => {
  const ks = keySource(withCanary.modelKey);
  const calls = { create: 0 };
  await asNative(perturbing(1e-3, calls), async () => {
    const m = await loadModel(withCanary.klm, { keystore: ks });
    assert.equal(m.state, 'ready', m.error?.message);
    assert.equal(m.backend, 'wasm');
    assert.equal(calls.create, 1);
    assert.equal(m.skippedBackends.length, 1);
    const [s] = m.skippedBackends;
    assert.equal(s.backend, 'native');
    assert.ok(s.error instanceof CanaryMismatchError, String(s.error));
    assert.match(s.error.message, /backend native, which did not record it, is allowed/);
    assert.equal(ks.failures, 0);
    // wasm recorded the canary: bit for bit the outputs of an explicit wasm load.
    const got = await outputs(m);
    await m.release();
    const w = await loadModel(withCanary.klm, { keystore: ks, backend: 'wasm' });
    assert.deepEqual(got, await outputs(w));
    await w.release();
    // Named, the same backend halts: no silent fallback of what was asked for.
    const named = await loadModel(withCanary.klm, { keystore: ks, backend: 'native' });
    assert.ok(named.error instanceof CanaryMismatchError);
    assert.equal(named.backend, 'native');
    assert.equal(ks.failures, 1);
    // Without a canary nothing tells the difference: auto keeps the first backend that runs.
    const n = await loadModel(noCanary.klm, { modelKey: noCanary.modelKey });
    assert.equal(n.backend, 'native');
    await n.release();
  });
});

test('auto never shops for a key: a wrong key halts before any backend, counted once', async () => {
  const calls = { create: 0 };
  await asNative(perturbing(0, calls), async () => {
    const ks = keySource(randomBytes(32));
    const m = await loadModel(withCanary.klm, { keystore: ks });
    assert.equal(m.state, 'halted');
    assert.ok(m.error instanceof KeyMismatchError, String(m.error));
    assert.equal(m.backend, undefined);
    assert.deepEqual(m.skippedBackends, []);
    assert.equal(calls.create, 0, 'no session on any backend');
    assert.equal(ks.failures, 1);
  });
});

test('a canary no backend reproduces (changed outputs): auto halts with CanaryMismatchError, one failure', { skip }, async () => {
  const { manifest, model } = openKlm(withCanary.klm);
  const { vendorKey: _v, digest: _d, modelBytes: _b, ...draft } = manifest;
  const outs = decodeRecorded(manifest.canary!.outputs, 'outputs');
  const logits = outs[0].outputs!.logits.data as Float32Array;
  logits[3] += 0.5 * Math.max(...Array.from(logits, Math.abs));
  const bent = packKlm({ ...draft, canary: { inputs: manifest.canary!.inputs, outputs: encodeRecorded(outs, 'outputs') } }, model, vendorSeed);
  const ks = keySource(withCanary.modelKey);
  const m = await loadModel(bent, { keystore: ks });
  assert.equal(m.state, 'halted');
  assert.ok(m.error instanceof CanaryMismatchError, String(m.error));
  assert.match(m.error!.message, /bit for bit on backend wasm/, 'the recording backend has the last word');
  assert.equal(m.backend, 'wasm');
  assert.deepEqual(m.skippedBackends.map((s) => [s.backend, s.error.name]), [['native', 'CanaryMismatchError']]);
  assert.equal(ks.failures, 1, 'one load, one failure, whatever backends it tried');
});

test('the runtime\'s own default (browser, Deno, Electron entries) stays wasm: it never tries native', () => {
  const klm = join(mkdtempSync(join(tmpdir(), 'keylock-auto-')), 'm.klm');
  writeFileSync(klm, noCanary.klm);
  const script = `
    const { env, loadModel } = await import(${JSON.stringify(join(root, 'runtime/index.ts'))});
    const { readFileSync } = await import('node:fs');
    const key = Uint8Array.from(Buffer.from(${JSON.stringify(Buffer.from(noCanary.modelKey).toString('hex'))}, 'hex'));
    const m = await loadModel(new Uint8Array(readFileSync(${JSON.stringify(klm)})), { modelKey: key });
    process.stdout.write(JSON.stringify({ env: env.backend ?? null, backend: m.backend, state: m.state }));
    process.exit(0);`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { env: null, backend: 'wasm', state: 'ready' });
});

test('CLI: keylock run says which backend ran; --backend wasm asks for wasm; inspect says what a load here picks', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-auto-cli-'));
  const cli = (...args: string[]): string => execFileSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...args], { cwd: dir, encoding: 'utf8' });
  writeFileSync(join(dir, 'm.klm'), withCanary.klm);
  writeFileSync(join(dir, 'in.cbor'), encodeRecorded(digits.slice(0, 4), 'inputs'));
  writeFileSync(join(dir, 'm.key'), encodeModelKey(withCanary.modelId, withCanary.modelKey));
  const run = (...more: string[]): string => cli('run', join(dir, 'm.klm'), '--model-key', join(dir, 'm.key'), '--inputs', join(dir, 'in.cbor'), '--out', join(dir, 'o.cbor'), ...more);
  assert.match(run(), /^ran 4 sample\(s\) on backend native: p50/);
  assert.match(run('--backend', 'wasm'), /^ran 4 sample\(s\) on backend wasm: p50/);
  assert.match(run('--backend', 'auto'), /^ran 4 sample\(s\) on backend native: p50/);
  assert.match(cli('inspect', join(dir, 'm.klm')), /^backend +native here \(auto: native, then wasm;/m);
});
