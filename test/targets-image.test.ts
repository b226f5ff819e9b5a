// Device images: `keylock image` stages bundle + ORT wasm + model + keystore and
// a signed manifest.klim; `keylock verify-image` accepts it and refuses every
// change (a changed byte, a deleted file, an added file, a forged manifest).
// The image then runs on its own, copied to a folder with no node_modules
// anywhere above it, with the source tree's outputs bit for bit.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { TARGETS, TFLITE_LIB } from '../targets/build.mjs';
import { encodeVendorPub, encodeVendorSecret } from '../keystore/keyfiles.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { FormatError, TamperedError, UntrustedSignerError } from '../keystore/errors.ts';
import {
  IMAGE_TARGETS, ImageChangedFileError, ImageExtraFileError, ImageMissingFileError, KLIM_NAME, openImageManifest, verifyImage,
} from '../targets/cli/image-manifest.ts';
import { addTfliteModel, makeFixture, parseRunner, referenceOutputs } from '../eval/fixtures/targets.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const fx = await makeFixture(100);
const ref = await referenceOutputs(fx);
const vendorKey = join(fx.dir, 'vendor.key');
const vendorPubFile = join(fx.dir, 'vendor.pub');
writeFileSync(vendorKey, encodeVendorSecret(fx.vendorSeed));
writeFileSync(vendorPubFile, encodeVendorPub(fx.vendorPub));
const img = join(fx.dir, 'image');
const copies: string[] = [];
after(() => {
  for (const d of [fx.dir, ...copies]) rmSync(d, { recursive: true, force: true });
});

function kl(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** Changes the image, checks that verification throws `type`, undoes the change, checks it verifies again. */
function refused(change: () => () => void, type: new (...a: never[]) => Error, dir = img): void {
  const undo = change();
  try {
    assert.throws(() => verifyImage(dir, [fx.vendorPub]), type);
  } finally {
    undo();
  }
  verifyImage(dir, [fx.vendorPub]);
}

test('image targets are exactly the build targets', () => {
  assert.deepEqual([...IMAGE_TARGETS].sort(), Object.keys(TARGETS).sort());
});

test('keylock image stages bundle, ORT files, model and keystore with a signed manifest; verify-image accepts it', () => {
  const r = kl('image', '--target', 'node', '--model', fx.klmPath, '--keystore', fx.klsPath, '--vendor', vendorKey, '--out', img);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /target node, 7 files, \d+ bytes, models mnist-cnn-targets; TFLite runtime left out \(no TFLite model\)/);
  const m = openImageManifest(new Uint8Array(readFileSync(join(img, KLIM_NAME))), [fx.vendorPub]);
  assert.equal(m.target, 'node');
  assert.deepEqual(m.entries, ['keylock.mjs', 'keylock-worker.mjs']);
  assert.deepEqual(m.files.map((f) => `${f.role} ${f.path}`), [
    'bundle keylock-worker.mjs', 'bundle keylock.mjs', 'keystore keystore/device.kls', 'keystore keystore/device.kls.counter', 'model models/mnist-cnn.klm',
    'ort ort-wasm-simd-threaded.mjs', 'ort ort-wasm-simd-threaded.wasm',
  ]);
  assert.deepEqual(m.models, [{ path: 'models/mnist-cnn.klm', modelId: 'mnist-cnn-targets' }]);
  assert.deepEqual(readFileSync(join(img, 'models/mnist-cnn.klm')), readFileSync(fx.klmPath));
  const v = kl('verify-image', img, '--trust', vendorPubFile);
  assert.equal(v.code, 0, v.err);
  assert.match(v.out, /^image ok: target node, 7 files/);
});

