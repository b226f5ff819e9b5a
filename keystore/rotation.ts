/**
 * The `.klv` key rotation: replaces one pinned key by another, the way TUF
 * rotates its root. Signed by the key it replaces (a planned rotation) or by a
 * pinned backup key (the old key is lost or stolen), and cross-signed by the
 * new key, which proves somebody holds it before any device depends on it.
 *
 *   envelope: { format: "keylock/klv", version: 1, signed: bstr, sig: bstr(64),
 *               vendorKey: bstr(32) (the signer), newSig: bstr(64) (by newKey over `signed`) }
 *   body:     { format, version, oldKey: bstr(32), newKey: bstr(32), issued: uint, vendorKey: bstr(32) }
 *
 * Which list the old key is in (vendor keys or backup keys) decides what the
 * new key becomes; the keystore applies the rules (incoming.ts applyRotation).
 * The file carries no sequence number: the keystore remembers every key it
 * rotated out and never pins one again, so each rotation works once.
 */
import { encodeCbor } from './cbor.ts';
import { openEnvelope, parseEnvelope } from './envelope.ts';
import { equalBytes, sign, signKeyPair, SIZES, verify, wipe } from './nacl.ts';
import { unixNow } from './vendorfile.ts';
import { keyId } from './hex.ts';
import { FormatError, UntrustedSignerError } from './errors.ts';

export const KLV_FORMAT = 'keylock/klv';
export const KLV_VERSION = 1;
/** Largest `.klv` accepted. */
export const MAX_KLV_BYTES = 4 << 10;

/** A verified rotation. */
export interface Rotation {
  oldKey: Uint8Array;
  newKey: Uint8Array;
  issued: number;
  /** The key that signed it (`oldKey` itself or a backup key). */
  signer: Uint8Array;
}

/** What a rotation asks for (vendor side). */
export interface RotationRequest {
  /** Ed25519 seed of the signer: the old key itself, or a backup key. */
  signerSeed: Uint8Array;
  /** The key being replaced (default: the signer's own public key). */
  oldKey?: Uint8Array;
  /** Ed25519 seed of the new key (it cross-signs the file). */
  newSeed: Uint8Array;
  /** Unix seconds of issue (default now). */
  issued?: number;
}

/** Builds and signs a rotation (vendor side). */
export function makeRotation(req: RotationRequest): Uint8Array {
  const signer = signKeyPair(req.signerSeed);
  const next = signKeyPair(req.newSeed);
  try {
    const oldKey = req.oldKey ?? signer.publicKey;
    if (!(oldKey instanceof Uint8Array) || oldKey.byteLength !== SIZES.signPublic) throw new RangeError(`oldKey must be ${SIZES.signPublic} bytes`);
    if (equalBytes(oldKey, next.publicKey)) throw new RangeError('the new key must differ from the old key');
    const issued = req.issued ?? unixNow();
    if (!Number.isSafeInteger(issued) || issued < 0) throw new RangeError(`issued must be Unix seconds, got ${issued}`);
    // Both signatures cover the same encoded body (the envelope layout of envelope.ts, plus newSig).
    const signed = encodeCbor({ format: KLV_FORMAT, version: KLV_VERSION, oldKey, newKey: next.publicKey, issued, vendorKey: signer.publicKey });
    return encodeCbor({
      format: KLV_FORMAT, version: KLV_VERSION, signed,
      sig: sign(signed, signer.secretKey), vendorKey: signer.publicKey, newSig: sign(signed, next.secretKey),
    });
  } finally {
    wipe(signer.secretKey);
    wipe(next.secretKey);
  }
}

/**
 * Parses and verifies a rotation against the keys this device pins (vendor
 * and backup): the signer must be one of them (UntrustedSignerError), its
 * signature and the new key's must verify (TamperedError), and the body must
 * name the signer (FormatError). Whether the signer may replace `oldKey` is the
 * keystore's decision.
 */
export function openRotation(bytes: Uint8Array, pinned: readonly Uint8Array[]): Rotation {
  const env = parseEnvelope(bytes, KLV_FORMAT, KLV_VERSION, MAX_KLV_BYTES);
  const signer = env.outer.bytes('vendorKey', { len: SIZES.signPublic });
  const newSig = env.outer.bytes('newSig', { len: SIZES.signature });
  if (!pinned.some((k) => equalBytes(k, signer))) {
    throw new UntrustedSignerError(`${KLV_FORMAT}: expected a signature by a pinned vendor or backup key (${pinned.map(keyId).join(', ') || 'none pinned'}), got one by key ${keyId(signer)}`);
  }
  const body = openEnvelope(env, signer, MAX_KLV_BYTES);
  if (!equalBytes(body.bytes('vendorKey', { len: SIZES.signPublic }), signer)) {
    throw new FormatError(`${KLV_FORMAT}: the signed body names another signer than its envelope`);
  }
  const oldKey = body.bytes('oldKey', { len: SIZES.signPublic });
  const newKey = body.bytes('newKey', { len: SIZES.signPublic });
  if (equalBytes(oldKey, newKey)) throw new FormatError(`${KLV_FORMAT}: expected a new key different from the old one, got the same key ${keyId(oldKey)}`);
  verify(env.signed, newSig, newKey, `${KLV_FORMAT} (cross-signature by the new key ${keyId(newKey)})`);
  return { oldKey: oldKey.slice(), newKey: newKey.slice(), issued: body.uint('issued'), signer: signer.slice() };
}
