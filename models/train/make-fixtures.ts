/**
 * Writes test/fixtures/mnist-test.cbor: the 2,000 held-out digits of the fixed
 * split (models/train/mnist.ts) as recorded inputs, one digit per sample,
 * input `input` float32 [1,1,28,28] in [0,1], with its label.
 *
 *   node --import tsx models/train/make-fixtures.ts
 */
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../../keystore/atomic.ts';
import { encodeRecorded, type Sample } from '../../runtime/recorded.ts';
import { loadMnist, PIXELS, type MnistSet } from './mnist.ts';

/** Recorded samples for the first `count` digits of a set. */
export function mnistSamples(set: MnistSet, count = set.n): Sample[] {
  const out: Sample[] = [];
  for (let i = 0; i < Math.min(count, set.n); i++) {
    out.push({
      inputs: { input: { dtype: 'float32', dims: [1, 1, 28, 28], data: set.x.slice(i * PIXELS, (i + 1) * PIXELS) } },
      label: set.y[i],
    });
  }
  return out;
}

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/mnist-test.cbor', import.meta.url));

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { test } = loadMnist();
  const bytes = encodeRecorded(mnistSamples(test));
  writeFileAtomic(FIXTURE, bytes);
  console.log(`wrote ${FIXTURE}: ${test.n} digits, ${bytes.byteLength} bytes`);
}
