// Large revocation lists kept beside the keystore (the signed .klr as a side file, its SHA-256 in the
// sealed body): installed without re-sealing them, refused when changed, replaced or rolled back.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keystore } from '../keystore/keystore.ts';
import { memoryStorage } from '../keystore/storage.ts';
import { randomBytes, signKeyPair } from '../keystore/nacl.ts';
import { makeGrant } from '../keystore/grant.ts';
import { makeRevocation, SIDE_LIST_MIN_IDS } from '../keystore/revocation.ts';
import { RevokedError, RollbackError, TamperedError } from '../keystore/errors.ts';
import { hex } from '../keystore/hex.ts';
import type { UnlockProvider } from '../keystore/unlock.ts';

const dir = mkdtempSync(join(tmpdir(), 'keylock-revside-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const vendorSeed = randomBytes(32);
const vendorPub = signKeyPair(vendorSeed).publicKey;
const storageKey = randomBytes(32);
const unlock: UnlockProvider = { kind: 'hook', getKey: async () => storageKey.slice() };
const others = Array.from({ length: 20_000 }, () => hex(randomBytes(16)));

async function granted(ks: Keystore): Promise<string> {
  const g = await ks.installGrant(makeGrant({ modelId: 'm', modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: 1, notAfter: 4_000_000_000, vendorSeed }));
  return g.grantId;
}
const revoked = (ks: Keystore): boolean => {
  try {
    ks.modelKeyFor('m').fill(0);
    return false;
  } catch (e) {
    if (e instanceof RevokedError) return true;
    throw e;
  }
};

test('a large list goes beside the keystore: small sealed body, same verdicts, reopened from the side file; the replaced file is removed', async () => {
  const st = memoryStorage(undefined, { sideFiles: true });
  const ks = await Keystore.create(st, { vendorKeys: [vendorPub], unlock });
  const grantId = await granted(ks);
  const small = ks.toBytes().byteLength;
  const v1 = makeRevocation({ listVersion: 1, grants: others, vendorSeed });
  assert.deepEqual(await ks.installRevocation(v1), { listVersion: 1, changed: true });
  assert.equal(st.files!.size, 1);
  const [name1] = st.files!.keys();
  assert.match(name1, /^revocation\.[0-9a-f]{16}\.klr$/);
  assert.ok(Buffer.from(st.files!.get(name1)!).equals(Buffer.from(v1)), 'the signed list as it came');
  assert.ok(ks.toBytes().byteLength < small + 200, `body ${ks.toBytes().byteLength} B, was ${small} B: the ids are not in it`);
  assert.equal(revoked(ks), false);
  // The same list again: a no-op, no write.
  assert.deepEqual(await ks.installRevocation(v1), { listVersion: 1, changed: false });

  const v2 = makeRevocation({ listVersion: 2, grants: [...others, grantId], vendorSeed });
  await ks.installRevocation(v2);
  assert.equal(revoked(ks), true);
  assert.equal(st.files!.size, 1, 'the list it replaced is removed');
  assert.notEqual([...st.files!.keys()][0], name1);

  // Another process opens it: the ids come from the side file.
  const again = await Keystore.open(st, { unlock });
  assert.equal(again.revocationVersion, 2);
  assert.equal(revoked(again), true);
  // An older list, a lower version: refused, and its file not left behind.
  await assert.rejects(again.installRevocation(v1), RollbackError);
  assert.equal(st.files!.size, 1);
  // A change by the other instance (a grant) is picked up by the first, without reading the list again.
  const v3 = makeRevocation({ listVersion: 3, grants: others, vendorSeed });
  await again.installRevocation(v3);
  await ks.installGrant(makeGrant({ modelId: 'n', modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: 1, notAfter: 4_000_000_000, vendorSeed }));
  assert.equal(ks.revocationVersion, 3);
  assert.equal(revoked(ks), false, 'v3 no longer names the grant');
  // A small list lives in the body again; the side file goes.
  await ks.installRevocation(makeRevocation({ listVersion: 4, grants: [grantId], vendorSeed }));
  assert.equal(st.files!.size, 0);
  assert.equal(revoked(ks), true);
  assert.equal(revoked(await Keystore.open(st, { unlock })), true);
  ks.close();
  again.close();
  assert.ok(SIDE_LIST_MIN_IDS <= others.length);
});

test('the side file on disk: PATH.revocation.<hash>.klr; removed, changed or an older list put back: TamperedError at open', async () => {
  const path = join(dir, 'dev.kls');
  const ks = await Keystore.create(path, { vendorKeys: [vendorPub], unlock });
  await granted(ks);
  const v1 = makeRevocation({ listVersion: 1, grants: others, vendorSeed });
  const v2 = makeRevocation({ listVersion: 2, grants: others.slice(1), vendorSeed });
  await ks.installRevocation(v1);
  const f1 = readdirSync(dir).filter((f) => f.includes('.revocation.'));
  await ks.installRevocation(v2);
  ks.close();
  const files = readdirSync(dir).filter((f) => f.includes('.revocation.'));
  assert.equal(files.length, 1);
  assert.match(files[0], /^dev\.kls\.revocation\.[0-9a-f]{16}\.klr$/);
  assert.ok(!existsSync(join(dir, f1[0])), 'v1 removed after v2 was installed');
  assert.ok(!readdirSync(dir).some((f) => f.endsWith('.tmp')));
  const side = join(dir, files[0]);
  const reopened = await Keystore.open(path, { unlock });
  assert.equal(reopened.revocationVersion, 2);
  reopened.close();

  // Rollback: the older signed list put back under the current name.
  writeFileSync(side, v1);
  await assert.rejects(Keystore.open(path, { unlock }), (e: unknown) => e instanceof TamperedError && /has SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64}/.test(e.message));
  // One flipped byte.
  const b = new Uint8Array(v2);
  b[b.length - 5] ^= 1;
  writeFileSync(side, b);
  await assert.rejects(Keystore.open(path, { unlock }), TamperedError);
  // Removed.
  rmSync(side);
  await assert.rejects(Keystore.open(path, { unlock }), (e: unknown) => e instanceof TamperedError && /expected the revocation list .* found none/.test(e.message));
  writeFileSync(side, v2);
  const ok = await Keystore.open(path, { unlock });
  assert.equal(ok.revocationVersion, 2);
  ok.close();
  assert.ok(readFileSync(side).equals(Buffer.from(v2)));
});

test('a failed keystore write leaves the old list in force and no new side file', async () => {
  const st = memoryStorage(undefined, { sideFiles: true });
  const ks = await Keystore.create(st, { vendorKeys: [vendorPub], unlock });
  const grantId = await granted(ks);
  await ks.installRevocation(makeRevocation({ listVersion: 1, grants: others, vendorSeed }));
  const before = new Map(st.files!);
  const write = st.write;
  st.write = async () => { throw new Error('disk full'); };
  await assert.rejects(ks.installRevocation(makeRevocation({ listVersion: 2, grants: [...others, grantId], vendorSeed })), /disk full/);
  st.write = write;
  assert.deepEqual([...st.files!.keys()], [...before.keys()]);
  assert.equal(ks.revocationVersion, 1);
  assert.equal(revoked(ks), false);
  const again = await Keystore.open(st, { unlock });
  assert.equal(again.revocationVersion, 1);
  assert.equal(revoked(again), false);
  ks.close();
  again.close();
});
