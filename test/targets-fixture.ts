/**
 * Shared set-up of the target tests (not a test file itself): a vendor key, the
 * reference CNN locked with signflip+sealed, a device keystore with the grant
 * installed, recorded digits, and a small runner script that any built bundle
 * (node, rpi, deno, an image folder) runs to print its outputs as JSON.
 *
 * The reference outputs come from the source tree in this process
 * (runtime/model.ts), so a bundle is compared with the code it was built from.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keystore } from '../keystore/keystore.ts';
import { makeGrant } from '../keystore/grant.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { loadModel } from '../runtime/model.ts';
import { decodeRecorded, encodeRecorded } from '../runtime/recorded.ts';
import type { TensorMap } from '../runtime/tensor.ts';

/** Everything a target test needs, on disk and in memory. */
export interface TargetFixture {
  dir: string;
  klmPath: string;
  klsPath: string;
  unlockPath: string;
  recPath: string;
  runner: string;
  vendorSeed: Uint8Array;
  vendorPub: Uint8Array;
  modelId: string;
  modelKey: Uint8Array;
  klm: Uint8Array;
  labels: number[];
}

/** What the runner prints (one JSON line on stdout). */
export interface RunnerResult {
  state: string;
  error?: string;
  message?: string;
  /** Every output of every sample, hex of the raw bytes, in sample order (outputs by name). */
  outputs: string;
  predicted: number[];
  loadMs: number;
  runMs: number;
}

const root = new URL('..', import.meta.url);

/**
 * The runner: `RUNNER BUNDLE_URL KLM KLS UNLOCK_FILE REC THREADS|default rw|ro`.
 * Plain JavaScript that runs under Node and Deno alike (node:fs works in both).
 */
export const RUNNER = `import { readFileSync } from 'node:fs';
const args = globalThis.Deno ? Deno.args : process.argv.slice(2);
const exit = (c) => (globalThis.Deno ? Deno.exit(c) : process.exit(c));
const [bundle, klmPath, klsPath, unlockPath, recPath, threads, mode] = args;
const k = await import(bundle);
const ks = await k.openKeystore(klsPath, { kind: 'file', path: unlockPath }, { readOnly: mode === 'ro' });
const opts = { keystore: ks };
if (threads !== 'default') opts.threads = Number(threads);
const t0 = performance.now();
const m = await k.loadModelFile(klmPath, opts);
const loadMs = performance.now() - t0;
if (m.state !== 'ready') {
  console.log(JSON.stringify({ state: m.state, error: m.error && m.error.name, message: m.error && m.error.message }));
  exit(3);
}
const samples = k.decodeRecorded(new Uint8Array(readFileSync(recPath)));
const hex = (a) => Array.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), (b) => b.toString(16).padStart(2, '0')).join('');
let outputs = '';
const predicted = [];
const t1 = performance.now();
for (const s of samples) {
  const o = await m.run(s.inputs);
  const names = Object.keys(o).sort();
  for (const n of names) outputs += hex(o[n].data);
  const d = o[names[0]].data;
  let best = 0;
  for (let i = 1; i < d.length; i++) if (d[i] > d[best]) best = i;
  predicted.push(best);
}
const runMs = performance.now() - t1;
await m.release();
ks.close();
console.log(JSON.stringify({ state: 'ready', outputs, predicted, loadMs, runMs }));
`;

/** Hex of every output of every sample, outputs by name: the runner's format. */
export function outputsHex(all: TensorMap[]): string {
  let s = '';
  for (const o of all) for (const n of Object.keys(o).sort()) s += Buffer.from(o[n].data.buffer, o[n].data.byteOffset, o[n].data.byteLength).toString('hex');
  return s;
}

/** Builds the fixture in a fresh temp folder, with the first `n` recorded digits. */
export async function makeFixture(n: number): Promise<TargetFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-targets-'));
  const vendorSeed = randomBytes(32);
  const vendorPub = signKeyPair(vendorSeed).publicKey;
  const cnn = new Uint8Array(readFileSync(new URL('models/reference/mnist-cnn.onnx', root)));
  const locked = await lockOnnx(cnn, { schemes: ['signflip', 'sealed'], vendorSeed, modelId: 'mnist-cnn-targets' });
  const klmPath = join(dir, 'mnist-cnn.klm');
  writeFileSync(klmPath, locked.klm);
  const klsPath = join(dir, 'device.kls');
  const unlockPath = join(dir, 'storage.key');
  const ks = await Keystore.create(klsPath, { vendorKeys: [vendorPub], unlock: { kind: 'file', path: unlockPath } });
  const now = Math.floor(Date.now() / 1000);
  await ks.installGrant(makeGrant({
    modelId: locked.modelId, modelKey: locked.modelKey, devicePub: ks.devicePub, deviceId: ks.deviceId,
    notBefore: now - 60, notAfter: now + 86_400, vendorSeed,
  }));
  ks.close();
  const samples = decodeRecorded(new Uint8Array(readFileSync(new URL('test/fixtures/mnist-test.cbor', root)))).slice(0, n);
  const recPath = join(dir, 'digits.cbor');
  writeFileSync(recPath, encodeRecorded(samples, 'inputs'));
  const runner = join(dir, 'run.mjs');
  writeFileSync(runner, RUNNER);
  return {
    dir, klmPath, klsPath, unlockPath, recPath, runner, vendorSeed, vendorPub,
    modelId: locked.modelId, modelKey: locked.modelKey, klm: locked.klm, labels: samples.map((s) => s.label as number),
  };
}

/** The source tree's outputs for the fixture's digits (runtime/model.ts, this process, 1 thread). */
export async function referenceOutputs(fx: TargetFixture): Promise<{ outputs: string; predicted: number[] }> {
  const m = await loadModel(fx.klm, { modelKey: fx.modelKey, trust: [fx.vendorPub] });
  if (m.state !== 'ready') throw m.error;
  const samples = decodeRecorded(new Uint8Array(readFileSync(fx.recPath)));
  const all: TensorMap[] = [];
  for (const s of samples) all.push(await m.run(s.inputs!));
  await m.release();
  const predicted = all.map((o) => {
    const d = o[Object.keys(o).sort()[0]].data as Float32Array;
    let best = 0;
    for (let i = 1; i < d.length; i++) if (d[i] > d[best]) best = i;
    return best;
  });
  return { outputs: outputsHex(all), predicted };
}

/** Share of predictions equal to the labels. */
export function accuracy(predicted: number[], labels: number[]): number {
  let ok = 0;
  for (let i = 0; i < labels.length; i++) if (predicted[i] === labels[i]) ok++;
  return ok / labels.length;
}

/** Parses the runner's JSON line (the last line of stdout). */
export function parseRunner(stdout: string): RunnerResult {
  const line = stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as RunnerResult;
}
