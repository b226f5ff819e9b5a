// Fleet scale on the vendor side: `keylock grant --devices` (CSV and JSONL), and 100,000-id revocation lists.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Keystore } from '../keystore/keystore.ts';
import { memoryStorage } from '../keystore/storage.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { encodeModelKey, encodeVendorSecret, encodeVendorPub } from '../keystore/keyfiles.ts';
import { grantIssuer, inspectGrant, makeGrant } from '../keystore/grant.ts';
import { hasId, makeRevocation, normalizeIds } from '../keystore/revocation.ts';
import { RevokedError } from '../keystore/errors.ts';
import type { UnlockProvider } from '../keystore/unlock.ts';
import { lockModel } from '../models/lock/index.ts';
import { openKlm } from '../runtime/klm.ts';
import { loadModel } from '../runtime/load.ts';
import { hex } from '../keystore/hex.ts';
import { lines } from '../targets/cli/fleet.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'keylock-fleet-'));
const p = (f: string): string => join(dir, f);
after(() => rmSync(dir, { recursive: true, force: true }));

function kl(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [join(root, 'bin/keylock.mjs'), ...args], { encoding: 'utf8', cwd: dir });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}
function hook(key = randomBytes(32)): UnlockProvider {
  return { kind: 'hook', getKey: async () => key.slice() };
}

const vendorSeed = randomBytes(32);
const vendorPub = signKeyPair(vendorSeed).publicKey;
let klm: Uint8Array;
let modelId: string;
const devices: Keystore[] = [];
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

before(async () => {
  const locked = await lockModel(new Uint8Array(readFileSync(join(root, 'models/reference/mnist-mlp.onnx'))), { schemes: ['sealed'], vendorSeed });
  klm = locked.klm;
  modelId = openKlm(klm).manifest.modelId;
  writeFileSync(p('m.klm'), klm);
  writeFileSync(p('m.key'), encodeModelKey(modelId, locked.modelKey));
  writeFileSync(p('vendor.key'), encodeVendorSecret(vendorSeed));
  writeFileSync(p('vendor.pub'), encodeVendorPub(vendorPub));
  for (let i = 0; i < 3; i++) devices.push(await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock: hook(), deviceId: `unit-${i}` }));
});
after(() => { for (const d of devices) d.close(); });

async function opens(ks: Keystore): Promise<void> {
  const m = await loadModel(klm, { keystore: ks });
  assert.equal(m.state, 'ready', `device ${ks.deviceId}: ${m.error?.message}`);
  const out = await m.run({ input: { dtype: 'float32', dims: [1, 1, 28, 28], data: new Float32Array(784).fill(0.5) } });
  assert.equal(out.logits.data.length, 10);
  await m.release?.();
}

const grantArgs = (list: string, outDir: string, ...more: string[]): string[] =>
  ['grant', p('m.klm'), '--model-key', p('m.key'), '--vendor', p('vendor.key'), '--devices', list, '--out-dir', outDir, ...more];

test('CSV (hex and base64, a name column): one grant per device; each installs on its device and opens the model', async () => {
  const [a, b, c] = devices;
  writeFileSync(p('fleet.csv'), [
    'id,device,name',
    `unit-0,${hex(a.devicePubFile())},`,
    `,${b64(b.devicePubFile())},"unit-1-grant"`,
    `unit-2,${b64(c.devicePubFile())},`,
  ].join('\r\n') + '\r\n');
  const r = kl(...grantArgs(p('fleet.csv'), p('csv-out')));
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^granted 3 devices in [\d.]+ s \(\d+ grants\/s\); model /);
  assert.deepEqual(readdirSync(p('csv-out')).sort(), ['unit-0.klg', 'unit-1-grant.klg', 'unit-2.klg']);
  const files = { 'unit-0': 'unit-0.klg', 'unit-1': 'unit-1-grant.klg', 'unit-2': 'unit-2.klg' } as Record<string, string>;
  for (const ks of devices) {
    const g = await ks.installGrant(new Uint8Array(readFileSync(join(p('csv-out'), files[ks.deviceId]))));
    assert.equal(g.modelId, modelId);
    await opens(ks);
  }
  // Another device's grant does not install.
  await assert.rejects(a.installGrant(new Uint8Array(readFileSync(join(p('csv-out'), 'unit-2.klg')))), /expected device "unit-0"/);
});

