// compareOutputs (models/record/compare.ts) and `keylock run --expect`, which reports it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from './helpers.ts';
import { fileURLToPath } from 'node:url';
import { compareOutputs, compareReportJson, formatCompareReport, ToleranceError } from '../models/record/compare.ts';
import { decodeRecorded, encodeRecorded, type Sample } from '../runtime/recorded.ts';
import type { TensorData } from '../runtime/tensor.ts';

const f32 = (...v: number[]): TensorData => ({ dtype: 'float32', dims: [1, v.length], data: Float32Array.from(v) });
const out = (t: TensorData, label?: number): Sample => ({ outputs: { logits: t }, ...(label === undefined ? {} : { label }) });
/** A copy whose every element is deep-copied, so tests can change one side. */
const clone = (s: Sample[]): Sample[] => s.map((x) => ({ ...x, outputs: Object.fromEntries(Object.entries(x.outputs!).map(([k, t]) => [k, { ...t, dims: [...t.dims], data: t.data.slice() }])) }));

const golden: Sample[] = [out(f32(0.1, 0.9, -2), 1), out(f32(3, 0.25, 1e-8), 0), out(f32(0, 1, 2), 2)];

test('identical outputs: every element bit-identical, PASS at atol = rtol = 0', () => {
  const r = compareOutputs(clone(golden), golden);
  assert.equal(r.pass, true);
  assert.deepEqual(r.outputs.map((o) => [o.name, o.samples, o.perSample, o.elements, o.bitIdentical, o.maxAbsErr, o.maxRelErr]), [['logits', 3, 3, 9, 9, 0, 0]]);
  assert.equal(r.failed, 0);
  assert.equal(r.firstFailure, undefined);
  assert.deepEqual(r.mismatches, []);
  assert.deepEqual(r.accuracy, { got: 1, want: 1 });
  const text = formatCompareReport(r);
  assert.match(text, /^logits: 3 samples × 3 = 9 elements, 9 bit-identical, max abs err 0, max rel err 0$/m);
  assert.match(text, /PASS \(atol 0, rtol 0\)$/);
});

test('tolerance: |got-want| <= atol + rtol*|want| passes, the first element outside it is named', () => {
  const got = clone(golden);
  (got[1].outputs!.logits.data as Float32Array)[0] = 3.003; // abs 3e-3, rel 1e-3
  (got[2].outputs!.logits.data as Float32Array)[2] = 2.1; // abs 0.1, rel 0.05
  const exact = compareOutputs(got, golden);
  assert.equal(exact.pass, false);
  assert.equal(exact.failed, 2);
  assert.deepEqual({ ...exact.firstFailure, absErr: undefined, allowed: undefined }, { sample: 1, output: 'logits', index: 0, got: Math.fround(3.003), want: 3, absErr: undefined, allowed: undefined });
  assert.equal(exact.outputs[0].bitIdentical, 7);
  assert.ok(Math.abs(exact.outputs[0].maxAbsErr - 0.1) < 1e-6);
  assert.ok(Math.abs(exact.outputs[0].maxRelErr - 0.05) < 1e-6);
  assert.match(formatCompareReport(exact), /^FAIL: sample 1 logits\[0\] = 3\.003 expected 3 \(abs err 3\.00e-3 > atol\+rtol\*\|want\| = 0\); 2 element\(s\) outside tolerance/m);

  // rtol 0.01 covers the first (3e-3 <= 0.03) but not the second (0.1 > 0.02): the failure moves on.
  const rel = compareOutputs(got, golden, { rtol: 0.01 });
  assert.equal(rel.failed, 1);
  assert.deepEqual([rel.firstFailure!.sample, rel.firstFailure!.index], [2, 2]);
  assert.ok(Math.abs(rel.firstFailure!.allowed - 0.02) < 1e-9);
  assert.equal(compareOutputs(got, golden, { atol: 0.1 }).pass, true);
  assert.equal(compareOutputs(got, golden, { atol: 0.05, rtol: 0.05 }).pass, true); // 0.1 <= 0.05 + 0.05*2
  assert.throws(() => compareOutputs(got, golden, { atol: -1 }), ToleranceError);
  assert.throws(() => compareOutputs(got, golden, { rtol: NaN }), ToleranceError);
});

