// `sealed` with XChaCha20-Poly1305 (docs/SPEC.md §6.4): the cipher against the IETF draft's
// known answers, native against @noble/ciphers, tamper and wrong-key behaviour, old XSalsa20
// files, the manifest's `cipher` field, `keylock inspect`, and the pinned-key no-tag path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { gcm } from '@noble/ciphers/aes.js';
import {
  aeadNative, aesGcmDecryptInPlace, aesGcmOpenDetachedInPlace, aesGcmPath, aesGcmSealDetached, prepareAead, prepareAesGcm, setAeadForceJs,
  setAesGcmPath, xchachaDecryptInPlace, xchachaOpenDetachedInPlace, xchachaSealDetached, xchachaSubkey, type AesGcmPath,
} from '../keystore/aead.ts';
import { decodeCbor, encodeCbor, Fields } from '../keystore/cbor.ts';
import { KeyMismatchError, TamperedError } from '../keystore/errors.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { encodeVendorSecret } from '../keystore/keyfiles.ts';
import { LockOptionError, lockOnnx } from '../models/lock/index.ts';
import { sealedAesGcmKey, sealedAesGcmNonce, sealedXchachaKey, sealedXchachaNonce } from '../runtime/keys/derive.ts';
import { openKlm } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import type { TensorMap } from '../runtime/tensor.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const MLP = readFileSync(new URL('../models/reference/mnist-mlp.onnx', import.meta.url));
const h = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const vendorSeed = randomBytes(32);
const trust = [signKeyPair(vendorSeed).publicKey];
const fail = (): Error => new TamperedError('tag mismatch in test');

// draft-irtf-cfrg-xchacha-03, §A.3.1 (AEAD_XChaCha20_Poly1305) and §2.2.1 (HChaCha20).
const KAT = {
  key: h('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f'),
  nonce: h('404142434445464748494a4b4c4d4e4f5051525354555657'),
  aad: h('50515253c0c1c2c3c4c5c6c7'),
  plain: new TextEncoder().encode("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."),
  cipher: h(`bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39
    ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921
    f9664c97637da9768812f615c68b13b52e`),
  tag: h('c0875924c1c7987947deafd8780acf49'),
};

/** Runs `fn` once natively and once in JavaScript (what a browser gets). */
async function bothPaths(fn: (label: string) => void): Promise<void> {
  assert.ok(await prepareAead(), 'Node 20 has chacha20-poly1305: the native path must be on here');
  try {
    for (const js of [false, true]) {
      setAeadForceJs(js);
      assert.equal(aeadNative(), !js);
      fn(js ? 'javascript' : 'native');
    }
  } finally {
    setAeadForceJs(false);
  }
}

test('HChaCha20 gives the draft\'s subkey (§2.2.1); iv12 is 4 zero bytes || nonce[16..24)', () => {
  const { subkey, iv12 } = xchachaSubkey(h('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'), h('000000090000004a0000000031415927a1a2a3a4a5a6a7a8'));
  assert.equal(hex(subkey), '82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc');
  assert.equal(hex(iv12), '00000000a1a2a3a4a5a6a7a8');
});

test('XChaCha20-Poly1305 known answer (draft §A.3.1), with its AAD and without, native and JavaScript', async () => {
  // Without AAD (how `sealed` uses it) the ciphertext is the same bytes; the tag is @noble's.
  const noAadTag = xchacha20poly1305(KAT.key, KAT.nonce).encrypt(KAT.plain).subarray(KAT.plain.length);
  assert.notEqual(hex(noAadTag), hex(KAT.tag));
  await bothPaths((path) => {
    for (const [aad, tag] of [[KAT.aad, KAT.tag], [undefined, noAadTag]] as const) {
      const what = `${path}, ${aad ? 'with' : 'without'} AAD`;
      const d = new Uint8Array(KAT.plain);
      assert.equal(hex(xchachaSealDetached(d, KAT.nonce, KAT.key, aad)), hex(tag), what);
      assert.equal(hex(d), hex(KAT.cipher), what);
      xchachaOpenDetachedInPlace(d, tag, KAT.nonce, KAT.key, fail, aad);
      assert.deepEqual(d, KAT.plain, what);
      const n = new Uint8Array(KAT.cipher);
      xchachaDecryptInPlace(n, KAT.nonce, KAT.key);
      assert.deepEqual(n, KAT.plain, `${what}: no-tag path`);
    }
  });
});

