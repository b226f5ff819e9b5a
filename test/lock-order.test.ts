/**
 * The manifest lists locks in the order the pipeline applied them, whatever
 * order was asked for: the runtime undoes them in reverse, so a byte-stage
 * lock asked for before a graph-stage one (deeplock+signflip) must still be
 * undone after it. Before this was fixed, "deeplock+signflip" (fold) loaded
 * and computed garbage and "sealed+advparams" failed its MAC with the right key.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sha256 } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import { mulberry32 } from '../models/prng.ts';
import { openKlm } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';

test('lockOnnx: byte-stage locks asked for first are listed (and undone) in the order applied', async () => {
  const onnx = new Uint8Array(readFileSync(fileURLToPath(new URL('../models/reference/mnist-mlp.onnx', import.meta.url))));
  const r = mulberry32(1);
  const x = { input: { dtype: 'float32' as const, dims: [1, 1, 28, 28], data: Float32Array.from({ length: 784 }, () => r()) } };
  const plain = await createOrtSession(onnx);
  const want = (await plain.run(x)).logits.data as Float32Array;
  await plain.release();
  const res = await lockOnnx(onnx, { schemes: ['deeplock', 'signflip'], signflipMode: 'fold', vendorSeed: sha256(new TextEncoder().encode('order')) });
  assert.deepEqual(openKlm(res.klm).manifest.locks.map((l) => l.scheme), ['signflip', 'deeplock']);
  assert.ok(res.report.some((l) => /^order: applied signflip\+deeplock/.test(l)));
  const m = await loadModel(res.klm, { modelKey: res.modelKey });
  assert.equal(m.state, 'ready', m.error?.message);
  const got = (await m.run(x)).logits.data as Float32Array;
  assert.deepEqual(Array.from(got), Array.from(want));
  await m.release();
});
