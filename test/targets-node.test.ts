// The built node bundle, run by a separate `node` process: a keystore, the
// locked reference CNN, 200 recorded digits. Its outputs must equal the source
// tree's bit for bit, and loading + running must make no network call at all.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildTarget } from '../targets/build.mjs';
import { Keystore } from '../keystore/keystore.ts';
import { accuracy, addTfliteModel, makeFixture, parseRunner, referenceOutputs } from '../eval/fixtures/targets.ts';
import { AUTO_IN_THREAD_MS } from '../runtime/model.ts';

const N = 200;
const fx = await makeFixture(N);
after(() => rmSync(fx.dir, { recursive: true, force: true }));
const built = await buildTarget('node', { outDir: join(fx.dir, 'dist-node') });
// The same device also holds the reference CNN exported to TFLite and locked (its own grant).
const fxT = await addTfliteModel(fx);
const refT = await referenceOutputs(fxT);
const bundleUrl = pathToFileURL(join(built.dir, 'keylock.mjs')).href;
const ref = await referenceOutputs(fx);

/**
 * Loaded with `--import` before the bundle: every way out of the process
 * (fetch, WebSocket, XMLHttpRequest, EventSource, http(s), http2, net, tls,
 * dns, dgram) records the call and throws. The calls are printed on exit.
 * Built-in ESM named exports are re-synced, so `import { request } from
 * 'node:http'` sees the trap too.
 */
const TRAP = `import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import dns from 'node:dns';
import dgram from 'node:dgram';
import { syncBuiltinESMExports } from 'node:module';
const calls = [];
const trap = (what) => function trapped() { calls.push(what); throw new Error('network use: ' + what); };
globalThis.fetch = trap('fetch');
for (const name of ['WebSocket', 'XMLHttpRequest', 'EventSource']) {
  globalThis[name] = class { constructor() { trap(name)(); } };
}
for (const [mod, name] of [[http, 'http'], [https, 'https']]) { mod.request = trap(name + '.request'); mod.get = trap(name + '.get'); }
http2.connect = trap('http2.connect');
net.connect = trap('net.connect');
net.createConnection = trap('net.createConnection');
net.Socket.prototype.connect = trap('net.Socket.connect');
tls.connect = trap('tls.connect');
for (const f of ['lookup', 'lookupService', 'resolve', 'resolve4', 'resolve6', 'resolveAny', 'resolveCname', 'resolveTxt', 'reverse']) {
  dns[f] = trap('dns.' + f);
  dns.promises[f] = trap('dns.promises.' + f);
}
dgram.createSocket = trap('dgram.createSocket');
syncBuiltinESMExports();
process.on('exit', () => process.stderr.write('NETWORK-CALLS ' + JSON.stringify(calls) + '\\n'));
`;

/** Runs `node ARGS…` and returns stdout and stderr; a non-zero exit fails with both. */
function node(args: string[]): { stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}: ${r.stderr}\n${r.stdout}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

const runnerArgs = [fx.runner, bundleUrl, fx.klmPath, fx.klsPath, fx.unlockPath, fx.recPath, 'default', 'rw'];
const tfliteArgs = (bundle = bundleUrl): string[] => [fx.runner, bundle, fxT.klmPath, fx.klsPath, fx.unlockPath, fxT.recPath, 'default', 'rw'];

/** The calls every thread's trap reported (the model's worker thread loads the trap too), merged; `threads`: how many reported. */
function reported(stderr: string, threads = 1): string[] {
  const lines = stderr.split('\n').filter((l) => l.startsWith('NETWORK-CALLS '));
  assert.equal(lines.length, threads, `each of ${threads} thread(s) reported its calls: ${stderr}`);
  return lines.flatMap((line) => JSON.parse(line.slice('NETWORK-CALLS '.length)) as string[]);
}

test('the node bundle, in its own process, gives the source tree\'s outputs bit for bit on 200 digits', () => {
  const r = parseRunner(node(runnerArgs).stdout);
  assert.equal(r.state, 'ready', r.message);
  // The default (worker: 'auto'): the model loaded in keylock-worker.mjs, which timed its run; the thread follows from that time.
  assert.equal(typeof r.autoRunMs, 'number', 'the bundle\'s default load timed the run in its worker');
  assert.equal(r.mode, r.autoRunMs! <= AUTO_IN_THREAD_MS ? 'in-thread' : 'worker', `run at load ${r.autoRunMs} ms`);
  assert.equal(r.predicted.length, N);
  assert.equal(r.outputs.length, ref.outputs.length);
  assert.ok(r.outputs === ref.outputs, 'outputs differ from the source tree\'s');
  assert.deepEqual(r.predicted, ref.predicted);
  const acc = accuracy(r.predicted, fx.labels);
  assert.equal(acc, accuracy(ref.predicted, fx.labels));
  assert.ok(acc > 0.9, `accuracy ${acc}`);
});

