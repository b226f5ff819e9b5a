/**
 * runtime/ort-scrub.ts: onnxruntime-web's heap copies of the inputs are found where ORT wrote
 * them (the `set` wrapper of a watched run) and cleared after each run, without searching the
 * heap; the wrapper exists only while a run is watched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { createOrtSession } from '../runtime/ort.ts';
import { InputScrubber, ortHeap } from '../runtime/ort-scrub.ts';

const MLP = new Uint8Array(readFileSync(new URL('../models/reference/mnist-mlp.onnx', import.meta.url)));

/** Every 4-aligned address of ORT's heap holding bytes [24, n - 8) of `b` (what the scrubber clears). */
function copiesOf(b: Uint8Array): number {
  const h = new Uint8Array(ortHeap()!.buffer);
  const inner = b.subarray(24, b.byteLength - 8);
  const w = new Uint32Array(h.buffer, 0, h.byteLength >>> 2);
  const first = new Uint32Array(inner.slice(0, 4).buffer)[0];
  let n = 0;
  outer: for (let i = 0; i < w.length; i++) {
    if (w[i] !== first) continue;
    for (let j = 0; j < inner.byteLength; j++) if (h[4 * i + j] !== inner[j]) continue outer;
    n++;
  }
  return n;
}

test('the scrubber clears ORT\'s copy of each input where ORT wrote it, with no heap search, and leaves Uint8Array as it was', async () => {
  await createOrtSession(MLP, { threads: 1 }); // catches ORT's heap
  const s = await ort.InferenceSession.create(MLP, { executionProviders: ['wasm'], logSeverityLevel: 3 });
  const name = s.inputNames[0];
  const scrubber = new InputScrubber();
  for (let r = 0; r < 4; r++) {
    // A new input each run (new bytes, new buffer): the copy is found by watching, not by its last address.
    const data = Float32Array.from({ length: 784 }, (_, i) => Math.sin(r * 1000 + i * 0.37));
    const bytes = new Uint8Array(data.buffer);
    let during = -1;
    const out = await scrubber.around([[name, bytes]], async () => {
      const o = await s.run({ [name]: new ort.Tensor('float32', data, [1, 1, 28, 28]) });
      during = copiesOf(bytes);
      return o;
    });
    assert.ok(out[s.outputNames[0]], 'the run returns its outputs');
    assert.equal(during, 1, `run ${r}: ORT's heap holds its copy of the input until the run ends`);
    assert.equal(copiesOf(bytes), 0, `run ${r}: the copy is cleared after the run`);
    assert.equal(Object.hasOwn(Uint8Array.prototype, 'set'), false, 'no wrapper once no run is watched');
  }
  assert.equal(scrubber.counts.atKnown, 4);
  assert.equal(scrubber.counts.searched, 0);
  // A failing run is scrubbed too, and unwatched.
  await assert.rejects(scrubber.around([[name, new Uint8Array(3136).fill(5)]], () => Promise.reject(new Error('run failed'))), /run failed/);
  assert.equal(Object.hasOwn(Uint8Array.prototype, 'set'), false);
  // The wrapper does what the inherited set does.
  const a = new Uint8Array(4);
  a.set([1, 2], 1);
  assert.deepEqual([...a], [0, 1, 2, 0]);
  await s.release();
});

test('with Uint8Array.prototype frozen the run still works and the copy is found by a search and cleared (last: it freezes this process\'s prototype)', async () => {
  await createOrtSession(MLP, { threads: 1 });
  const s = await ort.InferenceSession.create(MLP, { executionProviders: ['wasm'], logSeverityLevel: 3 });
  const name = s.inputNames[0];
  Object.freeze(Uint8Array.prototype);
  const scrubber = new InputScrubber();
  const data = Float32Array.from({ length: 784 }, (_, i) => Math.cos(i * 0.11));
  const bytes = new Uint8Array(data.buffer);
  await scrubber.around([[name, bytes]], () => s.run({ [name]: new ort.Tensor('float32', data, [1, 1, 28, 28]) }));
  assert.equal(scrubber.counts.searched, 1, 'not watched: searched for');
  assert.equal(copiesOf(bytes), 0, 'and cleared');
  await s.release();
});
