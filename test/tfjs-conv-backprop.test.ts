/**
 * The wasm Conv2DBackpropFilter kernel against tfjs's cpu backend, which has
 * its own reference implementation: filter gradients of small random convs
 * must agree for stride 1 and 2, valid and same padding, odd and even sizes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initTfjsWasm } from '../models/tfjs/setup.ts';

interface Case { n: number; h: number; w: number; k: number; ci: number; co: number; stride: number; pad: 'valid' | 'same' }

const CASES: Case[] = [];
for (const stride of [1, 2]) {
  for (const pad of ['valid', 'same'] as const) {
    CASES.push({ n: 2, h: 7, w: 7, k: 3, ci: 2, co: 3, stride, pad });
    CASES.push({ n: 3, h: 8, w: 9, k: 3, ci: 3, co: 4, stride, pad });
    CASES.push({ n: 2, h: 6, w: 6, k: 2, ci: 1, co: 2, stride, pad });
  }
}
// The shapes the reference CNN trains with.
CASES.push({ n: 16, h: 28, w: 28, k: 3, ci: 1, co: 8, stride: 1, pad: 'valid' });
CASES.push({ n: 16, h: 13, w: 13, k: 3, ci: 8, co: 16, stride: 1, pad: 'valid' });

/** Filter gradient of sum(conv2d(x, w) · dy) with respect to w, on the current backend. */
async function filterGrad(x: Float32Array, w: Float32Array, dy: Float32Array, c: Case, dyShape: number[]): Promise<Float32Array> {
  const g = tf.tidy(() => {
    const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.ci]);
    const dyt = tf.tensor(dy, dyShape);
    const f = (wt: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(xt, wt as tf.Tensor4D, c.stride, c.pad), dyt));
    return tf.grad(f)(tf.tensor4d(w, [c.k, c.k, c.ci, c.co]));
  });
  const data = await g.data() as Float32Array;
  g.dispose();
  return data;
}

function seeded(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return a;
}

test('wasm Conv2DBackpropFilter matches the cpu backend', async () => {
  await initTfjsWasm();
  assert.equal(tf.getBackend(), 'wasm');
  assert.ok(tf.getKernel('Conv2DBackpropFilter', 'wasm'), 'kernel registered for wasm');
  let worst = 0;
  for (const [i, c] of CASES.entries()) {
    const x = seeded(c.n * c.h * c.w * c.ci, 1 + i);
    const w = seeded(c.k * c.k * c.ci * c.co, 100 + i);
    const outShape = tf.tidy(() => tf.conv2d(tf.zeros([c.n, c.h, c.w, c.ci]) as tf.Tensor4D, tf.zeros([c.k, c.k, c.ci, c.co]) as tf.Tensor4D, c.stride, c.pad).shape);
    const dy = seeded(outShape.reduce((a, b) => a * b, 1), 200 + i);

    await tf.setBackend('wasm');
    // Backend buffers, not just tensors: the kernel's intermediates live only in the backend.
    const before = tf.engine().backend.numDataIds();
    const got = await filterGrad(x, w, dy, c, outShape);
    assert.equal(tf.engine().backend.numDataIds(), before, 'no wasm buffers leaked');
    await tf.setBackend('cpu');
    const want = await filterGrad(x, w, dy, c, outShape);

    assert.equal(got.length, want.length);
    let maxDiff = 0;
    let scale = 1;
    for (let j = 0; j < want.length; j++) {
      maxDiff = Math.max(maxDiff, Math.abs(got[j] - want[j]));
      scale = Math.max(scale, Math.abs(want[j]));
    }
    worst = Math.max(worst, maxDiff / scale);
    assert.ok(maxDiff <= 1e-5 * scale, `case ${JSON.stringify(c)}: max |wasm − cpu| = ${maxDiff}, gradient scale ${scale}`);
  }
  await tf.setBackend('wasm');
  console.log(`${CASES.length} cases, worst max|diff|/scale = ${worst.toExponential(2)}`);
});

test('initTfjsWasm is idempotent', async () => {
  const [a, b] = await Promise.all([initTfjsWasm(), initTfjsWasm()]);
  assert.equal(a, b);
  assert.equal((await initTfjsWasm()).getBackend(), 'wasm');
});
