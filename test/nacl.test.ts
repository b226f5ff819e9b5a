/**
 * keystore/nacl.ts's secretbox (on @noble/ciphers) against tweetnacl, the NaCl
 * implementation it replaced: byte-identical ciphertexts and MACs, and it opens
 * what tweetnacl sealed, on random keys, nonces, lengths and byte offsets.
 * Native Ed25519/X25519 against the tweetnacl fallback: test/crypto-paths.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nacl from 'tweetnacl';
import {
  open, seal, secretboxDetached, secretboxOpenDetached, secretboxOpenDetachedInPlace, sha256, sha256Async, sign, signKeyPair, verify, verifyAsync,
} from '../keystore/nacl.ts';
import { TamperedError } from '../keystore/errors.ts';

const fail = (): Error => new TamperedError('MAC mismatch');
/** Lengths around the Salsa20 block (64), the 32-byte Poly1305 key split and the 64 KiB slices. */
const LENGTHS = [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 96, 127, 128, 1000, 65535, 65536, 65536 + 31, 65536 + 32, 65536 + 33, 200_001];

function randomCase(len: number, offset: number): { plain: Uint8Array; key: Uint8Array; nonce: Uint8Array } {
  // A view at `offset` into a larger buffer: tensors inside a model are rarely 4-byte aligned.
  const plain = nacl.randomBytes(len + offset).subarray(offset);
  return { plain, key: nacl.randomBytes(32), nonce: nacl.randomBytes(24) };
}

test('secretbox: byte-identical to tweetnacl, both ways, at every length and alignment', () => {
  for (const len of [...LENGTHS, ...Array.from({ length: 20 }, () => Math.floor(Math.random() * 300_000))]) {
    for (const offset of [0, 1, 2, 3]) {
      const { plain, key, nonce } = randomCase(len, offset);
      const ref = nacl.secretbox(plain, nonce, key);
      const { cipher, mac } = secretboxDetached(plain, nonce, key);
      assert.deepEqual(mac, ref.subarray(0, 16), `MAC, length ${len}, offset ${offset}`);
      assert.deepEqual(cipher, ref.subarray(16), `ciphertext, length ${len}, offset ${offset}`);
      assert.deepEqual(seal(plain, nonce, key), ref);
      assert.deepEqual(open(ref, nonce, key, fail), plain);
      assert.deepEqual(secretboxOpenDetached(ref.subarray(16), ref.subarray(0, 16), nonce, key, fail), plain);
      const inPlace = new Uint8Array(len + 4).subarray(offset, offset + len);
      inPlace.set(ref.subarray(16));
      secretboxOpenDetachedInPlace(inPlace, ref.slice(0, 16), nonce, key, fail);
      assert.deepEqual(inPlace, plain, `in place, length ${len}, offset ${offset}`);
      // And the reverse direction: tweetnacl opens ours.
      const boxed = new Uint8Array(16 + len);
      boxed.set(mac, 0);
      boxed.set(cipher, 16);
      assert.deepEqual(nacl.secretbox.open(boxed, nonce, key), plain);
    }
  }
});

test('secretbox: a changed byte, MAC or key fails with the typed error and leaves the data as it was', () => {
  const { plain, key, nonce } = randomCase(100_000, 1);
  const ref = nacl.secretbox(plain, nonce, key);
  const cipher = ref.slice(16);
  const mac = ref.slice(0, 16);
  for (const [what, c, m, k] of [
    ['ciphertext byte', (() => { const x = cipher.slice(); x[77_777] ^= 1; return x; })(), mac, key],
    ['MAC byte', cipher, (() => { const x = mac.slice(); x[15] ^= 0x80; return x; })(), key],
    ['key', cipher, mac, nacl.randomBytes(32)],
  ] as const) {
    const data = c.slice();
    assert.throws(() => secretboxOpenDetachedInPlace(data, m, nonce, k, fail), TamperedError, what);
    assert.deepEqual(data, c, `${what}: the ciphertext is untouched`);
    assert.throws(() => secretboxOpenDetached(c, m, nonce, k, fail), TamperedError, what);
  }
  const boxed = ref.slice();
  boxed[20] ^= 4;
  assert.throws(() => open(boxed, nonce, key, fail), TamperedError);
  assert.throws(() => open(new Uint8Array(15), nonce, key, fail), TamperedError, 'shorter than a MAC');
});

test('secretbox: misuse is a RangeError / TypeError, as before', () => {
  const k = new Uint8Array(32);
  const n = new Uint8Array(24);
  assert.throws(() => secretboxDetached(new Uint8Array(4), new Uint8Array(23), k), RangeError);
  assert.throws(() => secretboxDetached(new Uint8Array(4), n, new Uint8Array(31)), RangeError);
  assert.throws(() => secretboxOpenDetachedInPlace(new Uint8Array(4), new Uint8Array(15), n, k, fail), RangeError);
  assert.throws(() => secretboxOpenDetachedInPlace([1, 2] as unknown as Uint8Array, new Uint8Array(16), n, k, fail), TypeError);
});

test('sha256Async equals sha256, below and above the WebCrypto threshold', async () => {
  for (const len of [0, 3, 1000, (1 << 20) - 1, 1 << 20, (3 << 20) + 5]) {
    const d = nacl.randomBytes(len + 1).subarray(1);
    assert.deepEqual(await sha256Async(d), sha256(d), `length ${len}`);
  }
});

test('verifyAsync (native Ed25519 where available) agrees with tweetnacl\'s verify', async () => {
  const { publicKey, secretKey } = signKeyPair(nacl.randomBytes(32));
  for (const len of [0, 1, 100, 5000]) {
    const msg = nacl.randomBytes(len);
    const sig = sign(msg, secretKey);
    verify(msg, sig, publicKey, 'x');
    await verifyAsync(msg, sig, publicKey, 'x');
    const badSig = sig.slice();
    badSig[len % 64] ^= 1;
    const badMsg = new Uint8Array(msg.length + 1);
    badMsg.set(msg);
    for (const [m, g, k] of [[msg, badSig, publicKey], [badMsg, sig, publicKey], [msg, sig, signKeyPair(nacl.randomBytes(32)).publicKey], [msg, sig.subarray(0, 63), publicKey]] as const) {
      assert.throws(() => verify(m, g, k, 'x'), TamperedError);
      await assert.rejects(verifyAsync(m, g, k, 'x'), TamperedError);
    }
  }
  await assert.rejects(verifyAsync(new Uint8Array(1), new Uint8Array(64), new Uint8Array(31), 'x'), RangeError);
});
