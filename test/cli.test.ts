// The CLI exactly as users and external checks call it: `node bin/keylock.mjs ...`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from './helpers.ts';
import { fileURLToPath } from 'node:url';
import { decodeRecorded, encodeRecorded } from '../runtime/recorded.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'keylock-cli-'));
const p = (f: string): string => join(dir, f);

const { kl, ok } = cli(dir);

// 20 recorded digits are plenty for the flow; accuracy on all 2,000 is measured elsewhere.
const digits = decodeRecorded(readFileSync(join(root, 'test/fixtures/mnist-test.cbor')));
writeFileSync(p('digits.cbor'), encodeRecorded(digits.slice(0, 20)));

test('vendor to device: keygen, lock, inspect, extract, device init, grant, install, run', () => {
  ok('keygen', '--out', p('vendor'));
  assert.equal(statSync(p('vendor.key')).mode & 0o777, 0o600);
  const lockOut = ok('lock', join(root, 'models/reference/mnist-mlp.onnx'), '--scheme', 'deeplock+sealed', '--vendor', p('vendor.key'),
    '--out', p('mlp.klm'), '--key-out', p('mlp.key'), '--model-id', 'mlp-cli', '--canary', p('digits.cbor'), '--canary-count', '2');
  assert.match(lockOut, /locked .* as model "mlp-cli" with deeplock\+sealed/);
  assert.equal(statSync(p('mlp.key')).mode & 0o777, 0o600);
  const insp = ok('inspect', p('mlp.klm'));
  assert.match(insp, /deeplock .* float32 parameters/);
  assert.match(insp, /sealed .* XChaCha20-Poly1305 \(cipher xchacha20-poly1305\)/);
  assert.match(insp, /canary +2 recorded sample/);
  assert.match(insp, /thread +its own worker, which times it at load; one whose run takes at most 0\.1 ms is loaded again on the caller's thread/);
  assert.doesNotMatch(insp + ok('inspect', p('mlp.klm'), '--json'), new RegExp(Buffer.from(readFileSync(p('mlp.key'))).subarray(-32).toString('hex')));
  ok('extract', p('mlp.klm'), '--out', p('stolen.onnx'));
  assert.ok(statSync(p('stolen.onnx')).size > 100_000);

  const vendorRun = ok('run', p('mlp.klm'), '--model-key', p('mlp.key'), '--inputs', p('digits.cbor'), '--out', p('vendor-out.cbor'));
  assert.match(vendorRun, /ran 20 sample\(s\).*accuracy/);

  ok('device', 'init', '--keystore', p('dev.kls'), '--unlock', `file:${p('dev.secret')}`, '--trust', p('vendor.pub'), '--pub-out', p('dev.pub'));
  assert.equal(statSync(p('dev.secret')).mode & 0o777, 0o600);
  assert.match(ok('grant', p('mlp.klm'), '--model-key', p('mlp.key'), '--vendor', p('vendor.key'), '--device', p('dev.pub'), '--out', p('dev.klg'), '--grace', '600'), /\(\+600 s grace while running\)/);
  ok('install', p('dev.klg'), '--keystore', p('dev.kls'), '--unlock', `file:${p('dev.secret')}`);
  const run = ok('run', p('mlp.klm'), '--keystore', p('dev.kls'), '--unlock', `file:${p('dev.secret')}`, '--inputs', p('digits.cbor'), '--out', p('out.cbor'));
  assert.match(run, /p50 [\d.]+ ms, p99 [\d.]+ ms, accuracy/);
  const a = decodeRecorded(readFileSync(p('out.cbor')), 'outputs');
  const b = decodeRecorded(readFileSync(p('vendor-out.cbor')), 'outputs');
  assert.equal(a.length, 20);
  assert.deepEqual(a.map((s) => s.outputs!.logits.data), b.map((s) => s.outputs!.logits.data));
  assert.match(ok('device', 'show', '--keystore', p('dev.kls'), '--unlock', `file:${p('dev.secret')}`), /model mlp-cli, valid .* \(\+600 s grace\)/);
});

test('halted models exit 3 with the reason; a revoked grant halts at the next run', () => {
  ok('device', 'init', '--keystore', p('dev2.kls'), '--unlock', `file:${p('dev2.secret')}`, '--trust', p('vendor.pub'), '--pub-out', p('dev2.pub'));
  const noGrant = kl('run', p('mlp.klm'), '--keystore', p('dev2.kls'), '--unlock', `file:${p('dev2.secret')}`, '--inputs', p('digits.cbor'), '--out', p('x.cbor'));
  assert.equal(noGrant.code, 3);
  assert.match(noGrant.err, /keylock: error: model is halted: .*no-grant/);
  assert.ok(!existsSync(p('x.cbor')), 'no output file for a halted model');

  const expired = kl('grant', p('mlp.klm'), '--model-key', p('mlp.key'), '--vendor', p('vendor.key'), '--device', p('dev2.pub'),
    '--out', p('old.klg'), '--not-before', '2020-01-01T00:00:00Z', '--not-after', '2021-01-01T00:00:00Z');
  assert.equal(expired.code, 0);
  const inst = kl('install', p('old.klg'), '--keystore', p('dev2.kls'), '--unlock', `file:${p('dev2.secret')}`);
  assert.equal(inst.code, 1);
  assert.match(inst.err, /has expired/);

  const show = ok('device', 'show', '--keystore', p('dev.kls'), '--unlock', `file:${p('dev.secret')}`);
  const grantId = /grant +(\S+) model mlp-cli/.exec(show)![1];
  ok('revoke', '--vendor', p('vendor.key'), '--version', '1', '--grant', grantId, '--out', p('r1.klr'));
  ok('install', p('r1.klr'), '--keystore', p('dev.kls'), '--unlock', `file:${p('dev.secret')}`);
  const revoked = kl('run', p('mlp.klm'), '--keystore', p('dev.kls'), '--unlock', `file:${p('dev.secret')}`, '--inputs', p('digits.cbor'), '--out', p('y.cbor'));
  assert.equal(revoked.code, 3);
  assert.match(revoked.err, /revoked/);
  ok('revoke', '--vendor', p('vendor.key'), '--version', '1', '--out', p('r0.klr'));
  const rollback = kl('install', p('r0.klr'), '--keystore', p('dev.kls'), '--unlock', `file:${p('dev.secret')}`);
  assert.equal(rollback.code, 1);
  assert.match(rollback.err, /rollback/);
});

test('bad input: usage errors exit 2, bad files exit 1 with a hint, and no partial output is written', () => {
  const before = readdirSync(dir).sort();
  const usage = kl('lock', join(root, 'models/reference/mnist-mlp.onnx'), '--scheme', 'sealed');
  assert.equal(usage.code, 2);
  assert.match(usage.err, /keylock: error: --out is required\nkeylock: hint: usage: keylock lock/);
  assert.equal(kl('frobnicate').code, 2);
  assert.equal(kl('lock', 'x.onnx', '--bogus').code, 2);

  writeFileSync(p('garbage.onnx'), Buffer.from('not a model at all'));
  const garbage = kl('lock', p('garbage.onnx'), '--scheme', 'sealed', '--vendor', p('vendor.key'), '--out', p('g.klm'), '--key-out', p('g.key'));
  assert.equal(garbage.code, 1);
  assert.match(garbage.err, /keylock: error: .*format/);
  const missing = kl('inspect', p('nope.klm'));
  assert.equal(missing.code, 1);
  assert.match(missing.err, /model file not found: .*nope\.klm/);

  const klm = readFileSync(p('mlp.klm'));
  writeFileSync(p('trunc.klm'), klm.subarray(0, klm.length - 100));
  const trunc = kl('run', p('trunc.klm'), '--model-key', p('mlp.key'), '--inputs', p('digits.cbor'), '--out', p('t.cbor'));
  assert.equal(trunc.code, 3);
  assert.match(trunc.err, /truncated|bytes left/);

  writeFileSync(p('short.key'), readFileSync(p('mlp.key')).subarray(0, 40));
  const shortKey = kl('run', p('mlp.klm'), '--model-key', p('short.key'), '--inputs', p('digits.cbor'), '--out', p('s.cbor'));
  assert.equal(shortKey.code, 1);

  const wrongInputs = encodeRecorded([{ inputs: { image: digits[0].inputs!.input } }]);
  writeFileSync(p('wrong-in.cbor'), wrongInputs);
  const wrongIn = kl('run', p('mlp.klm'), '--model-key', p('mlp.key'), '--inputs', p('wrong-in.cbor'), '--out', p('w.cbor'));
  assert.equal(wrongIn.code, 1);
  assert.match(wrongIn.err, /missing input "input"/);
  const after = readdirSync(dir).sort();
  assert.deepEqual(after.filter((f) => !before.includes(f)), ['garbage.onnx', 'short.key', 'trunc.klm', 'wrong-in.cbor'], 'only the files the test wrote itself');
});

test('revoke takes several ids per flag, or the flag repeated', () => {
  assert.match(ok('revoke', '--vendor', p('vendor.key'), '--version', '5', '--grant', 'g1', 'g2', '--model', 'm1', '--out', p('r5.klr')),
    /version 5: 2 grant\(s\), 1 model\(s\), 0 device\(s\)/);
  assert.match(ok('revoke', '--vendor', p('vendor.key'), '--version=6', '--device=d1', '--device', 'd2', '--out', p('r6.klr')),
    /version 6: 0 grant\(s\), 0 model\(s\), 2 device\(s\)/);
  const stray = kl('revoke', '--vendor', p('vendor.key'), '--version', '7', 'g1', '--out', p('r7.klr'));
  assert.equal(stray.code, 2);
});
