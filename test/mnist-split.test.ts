/**
 * The fixed MNIST split that models, fixtures and evaluations share: it must
 * cover all 10,000 digits exactly once and never drift (pinned values below
 * were recorded when the reference models were trained).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadMnist, PIXELS, splitPermutation, TEST_SIZE, TRAIN_SIZE } from '../models/train/mnist.ts';

test('split permutation covers every digit once and is pinned', () => {
  const p = splitPermutation();
  assert.equal(p.length, TRAIN_SIZE + TEST_SIZE);
  assert.equal(new Set(p).size, p.length);
  assert.deepEqual(Array.from(p.subarray(0, 8)), [6046, 4820, 37, 2124, 4696, 5332, 8807, 5627]);
  assert.deepEqual(Array.from(p.subarray(TRAIN_SIZE, TRAIN_SIZE + 8)), [7503, 746, 6387, 6730, 1509, 6972, 3128, 6443]);
  assert.deepEqual(splitPermutation(), p, 'deterministic');
});

test('loadMnist gives 8,000 train and 2,000 test digits in [0,1]', () => {
  const { train, test: t } = loadMnist();
  assert.equal(train.n, TRAIN_SIZE);
  assert.equal(t.n, TEST_SIZE);
  assert.equal(train.x.length, TRAIN_SIZE * PIXELS);
  assert.equal(t.x.length, TEST_SIZE * PIXELS);
  const counts = new Array<number>(10).fill(0);
  for (const v of t.y) counts[v]++;
  assert.deepEqual(counts, [192, 228, 184, 236, 197, 167, 204, 220, 169, 203]);
  let sum = 0;
  for (const v of t.x) {
    assert.ok(v >= 0 && v <= 1);
    sum += v;
  }
  assert.ok(Math.abs(sum - 204890.4303) < 0.01, `test pixel sum: expected 204890.43, got ${sum}`);
  assert.equal(loadMnist(), loadMnist(), 'cached per process');
});
