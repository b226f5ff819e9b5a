/**
 * `npm run eval -- --quick --only lm,lm-advparams,partial-inline-lm`: the language-model sections' invariants on a tiny model (every
 * lock bit-identical with the key on ONNX and TFLite, wrong keys stopped, the copy worse without the
 * key, shuffle refused with a typed error; advparams on the next-character head exact with the key; partial
 * inline sealing: nothing inline leaks the model, everything inline is no better than scratch), and
 * docs/ left alone.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { root } from './helpers.ts';

interface Report { failures: string[]; sections: { id: string; markdown: string; checks?: { name: string; ok: boolean; detail: string }[] }[] }

test('npm run eval -- --quick --only lm,lm-advparams,partial-inline-lm passes its invariants', { timeout: 240_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-eval-lm-'));
  const results = readFileSync(join(root, 'docs/RESULTS.md'), 'utf8');
  try {
    const out = join(dir, 'report.json');
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', 'eval/run.ts', '--quick', '--only', 'lm,lm-advparams,partial-inline-lm', '--cache', join(dir, 'cache'), '--out', out],
        { cwd: root, maxBuffer: 16 << 20, timeout: 230_000 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }));
    });
    assert.equal(code, 0, `expected exit 0, got ${code}\n${stdout}\n${stderr.slice(-3000)}`);
    const report = JSON.parse(readFileSync(out, 'utf8')) as Report;
    assert.deepEqual(report.failures, []);
    const lm = report.sections.find((s) => s.id === 'lm');
    assert.ok(lm, 'the lm section ran');
    const names = (lm.checks ?? []).map((c) => c.name);
    for (const f of ['onnx', 'tflite']) {
      for (const lock of ['sealed', 'deeplock', 'signflip (fold)']) {
        assert.ok(names.includes(`lm ${f} ${lock}: with the key, logits bit-identical to the plain file`), `${f} ${lock} bit-identical check`);
        assert.ok(names.includes(`lm ${f} ${lock}: wrong key stopped`), `${f} ${lock} wrong-key check`);
      }
      assert.ok(names.includes(`lm ${f}: shuffle refuses token inputs with a typed error`));
    }
    assert.ok((lm.checks ?? []).every((c) => c.ok));
    assert.match(lm.markdown, /## Transformer language model/);
    const adv = report.sections.find((s) => s.id === 'lm-advparams');
    assert.ok(adv, 'the lm-advparams section ran');
    assert.ok((adv.checks ?? []).some((c) => c.name === 'lm advparams (next-character head): with the key, logits bit-identical to the plain file'));
    assert.ok((adv.checks ?? []).every((c) => c.ok));
    const pi = report.sections.find((s) => s.id === 'partial-inline-lm');
    assert.ok(pi, 'the partial-inline-lm section ran');
    const piNames = (pi.checks ?? []).map((c) => c.name);
    assert.ok(piNames.includes('partial-inline-lm 1% none inline: clearly better than scratch'), 'none-inline check');
    assert.ok(piNames.includes('partial-inline-lm 1% all inline: no better than scratch beyond 0.03 bits/char'), 'all-inline check');
    assert.ok((pi.checks ?? []).every((c) => c.ok));
    assert.match(pi.markdown, /\| none \(all at load\) \| 0 \| 0\.0% \|/);
    assert.equal(readFileSync(join(root, 'docs/RESULTS.md'), 'utf8'), results, 'quick mode must not write docs/RESULTS.md');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