test('a device without a grant: the bundle refuses with the typed error, its class name intact after minification', async () => {
  const other = join(fx.dir, 'other.kls');
  const ks = await Keystore.create(other, { vendorKeys: [fx.vendorPub], unlock: { kind: 'file', path: join(fx.dir, 'other.key') } });
  ks.close();
  const r = spawnSync(process.execPath, [fx.runner, bundleUrl, fx.klmPath, other, join(fx.dir, 'other.key'), fx.recPath, 'default', 'rw'], { encoding: 'utf8' });
  assert.equal(r.status, 3, r.stderr);
  const out = parseRunner(r.stdout);
  assert.equal(out.state, 'halted');
  assert.equal(out.error, 'NoGrantError');
  assert.equal(out.outputs, undefined, 'no numbers from a halted model');
});

test('loading and running the node bundle makes no network call (calls trapped, not grepped)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-trap-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const trap = join(dir, 'trap.mjs');
  writeFileSync(trap, TRAP);
  const importTrap = ['--import', pathToFileURL(trap).href];
  // Control: the trap does see calls, so the empty list below means something.
  const control = join(dir, 'control.mjs');
  writeFileSync(control, `import { get } from 'node:http';
try { await fetch('http://127.0.0.1:9/'); } catch {}
try { get('http://127.0.0.1:9/'); } catch {}
try { new WebSocket('ws://127.0.0.1:9/'); } catch {}
`);
  assert.deepEqual(reported(node([...importTrap, control]).stderr), ['fetch', 'http.get', 'WebSocket']);

  const { stdout, stderr } = node([...importTrap, ...runnerArgs, 'worker']);
  const r = parseRunner(stdout);
  assert.equal(r.state, 'ready', r.message);
  assert.ok(r.outputs === ref.outputs, 'the trapped run gives the same outputs');
  assert.equal(r.mode, 'worker');
  assert.deepEqual(reported(stderr, 2), [], 'no call on the main thread nor on the model\'s worker thread');
});

test('a locked .tflite from the node bundle (keylock-tflite.mjs and its wasm beside it): the source tree\'s outputs bit for bit, no network call', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-trap-tflite-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const trap = join(dir, 'trap.mjs');
  writeFileSync(trap, TRAP);
  const { stdout, stderr } = node(['--import', pathToFileURL(trap).href, ...tfliteArgs(), 'worker']);
  const r = parseRunner(stdout);
  assert.equal(r.state, 'ready', r.message);
  assert.equal(r.predicted.length, N);
  assert.ok(r.outputs === refT.outputs, 'outputs differ from the source tree\'s tflite backend');
  assert.deepEqual(r.predicted, refT.predicted);
  assert.ok(accuracy(r.predicted, fx.labels) > 0.9, `accuracy ${accuracy(r.predicted, fx.labels)}`);
  assert.equal(r.mode, 'worker', 'the TFLite model runs on the model\'s worker thread, which loads keylock-tflite.mjs and its wasm');
  assert.deepEqual(reported(stderr, 2), [], 'no call on the main thread nor on the model\'s worker thread');
});

test('the TFLite library is read on the first TFLite load only: without keylock-tflite.mjs, ONNX runs and TFLite halts with a typed error naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-no-tflite-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(built.dir, dir, { recursive: true });
  rmSync(join(dir, 'keylock-tflite.mjs'));
  const url = pathToFileURL(join(dir, 'keylock.mjs')).href;
  const onnx = parseRunner(node([fx.runner, url, fx.klmPath, fx.klsPath, fx.unlockPath, fx.recPath, 'default', 'rw']).stdout);
  assert.equal(onnx.state, 'ready', onnx.message);
  assert.ok(onnx.outputs === ref.outputs, 'the ONNX model runs as with the full folder');
  const r = spawnSync(process.execPath, tfliteArgs(url), { encoding: 'utf8' });
  assert.equal(r.status, 3, r.stderr);
  const t = parseRunner(r.stdout);
  assert.equal(t.state, 'halted');
  assert.equal(t.error, 'BackendUnavailableError');
  assert.match(t.message ?? '', /keylock-tflite\.mjs beside the bundle/);
});

