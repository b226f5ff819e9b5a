/**
 * The two paths through keystore/nacl.ts's Ed25519 and X25519: native
 * (node:crypto here; WebCrypto's Ed25519 checked on its own) and the forced
 * tweetnacl fallback (`forceCryptoFallback(true)`). Same bytes, same verdicts:
 * RFC 8032 and RFC 7748 known answers, every signature and box in
 * test/vectors/device.json, the device scenarios replayed on both paths, random
 * round trips and tampering. (test/vectors/derive.json holds no signature and
 * no box: its secretbox keys are SHAKE-256 output, tested in derive.test.ts.)
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import nacl from 'tweetnacl';
import {
  boxKeyPair, cryptoInfo, forceCryptoFallback, openFromSender, prepareCrypto, sealToDevice, sealToDeviceWith, sign, signer, signKeyPair, verify, verifyAsync,
} from '../keystore/nacl.ts';
import { ed25519Web } from '../keystore/native.ts';
import { TamperedError, KeylockError } from '../keystore/errors.ts';
import { decodeCbor, Fields } from '../keystore/cbor.ts';
import { decodeKlsOuter, klsKeys, openKlsBody } from '../keystore/kls.ts';
import { Keystore } from '../keystore/keystore.ts';
import { memoryStorage } from '../keystore/storage.ts';
import { loadModel } from '../runtime/load.ts';

const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
const fail = (): Error => new TamperedError('box does not open');
const PATHS = ['native', 'fallback'] as const;
type Path = (typeof PATHS)[number];

/** Runs `f` on one path and puts the native path back. */
function on<T>(path: Path, f: () => T): T {
  forceCryptoFallback(path === 'fallback');
  try {
    return f();
  } finally {
    forceCryptoFallback(false);
  }
}
async function onAsync<T>(path: Path, f: () => Promise<T>): Promise<T> {
  forceCryptoFallback(path === 'fallback');
  try {
    return await f();
  } finally {
    forceCryptoFallback(false);
  }
}
after(() => forceCryptoFallback(false));