test('JSONL: bad lines are reported with their line numbers and the run goes on (exit 1); --strict stops at the first', async () => {
  const [a, b, c] = devices;
  writeFileSync(p('fleet.jsonl'), [
    JSON.stringify({ device: b64(a.devicePubFile()) }),
    JSON.stringify({ device: 'not a key!' }),
    '',
    JSON.stringify({ pub: hex(b.devicePubFile()) }),
    JSON.stringify({ device: b64(a.devicePubFile()) }), // duplicate of line 1
    '{"device": ',
    JSON.stringify({ device: b64(c.devicePubFile()), id: 'someone-else' }),
    JSON.stringify({ device: b64(c.devicePubFile()) }),
  ].join('\n') + '\n');
  const r = kl(...grantArgs(p('fleet.jsonl'), p('jsonl-out')));
  assert.equal(r.code, 1, r.err);
  assert.match(r.out, /^granted 3 devices in [\d.]+ s \(\d+ grants\/s\); 4 refused: line 2 \(the device key is neither hex nor base64\)/);
  assert.match(r.err, /fleet\.jsonl line 5: duplicate device: unit-0\.klg/);
  assert.match(r.err, /fleet\.jsonl line 6: not a JSON object/);
  assert.match(r.err, /fleet\.jsonl line 7: "id" is "someone-else"/);
  assert.match(r.err, /keylock: error: 4 line\(s\) of .* refused/);
  assert.deepEqual(readdirSync(p('jsonl-out')).sort(), ['unit-0.klg', 'unit-1.klg', 'unit-2.klg'], 'no temp file or partial grant left');
  for (const f of readdirSync(p('jsonl-out'))) assert.equal(inspectGrant(new Uint8Array(readFileSync(join(p('jsonl-out'), f))), [vendorPub]).deviceId, f.slice(0, -4));

  const strict = kl(...grantArgs(p('fleet.jsonl'), p('strict-out'), '--strict'));
  assert.equal(strict.code, 1);
  assert.match(strict.err, /stopped at .*fleet\.jsonl line 2 \(--strict\)/);
  assert.deepEqual(readdirSync(p('strict-out')), ['unit-0.klg']);

  const notEmpty = kl(...grantArgs(p('fleet.jsonl'), p('jsonl-out')));
  assert.equal(notEmpty.code, 1);
  assert.match(notEmpty.err, /is not empty/);
  const noHeader = (writeFileSync(p('nohead.csv'), `${hex(a.devicePubFile())}\n`), kl(...grantArgs(p('nohead.csv'), p('nohead-out'))));
  assert.equal(noHeader.code, 1);
  assert.match(noHeader.err, /line 1: expected a header line with a "device" or "pub" column/);
});

