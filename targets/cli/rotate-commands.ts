/**
 * Vendor key rotation: `keylock rotate` writes a `.klv` that devices install
 * (`keylock install R.klv`) to replace a pinned key, and `keylock resign`
 * re-signs a `.klm` with the new key so devices that rotated keep loading it.
 */
import { makeRotation } from '../../keystore/rotation.ts';
import { decodeVendorPub, decodeVendorSecret } from '../../keystore/keyfiles.ts';
import { equalBytes, signKeyPair } from '../../keystore/nacl.ts';
import { openKlm } from '../../runtime/klm.ts';
import { keyId } from '../../keystore/hex.ts';
import { packKlm, type ManifestDraft } from '../../models/klm.ts';
import { UsageError, type Command } from './command.ts';
import { readInput, req, writeOutput } from './io.ts';

function publicOf(seed: Uint8Array): Uint8Array {
  const kp = signKeyPair(seed);
  kp.secretKey.fill(0);
  return kp.publicKey;
}

export const rotate: Command = {
  summary: 'replace a pinned vendor (or backup) key on devices: a .klv signed by the old key or a backup key, cross-signed by the new one',
  usage: 'rotate (--vendor OLD.key | --backup BACKUP.key --old OLD.pub) --new NEW.key --out R.klv',
  options: {
    vendor: { type: 'string' }, backup: { type: 'string' }, old: { type: 'string' }, new: { type: 'string' }, out: { type: 'string' },
  },
  positionals: [0, 0],
  async run({ values }) {
    const viaVendor = typeof values.vendor === 'string';
    const viaBackup = typeof values.backup === 'string';
    if (viaVendor === viaBackup) throw new UsageError('give exactly one signer: --vendor OLD.key (planned rotation) or --backup BACKUP.key with --old OLD.pub (the old key is lost)', `usage: keylock ${this.usage}`);
    if (viaVendor && values.old !== undefined) throw new UsageError('--old goes with --backup; with --vendor the old key is the signer itself');
    const out = req(values, 'out', this.usage);
    const newPath = req(values, 'new', this.usage);
    const oldPath = viaBackup ? req(values, 'old', this.usage) : undefined;
    const newSeed = decodeVendorSecret(readInput(newPath, 'new vendor key'));
    const signerSeed = decodeVendorSecret(readInput(viaVendor ? values.vendor as string : values.backup as string, viaVendor ? 'old vendor key' : 'backup key'));
    const oldKey = oldPath !== undefined ? decodeVendorPub(readInput(oldPath, 'old public key')) : publicOf(signerSeed);
    try {
      // makeRotation refuses this too, as a RangeError; here it is the user's flag, so say which.
      if (equalBytes(oldKey, publicOf(newSeed))) throw new UsageError(`--new is the old key itself (${keyId(oldKey)})`, 'give the new vendor key made by `keylock keygen --out NEW`');
      writeOutput(out, makeRotation({ signerSeed, oldKey, newSeed }));
      process.stdout.write(`rotation ${keyId(oldKey)} -> ${keyId(publicOf(newSeed))}, signed by ${viaVendor ? 'the old key' : `backup key ${keyId(publicOf(signerSeed))}`}; wrote ${out}\n`);
    } finally {
      newSeed.fill(0);
      signerSeed.fill(0);
    }
  },
};

export const resign: Command = {
  summary: 're-sign a .klm with another vendor key (after a rotation); the model, its id and its key stay the same',
  usage: 'resign M.klm --vendor NEW.key --out M2.klm [--trust OLD.pub]',
  options: { vendor: { type: 'string' }, out: { type: 'string' }, trust: { type: 'string' } },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const out = req(values, 'out', this.usage);
    const vendorPath = req(values, 'vendor', this.usage);
    const trust = typeof values.trust === 'string' ? [decodeVendorPub(readInput(values.trust, 'old vendor public key'))] : undefined;
    const { manifest, model } = openKlm(readInput(positionals[0], 'model file'), trust);
    const seed = decodeVendorSecret(readInput(vendorPath, 'vendor key'));
    try {
      const { vendorKey: _k, digest: _d, modelBytes: _n, ...draft } = manifest;
      writeOutput(out, packKlm(draft as ManifestDraft, model, seed));
      process.stdout.write(`re-signed model ${manifest.modelId} (was signed by ${keyId(manifest.vendorKey)}, now by ${keyId(publicOf(seed))}); wrote ${out}\n`);
    } finally {
      seed.fill(0);
    }
  },
};