test('without the TFLite wasm beside the bundle, a TFLite load halts with BackendUnavailableError naming the missing file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-no-tflite-wasm-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(built.dir, dir, { recursive: true });
  rmSync(join(dir, 'tflite_web_api_cc_simd.wasm'));
  const r = spawnSync(process.execPath, tfliteArgs(pathToFileURL(join(dir, 'keylock.mjs')).href), { encoding: 'utf8' });
  assert.equal(r.status, 3, r.stderr);
  const t = parseRunner(r.stdout);
  assert.equal(t.state, 'halted');
  assert.equal(t.error, 'BackendUnavailableError');
  assert.match(t.message ?? '', /expected tfjs-tflite's tflite_web_api_cc_simd\.js and tflite_web_api_cc_simd\.wasm in .*keylock-no-tflite-wasm-.*, got: ENOENT/);
});

test('the rpi bundle (threads default min(4, cores) for ORT) runs the locked .tflite on its one Node thread; another explicit count is refused', async () => {
  const rpi = await buildTarget('rpi', { outDir: join(fx.dir, 'dist-rpi') });
  const url = pathToFileURL(join(rpi.dir, 'keylock.mjs')).href;
  const rpiThreads = Math.max(1, Math.min(4, availableParallelism()));
  const r = parseRunner(node(tfliteArgs(url)).stdout);
  assert.equal(r.state, 'ready', r.message);
  assert.ok(r.outputs === refT.outputs, 'outputs differ from the source tree\'s');
  const args = tfliteArgs(url);
  args[6] = String(rpiThreads + 1);
  const refused = spawnSync(process.execPath, args, { encoding: 'utf8' });
  assert.equal(refused.status, 3, refused.stderr);
  const t = parseRunner(refused.stdout);
  assert.deepEqual([t.state, t.error], ['halted', 'BackendUnavailableError']);
  assert.match(t.message ?? '', new RegExp(`runs one thread in Node .*got threads ${rpiThreads + 1}`));
});

test('env.tfliteWasmPaths moves the TFLite wasm elsewhere: found there as a file: URL or a path; a value without a trailing slash is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-tflite-wasm-path-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(built.dir, join(dir, 'app'), { recursive: true });
  mkdirSync(join(dir, 'wasm'));
  for (const f of ['tflite_web_api_cc_simd.js', 'tflite_web_api_cc_simd.wasm']) renameSync(join(dir, 'app', f), join(dir, 'wasm', f));
  const script = join(dir, 'run.mjs');
  writeFileSync(script, `import { readFileSync } from 'node:fs';
const [bundle, where, klm, kls, unlock, rec] = process.argv.slice(2);
const k = await import(bundle);
k.env.tfliteWasmPaths = where;
const ks = await k.openKeystore(kls, { kind: 'file', path: unlock });
const m = await k.loadModelFile(klm, { keystore: ks });
if (m.state !== 'ready') { console.log(JSON.stringify({ state: m.state, error: m.error.name, message: m.error.message })); process.exit(3); }
const s = k.decodeRecorded(new Uint8Array(readFileSync(rec)))[0];
const o = await m.run(s.inputs);
console.log(JSON.stringify({ state: 'ready', first: Array.from(Object.values(o)[0].data) }));
`);
  const url = pathToFileURL(join(dir, 'app', 'keylock.mjs')).href;
  const run = (where: string) => spawnSync(process.execPath, [script, url, where, fxT.klmPath, fx.klsPath, fx.unlockPath, fxT.recPath], { encoding: 'utf8' });
  for (const where of [`${pathToFileURL(join(dir, 'wasm')).href}/`, `${join(dir, 'wasm')}/`]) {
    const r = run(where);
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.equal(JSON.parse(r.stdout).state, 'ready', where);
  }
  const bad = run(join(dir, 'wasm'));
  assert.equal(bad.status, 3, bad.stderr);
  const b = JSON.parse(bad.stdout);
  assert.equal(b.error, 'BackendUnavailableError');
  assert.match(b.message, /env\.tfliteWasmPaths: expected a folder ending in "\/", got ".*wasm"/);
});