test('verify-image refuses a changed byte, a deleted file, an added file, a forged manifest, an unpinned signer', () => {
  const bundle = join(img, 'keylock.mjs');
  refused(() => {
    const orig = readFileSync(bundle);
    const bad = Buffer.from(orig);
    bad[1000] ^= 1;
    writeFileSync(bundle, bad);
    return () => writeFileSync(bundle, orig);
  }, ImageChangedFileError);
  const model = join(img, 'models/mnist-cnn.klm');
  refused(() => {
    const orig = readFileSync(model);
    unlinkSync(model);
    return () => writeFileSync(model, orig);
  }, ImageMissingFileError);
  refused(() => {
    writeFileSync(join(img, 'models/extra.klm'), 'not listed');
    return () => unlinkSync(join(img, 'models/extra.klm'));
  }, ImageExtraFileError);
  refused(() => {
    mkdirSync(join(img, 'plugins'));
    writeFileSync(join(img, 'plugins/hook.mjs'), 'export {}');
    return () => rmSync(join(img, 'plugins'), { recursive: true });
  }, ImageExtraFileError);
  const manifest = join(img, KLIM_NAME);
  refused(() => {
    const orig = readFileSync(manifest);
    const bad = Buffer.from(orig);
    const at = bad.indexOf(Buffer.from('keylock.mjs'));
    bad[at] = 'K'.charCodeAt(0); // inside the signed body: the signature no longer verifies
    writeFileSync(manifest, bad);
    return () => writeFileSync(manifest, orig);
  }, TamperedError);
  refused(() => {
    const orig = readFileSync(manifest);
    appendFileSync(manifest, Buffer.from([0]));
    return () => writeFileSync(manifest, orig);
  }, FormatError);
  assert.throws(() => verifyImage(img, [signKeyPair(randomBytes(32)).publicKey]), UntrustedSignerError);

  // The CLI reports the typed error and exits 1.
  const orig = readFileSync(bundle);
  appendFileSync(bundle, '\n');
  try {
    const r = kl('verify-image', img, '--trust', vendorPubFile);
    assert.equal(r.code, 1);
    assert.match(r.err, /keylock: error: image: expected the listed size and SHA-256, got different contents in keylock\.mjs \(tampered\)/);
  } finally {
    writeFileSync(bundle, orig);
  }
});

test('keylock image refuses a model of another vendor and a non-empty output folder', async () => {
  const other = await lockOnnx(new Uint8Array(readFileSync(join(root, 'models/reference/mnist-mlp.onnx'))), { schemes: ['sealed'], vendorSeed: randomBytes(32) });
  const otherPath = join(fx.dir, 'other.klm');
  writeFileSync(otherPath, other.klm);
  const r = kl('image', '--target', 'node', '--model', otherPath, '--vendor', vendorKey, '--out', join(fx.dir, 'img2'));
  assert.equal(r.code, 1);
  assert.match(r.err, /expected a model signed by vendor key [0-9a-f]{16}, got one signed by [0-9a-f]{16}/);
  assert.equal(existsSync(join(fx.dir, 'img2')), false, 'nothing written');
  const r2 = kl('image', '--target', 'node', '--model', fx.klmPath, '--vendor', vendorKey, '--out', img);
  assert.equal(r2.code, 1);
  assert.match(r2.err, /expected a new or empty folder/);
});

