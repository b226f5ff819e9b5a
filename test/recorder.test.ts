// The device-side recorder (LoadOptions.record): live runs appended to a bounded recorded file that
// replays offline, key tensors never in it, a full disk or an existing file never stopping inference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lockOnnx } from '../models/lock/index.ts';
import { loadModel } from '../runtime/load.ts';
import { decodeRecorded } from '../runtime/recorded.ts';
import { memoryRecordSink, type RecordSink } from '../runtime/recorder.ts';
import { recordToFile } from '../targets/node/record.ts';

const MLP = new Uint8Array(readFileSync(new URL('../models/reference/mnist-mlp.onnx', import.meta.url)));
const digits = decodeRecorded(readFileSync(new URL('./fixtures/mnist-test.cbor', import.meta.url))).slice(0, 12);
const dir = mkdtempSync(join(tmpdir(), 'keylock-recorder-'));
// signflip in input mode feeds key tensors beside the user's input on every run: the recorder must never see them.
const locked = await lockOnnx(MLP, { schemes: ['signflip', 'sealed'], signflipMode: 'input', vendorSeed: new Uint8Array(32).fill(5), modelId: 'rec' });

test('a session recorded to a file replays offline: same inputs, same outputs, no key tensor', async () => {
  const path = join(dir, 'session.cbor');
  const m = await loadModel(locked.klm, { modelKey: locked.modelKey, record: recordToFile(path, { maxBytes: 1 << 20 }) });
  assert.equal(m.state, 'ready');
  assert.equal(existsSync(path), true, 'the file is made once the model is ready');
  const outs = [];
  for (const d of digits) {
    const input = { ...d.inputs!.input, data: new Float32Array(d.inputs!.input.data as Float32Array) };
    outs.push(await m.run({ input }));
    input.data.fill(0); // a caller reusing its buffer after run() does not change what was recorded
  }
  assert.deepEqual(m.stats.recorded, { samples: 12, bytes: statSync(path).size, dropped: 0 });
  // Readable after every run, before release: the count is rewritten in place.
  assert.equal(decodeRecorded(readFileSync(path)).length, 12);
  await m.release();

  const bytes = new Uint8Array(readFileSync(path));
  const ins = decodeRecorded(bytes, 'inputs');
  const recOuts = decodeRecorded(bytes, 'outputs');
  assert.equal(ins.length, 12);
  for (let i = 0; i < 12; i++) {
    assert.deepEqual(Object.keys(ins[i].inputs!), ['input'], 'only the declared input, never a key tensor');
    assert.deepEqual(ins[i].inputs!.input.data, digits[i].inputs!.input.data);
    assert.deepEqual(recOuts[i].outputs!.logits.data, outs[i].logits.data);
  }
  // Replay: the recorded inputs through a fresh load give the recorded outputs, bit for bit.
  const again = await loadModel(locked.klm, { modelKey: locked.modelKey });
  for (let i = 0; i < 12; i++) assert.deepEqual((await again.run(ins[i].inputs!)).logits.data, recOuts[i].outputs!.logits.data);
  await again.release();
});

test('the cap holds: runs that would pass maxBytes are counted as dropped, the file stays whole', async () => {
  const sink = memoryRecordSink();
  const one = 3300; // one MLP sample (784 + 10 float32 and the CBOR around them) is about 3.2 kB
  const m = await loadModel(locked.klm, { modelKey: locked.modelKey, record: { sink, maxBytes: 9 + 3 * one } });
  for (const d of digits) await m.run(d.inputs!);
  const st = m.stats.recorded!;
  assert.equal(st.samples, 3);
  assert.equal(st.dropped, 9);
  assert.ok(st.bytes <= 9 + 3 * one);
  await m.release();
  assert.equal(decodeRecorded(sink.bytes()).length, 3);
  assert.equal(sink.bytes().byteLength, st.bytes);
});

test('inputs only with outputs: false', async () => {
  const sink = memoryRecordSink();
  const m = await loadModel(locked.klm, { modelKey: locked.modelKey, record: { sink, maxBytes: 1 << 20, outputs: false } });
  await m.run(digits[0].inputs!);
  await m.release();
  assert.equal(decodeRecorded(sink.bytes()).length, 1);
  assert.throws(() => decodeRecorded(sink.bytes(), 'outputs'), /outputs/);
});

test('a failing sink stops recording, never inference; an existing file is never overwritten', async () => {
  const path = join(dir, 'exists.cbor');
  writeFileSync(path, 'keep me');
  const m = await loadModel(locked.klm, { modelKey: locked.modelKey, record: recordToFile(path, { maxBytes: 1 << 20 }) });
  assert.equal(m.state, 'ready');
  const out = await m.run(digits[0].inputs!);
  assert.equal(out.logits.data.length, 10);
  assert.match(m.stats.recorded!.error!, /EEXIST/);
  await m.release();
  assert.equal(readFileSync(path, 'utf8'), 'keep me');

  // A disk that fills after two samples: the file is cut back to the two whole ones.
  const mem = memoryRecordSink();
  let writes = 0;
  const full: RecordSink = {
    write(o, b) {
      if (++writes > 5) { mem.write(o, b.subarray(0, 100)); throw new Error('ENOSPC: no space left on device'); }
      mem.write(o, b);
    },
    truncate: (n) => mem.truncate!(n),
    close: () => mem.close(),
  };
  const f = await loadModel(locked.klm, { modelKey: locked.modelKey, record: { sink: full, maxBytes: 1 << 20 } });
  for (const d of digits.slice(0, 4)) await f.run(d.inputs!);
  assert.equal(f.stats.runs, 4);
  assert.equal(f.stats.recorded!.samples, 2);
  assert.match(f.stats.recorded!.error!, /ENOSPC/);
  await f.release();
  assert.equal(decodeRecorded(mem.bytes()).length, 2);
});

test('a model that does not load records nothing and makes no file; bad options throw before loading', async () => {
  const path = join(dir, 'wrong-key.cbor');
  const m = await loadModel(locked.klm, { modelKey: new Uint8Array(32), record: recordToFile(path, { maxBytes: 1 << 20 }) });
  assert.equal(m.state, 'halted');
  assert.equal(existsSync(path), false);
  await assert.rejects(loadModel(locked.klm, { modelKey: locked.modelKey, record: { sink: memoryRecordSink(), maxBytes: 4 } }), /maxBytes must be an integer of at least 9/);
});