test('native and JavaScript agree with @noble/ciphers on random sizes, odd lengths, unaligned views and > 64 KiB', async () => {
  const sizes = [0, 1, 15, 16, 17, 63, 64, 65, 1000, 4097, 65535, 65536, 65537, (256 << 10) + 3, (1 << 20) + 17, 3_000_001];
  for (let i = 0; i < 8; i++) sizes.push(Math.floor(Math.random() * 600_000));
  await bothPaths((path) => {
    for (const n of sizes) {
      const key = randomBytes(32);
      const nonce = randomBytes(24);
      const plain = randomBytes(n);
      const want = xchacha20poly1305(key, nonce).encrypt(plain);
      // An unaligned view into a larger buffer, as tensors inside a protobuf are.
      const host = new Uint8Array(n + 3);
      const d = host.subarray(3);
      d.set(plain);
      const tag = xchachaSealDetached(d, nonce, key);
      assert.equal(hex(tag), hex(want.subarray(n)), `${path} tag, ${n} bytes`);
      assert.ok(Buffer.from(d).equals(want.subarray(0, n)), `${path} ciphertext, ${n} bytes`);
      const copy = new Uint8Array(d);
      xchachaOpenDetachedInPlace(d, tag, nonce, key, fail);
      assert.ok(Buffer.from(d).equals(plain), `${path} open, ${n} bytes`);
      xchachaDecryptInPlace(copy, nonce, key);
      assert.ok(Buffer.from(copy).equals(plain), `${path} no-tag path equals the tag path, ${n} bytes`);
    }
  });
});

test('a flipped ciphertext or tag bit is refused and leaves the ciphertext as it was', async () => {
  await bothPaths((path) => {
    for (const n of [1, 100, 200_000]) {
      const key = randomBytes(32);
      const nonce = randomBytes(24);
      const d = randomBytes(n);
      const tag = xchachaSealDetached(d, nonce, key);
      for (const where of ['ciphertext', 'tag'] as const) {
        const c = new Uint8Array(d);
        const t = new Uint8Array(tag);
        if (where === 'ciphertext') c[n >> 1] ^= 0x04;
        else t[15] ^= 0x80;
        const before = new Uint8Array(c);
        assert.throws(() => xchachaOpenDetachedInPlace(c, t, nonce, key, () => new TamperedError(`${where} changed`)),
          (e) => e instanceof TamperedError && e.message === `${where} changed`, `${path}, ${where}, ${n} bytes`);
        assert.deepEqual(c, before, `${path}: after a failed tag the bytes are the ciphertext again`);
      }
      assert.throws(() => xchachaOpenDetachedInPlace(new Uint8Array(d), tag, nonce, randomBytes(32), fail), TamperedError, 'another key');
    }
  });
  assert.throws(() => xchachaSealDetached(new Uint8Array(4), new Uint8Array(12), new Uint8Array(32)), RangeError);
  assert.throws(() => xchachaOpenDetachedInPlace(new Uint8Array(4), new Uint8Array(15), new Uint8Array(24), new Uint8Array(32), fail), RangeError);
});

function digit(seed: number): TensorMap {
  const d = new Float32Array(784);
  let s = seed;
  for (let i = 0; i < d.length; i++) { s = (s * 1103515245 + 12345) >>> 0; d[i] = (s >>> 8) / 2 ** 24; }
  return { input: { dtype: 'float32', dims: [1, 1, 28, 28], data: d } };
}
const outHex = async (m: { run(x: TensorMap): Promise<TensorMap> }): Promise<string> => {
  const o = Object.values(await m.run(digit(7)))[0].data;
  return Buffer.from(o.buffer as ArrayBuffer, o.byteOffset, o.byteLength).toString('hex');
};

