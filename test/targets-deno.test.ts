// The built deno bundle under the real Deno binary (node_modules/.bin/deno),
// with the narrowest permissions that work: read access to the test folder,
// one environment variable, no write, no network. Same digits, same outputs
// as the source tree, bit for bit.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildTarget } from '../targets/build.mjs';
import { accuracy, addTfliteModel, makeFixture, parseRunner, referenceOutputs } from '../eval/fixtures/targets.ts';

const DENO = fileURLToPath(new URL('../node_modules/.bin/deno', import.meta.url));
const N = 200;
const fx = await makeFixture(N);
after(() => rmSync(fx.dir, { recursive: true, force: true }));
const built = await buildTarget('deno', { outDir: join(fx.dir, 'dist-deno') });
const bundleUrl = pathToFileURL(join(built.dir, 'keylock.mjs')).href;
const ref = await referenceOutputs(fx);
// The reference CNN exported to TFLite and locked, its grant in the same keystore.
const fxT = await addTfliteModel(fx);
const refT = await referenceOutputs(fxT);

// cbor-x reads this one variable to decide on native decoding; nothing else is read.
const READ_ENV = ['--allow-read=' + fx.dir, '--allow-env=CBOR_NATIVE_ACCELERATION_DISABLED'];

function deno(perms: string[], threads: string, mode: 'ro' | 'rw', f = fx) {
  return spawnSync(DENO, ['run', '--no-prompt', ...perms, f.runner, bundleUrl, f.klmPath, f.klsPath, f.unlockPath, f.recPath, threads, mode], {
    encoding: 'utf8', cwd: fx.dir, maxBuffer: 64 << 20, env: { ...process.env, NO_COLOR: '1' },
  });
}

test('deno, read-only keystore, --allow-read + one env var only: same outputs, nothing written', () => {
  const before = readFileSync(fx.klsPath);
  const r = deno(READ_ENV, 'default', 'ro');
  assert.equal(r.status, 0, r.stderr);
  const out = parseRunner(r.stdout);
  assert.equal(out.state, 'ready', out.message);
  assert.equal(out.mode, 'worker', 'a Deno module worker runs the model (keylock-worker.mjs beside the bundle)');
  assert.ok(out.outputs === ref.outputs, 'outputs differ from the source tree\'s');
  assert.deepEqual(out.predicted, ref.predicted);
  assert.ok(accuracy(out.predicted, fx.labels) > 0.9);
  assert.deepEqual(readFileSync(fx.klsPath), before, 'the keystore is unchanged');
  assert.equal(existsSync(`${fx.klsPath}.lock`), false, 'no writer lock was taken');
});

test('deno, writable keystore (adds --allow-write for the keystore folder): same outputs', () => {
  const r = deno([...READ_ENV, '--allow-write=' + fx.dir], 'default', 'rw');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(parseRunner(r.stdout).outputs === ref.outputs);
});

test('deno refuses more than one thread up front with BackendUnavailableError', () => {
  const r = deno(READ_ENV, '2', 'ro');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /BackendUnavailableError: onnxruntime-web under Deno: expected threads 1, got 2/);
});

test('deno, read-only: a keystore put back without its generation counter is refused (RollbackError)', () => {
  const counter = `${fx.klsPath}.counter`;
  const saved = readFileSync(counter);
  rmSync(counter);
  try {
    const r = deno(READ_ENV, 'default', 'ro');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /RollbackError: .*expected counter .*device\.kls\.counter/);
  } finally {
    writeFileSync(counter, saved);
  }
});

test('deno runs a locked .tflite from the bundle (keylock-tflite.mjs and its wasm beside it), --allow-read + one env var only: same outputs', () => {
  const r = deno(READ_ENV, 'default', 'ro', fxT);
  assert.equal(r.status, 0, r.stderr);
  const out = parseRunner(r.stdout);
  assert.equal(out.state, 'ready', out.message);
  assert.equal(out.mode, 'worker', 'the Deno module worker runs the TFLite model (keylock-tflite.mjs and its wasm beside keylock-worker.mjs)');
  assert.ok(out.outputs === refT.outputs, 'outputs differ from the source tree\'s tflite backend');
  assert.deepEqual(out.predicted, refT.predicted);
  assert.ok(accuracy(out.predicted, fx.labels) > 0.9);
});
