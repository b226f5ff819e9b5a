/**
 * The WebAssembly XSalsa20-Poly1305 that opens `sealed` tensors, against the
 * JavaScript ciphers (@noble/ciphers encrypts, tweetnacl's Poly1305 and noble's
 * XSalsa20 open on the fallback path) on every size class that crosses a block,
 * a Poly1305 block or a 64 KiB slice boundary.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import nacl from 'tweetnacl';
import { randomBytes, secretboxDetached, secretboxOpenDetachedInPlace } from '../keystore/nacl.ts';
import { TamperedError } from '../keystore/errors.ts';
import { forceSecretboxJs, prepareSecretboxWasm, secretboxWasm } from '../keystore/wasm/secretbox.ts';

const SIZES = [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 95, 96, 97, 255, 256, 257, 288, 289, 65535, 65536, 65567, 65568, 65569, 131104, 200003, 3 * 65536 + 37];
const fail = (): Error => new TamperedError('MAC');

function withJs<T>(f: () => T): T {
  forceSecretboxJs(true);
  try {
    return f();
  } finally {
    forceSecretboxJs(false);
  }
}

test('the WebAssembly secretbox is what this engine runs', async () => {
  assert.equal(await prepareSecretboxWasm(), true);
  assert.ok(secretboxWasm(), 'Node 20 runs WebAssembly SIMD: the fast path must be taken here');
  assert.equal(withJs(() => secretboxWasm()), null, 'forceSecretboxJs(true) selects the JavaScript path');
});

test('opens exactly what NaCl seals, at every size class, at any byte offset, and leaves no key or data in the module', () => {
  for (const size of SIZES) {
    for (const shift of [0, 1, 3]) {
      const plain = randomBytes(size);
      const key = randomBytes(32);
      const nonce = randomBytes(24);
      const { cipher, mac } = secretboxDetached(plain, nonce, key);
      // The attached form is NaCl's own: tweetnacl must agree with the ciphertext and MAC.
      assert.deepEqual(nacl.secretbox(plain, nonce, key), Uint8Array.from([...mac, ...cipher]), `NaCl agrees, size ${size}`);
      const host = new Uint8Array(size + shift);
      const data = host.subarray(shift);
      data.set(cipher);
      secretboxOpenDetachedInPlace(data, mac, nonce, key, fail);
      assert.ok(Buffer.from(data).equals(plain), `wasm open, size ${size}, offset ${shift}`);
      const js = cipher.slice();
      withJs(() => secretboxOpenDetachedInPlace(js, mac, nonce, key, fail));
      assert.ok(Buffer.from(js).equals(plain), `js open, size ${size}`);
    }
  }
  const w = secretboxWasm()!;
  const mem = new Uint8Array(w.memory.buffer);
  assert.ok(mem.subarray(w.buffer(), w.buffer() + 65536).every((b) => b === 0), 'slice buffer wiped');
  assert.ok(mem.subarray(w.io(), w.io() + 64).every((b) => b === 0), 'key area wiped');
});

test('a changed byte or MAC fails before anything is decrypted; the ciphertext is left as it was', () => {
  for (const size of [1, 100, 70000]) {
    const key = randomBytes(32);
    const nonce = randomBytes(24);
    const { cipher, mac } = secretboxDetached(randomBytes(size), nonce, key);
    for (const at of [0, size >> 1, size - 1]) {
      const bad = cipher.slice();
      bad[at] ^= 0x20;
      const before = bad.slice();
      assert.throws(() => secretboxOpenDetachedInPlace(bad, mac, nonce, key, fail), TamperedError);
      assert.deepEqual(bad, before);
    }
    const badMac = mac.slice();
    badMac[15] ^= 1;
    const c = cipher.slice();
    assert.throws(() => secretboxOpenDetachedInPlace(c, badMac, nonce, key, fail), TamperedError);
    assert.deepEqual(c, cipher);
    const wrongKey = randomBytes(32);
    assert.throws(() => secretboxOpenDetachedInPlace(cipher.slice(), mac, nonce, wrongKey, fail), TamperedError);
  }
});

const here = fileURLToPath(new URL('../keystore/wasm/', import.meta.url));
const clang = spawnSync('clang', ['--version']).status === 0 && spawnSync('wasm-ld', ['--version']).status === 0;

test('the committed module is what secretbox.c builds to', { skip: clang ? false : 'clang and lld are not installed (apt-get install -y clang lld)' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'keylock-wasm-'));
  try {
    const out = join(dir, 'secretbox-wasm.ts');
    execFileSync('bash', [join(here, 'build.sh'), out], { stdio: 'pipe' });
    const strip = (s: string): string => s.split('\n').slice(1).join('\n'); // line 1 names the compiler version
    assert.equal(strip(readFileSync(out, 'utf8')), strip(readFileSync(join(here, 'secretbox-wasm.ts'), 'utf8')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