test('a new .klm names its cipher; tag path (no pinned key) and no-tag path (pinned key) give the same model', async () => {
  const res = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, modelId: 'mlp-xchacha' });
  const { manifest, model } = openKlm(res.klm);
  const entry = manifest.locks[0];
  assert.ok(entry.scheme === 'sealed');
  assert.equal(entry.cipher, 'xchacha20-poly1305');
  // The field is in the signed manifest bytes themselves.
  const signed = Fields.of('klm', decodeCbor(res.klm, 'klm', 1 << 30)).bytes('signed');
  const locks = Fields.of('m', decodeCbor(signed, 'manifest', 1 << 26)).array('locks') as Record<string, unknown>[];
  assert.equal(locks[0].cipher, 'xchacha20-poly1305');
  // The ciphertext is what the spec's derivation gives, tensor by tensor.
  const t0 = entry.tensors[0];
  const plainMlp = new Uint8Array(MLP);
  const want = plainMlp.slice(t0.offset, t0.offset + t0.length);
  assert.equal(entry.salt?.byteLength, 16, 'a new XChaCha20 entry carries its lock\'s salt');
  const wantTag = xchachaSealDetached(want, sealedXchachaNonce('mlp-xchacha', t0.name, entry.salt), sealedXchachaKey(res.modelKey));
  assert.ok(Buffer.from(model.subarray(t0.offset, t0.offset + t0.length)).equals(want));
  assert.equal(hex(t0.mac), hex(wantTag));

  const tagged = await loadModel(res.klm, { modelKey: res.modelKey });
  const pinned = await loadModel(res.klm, { modelKey: res.modelKey, trust });
  assert.equal(tagged.state, 'ready', tagged.error?.message);
  assert.equal(pinned.state, 'ready', pinned.error?.message);
  assert.equal(await outHex(tagged), await outHex(pinned));
  await Promise.all([tagged.release(), pinned.release()]);

  const wrong = await loadModel(res.klm, { modelKey: randomBytes(32) });
  assert.ok(wrong.error instanceof KeyMismatchError, wrong.error?.message);
});

test('a changed sealed tensor (re-signed) fails its XChaCha20-Poly1305 tag with a message naming the tensor', async () => {
  const res = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed });
  const { manifest, model } = openKlm(res.klm);
  const entry = manifest.locks[0];
  assert.ok(entry.scheme === 'sealed');
  const { packKlm } = await import('../models/klm.ts');
  const { vendorKey: _v, digest: _d, modelBytes: _b, ...draft } = manifest;
  const changed = new Uint8Array(model);
  changed[entry.tensors[1].offset + 9] ^= 0x01;
  const m = await loadModel(packKlm(draft, changed, vendorSeed), { modelKey: res.modelKey });
  assert.ok(m.error instanceof TamperedError, m.error?.message);
  assert.match(m.error!.message, new RegExp(`sealed tensor "${entry.tensors[1].name.replace(/[.]/g, '\\.')}": the XChaCha20-Poly1305 MAC \\(Poly1305 tag\\) does not match`));
  // A changed tag in the manifest, likewise.
  const badTag = { ...draft, locks: [{ ...entry, tensors: entry.tensors.map((t, i) => (i === 0 ? { ...t, mac: t.mac.map((b, j) => (j === 0 ? b ^ 1 : b)) } : t)) }] };
  const m2 = await loadModel(packKlm(badTag, new Uint8Array(model), vendorSeed), { modelKey: res.modelKey });
  assert.ok(m2.error instanceof TamperedError, m2.error?.message);
  // An unknown cipher name is a format error, not a guess.
  const unknown = { ...draft, locks: [{ ...entry, cipher: 'aes-128-gcm' as 'xchacha20-poly1305' }] };
  const m3 = await loadModel(packKlm(unknown, new Uint8Array(model), vendorSeed), { modelKey: res.modelKey });
  assert.equal(m3.error?.name, 'FormatError', m3.error?.message);
  assert.match(m3.error!.message, /cipher: expected one of xchacha20-poly1305, xsalsa20-poly1305, aes-256-gcm, got "aes-128-gcm"/);
});

