// Key rotation through the CLI (docs/THREATS.md, "Vendor key compromise"): device init
// --backup, rotate, install R.klv, resign, exactly as users call them.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeCbor, encodeVendorPub, encodeVendorSecret } from '../keystore/index.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { tinyOnnx } from '../eval/fixtures/tiny.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'keylock-rot-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('CLI: device init --backup, rotate, install R.klv, resign; the rotated-out key is refused', () => {
  const p = (f: string): string => join(dir, f);
  const kl = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...args], { encoding: 'utf8', cwd: dir });
  const ok = (...args: string[]): string => {
    const r = kl(...args);
    assert.equal(r.status, 0, `keylock ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  writeFileSync(p('tiny.onnx'), tinyOnnx());
  writeFileSync(p('x.cbor'), encodeCbor([{ inputs: { x: { dtype: 'float32', dims: [1, 4], data: new Uint8Array(Float32Array.from([1, 2, 3, 4]).buffer) } } }]));
  ok('keygen', '--out', p('a'));
  for (const k of ['b', 'c', 'backup']) { // the same files keygen writes, made here to spare three processes
    const seed = randomBytes(32);
    writeFileSync(p(`${k}.key`), encodeVendorSecret(seed), { mode: 0o600 });
    writeFileSync(p(`${k}.pub`), encodeVendorPub(signKeyPair(seed).publicKey));
  }
  const ksArgs = ['--keystore', p('d.kls'), '--unlock', `file:${p('storage.key')}`];
  assert.match(ok('device', 'init', ...ksArgs, '--trust', p('a.pub'), '--backup', p('backup.pub'), '--pub-out', p('d.pub')), /backup key\(s\) [0-9a-f]{16} for rotations only/);
  ok('lock', p('tiny.onnx'), '--scheme', 'sealed', '--vendor', p('a.key'), '--out', p('m.klm'), '--key-out', p('m.key'));
  ok('grant', p('m.klm'), '--model-key', p('m.key'), '--vendor', p('a.key'), '--device', p('d.pub'), '--out', p('g-a.klg'));
  ok('install', p('g-a.klg'), ...ksArgs);

  assert.match(ok('rotate', '--vendor', p('a.key'), '--new', p('b.key'), '--out', p('ab.klv')), /signed by the old key/);
  assert.match(ok('install', p('ab.klv'), ...ksArgs), /rotated vendor key [0-9a-f]+ to [0-9a-f]+; files signed only by/);
  const refused = kl('install', p('g-a.klg'), ...ksArgs);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /untrusted-signer/);
  const halted = kl('run', p('m.klm'), ...ksArgs, '--inputs', p('x.cbor'), '--out', p('y.cbor'));
  assert.equal(halted.status, 3);
  assert.match(halted.stderr, /untrusted-signer/);
  ok('resign', p('m.klm'), '--vendor', p('b.key'), '--trust', p('a.pub'), '--out', p('m-b.klm'));
  assert.match(ok('run', p('m-b.klm'), ...ksArgs, '--inputs', p('x.cbor'), '--out', p('y.cbor')), /ran 1 sample/);

  // b is lost: the backup key rotates it to c.
  assert.match(ok('rotate', '--backup', p('backup.key'), '--old', p('b.pub'), '--new', p('c.key'), '--out', p('bc.klv')), /signed by backup key/);
  ok('install', p('bc.klv'), ...ksArgs);
  const show = ok('device', 'show', ...ksArgs);
  assert.match(show, /retired {5}[0-9a-f]{16}, [0-9a-f]{16}/);
  ok('grant', p('m-b.klm'), '--model-key', p('m.key'), '--vendor', p('c.key'), '--device', p('d.pub'), '--out', p('g-c.klg'));
  ok('install', p('g-c.klg'), ...ksArgs);
});