test('--out FLEET.tar: one archive of every grant; tar lists it, each device installs its own from it, a stopped run writes none', async () => {
  const [a, b, c] = devices;
  // A device with a keystore on disk, made by the CLI, beside the in-memory ones.
  const init = kl('device', 'init', '--keystore', p('disk.kls'), '--unlock', `file:${p('disk.secret')}`, '--trust', p('vendor.pub'), '--pub-out', p('disk.pub'), '--device-id', 'disk-unit');
  assert.equal(init.code, 0, init.err);
  writeFileSync(p('tar.jsonl'), [
    JSON.stringify({ device: b64(a.devicePubFile()) }),
    JSON.stringify({ device: b64(b.devicePubFile()), name: 'second' }),
    JSON.stringify({ device: b64(a.devicePubFile()) }), // duplicate of line 1
    JSON.stringify({ device: b64(readFileSync(p('disk.pub'))) }),
    JSON.stringify({ device: b64(c.devicePubFile()), name: 'n'.repeat(120) }), // too long for a tar entry name
  ].join('\n') + '\n');
  const args = ['grant', p('m.klm'), '--model-key', p('m.key'), '--vendor', p('vendor.key'), '--devices', p('tar.jsonl')];
  const r = kl(...args, '--out', p('fleet.tar'));
  assert.equal(r.code, 1, r.err);
  assert.match(r.out, /^granted 3 devices in [\d.]+ s \(\d+ grants\/s\); 2 refused: line 3 \(duplicate device: unit-0\.klg/);
  assert.match(r.err, /line 5: .* longer than a tar entry name \(100 bytes\)/);
  assert.ok(!readdirSync(dir).some((f) => f.endsWith('.tmp')), 'no temp file left');
  // The system's tar reads it: the same names --out-dir would write.
  const list = spawnSync('tar', ['-tf', p('fleet.tar')], { encoding: 'utf8' });
  assert.equal(list.status, 0, list.stderr);
  assert.deepEqual(list.stdout.trim().split('\n'), ['unit-0.klg', 'second.klg', 'disk-unit.klg']);
  mkdirSync(p('untar'));
  assert.equal(spawnSync('tar', ['-xf', p('fleet.tar'), '-C', p('untar')]).status, 0);
  const g0 = await a.installGrant(new Uint8Array(readFileSync(p('untar/unit-0.klg'))));
  assert.equal(g0.modelId, modelId);
  assert.equal(inspectGrant(new Uint8Array(readFileSync(p('untar/second.klg'))), [vendorPub]).deviceId, 'unit-1');
  // A device installs its own entry from the whole archive (the CLI finds it by device id and key).
  const inst = kl('install', p('fleet.tar'), '--keystore', p('disk.kls'), '--unlock', `file:${p('disk.secret')}`);
  assert.equal(inst.code, 0, inst.err);
  assert.match(inst.out, new RegExp(`installed grant [0-9a-f]{32} for model ${modelId} from .*fleet\\.tar`));
  // Never overwritten; a device with no entry gets a clear error.
  const again = kl(...args, '--out', p('fleet.tar'));
  assert.equal(again.code, 1);
  assert.match(again.err, /fleet\.tar exists already/);
  const other = kl('device', 'init', '--keystore', p('other.kls'), '--unlock', `file:${p('other.secret')}`, '--trust', p('vendor.pub'), '--pub-out', p('other.pub'), '--device-id', 'not-granted');
  assert.equal(other.code, 0, other.err);
  const none = kl('install', p('fleet.tar'), '--keystore', p('other.kls'), '--unlock', `file:${p('other.secret')}`);
  assert.equal(none.code, 1);
  assert.match(none.err, /expected a grant for device "not-granted" .*found none among 3 grant\(s\)/);
  assert.match(none.err, /hint: /);
  // A damaged archive: a clear error, not a crash.
  const bytes = readFileSync(p('fleet.tar'));
  const second = 512 + Math.ceil(parseInt(bytes.subarray(124, 136).toString('latin1'), 8) / 512) * 512; // the second entry's header
  bytes[600] ^= 1; // inside the first entry's data: that entry no longer parses, the others still route
  bytes[second + 10] ^= 0xff; // the second header: wrong checksum
  writeFileSync(p('damaged.tar'), bytes);
  const dmg = kl('install', p('damaged.tar'), '--keystore', p('other.kls'), '--unlock', `file:${p('other.secret')}`);
  assert.equal(dmg.code, 1);
  assert.match(dmg.err, new RegExp(`damaged\\.tar: the tar header at byte ${second} has a wrong checksum`));
  // --strict: stopped at the duplicate, and no archive at all.
  const strict = kl(...args, '--out', p('strict.tar'), '--strict');
  assert.equal(strict.code, 1);
  assert.match(strict.err, /stopped at .*line 3 \(--strict\): duplicate .*no archive was written/);
  assert.ok(!existsSync(p('strict.tar')));
  assert.ok(!readdirSync(dir).some((f) => f.endsWith('.tmp')), 'no temp file left');
});

test('device lists are split into lines across chunk edges: CRLF, multi-byte UTF-8, a last line without a newline', async () => {
  const text = 'a,b\r\nü-1\n\n名前,x\r\nlast';
  const bytes = Buffer.from(text, 'utf8');
  for (const size of [1, 2, 3, 5, 64]) {
    async function* chunks(): AsyncGenerator<Buffer> {
      for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
    }
    const got: string[] = [];
    for await (const l of lines(chunks())) got.push(l);
    assert.deepEqual(got, ['a,b', 'ü-1', '', '名前,x', 'last'], `chunks of ${size} B`);
  }
});

test('usage: --devices and --device, --out with --devices, --out-dir alone, a list of another type: exit 2, no file', () => {
  for (const [args, re] of [
    [[...grantArgs(p('x.csv'), p('u1')), '--device', p('d.pub')], /not both/],
    [[...grantArgs(p('x.csv'), p('u2')), '--out', p('g.tar')], /--out-dir DIR .* or --out FLEET\.tar .*not both/],
    [['grant', p('m.klm'), '--model-key', p('m.key'), '--vendor', p('vendor.key'), '--devices', p('x.csv'), '--out', p('u5.klg')], /expected a name ending in \.tar/],
    [grantArgs(p('x.txt'), p('u3')), /--devices: expected a \.csv or \.jsonl/],
    [['grant', p('m.klm'), '--model-key', p('m.key'), '--vendor', p('vendor.key'), '--out-dir', p('u4')], /--device DEVICE\.pub .* or --devices/],
  ] as [string[], RegExp][]) {
    const r = kl(...args);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, re);
    assert.match(r.err, /keylock: hint: /);
  }
  for (const d of ['u1', 'u2', 'u3', 'u4', 'g.tar', 'u5.klg']) assert.ok(!existsSync(p(d)));
});