test('XSalsa20-Poly1305 still opens: entries without `cipher` (every older .klm) and the lock option', async () => {
  const res = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, sealedCipher: 'xsalsa20-poly1305' });
  const entry = openKlm(res.klm).manifest.locks[0];
  assert.ok(entry.scheme === 'sealed');
  assert.equal(entry.cipher, undefined, 'XSalsa20 entries are written as before: no cipher field');
  for (const t of [undefined, trust]) {
    const m = await loadModel(res.klm, { modelKey: res.modelKey, trust: t });
    assert.equal(m.state, 'ready', m.error?.message);
    await m.release();
  }
  // A .klm written before the field existed: the device vectors' sealed file.
  const V = JSON.parse(readFileSync(join(root, 'test/vectors/device.json'), 'utf8')) as { scenarios: { name: string; klm: string }[] };
  const old = new Uint8Array(Buffer.from(V.scenarios.find((s) => s.name === 'valid grant')!.klm, 'hex'));
  const oldEntry = openKlm(old).manifest.locks.find((l) => l.scheme === 'sealed');
  assert.ok(oldEntry && oldEntry.scheme === 'sealed' && oldEntry.cipher === undefined, 'the vector file is an XSalsa20 one');
  await assert.rejects(lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, sealedCipher: 'rot13' as 'xsalsa20-poly1305' }), LockOptionError);
});