test('NaN: same bits are bit-identical, NaN against NaN passes, NaN against a number fails', () => {
  const nan = new Float32Array(new Uint32Array([0x7fc00000]).buffer)[0];
  const otherNan = new Float32Array(new Uint32Array([0x7fc00001]).buffer)[0];
  const want = [out(f32(nan, nan, 1))];
  const same = compareOutputs([out(f32(nan, otherNan, 1))], want);
  assert.equal(same.pass, true, 'a NaN where the golden run had one is reproduced, whatever its payload');
  assert.equal(same.outputs[0].bitIdentical, 2, 'the NaN with another payload is not bit-identical');
  const vsNumber = compareOutputs([out(f32(nan, nan, nan))], want, { atol: 1e9 });
  assert.equal(vsNumber.pass, false, 'no tolerance lets a NaN through');
  assert.equal(vsNumber.outputs[0].nan, 1);
  assert.deepEqual([vsNumber.firstFailure!.index, vsNumber.outputs[0].maxAbsErr], [2, 0]);
  assert.match(formatCompareReport(vsNumber), /FAIL: sample 0 logits\[2\] = NaN expected 1 \(NaN against a number\)/);
  const numberVsNan = compareOutputs([out(f32(nan, nan, 1))], [out(f32(nan, 5, 1))], { atol: 1e9 });
  assert.deepEqual([numberVsNan.pass, numberVsNan.firstFailure!.index], [false, 1]);
  const inf = compareOutputs([out(f32(Infinity, 1e30, -Infinity))], [out(f32(Infinity, Infinity, Infinity))], { rtol: 1 });
  assert.equal(inf.failed, 2, 'an infinity matches only the same infinity, even with rtol');
  const json = compareReportJson(inf) as { outputs: { maxAbsErr: unknown; maxRelErr: unknown }[] };
  assert.deepEqual([json.outputs[0].maxAbsErr, json.outputs[0].maxRelErr], ['Infinity', 'Infinity'], 'JSON cannot hold Infinity: it is spelled out');
  assert.doesNotThrow(() => JSON.parse(JSON.stringify(json)));
});

test('-0 against +0: equal numbers (passes), different bits (not bit-identical); relative error when want is 0', () => {
  const r = compareOutputs([out(f32(-0, 0, 0))], [out(f32(0, 0, -0))]);
  assert.equal(r.pass, true);
  assert.equal(r.outputs[0].bitIdentical, 1);
  assert.equal(r.outputs[0].maxRelErr, 0);
  const zero = compareOutputs([out(f32(1e-3, 0))], [out(f32(0, 0))], { atol: 1e-2 });
  assert.equal(zero.pass, true);
  assert.equal(zero.outputs[0].maxRelErr, Infinity, '|a-b|/|b| with b = 0 and a != 0');
  const failed = compareOutputs([out(f32(-0))], [out(f32(1))]);
  assert.match(formatCompareReport(failed), /logits\[0\] = -0 expected 1/);
  assert.equal((compareReportJson(failed) as { firstFailure: { got: unknown } }).firstFailure.got, '-0');
});

test('integers, int64 included, compare exactly and under tolerance', () => {
  const i64 = (...v: bigint[]): Sample => ({ outputs: { ids: { dtype: 'int64', dims: [v.length], data: BigInt64Array.from(v) } } });
  assert.equal(compareOutputs([i64(1n, 2n, 9007199254740993n)], [i64(1n, 2n, 9007199254740993n)]).outputs[0].bitIdentical, 3);
  const r = compareOutputs([i64(1n, 5n)], [i64(1n, 3n)]);
  assert.deepEqual([r.pass, r.firstFailure!.index, r.firstFailure!.absErr, r.firstFailure!.got], [false, 1, 2, 5n]);
  assert.equal(compareOutputs([i64(1n, 5n)], [i64(1n, 3n)], { atol: 2 }).pass, true);
  assert.equal((compareReportJson(r) as { firstFailure: { got: unknown } }).firstFailure.got, '5');
});

test('structure: sample count, missing and extra outputs, dtype and dims are mismatches with expected vs found', () => {
  const fewer = compareOutputs(clone(golden).slice(0, 2), golden);
  assert.equal(fewer.pass, false);
  assert.deepEqual(fewer.mismatches.map((m) => [m.kind, m.expected, m.found]), [['sample-count', '3 sample(s)', '2 sample(s)']]);
  assert.equal(fewer.outputs[0].samples, 2, 'the samples both sides have are still compared');
  assert.match(formatCompareReport(fewer), /FAIL: sample count: expected 3 sample\(s\), found 2 sample\(s\)/);

  const renamed = clone(golden).map((s) => ({ outputs: { scores: s.outputs!.logits } }));
  const names = compareOutputs(renamed, golden);
  assert.deepEqual(names.mismatches.map((m) => [m.kind, m.output, m.sample, m.count]), [['extra-output', 'scores', 0, 3], ['missing-output', 'logits', 0, 3]]);
  assert.match(formatCompareReport(names), /mismatch: output "logits" missing \(sample 0 and 2 more\): expected output "logits", found outputs \[scores\]/);

  const wide = clone(golden);
  wide[1].outputs!.logits = { dtype: 'float32', dims: [1, 4], data: new Float32Array(4) };
  const dims = compareOutputs(wide, golden);
  assert.deepEqual(dims.mismatches.map((m) => [m.kind, m.sample, m.expected, m.found]), [['dims', 1, '[1,3]', '[1,4]']]);
  assert.equal(dims.outputs[0].elements, 6);
  const reshaped = clone(golden);
  reshaped[0].outputs!.logits.dims = [3];
  assert.deepEqual(compareOutputs(reshaped, golden).mismatches.map((m) => m.kind), ['dims'], 'same element count, other dims');

  const f64 = clone(golden);
  f64[2].outputs!.logits = { dtype: 'float64', dims: [1, 3], data: Float64Array.from([0, 1, 2]) };
  const dtype = compareOutputs(f64, golden);
  assert.deepEqual(dtype.mismatches.map((m) => [m.kind, m.sample, m.expected, m.found]), [['dtype', 2, 'float32', 'float64']]);
  assert.doesNotThrow(() => compareOutputs([{ inputs: {} }], golden.slice(0, 1)));
  assert.deepEqual(compareOutputs([{ inputs: {} }], golden.slice(0, 1)).mismatches.map((m) => m.kind), ['no-outputs']);
});

