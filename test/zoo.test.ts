/**
 * The conformance zoo's quick run (`npm run zoo -- --quick`): real ONNX and
 * TFLite models from node_modules, every scheme and mode, checked row by row
 * from the JSON the command writes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { QUICK_MODELS } from '../eval/zoo.ts';
import { compare, zooCases, ROUNDING_TOLERANCE, type ZooRow } from '../eval/zoo/measure.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import { checkZoo, knownFailureNotes, namesWhat, type ZooResult } from '../eval/zoo/report.ts';
import { root } from './helpers.ts';

/**
 * The quick models `sealed` locks on main today: all of them. A locker change
 * that makes sealed refuse one of these fails here.
 */
const SEALED_LOCKS = QUICK_MODELS;

test('npm run zoo -- --quick: every lock exact with the key, every wrong key stopped before a session, every refusal typed and specific', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-zoo-'));
  try {
    const json = join(dir, 'zoo.json');
    const r = spawnSync('npm', ['run', '--silent', 'zoo', '--', '--quick', '--json', json], { cwd: root, encoding: 'utf8' });
    assert.equal(r.status, 0, `npm run zoo -- --quick failed:\n${r.stderr.slice(-3000)}`);
    const z = JSON.parse(readFileSync(json, 'utf8')) as ZooResult;
    assert.ok(z.quick);
    assert.match(r.stdout, /^\| model \| lock \| outcome /m, 'prints the table');

    // The models: the quick subset plus the custom-op check, at least 3 ONNX and 2 TFLite that run.
    const ran = z.models.filter((m) => !m.backendFailure);
    assert.deepEqual(ran.map((m) => m.name).sort(), [...QUICK_MODELS].sort());
    assert.ok(ran.filter((m) => m.format === 'onnx').length >= 3 && ran.filter((m) => m.format === 'tflite').length >= 2);
    const silero = z.models.find((m) => m.name === 'silero_vad.onnx')!;
    assert.ok(silero.stateful && silero.steps >= 4, 'silero_vad runs a sequence with its state fed back');

    // Every model × case has its row, including the models the backend cannot run.
    for (const m of z.models) {
      const labels = z.rows.filter((x) => x.model === m.name).map((x) => x.lock);
      assert.deepEqual(labels, zooCases(m.format).map((c) => c.label), `${m.name}: one row per case`);
    }
    const locked = z.rows.filter((x) => x.outcome === 'locked');
    assert.ok(locked.length >= 20, `expected at least 20 locks to succeed, got ${locked.length}`);

    for (const x of locked.filter((y) => y.withKeyHalt === undefined)) {
      const what = `${x.model} ${x.lock}`;
      // With the key: bit-identical, or absorbed shuffle within the stated tolerance.
      assert.ok(x.elements! > 0, `${what}: compared no output`);
      if (x.lock.startsWith('shuffle')) assert.ok(x.maxAbsDiff! <= x.roundingBound!, `${what}: ${x.withKeyNote}`);
      else assert.equal(x.bitDiffs, 0, `${what}: ${x.withKeyNote}`);
      // A wrong key: KeyMismatchError, no backend session, run() rejects.
      assert.equal(x.wrongKeyError, 'KeyMismatchError', what);
      assert.equal(x.wrongKeySessions, 0, `${what}: a session was created for a wrong key`);
      assert.equal(x.wrongKeyRunRejected, true, what);
      // Without the key the copied file is not the model: it fails, gives NaN/Inf, or moves the outputs.
      const moved = x.noKeyFailure !== undefined || (x.noKeyNonFinite ?? 0) > 0 || (x.noKeyRelL2 ?? 0) >= 0.1;
      assert.ok(moved, `${what}: without the key the outputs barely move (rel. L2 ${x.noKeyRelL2})`);
      // Nor does a wrong key forced past the key check (restore and hooks under the wrong key) give the model
      // back. Only "not exactly": a saturated softmax head can keep its top class under a wrong key.
      const f = x.forced!;
      assert.ok(f.failure !== undefined || f.nonFinite > 0 || (f.relL2 ?? 0) > 0, `${what}: a wrong key forced through reproduces the plain outputs`);
    }

    // Refusals: typed, and naming the tensor, dtype or operator at fault.
    const notLocked = z.rows.filter((x) => x.outcome === 'refused' || x.outcome === 'error');
    assert.ok(notLocked.length > 0, 'the quick run has refusals to check (signflip input mode on TFLite, shuffle on non-images)');
    for (const x of notLocked) {
      assert.equal(x.errorName, 'UnsupportedModelError', `${x.model} ${x.lock}: ${x.errorName}: ${x.reason}`);
      assert.ok(namesWhat(x.reason), `${x.model} ${x.lock}: the reason names no tensor, dtype or operator: ${x.reason}`);
    }
    // The zoo skips only advparams, and only where it has nothing to label data with (no class output, or no plain run).
    for (const x of z.rows.filter((y) => y.outcome === 'skipped')) assert.ok(x.lock === 'advparams' && /no class output|no labels/.test(x.reason!), `${x.model} ${x.lock}: ${x.reason}`);
    assert.ok(locked.some((x) => x.lock === 'advparams' && x.format === 'onnx') && locked.some((x) => x.lock === 'advparams' && x.format === 'tflite'), 'advparams locks the class heads');

    // sealed locks every model it locks on main today.
    for (const name of SEALED_LOCKS) {
      const row = z.rows.find((x) => x.model === name && x.lock === 'sealed');
      assert.equal(row?.outcome, 'locked', `sealed on ${name}: ${row?.errorName}: ${row?.reason}`);
    }

    // The custom-op check: the backend's refusal is reported, naming the op.
    const custom = z.models.find((m) => m.customOps.length);
    assert.ok(custom?.backendFailure, 'the custom-op model is reported as one its backend cannot run');
    assert.match(custom.backendFailure, /VendorFlatten/);
    // Its locks go through (the locker does not know which ops a device has), and the device's load then halts
    // with a typed error naming the op; a wrong key still halts first, before any session.
    const customLocked = z.rows.filter((x) => x.model === custom.name && x.outcome === 'locked');
    assert.ok(customLocked.some((x) => x.lock === 'sealed'));
    for (const x of customLocked) {
      assert.match(x.withKeyHalt!, /^BackendUnavailableError: .*VendorFlatten/, `${x.lock}: ${x.withKeyHalt}`);
      assert.equal(x.wrongKeyError, 'KeyMismatchError', x.lock);
      assert.equal(x.wrongKeySessions, 0, x.lock);
    }

    assert.deepEqual(z.checks.filter((c) => !c.ok), [], 'the run\'s own checks pass');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the zoo\'s checks fail on a bad row', () => {
  const row = (o: Partial<ZooRow>): ZooRow => ({
    model: 'm.onnx', format: 'onnx', lock: 'sealed', outcome: 'locked', lockMs: 1, totalMs: 1,
    bitDiffs: 0, elements: 4, maxAbsDiff: 0, withKeyOk: true, wrongKeyError: 'KeyMismatchError', wrongKeySessions: 0, wrongKeyRunRejected: true, ...o,
  });
  const result = (rows: ZooRow[]): ZooResult => ({
    quick: true, only: false, date: '', seconds: 0, roundingTolerance: ROUNDING_TOLERANCE, rows, checks: [],
    models: [
      { name: 'm.onnx', path: 'm.onnx', format: 'onnx', bytes: 1, operators: 1, customOps: [], inputs: '', steps: 1, stateful: false },
      { name: 'c.onnx', path: 'c.onnx', format: 'onnx', bytes: 1, operators: 1, customOps: ['x:Op'], inputs: '', steps: 1, stateful: false, backendFailure: 'Op is not a registered function/op' },
    ],
  });
  const failed = (rows: ZooRow[]): string[] => checkZoo(result(rows)).filter((c) => !c.ok).map((c) => c.name);
  assert.deepEqual(failed([row({})]), []);
  assert.match(failed([row({ bitDiffs: 1, maxAbsDiff: 1e-7, withKeyOk: false })]).join(), /with the key/);
  assert.match(failed([row({}), row({ lock: 'deeplock', wrongKeySessions: 1 })]).join(), /wrong key/);
  // Absorbed shuffle: rounding within its bound passes, beyond it fails.
  const shuffled = (max: number): ZooRow => row({ lock: 'shuffle m=4 (absorbed)', bitDiffs: 3, maxAbsDiff: max, roundingBound: 1e-4, withKeyOk: true });
  assert.deepEqual(failed([row({}), shuffled(5e-5)]), []);
  assert.match(failed([row({}), shuffled(2e-4)]).join(), /with the key/);
  // A full run (not quick, not --only) must find the shipped models.
  assert.match(checkZoo({ ...result([row({})]), quick: false }).filter((c) => !c.ok).map((c) => c.name).join(), /at least 12 shipped models/);
  assert.match(failed([row({}), row({ lock: 'deeplock', outcome: 'refused', errorName: 'UnsupportedModelError', reason: 'cannot lock this model' })]).join(), /refusal/);
  assert.match(failed([row({}), row({ lock: 'deeplock', outcome: 'error', errorName: 'TypeError', reason: 'x is undefined in "y"' })]).join(), /refusal/);
  assert.match(failed([row({ outcome: 'refused', errorName: 'UnsupportedModelError', reason: 'tensor "w" is float16' })]).join(), /sealed/);
  assert.match(failed([row({}), row({ lock: 'deeplock', withKeyHalt: 'TypeError: cannot read "x"' })]).join(), /cannot run/);
  assert.deepEqual(failed([row({}), row({ lock: 'deeplock', withKeyHalt: 'BackendUnavailableError: no session' })]), []);
  // No known failure is listed any more: an untyped error on any model fails the refusal check.
  const rec = (model: string): ZooRow => row({ model, lock: 'advparams', outcome: 'error', errorName: 'RangeError', reason: 'logits must be [batch, classes]' });
  assert.deepEqual(knownFailureNotes({ rows: [rec('ch_PP-OCRv4_rec_infer.onnx')] }), []);
  assert.match(failed([row({}), rec('ch_PP-OCRv4_rec_infer.onnx')]).join(), /refusal/);
  assert.match(failed([row({}), rec('m.onnx')]).join(), /refusal/);
  assert.ok(namesWhat('shuffle expects input \'x\' to have known C, H and W'));
  assert.ok(namesWhat('the TFLite model has no CONV_2D with float32 weights'));
  assert.ok(!namesWhat('advparams needs an encryption set: --data REC.cbor (recorded inputs with labels)'));
  assert.ok(!namesWhat(''));
});

test('npm run zoo: a bad flag or an unknown model name is an error with a hint, before any model runs', () => {
  for (const args of [['--only', 'no-such-model.onnx'], ['--json']]) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'eval/zoo.ts', ...args], { cwd: root, encoding: 'utf8' });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^error: .*expected/m, args.join(' '));
    assert.match(r.stderr, /^hint: /m, args.join(' '));
    assert.doesNotMatch(r.stderr, /zoo: .*plain/, 'no model ran');
  }
});

test('the zoo compares every output bit for bit, whatever its dtype', () => {
  const f = (v: number[]): TensorMap => ({ y: { dtype: 'float32', dims: [v.length], data: Float32Array.from(v) } });
  assert.deepEqual(compare([f([1, 2])], [f([1, 2])]), { bits: 0, max: 0, n: 2 });
  assert.equal(compare([f([-0, 2])], [f([0, 2])]).bits, 1, 'signed zeros differ in bits');
  const i = (v: bigint[]): TensorMap => ({ k: { dtype: 'int64', dims: [v.length], data: BigInt64Array.from(v) } });
  assert.deepEqual(compare([i([1n, 5n])], [i([1n, 7n])]), { bits: 1, max: 2, n: 2 });
  assert.throws(() => compare([f([1])], [i([1n])]), /expected outputs k, got y/);
});
