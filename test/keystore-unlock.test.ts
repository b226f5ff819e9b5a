import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keystore, memoryStorage, parseUnlock, parseRawKey, storageKey, newUnlockRecord, decodeKlsOuter, type UnlockProvider } from '../keystore/index.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { UnlockError } from '../keystore/errors.ts';

const vendorKeys = [signKeyPair(randomBytes(32)).publicKey];
const dirs: string[] = [];
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'keylock-unlock-')); dirs.push(d); return d; };
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('parseUnlock: the CLI spellings, and refusals', () => {
  assert.deepEqual(parseUnlock('file:/x/y.key'), { kind: 'file', path: '/x/y.key' });
  assert.deepEqual(parseUnlock('env:KL_KEY'), { kind: 'env', name: 'KL_KEY' });
  const p = parseUnlock('pass:env:KL_PASS');
  assert.equal(p.kind, 'pass');
  assert.equal(p.kind === 'pass' && p.source, 'env:KL_PASS');
  assert.equal(parseUnlock('pass:file:/p').kind, 'pass');
  for (const bad of ['pass:hunter2', 'pass:', 'hook', 'file:', 'env:', 'tpm:0', '']) assert.throws(() => parseUnlock(bad), RangeError, bad);
});

test('file: created 0600 with 32 random bytes when missing (create only); missing or wrong-size file is UnlockError', async () => {
  const dir = tmp();
  const keyPath = join(dir, 'k');
  const u = parseUnlock(`file:${keyPath}`);
  await assert.rejects(Keystore.open(join(dir, 'nothing.kls'), { unlock: u }), (e: Error & { code?: string }) => e.code === 'not-found');
  const ks = await Keystore.create(join(dir, 'd.kls'), { vendorKeys, unlock: u });
  assert.equal(statSync(keyPath).mode & 0o777, 0o600);
  assert.equal(statSync(keyPath).size, 32);
  const again = await Keystore.open(join(dir, 'd.kls'), { unlock: u });
  assert.equal(again.deviceId, ks.deviceId);
  // An existing key file is used, not replaced.
  const key2 = join(dir, 'k2');
  const k2 = randomBytes(32);
  writeFileSync(key2, k2, { mode: 0o600 });
  await Keystore.create(join(dir, 'e.kls'), { vendorKeys, unlock: parseUnlock(`file:${key2}`) });
  await Keystore.open(join(dir, 'e.kls'), { unlock: { kind: 'hook', getKey: async () => k2 } });

  writeFileSync(keyPath, randomBytes(31));
  await assert.rejects(Keystore.open(join(dir, 'd.kls'), { unlock: u }), (e: Error) => e instanceof UnlockError && /expected 32 raw bytes, got 31/.test(e.message));
  await assert.rejects(Keystore.open(join(dir, 'd.kls'), { unlock: parseUnlock(`file:${join(dir, 'gone')}`) }), UnlockError);
});

test('env: hex or base64 of 32 bytes; missing or malformed variable is UnlockError', async () => {
  const key = randomBytes(32);
  const storage = memoryStorage();
  const env: Record<string, string> = { HEX: hex(key).toUpperCase(), B64: Buffer.from(key).toString('base64'), URL: Buffer.from(key).toString('base64url'), SHORT: hex(key).slice(2) };
  await Keystore.create(storage, { vendorKeys, unlock: { kind: 'env', name: 'HEX', env } });
  for (const name of ['HEX', 'B64', 'URL']) await Keystore.open(storage, { unlock: { kind: 'env', name, env } });
  await assert.rejects(Keystore.open(storage, { unlock: { kind: 'env', name: 'NOPE', env } }), (e: Error) => e instanceof UnlockError && /NOPE/.test(e.message));
  await assert.rejects(Keystore.open(storage, { unlock: { kind: 'env', name: 'SHORT', env } }), UnlockError);
  assert.throws(() => parseRawKey(Buffer.from(randomBytes(31)).toString('base64'), 'x'), UnlockError);
  // The real process environment is the default.
  process.env.KEYLOCK_TEST_STORAGE_KEY = hex(key);
  await Keystore.open(storage, { unlock: parseUnlock('env:KEYLOCK_TEST_STORAGE_KEY') });
  delete process.env.KEYLOCK_TEST_STORAGE_KEY;
});

