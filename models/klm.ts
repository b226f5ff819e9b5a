/**
 * Vendor side of the `.klm` file: packs the locked model and its manifest into
 * a signed envelope (layout in runtime/klm.ts and docs/SPEC.md).
 */

import { sealEnvelope } from '../keystore/envelope.ts';
import { sha256, signKeyPair } from '../keystore/nacl.ts';
import { KLM_FORMAT, KLM_VERSION, type Manifest } from '../runtime/klm.ts';

/** The manifest fields the packer fills in itself. */
export type ManifestDraft = Omit<Manifest, 'vendorKey' | 'digest' | 'modelBytes'>;

/** Drops undefined fields so the CBOR holds only what is set. */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array || v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(plain);
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => [k, plain(x)]));
}

/** Signs the manifest with the vendor seed and packs it with the locked model bytes. */
export function packKlm(draft: ManifestDraft, model: Uint8Array, vendorSeed: Uint8Array): Uint8Array {
  const { publicKey, secretKey } = signKeyPair(vendorSeed);
  try {
    const manifest = plain({ ...draft, vendorKey: publicKey, digest: sha256(model), modelBytes: model.byteLength }) as Record<string, unknown>;
    return sealEnvelope(KLM_FORMAT, KLM_VERSION, manifest, secretKey, { model });
  } finally {
    secretKey.fill(0);
  }
}

