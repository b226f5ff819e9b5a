import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeRecorded, encodeRecorded, type Sample } from '../runtime/recorded.ts';
import { FormatError, SizeLimitError } from '../keystore/errors.ts';
import { encodeCbor } from '../keystore/cbor.ts';

const samples: Sample[] = [
  { inputs: { input: { dtype: 'float32', dims: [1, 3], data: new Float32Array([0.5, -1, 3.25]) } }, label: 7 },
  { inputs: { ids: { dtype: 'int64', dims: [2], data: new BigInt64Array([1n, -(2n ** 40n)]) }, mask: { dtype: 'uint8', dims: [2], data: new Uint8Array([1, 0]) } } },
];

test('recorded inputs round-trip every dtype, dims and label', () => {
  const back = decodeRecorded(encodeRecorded(samples));
  assert.equal(back.length, 2);
  assert.deepEqual(back[0].inputs!.input, samples[0].inputs!.input);
  assert.equal(back[0].label, 7);
  assert.deepEqual(back[1].inputs!.ids.data, samples[1].inputs!.ids.data);
  assert.equal(back[1].label, undefined);
});

test('outputs files use the outputs key', () => {
  const b = encodeRecorded([{ outputs: { logits: { dtype: 'float32', dims: [1], data: new Float32Array([2]) } } }], 'outputs');
  assert.deepEqual(decodeRecorded(b, 'outputs')[0].outputs!.logits.data, new Float32Array([2]));
  assert.throws(() => decodeRecorded(b, 'inputs'), /sample\[0\]\.inputs: expected a map/);
});

test('bad recorded files get typed errors that say what was expected', () => {
  const good = encodeRecorded(samples);
  assert.throws(() => decodeRecorded(good.subarray(0, good.length - 5)), FormatError);
  assert.throws(() => decodeRecorded(new Uint8Array([...good, 0])), /trailing bytes/);
  assert.throws(() => decodeRecorded(new Uint8Array()), /empty file/);
  assert.throws(() => decodeRecorded(encodeCbor({ not: 'an array' })), /expected an array of samples/);
  const wrongLen = encodeCbor([{ inputs: { x: { dtype: 'float32', dims: [4], data: new Uint8Array(12) } } }]);
  assert.throws(() => decodeRecorded(wrongLen), /dims \[4\] of float32 need 16 bytes, got 12/);
  const badType = encodeCbor([{ inputs: { x: { dtype: 'complex', dims: [1], data: new Uint8Array(8) } } }]);
  assert.throws(() => decodeRecorded(badType), /expected a dtype name/);
  const negDim = encodeCbor([{ inputs: { x: { dtype: 'float32', dims: [-1], data: new Uint8Array(0) } } }]);
  assert.throws(() => decodeRecorded(negDim), /dims\[0\]: expected a non-negative integer/);
  // 200,000 nested one-element arrays: must fail as a format error, not blow the stack.
  const deep = new Uint8Array(200001).fill(0x81);
  deep[200000] = 0x01;
  assert.throws(() => decodeRecorded(deep), FormatError);
});

test('decodeCbor refuses input over its size limit', async () => {
  const { decodeCbor } = await import('../keystore/cbor.ts');
  assert.throws(() => decodeCbor(new Uint8Array(11), 'thing', 10), SizeLimitError);
});