test('a grant issuer makes what makeGrant makes: same fields, one vendor key derivation for many grants', () => {
  const ks = devices[0];
  const issuer = grantIssuer(vendorSeed);
  const req = { modelId: 'm', modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: 10, notAfter: 20, issued: 15, grantId: 'ab'.repeat(16) };
  const a = issuer.issue(req);
  issuer.close();
  assert.throws(() => issuer.issue(req), /closed/);
  const b = makeGrant({ ...req, vendorSeed });
  const strip = (g: Uint8Array) => inspectGrant(g, [vendorPub]);
  assert.deepEqual(strip(a), strip(b));
  // Only the sealed key (fresh ephemeral key and nonce) differs: same length, same layout.
  assert.equal(a.byteLength, b.byteLength);
});

test('revocation: 100,000 grant ids fit the format, install, and revoke the right grant; lookups are not scans', async () => {
  const ks = await Keystore.create(memoryStorage(), { vendorKeys: [vendorPub], unlock: hook() });
  try {
    const g = await ks.installGrant(makeGrant({ modelId: 'm', modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: 1, notAfter: 4_000_000_000, vendorSeed }));
    const ids = Array.from({ length: 100_000 }, () => hex(randomBytes(16)));
    // Through the CLI: --grants-file, one id a line (comments and blank lines skipped).
    writeFileSync(p('revoked.txt'), `# fleet revocations\n${ids.join('\n')}\n\n`);
    const r1 = kl('revoke', '--vendor', p('vendor.key'), '--version', '1', '--grants-file', p('revoked.txt'), '--out', p('r1.klr'));
    assert.equal(r1.code, 0, r1.err);
    assert.match(r1.out, /version 1: 100000 grant\(s\)/);
    const t0 = performance.now();
    await ks.installRevocation(new Uint8Array(readFileSync(p('r1.klr'))));
    ks.modelKeyFor('m').fill(0); // not revoked: 100,000 other ids
    const ms = performance.now() - t0;
    assert.ok(ms < 5000, `install + check took ${ms.toFixed(0)} ms`);

    writeFileSync(p('revoked2.txt'), `${ids.slice(0, 50_000).join('\n')}\n${g.grantId}\n${ids.slice(50_000).join('\n')}`);
    const r2 = kl('revoke', '--vendor', p('vendor.key'), '--version', '2', '--grants-file', p('revoked2.txt'), '--grant', 'one-more', '--out', p('r2.klr'));
    assert.equal(r2.code, 0, r2.err);
    assert.match(r2.out, /version 2: 100002 grant\(s\)/);
    await ks.installRevocation(new Uint8Array(readFileSync(p('r2.klr'))));
    assert.throws(() => ks.modelKeyFor('m'), (e: unknown) => e instanceof RevokedError && e.message.includes(g.grantId));

    const bad = (writeFileSync(p('bad-ids.txt'), `g1\n${'x'.repeat(300)}\n`), kl('revoke', '--vendor', p('vendor.key'), '--version', '3', '--grants-file', p('bad-ids.txt'), '--out', p('r3.klr')));
    assert.equal(bad.code, 1);
    assert.match(bad.err, /bad-ids\.txt line 2: expected a grant id/);
    assert.ok(!existsSync(p('r3.klr')));
  } finally {
    ks.close();
  }
});

test('hasId: sorted lists by binary search, any other list through a Set; same answers as includes', () => {
  const sorted = normalizeIds(Array.from({ length: 5000 }, (_, i) => `id-${i}`));
  const unsorted = [...sorted].reverse();
  for (const list of [sorted, unsorted, sorted.slice(0, 5)]) {
    for (const id of ['id-0', 'id-4999', 'id-2500', 'id-5000', '', 'zzz', 'id-']) assert.equal(hasId(list, id), list.includes(id), `${id} in a list of ${list.length}`);
  }
  // normalizeIds still sorts and deduplicates what is not normalized already.
  assert.deepEqual(normalizeIds(['b', 'a', 'b']), ['a', 'b']);
  const s = ['a', 'b'];
  assert.notEqual(normalizeIds(s), s, 'a copy, not the caller\'s array');
});