test('keylock inspect names the cipher; lock --cipher chooses it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-cipher-'));
  writeFileSync(join(dir, 'v.key'), encodeVendorSecret(vendorSeed));
  const kl = (...a: string[]): string => {
    const r = spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...a], { encoding: 'utf8', cwd: dir });
    assert.equal(r.status, 0, `keylock ${a.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const mlp = join(root, 'models/reference/mnist-mlp.onnx');
  kl('lock', mlp, '--scheme', 'sealed', '--vendor', 'v.key', '--out', 'x.klm', '--key-out', 'x.key');
  kl('lock', mlp, '--scheme', 'sealed', '--vendor', 'v.key', '--out', 's.klm', '--key-out', 's.key', '--cipher', 'xsalsa20-poly1305');
  assert.match(kl('inspect', 'x.klm'), /sealed +\d+ tensor\(s\), \d+ bytes, XChaCha20-Poly1305 \(cipher xchacha20-poly1305\)/);
  assert.match(kl('inspect', 's.klm'), /sealed .* XSalsa20-Poly1305 \(cipher xsalsa20-poly1305, by default: the entry names none\)/);
  assert.match(kl('inspect', 'x.klm', '--json'), /"cipher": "xchacha20-poly1305"/);
  const r = spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), 'lock', mlp, '--scheme', 'sealed', '--vendor', 'v.key', '--out', 'y.klm', '--key-out', 'y.key', '--cipher', 'des'], { encoding: 'utf8', cwd: dir });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /--cipher must be one of xchacha20-poly1305, xsalsa20-poly1305, aes-256-gcm, got "des"/);
});

test('encodeCbor round trip keeps the cipher field', () => {
  const e = { scheme: 'sealed', cipher: 'xchacha20-poly1305', tensors: [] };
  assert.deepEqual(decodeCbor(encodeCbor(e), 'e', 1 << 10), e);
});

// ---- AES-256-GCM (docs/SPEC.md §6.4): every device path, the vendor side, the file ----

// The GCM specification's Test Case 16 (McGrew & Viega, as in NIST's GCM validation): 256-bit key, with AAD.
const GCM16 = {
  key: h('feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308'),
  nonce: h('cafebabefacedbaddecaf888'),
  aad: h('feedfacedeadbeeffeedfacedeadbeefabaddad2'),
  plain: h('d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39'),
  cipher: h('522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662'),
  tag: h('76fc6ece0f4e1768cddf8853bb2d551b'),
};
const AES_PATHS: readonly AesGcmPath[] = ['node', 'webcrypto', 'js'];

/** Runs `fn` on each AES-256-GCM path, forced (each must be available here: Node 20 has node:crypto and crypto.subtle). */
async function eachAesPath(fn: (path: AesGcmPath) => Promise<void>): Promise<void> {
  assert.equal(await prepareAesGcm(), 'node', 'under Node the chosen path is node:crypto');
  try {
    for (const p of AES_PATHS) {
      await setAesGcmPath(p);
      assert.equal(aesGcmPath(), p);
      await fn(p);
    }
  } finally {
    await setAesGcmPath(undefined);
  }
}

test('AES-256-GCM: the GCM test case 16 (with AAD) and random sizes, on node:crypto, WebCrypto and @noble, sealed and opened', async () => {
  const sizes = [0, 1, 15, 16, 17, 64, 65, 1000, 65535, 65536, 65537, (256 << 10) + 3, 3_000_001];
  await eachAesPath(async (path) => {
    const d = new Uint8Array(GCM16.plain);
    if (path !== 'webcrypto') { // sealing is the vendor's: node:crypto or JavaScript
      assert.equal(hex(aesGcmSealDetached(d, GCM16.nonce, GCM16.key, GCM16.aad)), hex(GCM16.tag), path);
      assert.equal(hex(d), hex(GCM16.cipher), path);
    } else {
      d.set(GCM16.cipher);
    }
    await aesGcmOpenDetachedInPlace(d, GCM16.tag, GCM16.nonce, GCM16.key, fail, GCM16.aad);
    assert.deepEqual(d, GCM16.plain, `${path}: open`);
    for (const n of sizes) {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      const plain = randomBytes(n);
      const want = gcm(key, nonce).encrypt(plain);
      const host = new Uint8Array(n + 3); // an unaligned view, as tensors inside a protobuf are
      const v = host.subarray(3);
      v.set(want.subarray(0, n));
      const copy = new Uint8Array(v);
      await aesGcmOpenDetachedInPlace(v, want.subarray(n), nonce, key, fail);
      assert.ok(Buffer.from(v).equals(plain), `${path} open, ${n} bytes`);
      await aesGcmDecryptInPlace(copy, nonce, key);
      assert.ok(Buffer.from(copy).equals(plain), `${path} no-tag (CTR) path, ${n} bytes`);
      if (path !== 'webcrypto') {
        const s = new Uint8Array(plain);
        assert.equal(hex(aesGcmSealDetached(s, nonce, key)), hex(want.subarray(n)), `${path} seal tag, ${n} bytes`);
        assert.ok(Buffer.from(s).equals(want.subarray(0, n)), `${path} seal, ${n} bytes`);
      }
    }
  });
});

test('AES-256-GCM: a flipped ciphertext or tag bit, or another key, is refused on every path and leaves the ciphertext', async () => {
  await eachAesPath(async (path) => {
    for (const n of [1, 100, 300_000]) {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      const d = randomBytes(n);
      const tag = aesGcmSealDetached(d, nonce, key);
      for (const where of ['ciphertext', 'tag'] as const) {
        const c = new Uint8Array(d);
        const t = new Uint8Array(tag);
        if (where === 'ciphertext') c[n >> 1] ^= 0x04;
        else t[15] ^= 0x80;
        const before = new Uint8Array(c);
        await assert.rejects(async () => aesGcmOpenDetachedInPlace(c, t, nonce, key, () => new TamperedError(`${where} changed`)),
          (e) => e instanceof TamperedError && e.message === `${where} changed`, `${path}, ${where}, ${n} bytes`);
        assert.deepEqual(c, before, `${path}: after a failed tag the bytes are the ciphertext again`);
      }
      await assert.rejects(async () => aesGcmOpenDetachedInPlace(new Uint8Array(d), tag, nonce, randomBytes(32), fail), TamperedError, `${path}: another key`);
    }
  });
  assert.throws(() => aesGcmSealDetached(new Uint8Array(4), new Uint8Array(24), new Uint8Array(32)), /AES-256-GCM nonce must be 12 bytes, got 24/);
  assert.throws(() => aesGcmOpenDetachedInPlace(new Uint8Array(4), new Uint8Array(15), new Uint8Array(12), new Uint8Array(32), fail), /tag must be 16 bytes, got 15/);
});

test('vectors: sealed AES-256-GCM whole tensors (python/keylock_aead.py) on node:crypto, WebCrypto and @noble; a flipped tag bit is TamperedError', async () => {
  const V = JSON.parse(readFileSync(join(root, 'test/vectors/derive.json'), 'utf8')) as {
    sealed_aesgcm_key: { model_key: string; key: string }[];
    sealed_xchacha_nonce_salted: { model_id: string; tensor_name: string; salt: string; nonce: string }[];
    sealed_aesgcm_cipher: { model_key: string; model_id: string; tensor_name: string; salt: string; nonce: string; plain: string; cipher: string; tag: string }[];
    keys: Record<string, string>;
  };
  assert.deepEqual(V.sealed_aesgcm_cipher.map((c) => c.plain.length / 2), [1, 64, 65, 1000], 'whole tensors of 1, 64, 65 and 1000 bytes');
  const mk = (name: string): Uint8Array => h(V.keys[name]);
  for (const c of V.sealed_aesgcm_key) assert.equal(hex(sealedAesGcmKey(mk(c.model_key))), c.key);
  for (const c of V.sealed_xchacha_nonce_salted) assert.equal(hex(sealedXchachaNonce(c.model_id, c.tensor_name, h(c.salt))), c.nonce, `salted XChaCha20 nonce, ${c.tensor_name}`);
  assert.equal(V.sealed_xchacha_nonce_salted.length, 3);
  await eachAesPath(async (path) => {
    for (const c of V.sealed_aesgcm_cipher) {
      const what = `${path}, ${c.tensor_name}, ${c.plain.length / 2} bytes`;
      const key = sealedAesGcmKey(mk(c.model_key));
      const nonce = sealedAesGcmNonce(c.model_id, c.tensor_name, h(c.salt));
      assert.equal(hex(nonce), c.nonce, what);
      if (path !== 'webcrypto') {
        const d = h(c.plain);
        assert.equal(hex(aesGcmSealDetached(d, nonce, key)), c.tag, `tag, ${what}`);
        assert.equal(hex(d), c.cipher, `ciphertext, ${what}`);
      }
      const d = h(c.cipher);
      await aesGcmOpenDetachedInPlace(d, h(c.tag), nonce, key, fail);
      assert.equal(hex(d), c.plain, `open, ${what}`);
      const n = h(c.cipher);
      await aesGcmDecryptInPlace(n, nonce, key);
      assert.equal(hex(n), c.plain, `no-tag path, ${what}`);
      const bad = h(c.tag);
      bad[0] ^= 0x01;
      await assert.rejects(async () => aesGcmOpenDetachedInPlace(h(c.cipher), bad, nonce, key, fail), TamperedError, `a flipped tag bit, ${what}`);
    }
  });
});

test('a .klm sealed with aes-256-gcm: named and salted in the signed entry, opens with and without tags, TamperedError on a change', async () => {
  const [a, x] = await Promise.all([
    lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, modelId: 'mlp-aes', sealedCipher: 'aes-256-gcm' }),
    lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, modelId: 'mlp-aes', sealedCipher: 'xchacha20-poly1305' }),
  ]);
  const { manifest, model } = openKlm(a.klm);
  const entry = manifest.locks[0];
  assert.ok(entry.scheme === 'sealed' && entry.cipher === 'aes-256-gcm' && entry.salt?.byteLength === 16);
  const t0 = entry.tensors[0];
  const want = new Uint8Array(MLP).slice(t0.offset, t0.offset + t0.length);
  assert.equal(hex(t0.mac), hex(aesGcmSealDetached(want, sealedAesGcmNonce('mlp-aes', t0.name, entry.salt!), sealedAesGcmKey(a.modelKey))));
  assert.ok(Buffer.from(model.subarray(t0.offset, t0.offset + t0.length)).equals(want), 'the ciphertext is the spec\'s derivation');
  // Re-locking the same model under the same key and id draws another salt: other nonces, other ciphertext.
  const again = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, modelId: 'mlp-aes', sealedCipher: 'aes-256-gcm', modelKey: a.modelKey });
  const e2 = openKlm(again.klm).manifest.locks[0];
  assert.ok(e2.scheme === 'sealed' && e2.salt && hex(e2.salt) !== hex(entry.salt!));
  assert.notEqual(hex(openKlm(again.klm).model.subarray(t0.offset, t0.offset + 64)), hex(model.subarray(t0.offset, t0.offset + 64)));

  const ref = await loadModel(x.klm, { modelKey: x.modelKey });
  const want0 = await outHex(ref);
  await ref.release();
  for (const path of AES_PATHS) {
    await setAesGcmPath(path);
    try {
      for (const t of [undefined, trust]) {
        const m = await loadModel(a.klm, { modelKey: a.modelKey, trust: t });
        assert.equal(m.state, 'ready', `${path}, ${t ? 'pinned' : 'tags'}: ${m.error?.message}`);
        assert.equal(await outHex(m), want0, `${path}: the same model as the XChaCha20 one`);
        await m.release();
      }
    } finally {
      await setAesGcmPath(undefined);
    }
  }
  const { packKlm } = await import('../models/klm.ts');
  const { vendorKey: _v, digest: _d, modelBytes: _b, ...draft } = manifest;
  const changed = new Uint8Array(model);
  changed[entry.tensors[1].offset + 5] ^= 0x10;
  const m = await loadModel(packKlm(draft, changed, vendorSeed), { modelKey: a.modelKey });
  assert.ok(m.error instanceof TamperedError, m.error?.message);
  assert.match(m.error!.message, /sealed tensor ".*": the AES-256-GCM tag does not match its bytes/);
  // An aes-256-gcm entry without its salt, or an XSalsa20 entry with one, is a format error.
  const { salt: _s, ...noSalt } = entry;
  const m2 = await loadModel(packKlm({ ...draft, locks: [noSalt] }, new Uint8Array(model), vendorSeed), { modelKey: a.modelKey });
  assert.equal(m2.error?.name, 'FormatError');
  assert.match(m2.error!.message, /salt: an aes-256-gcm entry needs its 16-byte salt, got none/);
  const m3 = await loadModel(packKlm({ ...draft, locks: [{ ...entry, cipher: undefined }] }, new Uint8Array(model), vendorSeed), { modelKey: a.modelKey });
  assert.match(m3.error?.message ?? '', /XSalsa20-Poly1305 entries take no salt/);
  // Inline tensors are not AES-256-GCM: refused at lock time.
  await assert.rejects(lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, sealedCipher: 'aes-256-gcm', sealedInline: true }), LockOptionError);
});

test('keylock lock --cipher aes-256-gcm; inspect names it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-aes-'));
  writeFileSync(join(dir, 'v.key'), encodeVendorSecret(vendorSeed));
  const run = (...a: string[]) => spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...a], { encoding: 'utf8', cwd: dir });
  const mlp = join(root, 'models/reference/mnist-mlp.onnx');
  const r = run('lock', mlp, '--scheme', 'sealed', '--vendor', 'v.key', '--out', 'a.klm', '--key-out', 'a.key', '--cipher', 'aes-256-gcm');
  assert.equal(r.status, 0, r.stderr);
  assert.match(run('inspect', 'a.klm').stdout, /sealed +\d+ tensor\(s\), \d+ bytes, AES-256-GCM \(cipher aes-256-gcm\)/);
  const bad = run('lock', mlp, '--scheme', 'sealed', '--vendor', 'v.key', '--out', 'b.klm', '--key-out', 'b.key', '--cipher', 'aes-256-gcm', '--inline');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /error: --inline seals with xchacha20-poly1305 or xsalsa20-poly1305, not aes-256-gcm/);
  assert.match(bad.stderr, /hint: /);
});

test('Deno (node_modules/.bin/deno): keylock adopts its node:crypto for AES-256-GCM and opens the vectors on every path', { skip: existsSync(join(root, 'node_modules/.bin/deno')) ? false : 'node_modules/.bin/deno is absent' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-aes-deno-'));
  const src = join(dir, 'check.mjs');
  writeFileSync(src, `
import { aesGcmKey, prepareAesGcm, setAesGcmPath } from ${JSON.stringify(join(root, 'keystore/aead.ts'))};
import { sealedAesGcmKey, sealedAesGcmNonce } from ${JSON.stringify(join(root, 'runtime/keys/derive.ts'))};
const V = JSON.parse(Deno.readTextFileSync(Deno.args[0]));
const h = (s) => new Uint8Array(s.match(/../g).map((b) => parseInt(b, 16)));
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const out = { chosen: await prepareAesGcm(), paths: {} };
for (const p of ['node', 'webcrypto', 'js']) {
  await setAesGcmPath(p);
  let ok = 0;
  for (const c of V.sealed_aesgcm_cipher) {
    const k = aesGcmKey(sealedAesGcmKey(h(V.keys[c.model_key])));
    const n = sealedAesGcmNonce(c.model_id, c.tensor_name, h(c.salt));
    const d = h(c.cipher);
    await k.open(d, h(c.tag), n, () => new Error('tag'));
    if (hex(d) === c.plain) ok++;
  }
  out.paths[p] = ok;
}
console.log(JSON.stringify(out));
`);
  const esbuild = await import('esbuild');
  await esbuild.build({ entryPoints: [src], outfile: join(dir, 'check.bundle.mjs'), bundle: true, format: 'esm', platform: 'browser', logLevel: 'error' });
  const r = spawnSync(join(root, 'node_modules/.bin/deno'), ['run', '--no-prompt', `--allow-read=${root}`, join(dir, 'check.bundle.mjs'), join(root, 'test/vectors/derive.json')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { chosen: string; paths: Record<string, number> };
  assert.equal(got.chosen, 'node', 'Deno\'s node:crypto passes the known answer and is chosen');
  assert.deepEqual(got.paths, { node: 4, webcrypto: 4, js: 4 });
});

test('an XChaCha20 .klm from before the salt (nonce of model id and tensor name only) still opens, with and without tags', async () => {
  const res = await lockOnnx(MLP, { schemes: ['sealed'], vendorSeed, modelId: 'mlp-unsalted' });
  const { manifest, model } = openKlm(res.klm);
  const entry = manifest.locks[0];
  assert.ok(entry.scheme === 'sealed' && entry.cipher === 'xchacha20-poly1305' && entry.salt);
  // Re-seal every tensor as keylock wrote it before the salt existed.
  const k = sealedXchachaKey(res.modelKey);
  const old = new Uint8Array(model);
  const tensors = entry.tensors.map((t) => {
    const d = old.subarray(t.offset, t.offset + t.length);
    xchachaOpenDetachedInPlace(d, t.mac, sealedXchachaNonce('mlp-unsalted', t.name, entry.salt), k, fail);
    return { ...t, mac: xchachaSealDetached(d, sealedXchachaNonce('mlp-unsalted', t.name), k) };
  });
  const { packKlm } = await import('../models/klm.ts');
  const { vendorKey: _v, digest: _d, modelBytes: _b, ...draft } = manifest;
  const unsalted = packKlm({ ...draft, locks: [{ scheme: 'sealed', cipher: 'xchacha20-poly1305', tensors }] }, old, vendorSeed);
  const e = openKlm(unsalted).manifest.locks[0];
  assert.ok(e.scheme === 'sealed' && e.salt === undefined, 'the entry has no salt');
  const ref = await loadModel(res.klm, { modelKey: res.modelKey });
  const want = await outHex(ref);
  await ref.release();
  for (const t of [undefined, trust]) {
    const m = await loadModel(unsalted, { modelKey: res.modelKey, trust: t });
    assert.equal(m.state, 'ready', m.error?.message);
    assert.equal(await outHex(m), want);
    await m.release();
  }
});
