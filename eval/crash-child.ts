/**
 * The writer that eval/crash.ts kills: opens a keystore on disk and changes it
 * in a loop, printing one `ack` line after each change has been written (the
 * promise resolved), so the parent knows what must survive a SIGKILL.
 *
 *   crash-child KEYSTORE STORAGE_KEY_FILE VENDOR_SEED_FILE mixed SEED
 *   crash-child KEYSTORE STORAGE_KEY_FILE VENDOR_SEED_FILE grants PREFIX COUNT
 *
 * Lines: `ready GEN`, `ack grant MODEL GRANT GEN`, `ack fail MODEL COUNT GEN`,
 * `ack reset MODEL GEN`, `ack disable MODEL GEN`, `done GEN`.
 */
import { readFileSync, writeSync } from 'node:fs';
import { Keystore } from '../keystore/keystore.ts';
import { makeGrant } from '../keystore/grant.ts';
import { hex as hexId } from '../keystore/hex.ts';
import { randomBytes } from '../keystore/nacl.ts';

const [path, keyFile, seedFile, mode, a, b] = process.argv.slice(2);
const T = 1_750_000_000;
// Lines go straight to the pipe with a synchronous write: an ack is out before the next change starts.
const say = (line: string): void => { writeSync(1, `${line}\n`); };

const ks = await Keystore.open(path, { unlock: { kind: 'file', path: keyFile } });
const vendorSeed = new Uint8Array(readFileSync(seedFile));
const grant = (modelId: string): { bytes: Uint8Array; grantId: string } => {
  const grantId = hexId(randomBytes(16));
  return {
    grantId,
    bytes: makeGrant({ modelId, modelKey: randomBytes(32), devicePub: ks.devicePub, deviceId: ks.deviceId, notBefore: T, notAfter: T + 86_400 * 3650, issued: T, vendorSeed, grantId }),
  };
};
say(`ready ${ks.generation}`);

if (mode === 'grants') {
  for (let i = 0; i < Number(b); i++) {
    const modelId = `${a}-${i}`;
    const g = grant(modelId);
    await ks.installGrant(g.bytes, T + 1);
    say(`ack grant ${modelId} ${g.grantId} ${ks.generation}`);
  }
  say(`done ${ks.generation}`);
} else {
  let s = Number(a) >>> 0 || 1;
  const next = (): number => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  const tag = `${process.pid}-${next().toString(36)}`;
  for (let n = 0; ; n++) {
    const op = next() % 8;
    if (op < 3) {
      const modelId = `g-${tag}-${n}`;
      const g = grant(modelId);
      await ks.installGrant(g.bytes, T + 1);
      say(`ack grant ${modelId} ${g.grantId} ${ks.generation}`);
    } else if (op < 5) {
      const r = await ks.recordFailure('f', { onInvalidKey: 'halt', maxFailures: 0 }, T + 1);
      say(`ack fail f ${r.failures} ${ks.generation}`);
    } else if (op < 6) {
      await ks.resetFailures('f');
      say(`ack reset f ${ks.generation}`);
    } else {
      const modelId = `d-${tag}-${n}`;
      await ks.recordFailure(modelId, { onInvalidKey: 'disable', maxFailures: 1 }, T + 1);
      say(`ack disable ${modelId} ${ks.generation}`);
    }
  }
}
