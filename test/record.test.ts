// `keylock record` and models/record/: recorded inputs from real MNIST digits (PNG, JPEG), numpy files written by
// numpy itself, WAV files and JSON, shaped by the reference CNN's declared input.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import wavefile from 'wavefile';
import { loadMnist } from '../models/train/mnist.ts';
import { lockModel } from '../models/index.ts';
import { onnxToTflite } from '../models/tflite/export.ts';
import { modelInputs, recordFrom, RecordOptionError, shapeInputs, type InputSpec } from '../models/record/index.ts';
import { loadModel } from '../runtime/load.ts';
import { decodeRecorded, encodeRecorded, type Sample } from '../runtime/recorded.ts';
import { FormatError, InputMismatchError } from '../keystore/errors.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
mkdirSync(join(root, 'tmp'), { recursive: true });
const dir = mkdtempSync(join(root, 'tmp', 'record-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const p = (...f: string[]): string => join(dir, ...f);
const cnnPath = join(root, 'models/reference/mnist-cnn.onnx');
const cnn = new Uint8Array(readFileSync(cnnPath));
const cnnInputs = modelInputs(cnn, cnnPath);

function put(path: string, data: Uint8Array | string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, data);
}

// Three real test digits of each class, as 0..255 pixels (the package stores them as pixel/255 rounded to 3 places).
const PER_CLASS = 3;
const digits: { label: number; pixels: Uint8Array }[] = [];
{
  const t = loadMnist().test;
  const seen = new Array<number>(10).fill(0);
  for (let i = 0; i < t.n && digits.length < 10 * PER_CLASS; i++) {
    const label = t.y[i];
    if (seen[label] >= PER_CLASS) continue;
    seen[label]++;
    digits.push({ label, pixels: Uint8Array.from(t.x.subarray(i * 784, (i + 1) * 784), (v) => Math.round(v * 255)) });
  }
  digits.sort((a, b) => a.label - b.label);
}

function rgba(pixels: Uint8Array, w: number, h: number, scale = 1): Uint8Array {
  const out = new Uint8Array(w * scale * h * scale * 4);
  for (let y = 0; y < h * scale; y++) {
    for (let x = 0; x < w * scale; x++) {
      const v = pixels[Math.floor(y / scale) * w + Math.floor(x / scale)];
      out.set([v, v, v, 255], (y * w * scale + x) * 4);
    }
  }
  return out;
}

function pngOf(pixels: Uint8Array, scale = 1): Uint8Array {
  const png = new PNG({ width: 28 * scale, height: 28 * scale });
  png.data.set(rgba(pixels, 28, 28, scale));
  return PNG.sync.write(png);
}

// digits/<label>/<n>.png and jdigits/<label>/<n>.jpg, n counting within the class.
digits.forEach((d, i) => {
  const n = i % PER_CLASS;
  put(p('digits', String(d.label), `${n}.png`), pngOf(d.pixels));
  put(p('jdigits', String(d.label), `${n}.jpg`), jpeg.encode({ data: rgba(d.pixels, 28, 28), width: 28, height: 28 }, 95).data);
});

function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** Accuracy of the reference CNN, locked with a plain `sealed` lock, on recorded samples. */
async function cnnAccuracy(samples: Sample[]): Promise<number> {
  const { klm, modelKey } = await lockModel(cnn, { schemes: ['sealed'], vendorSeed: new Uint8Array(32).fill(1) });
  const model = await loadModel(klm, { modelKey });
  assert.equal(model.state, 'ready', model.error?.message);
  let ok = 0;
  try {
    for (const s of samples) {
      const out = await model.run(s.inputs!);
      if (argmax(out.logits.data as Float32Array) === s.label) ok++;
    }
  } finally {
    await model.release();
  }
  return ok / samples.length;
}

test('the reference CNN declares input float32[N,1,28,28], in .onnx, .klm and .tflite', async () => {
  assert.deepEqual(cnnInputs, [{ name: 'input', dtype: 'float32', shape: ['N', 1, 28, 28] }]);
  const { klm } = await lockModel(cnn, { schemes: ['sealed'], vendorSeed: new Uint8Array(32).fill(1) });
  assert.deepEqual(modelInputs(klm, 'cnn.klm'), cnnInputs);
  const [t] = modelInputs(onnxToTflite(cnn), 'cnn.tflite');
  assert.equal(t.dtype, 'float32');
  assert.deepEqual(t.shape.slice(1), [28, 28, 1], 'TFLite is NHWC');
});

test('PNG digits: sorted, labels from folder names, exact pixels/255, classified by the model', async () => {
  const rec = recordFrom([p('digits')], { inputs: cnnInputs });
  assert.equal(rec.samples.length, digits.length);
  assert.deepEqual(rec.labelSources, ['folder names']);
  assert.deepEqual(rec.notes, []);
  rec.samples.forEach((s, i) => {
    const t = s.inputs!.input;
    assert.equal(s.label, digits[i].label);
    assert.equal(t.dtype, 'float32');
    assert.deepEqual(t.dims, [1, 1, 28, 28]);
    assert.deepEqual(Array.from(t.data as Float32Array), Array.from(digits[i].pixels, (v) => Math.fround(v / 255)));
  });
  const acc = await cnnAccuracy(rec.samples);
  assert.ok(acc >= 0.9, `accuracy ${acc}`);
});

test('JPEG digits: close to the source pixels, and still classified', async () => {
  const rec = recordFrom([p('jdigits')], { inputs: cnnInputs });
  assert.equal(rec.samples.length, digits.length);
  let worst = 0;
  let sum = 0;
  rec.samples.forEach((s, i) => {
    assert.equal(s.label, digits[i].label);
    const a = s.inputs!.input.data as Float32Array;
    for (let k = 0; k < 784; k++) {
      const e = Math.abs(a[k] - digits[i].pixels[k] / 255);
      worst = Math.max(worst, e);
      sum += e;
    }
  });
  assert.ok(sum / (784 * digits.length) < 0.01, `mean error ${sum / (784 * digits.length)}`);
  assert.ok(worst < 0.3, `worst error ${worst}`);
  assert.ok(await cnnAccuracy(rec.samples) >= 0.9);
});

test('images: resized bilinear, gray from colour, NHWC for TFLite, inverted, normalised, labels from a CSV', () => {
  // 56×56 made by doubling each pixel: a half-pixel bilinear resize to 28×28 averages two equal pixels, so exact.
  const d = digits[7];
  put(p('big', 'a.png'), pngOf(d.pixels, 2));
  // Colour: R = pixel, G = B = 0, so gray = 0.299 * pixel.
  const red = new PNG({ width: 28, height: 28 });
  red.data.set(rgba(d.pixels, 28, 28).map((v, i) => (i % 4 === 0 || i % 4 === 3 ? v : 0)));
  put(p('big', 'red.png'), PNG.sync.write(red));
  put(p('labels.csv'), 'file,label\na.png,4\nred.png,5\nmissing.png,1\n');
  const rec = recordFrom([p('big')], { inputs: cnnInputs, labels: p('labels.csv') });
  assert.deepEqual(rec.samples.map((s) => s.label), [4, 5]);
  assert.deepEqual(Array.from(rec.samples[0].inputs!.input.data as Float32Array), Array.from(d.pixels, (v) => Math.fround(v / 255)));
  assert.deepEqual(Array.from(rec.samples[1].inputs!.input.data as Float32Array), Array.from(d.pixels, (v) => Math.fround(0.299 * v / 255)));
  assert.match(rec.notes.join('\n'), /a\.png is 56×56 gray; input "input" float32\[N,1,28,28\] takes 28×28 gray: resized/);
  assert.match(rec.notes.join('\n'), /1 colour image\(s\) .* turned gray/);
  assert.match(rec.notes.join('\n'), /1 row\(s\) of .*labels\.csv match no source file \(e\.g\. "missing\.png"\)/);

  const nhwc: InputSpec[] = [{ name: 'x', dtype: 'float32', shape: [1, 28, 28, 3] }];
  const [rgb] = recordFrom([p('big', 'red.png')], { inputs: nhwc, invert: true, mean: [0.5], std: [0.25, 0.5, 1] }).samples;
  assert.deepEqual(rgb.inputs!.x.dims, [1, 28, 28, 3]);
  const x = rgb.inputs!.x.data as Float32Array;
  const k = 14 * 28 + 14;
  assert.deepEqual([x[3 * k], x[3 * k + 1], x[3 * k + 2]], [
    Math.fround(((255 - d.pixels[k]) / 255 - 0.5) / 0.25), Math.fround((1 - 0.5) / 0.5), Math.fround((1 - 0.5) / 1),
  ]);
  const nchw = recordFrom([p('big', 'red.png')], { inputs: [{ name: 'x', dtype: 'uint8', shape: [1, 3, 28, 28] }] }).samples[0].inputs!.x;
  assert.equal(nchw.data[k], d.pixels[k], 'an integer input takes raw pixel values');
  assert.equal(nchw.data[28 * 28 + k], 0);

  put(p('amb.csv'), '0.png,0\n');
  assert.throws(() => recordFrom([p('digits')], { inputs: cnnInputs, labels: p('amb.csv') }),
    (e: unknown) => e instanceof RecordOptionError && /amb\.csv: "0\.png" matches 10 source files \(e\.g\. 0\/0\.png\); expected one/.test(e.message));
  assert.throws(() => recordFrom([p('digits')], { inputs: cnnInputs, labels: p('labels.csv') }),
    (e: unknown) => e instanceof RecordOptionError && /labels\.csv has no row for 0\/0\.png \(nor for 0\.png\)/.test(e.message));
  assert.throws(() => recordFrom([p('big')], { inputs: [{ name: 'x', dtype: 'float32', shape: [1, 3, 3, 3] }] }),
    (e: unknown) => e instanceof RecordOptionError && /cannot tell whether input "x" float32\[1,3,3,3\] is NCHW or NHWC/.test(e.message));
});

const hasNumpy = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' }).status === 0;

test('numpy .npy and .npz written by numpy: float32, float16, int64, fortran order, big-endian, bool, two arrays', { skip: hasNumpy ? false : 'python3 with numpy is not available' }, () => {
  const py = `
import numpy as np, json, sys
d = sys.argv[1]
np.save(d + '/f32.npy', (np.arange(2 * 784, dtype=np.float32) / 7).reshape(2, 1, 28, 28))
h = np.array([[0.5, 1.25, -2, 65504], [6e-5, 1e-7, 3.14159, -0.0]], dtype=np.float16)
np.save(d + '/f16.npy', h)
np.save(d + '/i64.npy', np.array([[2**40, -3], [7, -(2**62)], [0, 1]], dtype=np.int64))
np.save(d + '/fortran.npy', np.asfortranarray((np.arange(24) * 1.5).astype(np.float32).reshape(2, 3, 4)))
np.save(d + '/be.npy', np.arange(6, dtype='>f8').reshape(3, 2) / 3)
np.save(d + '/bool.npy', np.array([[True, False], [False, True]]))
np.save(d + '/bad.npy', np.zeros((10, 3), dtype=np.float32))
np.save(d + '/complex.npy', np.array([1 + 2j]))
np.savez(d + '/two.npz', x=np.arange(12, dtype=np.float32).reshape(4, 3), y=np.arange(8, dtype=np.int64).reshape(4, 2), labels=np.array([3, 1, 4, 1]))
np.savez_compressed(d + '/one.npz', np.arange(6, dtype=np.float64).reshape(3, 2))
json.dump({'f16': [float(v) for v in h.astype(np.float64).ravel()], 'be': (np.arange(6) / 3).tolist()}, open(d + '/expected.json', 'w'))
`;
  mkdirSync(p('np'));
  const r = spawnSync('python3', ['-c', py, p('np')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const expected = JSON.parse(readFileSync(p('np', 'expected.json'), 'utf8')) as { f16: number[]; be: number[] };
  const vals = (s: Sample, name = 'x'): unknown[] => Array.from(s.inputs![name].data as ArrayLike<unknown>);
  const spec = (shape: string, dtype = 'float32'): { inputs: InputSpec[] } => ({ inputs: shapeInputs('x', shape, dtype) });

  const f32 = recordFrom([p('np', 'f32.npy')], { inputs: cnnInputs }).samples;
  assert.equal(f32.length, 2);
  assert.deepEqual(f32[1].inputs!.input.dims, [1, 1, 28, 28]);
  assert.deepEqual(vals(f32[1], 'input'), Array.from({ length: 784 }, (_, i) => Math.fround(Math.fround(784 + i) / 7)));

  const f16 = recordFrom([p('np', 'f16.npy')], spec('N,4'));
  assert.deepEqual(f16.samples.flatMap((s) => vals(s)), expected.f16.map(Math.fround));
  assert.match(f16.notes[0], /float16 widened to float32/);

  const i64 = recordFrom([p('np', 'i64.npy')], spec('N,2', 'int64')).samples;
  assert.deepEqual(i64.flatMap((s) => vals(s)), [2n ** 40n, -3n, 7n, -(2n ** 62n), 0n, 1n]);
  assert.throws(() => recordFrom([p('np', 'i64.npy')], spec('N,2', 'int32')),
    (e: unknown) => e instanceof InputMismatchError && /value 1099511627776 at index 0 does not fit the input's int32/.test(e.message));

  const fortran = recordFrom([p('np', 'fortran.npy')], spec('N,3,4')).samples;
  assert.deepEqual(fortran.flatMap((s) => vals(s)), Array.from({ length: 24 }, (_, i) => i * 1.5));
  assert.deepEqual(fortran[0].inputs!.x.dims, [1, 3, 4]);

  const be = recordFrom([p('np', 'be.npy')], spec('N,2', 'float64'));
  assert.deepEqual(be.samples.flatMap((s) => vals(s)), expected.be);
  assert.equal(be.samples.length, 3);

  assert.deepEqual(recordFrom([p('np', 'bool.npy')], spec('N,2', 'bool')).samples.flatMap((s) => vals(s)), [1, 0, 0, 1]);

  const two = recordFrom([p('np', 'two.npz')], {
    inputs: [{ name: 'x', dtype: 'float32', shape: ['N', 3] }, { name: 'y', dtype: 'int64', shape: ['N', 2] }],
  });
  assert.equal(two.samples.length, 4);
  assert.deepEqual(two.samples.map((s) => s.label), [3, 1, 4, 1]);
  assert.deepEqual(two.labelSources, ['npz array "labels"']);
  assert.deepEqual(vals(two.samples[2], 'x'), [6, 7, 8]);
  assert.deepEqual(vals(two.samples[2], 'y'), [4n, 5n]);
  // The same arrays, renamed by --map, for a model whose inputs have other names.
  const mapped = recordFrom([p('np', 'two.npz')], {
    inputs: [{ name: 'a', dtype: 'float32', shape: [1, 3] }, { name: 'b', dtype: 'float32', shape: [1, 2] }], map: { x: 'a', y: 'b' },
  });
  assert.deepEqual(vals(mapped.samples[3], 'b'), [6, 7]);
  assert.throws(() => recordFrom([p('np', 'two.npz')], { inputs: [{ name: 'a', dtype: 'float32', shape: [1, 3] }, { name: 'b', dtype: 'float32', shape: [1, 2] }] }),
    (e: unknown) => e instanceof RecordOptionError && /array "x" is not an input of the model; its inputs: a, b/.test(e.message));

  // np.savez_compressed with a positional array ("arr_0") fills the one input.
  const one = recordFrom([p('np', 'one.npz')], spec('N,2'));
  assert.deepEqual(one.samples.flatMap((s) => vals(s)), [0, 1, 2, 3, 4, 5]);
  assert.match(one.notes.join('\n'), /float64 values cast to float32/);

  assert.throws(() => recordFrom([p('np', 'bad.npy')], { inputs: cnnInputs }), (e: unknown) => e instanceof InputMismatchError
    && /bad\.npy: an array of shape \[10,3\] cannot fill input "input" float32\[N,1,28,28\]: expected \[n,1,28,28\] for n samples or \[1,1,28,28\] for one; got 3 values per sample, the input takes 784/.test(e.message));
  assert.throws(() => recordFrom([p('np', 'complex.npy')], spec('N,2')), (e: unknown) => e instanceof FormatError && /complex numbers \(numpy dtype '<c16'\)/.test(e.message));
});

function wavBytes(channels: number, rate: number, depth: string, samples: number[] | number[][]): Uint8Array {
  const w = new wavefile.WaveFile();
  w.fromScratch(channels, rate, depth, samples);
  return w.toBuffer();
}

test('WAV: 16-bit PCM framed with a hop, as [-1,1] floats or int16 magnitudes; float32 stereo downmixed', () => {
  const pcm = Array.from({ length: 1000 }, (_, i) => Math.round(20000 * Math.sin(i / 10)) - (i === 0 ? 32768 : 0));
  put(p('audio', 'pcm16.wav'), wavBytes(1, 16000, '16', pcm));
  const dynamic = shapeInputs('audio', '1,-1');
  const rec = recordFrom([p('audio', 'pcm16.wav')], { inputs: dynamic, frame: 400, hop: 160 });
  assert.equal(rec.samples.length, Math.floor((1000 - 400) / 160) + 1);
  rec.samples.forEach((s, k) => {
    assert.deepEqual(s.inputs!.audio.dims, [1, 400]);
    assert.deepEqual(Array.from(s.inputs!.audio.data as Float32Array), pcm.slice(k * 160, k * 160 + 400).map((v) => Math.fround(v / 32768)));
  });
  assert.equal((rec.samples[0].inputs!.audio.data as Float32Array)[0], -1);
  const raw = recordFrom([p('audio', 'pcm16.wav')], { inputs: dynamic, frame: 400, pcm16: true }).samples;
  assert.equal(raw.length, 2, 'hop defaults to the frame: 1000 samples hold two frames of 400');
  assert.deepEqual(Array.from(raw[1].inputs!.audio.data as Float32Array), pcm.slice(400, 800));
  const asInt16 = recordFrom([p('audio', 'pcm16.wav')], { inputs: shapeInputs('audio', '1,500', 'int16') });
  assert.deepEqual(Array.from(asInt16.samples[1].inputs!.audio.data as Int16Array), pcm.slice(500, 1000));
  assert.match(asInt16.notes.join('\n'), /int16: audio written as int16 magnitudes/);

  const left = Array.from({ length: 600 }, (_, i) => Math.fround(Math.sin(i / 7) * 0.8));
  const right = Array.from({ length: 600 }, (_, i) => Math.fround(Math.cos(i / 5) * 0.5));
  put(p('audio', '3', 'stereo.wav'), wavBytes(2, 16000, '32f', [left, right]));
  const st = recordFrom([p('audio', '3', 'stereo.wav')], { inputs: shapeInputs('audio', 'N,300'), rate: 16000 });
  assert.equal(st.samples.length, 2);
  assert.deepEqual(st.samples.map((s) => s.label), [3, 3], 'labels from the folder name');
  assert.deepEqual(Array.from(st.samples[1].inputs!.audio.data as Float32Array), left.slice(300).map((l, i) => Math.fround((l + right[300 + i]) / 2)));
  assert.match(st.notes.join('\n'), /stereo\.wav has 2 channels: downmixed to mono/);

  // WAVE_FORMAT_EXTENSIBLE with the IEEE-float sub-format GUID, as libsndfile / ffmpeg write float audio.
  const frames = 300;
  const ext = new DataView(new ArrayBuffer(12 + 48 + 8 + frames * 8));
  const ascii = (at: number, s: string): void => { for (let i = 0; i < 4; i++) ext.setUint8(at + i, s.charCodeAt(i)); };
  ascii(0, 'RIFF'); ext.setUint32(4, ext.byteLength - 8, true); ascii(8, 'WAVE');
  ascii(12, 'fmt '); ext.setUint32(16, 40, true);
  [0xfffe, 2].forEach((v, i) => ext.setUint16(20 + 2 * i, v, true));
  ext.setUint32(24, 16000, true); ext.setUint32(28, 16000 * 8, true);
  [8, 32, 22, 32].forEach((v, i) => ext.setUint16(32 + 2 * i, v, true));
  ext.setUint32(40, 3, true);
  [0x03, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71].forEach((b, i) => ext.setUint8(44 + i, b));
  ascii(60, 'data'); ext.setUint32(64, frames * 8, true);
  for (let i = 0; i < frames; i++) { ext.setFloat32(68 + 8 * i, left[i], true); ext.setFloat32(72 + 8 * i, right[i], true); }
  put(p('audio', 'ext.wav'), new Uint8Array(ext.buffer));
  const [e0] = recordFrom([p('audio', 'ext.wav')], { inputs: shapeInputs('audio', 'N,300') }).samples;
  assert.deepEqual(Array.from(e0.inputs!.audio.data as Float32Array), left.slice(0, 300).map((l, i) => Math.fround((l + right[i]) / 2)));

  const pcm24 = [-(2 ** 23), 0, 2 ** 22, 2 ** 23 - 1];
  put(p('audio', 'pcm24.wav'), wavBytes(1, 8000, '24', pcm24));
  assert.deepEqual(Array.from(recordFrom([p('audio', 'pcm24.wav')], { inputs: shapeInputs('a', '4') }).samples[0].inputs!.a.data as Float32Array), [-1, 0, 0.5, Math.fround(1 - 2 ** -23)]);

  assert.throws(() => recordFrom([p('audio', 'pcm16.wav')], { inputs: dynamic, frame: 400, rate: 44100 }),
    (e: unknown) => e instanceof InputMismatchError && /pcm16\.wav is 16000 Hz; expected 44100 Hz/.test(e.message));
  assert.throws(() => recordFrom([p('audio', 'pcm16.wav')], { inputs: shapeInputs('audio', '1,16000') }),
    (e: unknown) => e instanceof InputMismatchError && /has 1000 samples \(0\.063 s at 16000 Hz\); a frame needs 16000/.test(e.message));
  assert.throws(() => recordFrom([p('audio', 'pcm16.wav')], { inputs: shapeInputs('audio', '1,400'), frame: 300 }),
    (e: unknown) => e instanceof InputMismatchError && /--frame 300 cannot fill input "audio" float32\[1,400\]: it takes 400 samples per frame/.test(e.message));
  assert.throws(() => recordFrom([p('audio', 'pcm16.wav')], { inputs: dynamic }),
    (e: unknown) => e instanceof RecordOptionError && /has a dynamic length/.test(e.message));
});

test('JSON: plain nested arrays and objects of named inputs with labels; a wrong size is refused', () => {
  put(p('plain.json'), JSON.stringify([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]));
  const plain = recordFrom([p('plain.json')], { inputs: shapeInputs('x', 'N,2,2') }).samples;
  assert.deepEqual(plain.map((s) => [s.inputs!.x.dims, Array.from(s.inputs!.x.data as Float32Array)]), [[[1, 2, 2], [1, 2, 3, 4]], [[1, 2, 2], [5, 6, 7, 8]]]);

  const two: InputSpec[] = [{ name: 'ids', dtype: 'int64', shape: ['batch', 'seq'] }, { name: 'mask', dtype: 'float32', shape: [1, 3] }];
  put(p('named.json'), JSON.stringify([{ ids: [[101, 7, 102]], mask: [1, 1, 0], label: 2 }, { ids: [5, 6], mask: [[1, 0, 0]] }]));
  const named = recordFrom([p('named.json')], { inputs: two });
  assert.deepEqual(named.samples.map((s) => s.label), [2, undefined]);
  assert.deepEqual(named.samples[0].inputs!.ids, { dtype: 'int64', dims: [1, 3], data: new BigInt64Array([101n, 7n, 102n]) });
  assert.deepEqual(named.samples[1].inputs!.ids.dims, [1, 2], 'a dynamic dim takes the sample\'s size');
  assert.deepEqual(named.samples[1].inputs!.mask.dims, [1, 3]);
  assert.deepEqual(named.labelSources, ['JSON']);

  put(p('wrong.json'), JSON.stringify([{ ids: [1], mask: [1, 1, 1, 1] }]));
  assert.throws(() => recordFrom([p('wrong.json')], { inputs: two }), (e: unknown) => e instanceof InputMismatchError
    && /wrong\.json sample 0 "mask": a nested array of shape \[4\] \(4 values\) cannot fill input "mask" float32\[1,3\]: expected \[1,3\] \(3 values\)/.test(e.message));
  put(p('ragged.json'), JSON.stringify([[[1, 2], [3]]]));
  assert.throws(() => recordFrom([p('ragged.json')], { inputs: shapeInputs('x', 'N,2,2') }),
    (e: unknown) => e instanceof FormatError && /ragged\.json sample 0\[1\]: expected an array of 2 entries \(the nesting is \[2,2\]\), got 1 entries/.test(e.message));
  assert.throws(() => recordFrom([p('plain.json')], { inputs: two }),
    (e: unknown) => e instanceof RecordOptionError === false && e instanceof InputMismatchError && /a plain array, but the model has 2 inputs/.test(e.message));
});

function kl(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...args], { encoding: 'utf8', cwd: dir });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

test('CLI: keylock record digits/ --model mnist-cnn.onnx, and a usage mistake exits 2 with a hint', () => {
  const r = kl('record', 'digits', '--model', cnnPath, '--out', 'rec.cbor');
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, `recorded ${digits.length} sample(s) into rec.cbor: input "input" float32[1,1,28,28], labels 0-9 from folder names\n`);
  const back = decodeRecorded(readFileSync(p('rec.cbor')));
  assert.deepEqual(back.map((s) => s.label), digits.map((d) => d.label));
  assert.deepEqual(encodeRecorded(back), new Uint8Array(readFileSync(p('rec.cbor'))));

  const u = kl('record', 'digits', '--out', 'x.cbor');
  assert.equal(u.code, 2);
  assert.match(u.err, /^keylock: error: without --model, give the input yourself with --shape and --input\nkeylock: hint: /);
  const layout = kl('record', 'digits', '--model', cnnPath, '--out', 'x.cbor', '--layout', 'chw');
  assert.equal(layout.code, 2);
  assert.match(layout.err, /keylock: error: --layout must be nchw or nhwc, got "chw"/);
  const input = kl('record', 'digits', '--model', cnnPath, '--out', 'x.cbor', '--input', 'image');
  assert.equal(input.code, 2);
  assert.match(input.err, /keylock: error: the model has no input "image"; its inputs: input "input" float32\[N,1,28,28\]\nkeylock: hint: usage: keylock record SRC/);
});