test('the image runs on its own, copied outside the repository: no node_modules, same outputs bit for bit', () => {
  const copy = mkdtempSync(join(tmpdir(), 'keylock-image-copy-'));
  copies.push(copy);
  cpSync(img, copy, { recursive: true });
  for (let d = copy; d !== dirname(d); d = dirname(d)) assert.equal(existsSync(join(d, 'node_modules')), false, `no node_modules at ${d}`);
  verifyImage(copy, [fx.vendorPub]);
  const runner = join(copy, '..', `${copy.split('/').pop()}-run.mjs`);
  writeFileSync(runner, readFileSync(fx.runner));
  copies.push(runner);
  const r = spawnSync(process.execPath, [
    runner, pathToFileURL(join(copy, 'keylock.mjs')).href, join(copy, 'models/mnist-cnn.klm'), join(copy, 'keystore/device.kls'),
    fx.unlockPath, fx.recPath, 'default', 'rw',
  ], { encoding: 'utf8', cwd: copy, env: { PATH: process.env.PATH }, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  const out = parseRunner(r.stdout);
  assert.equal(out.state, 'ready', out.message);
  assert.ok(out.outputs === ref.outputs, 'outputs differ from the source tree\'s');
  // A successful run writes nothing, so the image still verifies afterwards.
  verifyImage(copy, [fx.vendorPub]);
});

test('an electron image lists its entries (main process, preload, and the worker script the main process runs models on)', () => {
  for (const [target, entries] of [['electron', ['main.mjs', 'preload.cjs', 'keylock-worker.mjs']]] as const) {
    const dir = join(fx.dir, `image-${target}`);
    const r = kl('image', '--target', target, '--model', fx.klmPath, '--vendor', vendorKey, '--out', dir);
    assert.equal(r.code, 0, r.err);
    const v = verifyImage(dir, [fx.vendorPub]);
    assert.equal(v.manifest.target, target);
    assert.deepEqual(v.manifest.entries, entries);
    for (const f of TARGETS[target].ortFiles) assert.ok(v.manifest.files.some((x) => x.path === f && x.role === 'ort'));
  }
});

test('an image that holds a TFLite model carries the TFLite runtime (role tflite) and runs the model on its own, bit for bit', async () => {
  const fxT = await addTfliteModel(fx);
  const refT = await referenceOutputs(fxT);
  const dir = join(fx.dir, 'image-tflite');
  const r = kl('image', '--target', 'node', '--model', fxT.klmPath, '--model', fx.klmPath, '--keystore', fx.klsPath, '--vendor', vendorKey, '--out', dir);
  assert.equal(r.code, 0, r.err);
  // The 7 files of an ONNX image (bundle, worker script, ORT glue and wasm, model, keystore and its counter), the TFLite library and its glue and wasm, the second model.
  assert.match(r.out, /target node, 11 files, .*TFLite runtime included/);
  const v = verifyImage(dir, [fx.vendorPub]);
  assert.deepEqual(v.manifest.files.filter((f) => f.role === 'tflite').map((f) => f.path), [TFLITE_LIB, ...TARGETS.node.tfliteFiles].sort());
  assert.deepEqual(v.manifest.models.map((m) => m.modelId), ['mnist-cnn-tflite-targets', 'mnist-cnn-targets']);
  // A changed TFLite file is caught like any other.
  refused(() => {
    const f = join(dir, 'tflite_web_api_cc_simd.wasm');
    const saved = readFileSync(f);
    appendFileSync(f, new Uint8Array([0]));
    return () => writeFileSync(f, saved);
  }, ImageChangedFileError, dir);

  const copy = mkdtempSync(join(tmpdir(), 'keylock-image-tflite-'));
  copies.push(copy);
  cpSync(dir, copy, { recursive: true });
  for (let d = copy; d !== dirname(d); d = dirname(d)) assert.equal(existsSync(join(d, 'node_modules')), false, `no node_modules at ${d}`);
  const runner = `${copy}-run.mjs`;
  writeFileSync(runner, readFileSync(fx.runner));
  copies.push(runner);
  const run = spawnSync(process.execPath, [
    runner, pathToFileURL(join(copy, 'keylock.mjs')).href, join(copy, 'models/mnist-cnn-tflite.klm'), join(copy, 'keystore/device.kls'),
    fx.unlockPath, fxT.recPath, 'default', 'rw', 'worker',
  ], { encoding: 'utf8', cwd: copy, env: { PATH: process.env.PATH }, maxBuffer: 64 << 20 });
  assert.equal(run.status, 0, run.stderr);
  const out = parseRunner(run.stdout);
  assert.equal(out.state, 'ready', out.message);
  assert.equal(out.mode, 'worker', 'the model\'s worker thread (keylock-worker.mjs) finds the TFLite library and wasm beside it');
  assert.ok(out.outputs === refT.outputs, 'outputs differ from the source tree\'s tflite backend');
  verifyImage(copy, [fx.vendorPub]);

  // A browser image with the TFLite model carries the threaded build as well.
  const b = join(fx.dir, 'image-tflite-browser');
  const rb = kl('image', '--target', 'browser', '--model', fxT.klmPath, '--vendor', vendorKey, '--out', b);
  assert.equal(rb.code, 0, rb.err);
  assert.deepEqual(verifyImage(b, [fx.vendorPub]).manifest.files.filter((f) => f.role === 'tflite').map((f) => f.path), [TFLITE_LIB, ...TARGETS.browser.tfliteFiles].sort());
});

