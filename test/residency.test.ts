// The plaintext-residency measurement (eval/residency.ts, `npm run residency`) on its smallest
// case: a device process with the MNIST CNN loaded, read whole through /proc/PID/mem while idle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { measureResidency } from '../eval/residency.ts';
import { skipWithoutNative } from './helpers.ts';

const skip = skipWithoutNative || (existsSync('/proc/self/mem') ? false : 'no /proc/PID/mem on this platform');

test('residency: the plain model\'s weights are all found in the idle process; sealed inline leaves only the backend\'s per-run copies', { skip, timeout: 120_000 }, async () => {
  const r = await measureResidency({ models: ['mnist-cnn'], backends: ['native'], modes: ['plain', 'inline'] });
  const [plain, inline] = ['plain', 'inline'].map((m) => r.rows.find((x) => x.mode === m)!);
  assert.ok(plain.values > 5000, `the CNN has ${plain.values} distinct float32 weight values`);
  // The scan reads the whole process: every weight value of the plain model is there.
  assert.ok(plain.valuesFound / plain.values > 0.99, `plain: ${plain.valuesFound} of ${plain.values} values found`);
  assert.ok(plain.found > 0, 'plain: some 32-byte windows in the weights\' own layout');
  // Inline: keylock's buffers are zero between runs; what remains is onnxruntime's working copy of the
  // Gemm weight (fc), a fraction of the values.
  assert.ok(inline.valuesFound / inline.values < 0.25, `inline: ${inline.valuesFound} of ${inline.values} values found`);
  assert.ok(inline.tensors.every((t) => t.tensor === 'fc.weight'), `inline windows only in fc.weight: ${JSON.stringify(inline.tensors)}`);
  // wasm: onnxruntime-web's freed copies of the inputs are cleared after each run (runtime/ort-scrub.ts);
  // without that, 653 of the 657 windows were there.
  const w = (await measureResidency({ models: ['mnist-cnn'], backends: ['wasm'], modes: ['inline'] })).rows[0];
  assert.ok(w.found / w.windows < 0.1, `inline on wasm: ${w.found} of ${w.windows} windows found`);
});
