/**
 * The committed reference models, run by onnxruntime-web on the 2,000 test
 * digits of the fixed split: interface as documented, accuracy at or above the
 * project's floors (CNN ≥ 97 %, MLP ≥ 95 %), graphs made of plain opset-13 ops.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { onnxAccuracy, REFERENCE_MODELS } from '../models/train/accuracy.ts';
import { loadMnist, TEST_SIZE } from '../models/train/mnist.ts';
import { decodeModel } from '../models/onnx/index.ts';
import { createOrtSession } from '../runtime/ort.ts';

const FLOORS: Record<string, { accuracy: number; ops: string[] }> = {
  'mnist-mlp.onnx': { accuracy: 0.95, ops: ['Flatten', 'Gemm', 'Relu', 'Gemm'] },
  'mnist-cnn.onnx': { accuracy: 0.97, ops: ['Conv', 'Relu', 'MaxPool', 'Conv', 'Relu', 'MaxPool', 'Flatten', 'Gemm'] },
};

for (const path of REFERENCE_MODELS) {
  const name = basename(path);
  const floor = FLOORS[name];

  test(`${name}: plain opset-13 graph, input [N,1,28,28] → logits [N,10]`, async () => {
    const bytes = new Uint8Array(readFileSync(path));
    const model = decodeModel(bytes);
    assert.deepEqual(model.opset_import.map((o) => [o.domain ?? '', Number(o.version)]), [['', 13]]);
    assert.deepEqual(model.graph.node.map((n) => n.op_type), floor.ops);
    const s = await createOrtSession(bytes);
    try {
      assert.deepEqual(s.inputs, [{ name: 'input', dtype: 'float32', shape: ['N', 1, 28, 28] }]);
      assert.deepEqual(s.outputs, [{ name: 'logits', dtype: 'float32', shape: ['N', 10] }]);
    } finally {
      await s.release();
    }
  });

  test(`${name}: test accuracy ≥ ${floor.accuracy * 100}% (onnxruntime-web)`, async () => {
    const set = loadMnist().test;
    assert.equal(set.n, TEST_SIZE);
    const r = await onnxAccuracy(new Uint8Array(readFileSync(path)), set);
    console.log(`${name}: ${(r.accuracy * 100).toFixed(2)}% (${r.correct}/${r.n}) in ${r.seconds.toFixed(2)} s`);
    assert.ok(r.accuracy >= floor.accuracy, `${name}: expected accuracy ≥ ${floor.accuracy}, got ${r.accuracy}`);
  });
}
