/**
 * The WebAssembly SIMD ChaCha20 / XChaCha20 that decrypts `sealed` inline
 * tensors before each run (keystore/wasm/chacha.c): published known answers,
 * agreement with @noble/ciphers and with Node's own ChaCha20 at every size
 * class around its 4-block step and tail, and the arena (buffers in its own
 * memory, nothing left behind).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDecipheriv } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chacha20, xchacha20 } from '@noble/ciphers/chacha.js';
import { xchachaSubkey } from '../keystore/aead.ts';
import { randomBytes } from '../keystore/nacl.ts';
import { chachaWasmReady, chachaXorWasm, createXChachaArena, forceChachaJs, hchachaWasm, prepareChachaWasm } from '../keystore/wasm/chacha.ts';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const SIZES = [0, 1, 15, 63, 64, 65, 127, 191, 255, 256, 257, 511, 512, 513, 1000, 4096 + 33, 65536 + 7];

test('the WebAssembly ChaCha20 is what this engine runs', async () => {
  assert.equal(await prepareChachaWasm(), true);
  assert.equal(chachaWasmReady(), true, 'Node 20 runs WebAssembly SIMD: the arena must be available here');
  forceChachaJs(true);
  try {
    assert.equal(createXChachaArena(new Uint8Array(32), []), null, 'forceChachaJs(true) selects the JavaScript path');
  } finally {
    forceChachaJs(false);
  }
});

test('known answers: RFC 8439 §2.4.2 (ChaCha20, counter 1) and draft-irtf-cfrg-xchacha-03 §2.2.1 (HChaCha20)', () => {
  const key = new Uint8Array(32).map((_, i) => i);
  const nonce = hex('000000000000004a00000000');
  const plain = new TextEncoder().encode("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
  const want = hex(`6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0bf91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d807ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab77937365af90bbf74a35be6b40b8eedf2785e42874d`);
  const got = new Uint8Array(plain.length);
  assert.equal(chachaXorWasm(got, plain, nonce, key, 1), true);
  assert.deepEqual(got, want);
  const hk = hchachaWasm(key, hex('000000090000004a0000000031415927'));
  assert.deepEqual(hk, hex('82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc'));
});

test('agrees with @noble/ciphers and node:crypto at every size class, any counter', () => {
  for (const n of SIZES) {
    const key = randomBytes(32);
    const nonce = randomBytes(24);
    const src = randomBytes(n);
    for (const ctr of [0, 1, 0xffff0000]) {
      const got = new Uint8Array(n);
      assert.equal(chachaXorWasm(got, src, nonce, key, ctr), true);
      assert.deepEqual(got, xchacha20(key, nonce, src, undefined, ctr), `XChaCha20 ${n} bytes from block ${ctr}`);
      const got12 = new Uint8Array(n);
      assert.equal(chachaXorWasm(got12, src, nonce.subarray(0, 12), key, ctr), true);
      assert.deepEqual(got12, chacha20(key, nonce.subarray(0, 12), src, undefined, ctr), `ChaCha20 ${n} bytes from block ${ctr}`);
    }
    // Node's ChaCha20 (16-byte IV = le32 counter || nonce12) under the XChaCha20 subkey, from block 1: the run hook's stream.
    const { subkey, iv12 } = xchachaSubkey(key, nonce);
    const iv = new Uint8Array(16);
    iv[0] = 1;
    iv.set(iv12, 4);
    const viaNode = createDecipheriv('chacha20', subkey, iv).update(src);
    const a = createXChachaArena(key, [{ ciphertext: src, nonce }])!;
    a.decrypt();
    assert.ok(Buffer.from(a.buffers[0]).equals(viaNode), `arena vs node:crypto, ${n} bytes`);
    a.wipe();
  }
  assert.throws(() => chachaXorWasm(new Uint8Array(2), new Uint8Array(3), new Uint8Array(24), new Uint8Array(32), 1), RangeError);
  assert.throws(() => chachaXorWasm(new Uint8Array(3), new Uint8Array(3), new Uint8Array(16), new Uint8Array(32), 1), RangeError);
  assert.throws(() => createXChachaArena(new Uint8Array(31), []), RangeError);
});

test('arena: buffers live in its own memory, 64-byte aligned; ciphertexts stay; stack zeroed after each decryption; wipe leaves only zeros', () => {
  const key = randomBytes(32);
  const slots = [300, 64, 17, 4096].map((n) => ({ ciphertext: randomBytes(n), nonce: randomBytes(24) }));
  const a = createXChachaArena(key, slots)!;
  const mem = new Uint8Array(a.memoryBuffer);
  const k = key.slice();
  key.fill(0); // the arena keeps its own copy
  for (let round = 0; round < 2; round++) {
    a.decrypt();
    slots.forEach((s, i) => {
      const b = a.buffers[i];
      assert.equal(b.buffer, a.memoryBuffer, 'a view of the arena memory');
      assert.equal(b.byteOffset % 64, 0);
      assert.deepEqual(b.slice(), xchacha20(k, s.nonce, s.ciphertext, undefined, 1));
    });
    assert.ok(mem.subarray(0, 16384).every((x) => x === 0), 'the module stack is zero after decrypt (the tail keystream)');
    a.clear();
    assert.ok(a.buffers.every((b) => b.every((x) => x === 0)), 'clear zeroes every run buffer');
  }
  a.wipe();
  assert.ok(mem.every((x) => x === 0), 'wipe zeroes the whole memory: key, ciphertexts, buffers');
  assert.throws(() => a.decrypt(), /after wipe/);
});

test('the committed module is what keystore/wasm/build-chacha.sh builds from chacha.c', { skip: spawnSync('clang', ['--version']).status === 0 ? false : 'clang is not installed' }, () => {
  const here = fileURLToPath(new URL('../keystore/wasm/', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'keylock-chacha-'));
  try {
    const out = join(dir, 'chacha-wasm.ts');
    execFileSync('bash', [join(here, 'build-chacha.sh'), out], { stdio: 'pipe' });
    const strip = (s: string): string => s.split('\n').slice(1).join('\n'); // line 1 names the compiler version
    assert.equal(strip(readFileSync(out, 'utf8')), strip(readFileSync(join(here, 'chacha-wasm.ts'), 'utf8')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
