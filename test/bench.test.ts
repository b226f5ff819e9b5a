/**
 * The benchmark harness works: a tiny run (eval/bench/run.ts --quick) spawns
 * its child processes, computes every ratio and writes BENCH.md and
 * bench.json. Nothing here asserts a timing: the machine is shared.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bench } from '../eval/bench/run.ts';
import { interleave, quantile, summarize } from '../eval/bench/stats.ts';

test('interleave alternates the order each round and divides per round', async () => {
  const calls: string[] = [];
  const r = await interleave(async () => { calls.push('a'); }, async () => { calls.push('b'); }, 4, 2);
  assert.deepEqual(calls.join(''), 'aabb' + 'bbaa' + 'aabb' + 'bbaa');
  assert.equal(r.ratios.length, 4);
  r.ratios.forEach((x, i) => assert.equal(x, r.b[i] / r.a[i]));
  assert.equal(quantile([4, 1, 3, 2], 0.5), 2.5);
  assert.deepEqual(summarize([1, 2, 3, 4, 5]), { median: 3, p25: 2, p75: 4, min: 1, max: 5, n: 5 });
});

test('a quick bench run computes every ratio and writes BENCH.md and bench.json', { timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'keylock-bench-test-'));
  const lines: string[] = [];
  const r = await bench({ quick: true, out, progress: (s) => lines.push(s) });
  assert.ok(lines.some((l) => l.startsWith('[7/7]')), 'progress is printed');
  const finite = (x: number): boolean => Number.isFinite(x) && x > 0;

  const lat = r.latency[0];
  assert.equal(lat.rows.length, 2);
  for (const row of lat.rows) {
    assert.ok(finite(row.ratio.median) && finite(row.plainMs.median) && finite(row.lockedMs.median), row.case);
    assert.equal(row.ratio.n, 3, 'one ratio per round');
    assert.ok(row.ratio.p25 <= row.ratio.median && row.ratio.median <= row.ratio.p75);
  }
  const cold = r.cold[0].rows[0];
  assert.ok(finite(cold.keyRatio.median) && finite(cold.keystoreRatio.median));
  assert.ok(finite(cold.besideRatio!.median) && finite(cold.besideOverKey!.median), 'the digest-beside load is measured in the same rounds');
  for (const p of ['open', 'digest', 'key', 'restore', 'create', 'first run', 'plain create', 'keystore: keystore open', 'beside: restore', 'beside: digest']) {
    assert.ok(cold.phases[p] !== undefined && cold.phases[p] >= 0, `phase ${p}`);
  }
  assert.ok(finite(r.throughput!.sealed.median) && finite(r.throughput!.sealedSpeedup.median) && finite(r.throughput!.deeplock.median));
  assert.deepEqual(r.memory.map((m) => m.variant).sort(), ['locked', 'plain']);
  for (const m of r.memory) assert.ok(m.base > 0 && finite(m.afterLoad) && finite(m.afterRuns) && m.fileBytes > 0, `memory row ${m.variant} ${m.case}`);
  for (const a of r.alloc!.rows) assert.equal(a.heapUsed.length, 4, 'heap sampled at 0, 100, 200, 300 runs');
  assert.equal(r.bundles[0].target, 'node');
  assert.equal(r.bundles[0].nativeInside, false);
  assert.deepEqual(r.bundles[0].files, ['keylock-worker.mjs', 'keylock.mjs'], 'the bundle is its main file and its worker script; the TFLite library is counted apart');
  assert.ok(r.bundles[0].tflite!.bytes > r.bundles[0].js.bytes, 'the TFLite files (library and wasm) are counted');

  const md = readFileSync(join(out, 'BENCH.md'), 'utf8');
  const json = JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8'));
  assert.equal(json.latency[0].rows[0].ratio.median, lat.rows[0].ratio.median);
  assert.match(md, /## Goals at a glance/);
  assert.match(md, /\| mnist-cnn \| signflip \(input\) \|.*\| ≤ 1\.02× \| \*\*(pass|miss)\*\* \|/);
  assert.match(md, /sealed decryption in JS ≥ 400 MB\/s/);
});