// ---- the CLI: keylock run --expect ----

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'keylock-compare-'));
const p = (f: string): string => join(dir, f);
const { kl, ok } = cli(dir);

test('CLI: run --out writes golden outputs, --expect passes on a rerun and fails (exit 4) on a perturbed golden', () => {
  const digits = decodeRecorded(readFileSync(join(root, 'test/fixtures/mnist-test.cbor')));
  writeFileSync(p('digits.cbor'), encodeRecorded(digits.slice(0, 5)));
  ok('keygen', '--out', p('vendor'));
  ok('lock', join(root, 'models/reference/mnist-mlp.onnx'), '--scheme', 'sealed', '--vendor', p('vendor.key'), '--out', p('mlp.klm'), '--key-out', p('mlp.key'));
  const run = ['run', p('mlp.klm'), '--model-key', p('mlp.key'), '--inputs', p('digits.cbor')];
  ok(...run, '--out', p('golden.cbor'));

  const pass = kl(...run, '--expect', p('golden.cbor'));
  assert.equal(pass.code, 0, pass.err);
  assert.match(pass.out, /^logits: 5 samples × 10 = 50 elements, 50 bit-identical, max abs err 0, max rel err 0$/m);
  assert.match(pass.out, /^accuracy: [\d.]+% \(expected outputs: [\d.]+%\)$/m);
  assert.match(pass.out, /PASS \(atol 0, rtol 0\)\n$/);

  const golden = decodeRecorded(readFileSync(p('golden.cbor')), 'outputs');
  const bent = clone(golden);
  const logits = bent[3].outputs!.logits.data as Float32Array;
  const was = logits[7];
  logits[7] = was + 0.5;
  writeFileSync(p('bent.cbor'), encodeRecorded(bent, 'outputs'));
  const fail = kl(...run, '--expect', p('bent.cbor'), '--out', p('again.cbor'));
  assert.equal(fail.code, 4, fail.err);
  assert.match(fail.out, /^logits: 5 samples × 10 = 50 elements, 49 bit-identical, max abs err 5\.00e-1/m);
  assert.match(fail.out, /^FAIL: sample 3 logits\[7\] = \S+ expected \S+ \(abs err 5\.00e-1 > atol\+rtol\*\|want\| = 0\)/m);
  assert.deepEqual(decodeRecorded(readFileSync(p('again.cbor')), 'outputs').map((s) => s.outputs!.logits.data), golden.map((s) => s.outputs!.logits.data), '--out is written even when the comparison fails');

  const loose = kl(...run, '--expect', p('bent.cbor'), '--atol', '0.6');
  assert.equal(loose.code, 0, loose.out + loose.err);
  assert.match(loose.out, /PASS \(atol 0\.6, rtol 0\)/);

  const json = kl(...run, '--expect', p('bent.cbor'), '--json');
  assert.equal(json.code, 4);
  const j = JSON.parse(json.out) as { pass: boolean; firstFailure: { sample: number; output: string; index: number }; outputs: { bitIdentical: number }[]; run: { samples: number; mode: string; autoRunMs: number | null } };
  assert.equal(j.pass, false);
  assert.deepEqual([j.firstFailure.sample, j.firstFailure.output, j.firstFailure.index], [3, 'logits', 7]);
  assert.equal(j.outputs[0].bitIdentical, 49);
  assert.equal(j.run.samples, 5);
  // The CLI loads with the Node default (worker: 'auto'): the thread follows from the run time it measured.
  assert.equal(typeof j.run.autoRunMs, 'number');
  assert.equal(j.run.mode, j.run.autoRunMs! <= 0.1 ? 'in-thread' : 'worker');

  const fewer = kl(...run, '--expect', p('fewer.cbor'));
  assert.equal(fewer.code, 1, 'a missing golden file is an error, not a mismatch');
  writeFileSync(p('fewer.cbor'), encodeRecorded(golden.slice(0, 4), 'outputs'));
  const count = kl(...run, '--expect', p('fewer.cbor'));
  assert.equal(count.code, 4);
  assert.match(count.out, /FAIL: sample count: expected 4 sample\(s\), found 5 sample\(s\)/);
  const notOutputs = kl(...run, '--expect', p('digits.cbor'));
  assert.equal(notOutputs.code, 1);
  assert.match(notOutputs.err, /keylock: hint: --expect takes an outputs file/);
});