test('pass: scrypt with stored parameters and salt; wrong or empty passphrase is UnlockError; raw keys do not open a passphrase keystore', async () => {
  const dir = tmp();
  const storage = memoryStorage();
  process.env.KEYLOCK_TEST_PASS = 'correct horse battery staple';
  const u = { ...parseUnlock('pass:env:KEYLOCK_TEST_PASS'), cost: { N: 1 << 10 } } as UnlockProvider;
  await Keystore.create(storage, { vendorKeys, unlock: u });
  const outer = decodeKlsOuter(storage.bytes!);
  assert.equal(outer.unlock.kind, 'pass');
  assert.ok(outer.unlock.kind === 'pass' && outer.unlock.N === 1024 && outer.unlock.r === 8 && outer.unlock.p === 1 && outer.unlock.salt.byteLength === 16);
  await Keystore.open(storage, { unlock: parseUnlock('pass:env:KEYLOCK_TEST_PASS') });
  // The same passphrase from a file (one trailing newline dropped).
  writeFileSync(join(dir, 'pw'), 'correct horse battery staple\n');
  await Keystore.open(storage, { unlock: parseUnlock(`pass:file:${join(dir, 'pw')}`) });
  await assert.rejects(Keystore.open(storage, { unlock: { kind: 'pass', passphrase: () => 'correct horse battery stapler' } }), UnlockError);
  await assert.rejects(Keystore.open(storage, { unlock: { kind: 'pass', passphrase: () => '' } }), UnlockError);
  await assert.rejects(Keystore.open(storage, { unlock: parseUnlock('pass:env:KEYLOCK_TEST_UNSET') }), UnlockError);
  await assert.rejects(Keystore.open(storage, { unlock: parseUnlock(`pass:file:${join(dir, 'none')}`) }), UnlockError);
  await assert.rejects(Keystore.open(storage, { unlock: { kind: 'hook', getKey: async () => randomBytes(32) } }), (e: Error) => e instanceof UnlockError && /passphrase/.test(e.message));
  assert.throws(() => newUnlockRecord({ kind: 'pass', passphrase: () => 'x', cost: { N: 1000 } }), RangeError);
  delete process.env.KEYLOCK_TEST_PASS;
});

test('pass: the default cost is N = 2^15, r = 8, p = 1 and derivation matches RFC 7914 scrypt', async () => {
  const r = newUnlockRecord({ kind: 'pass', passphrase: () => 'x' });
  assert.ok(r.kind === 'pass' && r.N === 1 << 15 && r.r === 8 && r.p === 1);
  // RFC 7914 section 12, second vector ("password", "NaCl", N=1024, r=8, p=16), first 32 bytes.
  const k = await storageKey({ kind: 'pass', passphrase: () => 'password' }, { kind: 'pass', kdf: 'scrypt', N: 1024, r: 8, p: 16, salt: new TextEncoder().encode('NaCl') });
  assert.equal(hex(k), 'fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162');
});

test('hook: a 32-byte key from app code; wrong size or a throwing hook is UnlockError', async () => {
  const key = randomBytes(32);
  const storage = memoryStorage();
  await Keystore.create(storage, { vendorKeys, unlock: { kind: 'hook', getKey: async () => key } });
  await Keystore.open(storage, { unlock: { kind: 'hook', getKey: async () => key.slice() } });
  await assert.rejects(Keystore.open(storage, { unlock: { kind: 'hook', getKey: async () => key.subarray(0, 16) } }), UnlockError);
  await assert.rejects(Keystore.open(storage, { unlock: { kind: 'hook', getKey: async () => { throw new Error('TPM not present'); } } }), (e: Error) => e instanceof UnlockError && /TPM not present/.test(e.message));
  // The hook's key is the same 32 bytes a key file or variable would hold.
  await Keystore.open(storage, { unlock: { kind: 'env', name: 'K', env: { K: hex(key) } } });
});