/** RFC 8032 §7.1, tests 1-3: secret key (seed), public key, message, signature. */
const RFC8032 = [
  { name: 'TEST 1', seed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', pub: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', msg: '',
    sig: 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b' },
  { name: 'TEST 2', seed: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb', pub: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c', msg: '72',
    sig: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00' },
  { name: 'TEST 3', seed: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7', pub: 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025', msg: 'af82',
    sig: '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a' },
];

/** RFC 7748 §6.1. */
const RFC7748 = {
  aliceSecret: '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a',
  alicePub: '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
  bobSecret: '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb',
  bobPub: 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f',
};

/** Ed25519's group order L, little-endian: S + L is the classic malleated signature. */
const L = hex('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010');
function malleate(sig: Uint8Array): Uint8Array {
  const out = sig.slice();
  let carry = 0;
  for (let i = 0; i < 32; i++) {
    const v = out[32 + i] + L[i] + carry;
    out[32 + i] = v & 0xff;
    carry = v >> 8;
  }
  return out;
}

/** Every way a signature check must fail, from one good (message, signature, key). */
function tamperings(msg: Uint8Array, sig: Uint8Array, pub: Uint8Array): [string, Uint8Array, Uint8Array, Uint8Array][] {
  const flip = (b: Uint8Array, i: number, bit = 1): Uint8Array => { const c = b.slice(); c[i] ^= bit; return c; };
  const longer = new Uint8Array(msg.length + 1);
  longer.set(msg);
  return [
    ['message bit', msg.length ? flip(msg, msg.length - 1) : Uint8Array.of(0), sig, pub],
    ['message longer', longer, sig, pub],
    ['R bit', msg, flip(sig, 3), pub],
    ['S bit', msg, flip(sig, 40), pub],
    ['S + L (non-canonical)', msg, malleate(sig), pub],
    ['S top bits', msg, flip(sig, 63, 0x80), pub],
    ['public key bit', msg, sig, flip(pub, 0)],
    ['another key', msg, sig, nacl.sign.keyPair().publicKey],
    ['signature of 63 bytes', msg, sig.subarray(0, 63), pub],
    ['signature of 65 bytes', msg, Uint8Array.from([...sig, 0]), pub],
  ];
}

async function assertRefused(path: Path, m: Uint8Array, s: Uint8Array, k: Uint8Array, what: string): Promise<void> {
  on(path, () => assert.throws(() => verify(m, s, k, 'x'), TamperedError, `${path}: verify, ${what}`));
  await onAsync(path, () => assert.rejects(verifyAsync(m, s, k, 'x'), TamperedError, `${path}: verifyAsync, ${what}`));
}

test('cryptoInfo: native on Node, tweetnacl when forced; read-only; prepareCrypto never pending', async () => {
  const info = cryptoInfo();
  assert.deepEqual({ ...info }, { ed25519: 'node:crypto', ed25519Sync: 'node:crypto', x25519: 'node:crypto', forced: false });
  assert.ok(Object.isFrozen(info));
  assert.throws(() => { (info as { ed25519: string }).ed25519 = 'tweetnacl'; }, TypeError);
  assert.deepEqual({ ...on('fallback', cryptoInfo) }, { ed25519: 'tweetnacl', ed25519Sync: 'tweetnacl', x25519: 'tweetnacl', forced: true });
  assert.deepEqual({ ...(await prepareCrypto()) }, { ...info });
  assert.equal(cryptoInfo().ed25519, 'node:crypto', 'back to native after forcing');
});

test('without node:crypto (as in a browser): WebCrypto verifies at load, tweetnacl does the rest, same bytes', () => {
  // A child process whose runtime hands out no node:crypto, as a browser page's.
  const naclUrl = new URL('../keystore/nacl.ts', import.meta.url).href;
  const v = RFC8032[2];
  const code = `
    delete process.getBuiltinModule;
    const k = await import(${JSON.stringify(naclUrl)});
    const h = (x) => Uint8Array.from(Buffer.from(x, 'hex'));
    const before = k.cryptoInfo();
    const kp = k.signKeyPair(h('${v.seed}'));
    const sig = k.sign(h('${v.msg}'), kp.secretKey);
    await k.verifyAsync(h('${v.msg}'), sig, kp.publicKey, 'x');
    let refused = false;
    try { await k.verifyAsync(h('${v.msg}00'), sig, kp.publicKey, 'x'); } catch (e) { refused = e.name === 'TamperedError'; }
    const box = k.sealToDeviceWith(new Uint8Array(32).fill(1), h('${RFC7748.bobPub}'), h('${RFC7748.aliceSecret}'), new Uint8Array(24));
    console.log(JSON.stringify({ before, after: await k.prepareCrypto(), sig: Buffer.from(sig).toString('hex'), refused, box: Buffer.from(box.box).toString('hex') }));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(out.before, { ed25519: 'pending', ed25519Sync: 'tweetnacl', x25519: 'tweetnacl', forced: false });
  assert.deepEqual(out.after, { ed25519: 'webcrypto', ed25519Sync: 'tweetnacl', x25519: 'tweetnacl', forced: false });
  assert.equal(out.sig, v.sig);
  assert.equal(out.refused, true);
  assert.equal(out.box, toHex(nacl.box(new Uint8Array(32).fill(1), new Uint8Array(24), hex(RFC7748.bobPub), hex(RFC7748.aliceSecret))));
});

test('RFC 8032 tests 1-3: same public key and signature on both paths, verified by both', async () => {
  for (const v of RFC8032) {
    const msg = hex(v.msg);
    for (const path of PATHS) {
      const kp = on(path, () => signKeyPair(hex(v.seed)));
      assert.equal(toHex(kp.publicKey), v.pub, `${v.name}, ${path}: public key`);
      assert.equal(toHex(kp.secretKey), v.seed + v.pub, `${v.name}, ${path}: secret key is seed || public key`);
      const sig = on(path, () => sign(msg, kp.secretKey));
      assert.equal(toHex(sig), v.sig, `${v.name}, ${path}: signature`);
      assert.equal(Object.getPrototypeOf(sig), Uint8Array.prototype, 'a plain Uint8Array, not a Buffer');
      for (const checker of PATHS) {
        on(checker, () => verify(msg, hex(v.sig), hex(v.pub), v.name));
        await onAsync(checker, () => verifyAsync(msg, hex(v.sig), hex(v.pub), v.name));
      }
      for (const [what, m, s, k] of tamperings(msg, hex(v.sig), hex(v.pub))) await assertRefused(path, m, s, k, `${v.name}, ${what}`);
    }
    assert.equal(toHex(nacl.sign.detached(msg, hex(v.seed + v.pub))), v.sig, 'tweetnacl agrees (the vectors are typed right)');
  }
});

test('RFC 7748 §6.1 through NaCl box: same ephemeral public key, same box, both open it', () => {
  const plain = new TextEncoder().encode('a model key, 32 bytes long......');
  const nonce = new Uint8Array(24).map((_, i) => i * 7);
  const ref = nacl.box(plain, nonce, hex(RFC7748.bobPub), hex(RFC7748.aliceSecret));
  for (const path of PATHS) {
    const s = on(path, () => sealToDeviceWith(plain, hex(RFC7748.bobPub), hex(RFC7748.aliceSecret), nonce));
    assert.equal(toHex(s.ephemeralPub), RFC7748.alicePub, `${path}: X25519 public key`);
    assert.equal(toHex(s.box), toHex(ref), `${path}: box`);
    for (const opener of PATHS) assert.deepEqual(on(opener, () => openFromSender(s, hex(RFC7748.bobSecret), fail)), plain, `${path} sealed, ${opener} opened`);
  }
});

// ---- test/vectors/device.json ----

interface Scenario {
  name: string; outcome: string; install: string[]; klm: string;
  expect: { state?: string; code?: string; installError?: { step: number; code: string }; output?: { name: string; dims: number[]; data: string } };
}
const V = JSON.parse(readFileSync(new URL('./vectors/device.json', import.meta.url), 'utf8')) as {
  storageKey: string; vendorPub: string; kls: string; input: { name: string; dims: number[]; data: string }; scenarios: Scenario[];
};
/** The seeds test/vectors/make-device-vectors.ts signs with: the vendor's and an unpinned one. */
const VECTOR_SEEDS = [new Uint8Array(32).fill(0x01), new Uint8Array(32).fill(0x02)];

/** Every signed file in the vectors, once each (scenarios share files). */
function signedFiles(): Map<string, { format: string; signed: Uint8Array; sig: Uint8Array }> {
  const files = new Map<string, { format: string; signed: Uint8Array; sig: Uint8Array }>();
  for (const s of V.scenarios) {
    for (const h of [...s.install, s.klm]) {
      if (files.has(h)) continue;
      const f = Fields.of('file', decodeCbor(hex(h), 'file', 1 << 24));
      files.set(h, { format: f.text('format'), signed: f.bytes('signed'), sig: f.bytes('sig') });
    }
  }
  return files;
}

test('device vectors: every signature re-made byte for byte, and verified, on both paths', async () => {
  const files = signedFiles();
  assert.ok(files.size >= 10, `${files.size} signed files`);
  for (const path of PATHS) {
    const signers = on(path, () => VECTOR_SEEDS.map((s) => signKeyPair(s)));
    assert.equal(toHex(signers[0].publicKey), V.vendorPub, `${path}: the vendor key`);
    for (const [, f] of files) {
      const by = signers.filter((k) => { try { on(path, () => verify(f.signed, f.sig, k.publicKey, f.format)); return true; } catch { return false; } });
      assert.equal(by.length, 1, `${path}: ${f.format} verifies under exactly one of the two keys`);
      await onAsync(path, () => verifyAsync(f.signed, f.sig, by[0].publicKey, f.format));
      assert.equal(toHex(on(path, () => sign(f.signed, by[0].secretKey))), toHex(f.sig), `${path}: ${f.format} signature re-made`);
      const bad = f.signed.slice();
      bad[bad.length >> 1] ^= 0x04;
      await assertRefused(path, bad, f.sig, by[0].publicKey, `${f.format}, signed bytes changed`);
    }
  }
});

test('device vectors: every sealed model key opens the same on both paths; the device key pair and re-sealing agree', () => {
  const state = openKlsBody(decodeKlsOuter(hex(V.kls)), klsKeys(hex(V.storageKey)));
  const grants = [...new Set(V.scenarios.flatMap((s) => s.install))]
    .map((h) => Fields.of('file', decodeCbor(hex(h), 'file', 1 << 20)))
    .filter((f) => f.text('format') === 'keylock/klg')
    .map((f) => Fields.of('grant', decodeCbor(f.bytes('signed'), 'grant', 1 << 20)));
  assert.ok(grants.length >= 6, `${grants.length} grants`);
  let opened = 0;
  for (const g of grants) {
    const sk = g.map('sealedKey');
    const sealed = { ephemeralPub: sk.bytes('ephemeralPub'), nonce: sk.bytes('nonce'), box: sk.bytes('box') };
    const ours = equalHex(g.bytes('devicePub'), state.devicePub);
    const results = PATHS.map((path) => on(path, () => {
      try {
        return toHex(openFromSender(sealed, state.deviceSecret, fail));
      } catch (e) {
        assert.ok(e instanceof TamperedError);
        return 'refused';
      }
    }));
    assert.equal(results[0], results[1], 'native and fallback open alike');
    if (ours) {
      assert.match(results[0], /^(11){32}$|^(12){32}$/, 'the model key (or the wrong one the vectors seal on purpose)');
      opened++;
    } else {
      assert.equal(results[0], 'refused', 'a grant for another device does not open here');
    }
  }
  assert.ok(opened >= 5);
  // The device's public key from its secret (what boxKeyPair computes), and a box re-made with a fixed ephemeral key and nonce.
  const eph = new Uint8Array(32).fill(0x5a);
  const nonce = new Uint8Array(24).fill(0xa5);
  const made = PATHS.map((path) => on(path, () => ({
    self: sealToDeviceWith(new Uint8Array(32), state.devicePub, state.deviceSecret, nonce).ephemeralPub,
    box: sealToDeviceWith(new Uint8Array(32).fill(0x11), state.devicePub, eph, nonce),
  })));
  for (const m of made) assert.equal(toHex(m.self), toHex(state.devicePub), 'X25519 public key of the device secret');
  assert.deepEqual(made[0].box, made[1].box);
  assert.deepEqual(made[0].box.box, nacl.box(new Uint8Array(32).fill(0x11), nonce, state.devicePub, eph));
});

function equalHex(a: Uint8Array, b: Uint8Array): boolean {
  return toHex(a) === toHex(b);
}

async function replay(s: Scenario): Promise<string> {
  const storage = memoryStorage();
  await storage.create(hex(V.kls));
  const ks = await Keystore.open(storage, { unlock: { kind: 'hook', getKey: async () => hex(V.storageKey) } });
  for (const [i, f] of s.install.entries()) {
    const b = hex(f);
    const format = Fields.of('file', decodeCbor(b, 'file', 1 << 20)).text('format');
    try {
      await (format === 'keylock/klr' ? ks.installRevocation(b) : format === 'keylock/klt' ? ks.installReinstate(b) : ks.installGrant(b));
    } catch (e) {
      assert.ok(e instanceof KeylockError, String(e));
      return `install ${i}: ${e.code}`;
    }
  }
  const m = await loadModel(hex(s.klm), { keystore: ks });
  if (m.state !== 'ready') return `${m.state}: ${m.error?.code}`;
  const out = await m.run({ [V.input.name]: { dtype: 'float32', dims: V.input.dims, data: new Float32Array(hex(V.input.data).buffer) } });
  await m.release();
  const y = out[s.expect.output!.name];
  return `ready: ${toHex(new Uint8Array(y.data.buffer, y.data.byteOffset, y.data.byteLength))}`;
}

for (const s of V.scenarios) {
  test(`device vector "${s.name}" replayed on both paths: ${s.outcome}`, async () => {
    const want = s.expect.installError ? `install ${s.expect.installError.step}: ${s.expect.installError.code}`
      : s.expect.output ? `ready: ${s.expect.output.data}` : `${s.expect.state}: ${s.expect.code}`;
    for (const path of PATHS) assert.equal(await onAsync(path, () => replay(s)), want, path);
  });
}

// ---- random round trips, tampering, edge cases ----

test('Ed25519, random keys and messages: both paths sign the same bytes and accept each other\'s', async () => {
  for (const len of [0, 1, 31, 32, 63, 64, 65, 127, 128, 1000, 2048, 65537]) {
    const seed = nacl.randomBytes(32);
    const msg = nacl.randomBytes(len);
    const [n, f] = PATHS.map((path) => on(path, () => { const kp = signKeyPair(seed); return { kp, sig: sign(msg, kp.secretKey) }; }));
    assert.deepEqual(n.kp, f.kp, `key pair, ${len}`);
    assert.deepEqual(n.sig, f.sig, `signature, ${len}`);
    assert.deepEqual(n.sig, nacl.sign.detached(msg, nacl.sign.keyPair.fromSeed(seed).secretKey));
    for (const path of PATHS) {
      on(path, () => verify(msg, n.sig, n.kp.publicKey, 'x'));
      await onAsync(path, () => verifyAsync(msg, n.sig, n.kp.publicKey, 'x'));
    }
    if (len <= 2048) for (const [what, m, s, k] of tamperings(msg, n.sig, n.kp.publicKey)) for (const path of PATHS) await assertRefused(path, m, s, k, `${what}, ${len}`);
  }
});

test('signer (the key imported once, for a fleet of grants): the same signatures as sign and tweetnacl, on both paths, odd keys included', () => {
  const a = nacl.sign.keyPair();
  const odd = new Uint8Array(64);
  odd.set(a.secretKey.subarray(0, 32));
  odd.set(nacl.sign.keyPair().publicKey, 32);
  for (const sk of [a.secretKey, odd]) {
    for (const path of PATHS) {
      const s = on(path, () => signer(sk));
      for (const len of [0, 1, 64, 2048]) {
        const msg = nacl.randomBytes(len);
        assert.deepEqual(s(msg), nacl.sign.detached(msg, sk), `${path}, ${len} bytes`);
      }
    }
  }
  assert.throws(() => signer(new Uint8Array(32)), RangeError);
});

test('Ed25519: S + L is refused on both paths (tweetnacl alone would take it), and by WebCrypto', async () => {
  const kp = nacl.sign.keyPair();
  const msg = nacl.randomBytes(100);
  const sig = nacl.sign.detached(msg, kp.secretKey);
  const bad = malleate(sig);
  assert.equal(nacl.sign.detached.verify(msg, bad, kp.publicKey), true, 'tweetnacl does not check S < L');
  for (const path of PATHS) await assertRefused(path, msg, bad, kp.publicKey, 'S + L');
  const web = await ed25519Web();
  assert.ok(web, 'WebCrypto Ed25519 in Node 20');
  assert.equal(await web.verify(msg, bad, kp.publicKey), false);
});

test('Ed25519: a secret key whose second half is not its public key signs as tweetnacl does, on both paths', () => {
  const a = nacl.sign.keyPair();
  const b = nacl.sign.keyPair();
  const odd = new Uint8Array(64);
  odd.set(a.secretKey.subarray(0, 32));
  odd.set(b.publicKey, 32);
  const msg = nacl.randomBytes(50);
  for (const path of PATHS) assert.deepEqual(on(path, () => sign(msg, odd)), nacl.sign.detached(msg, odd), path);
});

test('WebCrypto Ed25519 (the browsers\' path) gives the same verdicts as both paths', async () => {
  const web = (await ed25519Web())!;
  for (const v of RFC8032) {
    assert.equal(await web.verify(hex(v.msg), hex(v.sig), hex(v.pub)), true, v.name);
    for (const [what, m, s, k] of tamperings(hex(v.msg), hex(v.sig), hex(v.pub))) {
      if (s.length !== 64) continue; // lengths are refused before any implementation runs
      assert.equal(await web.verify(m, s, k), false, `${v.name}: ${what}`);
    }
  }
});

test('X25519 box, random: native and fallback seal the same bytes, open each other\'s, refuse tampering alike', () => {
  for (const len of [0, 1, 16, 32, 33, 1000]) {
    const dev = nacl.box.keyPair();
    const eph = nacl.randomBytes(32);
    const nonce = nacl.randomBytes(24);
    const plain = nacl.randomBytes(len);
    const [n, f] = PATHS.map((path) => on(path, () => sealToDeviceWith(plain, dev.publicKey, eph, nonce)));
    assert.deepEqual(n, f, `length ${len}`);
    assert.deepEqual(n.box, nacl.box(plain, nonce, dev.publicKey, eph));
    for (const sealer of PATHS) {
      const s = on(sealer, () => sealToDevice(plain, dev.publicKey));
      assert.equal(s.ephemeralPub.length, 32);
      for (const opener of PATHS) {
        assert.deepEqual(on(opener, () => openFromSender(s, dev.secretKey, fail)), plain, `${sealer} → ${opener}`);
        const flip = (b: Uint8Array, i: number): Uint8Array => { const c = b.slice(); c[i % c.length] ^= 1; return c; };
        for (const [what, t] of [
          ['box byte', { ...s, box: flip(s.box, 16 + len) }], ['MAC byte', { ...s, box: flip(s.box, 3) }],
          ['nonce', { ...s, nonce: flip(s.nonce, 5) }], ['ephemeral key', { ...s, ephemeralPub: flip(s.ephemeralPub, 9) }],
          ['short box', { ...s, box: s.box.subarray(0, 15) }],
        ] as const) {
          assert.throws(() => on(opener, () => openFromSender(t, dev.secretKey, fail)), TamperedError, `${sealer} → ${opener}: ${what}`);
        }
        assert.throws(() => on(opener, () => openFromSender(s, nacl.box.keyPair().secretKey, fail)), TamperedError, 'another device');
      }
    }
  }
});

test('X25519: boxKeyPair on both paths gives a key pair tweetnacl agrees with', () => {
  for (const path of PATHS) {
    const kp = on(path, boxKeyPair);
    assert.deepEqual(kp.publicKey, nacl.box.keyPair.fromSecretKey(kp.secretKey).publicKey, path);
    assert.equal(Object.getPrototypeOf(kp.publicKey), Uint8Array.prototype);
  }
});

test('X25519: a low-order public key (which OpenSSL refuses) gives NaCl\'s bytes on both paths', () => {
  const eph = nacl.randomBytes(32);
  const nonce = nacl.randomBytes(24);
  const plain = nacl.randomBytes(40);
  for (const low of [new Uint8Array(32), Uint8Array.of(1, ...new Uint8Array(31))]) {
    const ref = nacl.box(plain, nonce, low, eph);
    for (const path of PATHS) {
      const s = on(path, () => sealToDeviceWith(plain, low, eph, nonce));
      assert.deepEqual(s.box, ref, path);
      // And opening a box whose ephemeral key is low-order: NaCl's all-zero shared secret, on both paths.
      const forged = { ephemeralPub: low, nonce, box: nacl.box(plain, nonce, low, eph) };
      assert.deepEqual(on(path, () => openFromSender(forged, nacl.randomBytes(32), fail)), plain, `${path}: opens as NaCl would`);
      assert.equal(on(path, () => sealToDevice(plain, low)).box.length, plain.length + 16);
    }
  }
});

test('misuse is still a RangeError on both paths', async () => {
  for (const path of PATHS) {
    assert.throws(() => on(path, () => signKeyPair(new Uint8Array(31))), RangeError);
    assert.throws(() => on(path, () => sign(new Uint8Array(1), new Uint8Array(32))), RangeError);
    assert.throws(() => on(path, () => verify(new Uint8Array(1), new Uint8Array(64), new Uint8Array(33), 'x')), RangeError);
    await assert.rejects(onAsync(path, () => verifyAsync(new Uint8Array(1), new Uint8Array(64), new Uint8Array(31), 'x')), RangeError);
    assert.throws(() => on(path, () => sealToDevice(new Uint8Array(1), new Uint8Array(31))), RangeError);
    assert.throws(() => on(path, () => openFromSender({ ephemeralPub: new Uint8Array(32), nonce: new Uint8Array(23), box: new Uint8Array(16) }, new Uint8Array(32), fail)), RangeError);
  }
});

test('env.crypto reports the implementation the boundary uses', async () => {
  const { env } = await import('../runtime/env.ts');
  const { verify: v, signKeyPair: kp, sign: s } = await import('../keystore/nacl.ts');
  const k = kp(new Uint8Array(32).fill(9));
  v(new Uint8Array([1]), s(new Uint8Array([1]), k.secretKey), k.publicKey, 'probe');
  assert.equal(env.crypto.ed25519Sync, 'node:crypto');
  assert.equal(env.crypto.ed25519, 'node:crypto');
});
