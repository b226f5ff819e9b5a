/**
 * Vendor-signed device files (`.klg`, `.klr`, `.klt`): a signed envelope whose
 * outer map also names the signing key (`vendorKey`), repeated inside the
 * signed body. The device picks that key from its pinned list before checking
 * the signature, so an unpinned signer is told apart from a broken signature.
 */
import { openEnvelope, parseEnvelope, sealEnvelope } from './envelope.ts';
import { equalBytes, signKeyPair, wipe } from './nacl.ts';
import { keyId } from './hex.ts';
import type { Fields } from './cbor.ts';
import { FormatError, UntrustedSignerError } from './errors.ts';

/** Signs `body` with the vendor seed; the public key goes in the body and the outer map. */
export function sealVendorFile(format: string, version: number, body: Record<string, unknown>, vendorSeed: Uint8Array): Uint8Array {
  const { publicKey, secretKey } = signKeyPair(vendorSeed);
  try {
    return sealEnvelope(format, version, { ...body, vendorKey: publicKey }, secretKey, { vendorKey: publicKey });
  } finally {
    wipe(secretKey);
  }
}

/**
 * Parses a vendor file, requires its signer to be pinned (else UntrustedSignerError),
 * verifies the signature (else TamperedError) and returns the decoded body.
 */
export function openVendorFile(bytes: Uint8Array, format: string, version: number, maxBytes: number, pinned: readonly Uint8Array[]): { body: Fields; vendorKey: Uint8Array } {
  const env = parseEnvelope(bytes, format, version, maxBytes);
  const vendorKey = env.outer.bytes('vendorKey', { len: 32 });
  if (!pinned.some((k) => equalBytes(k, vendorKey))) {
    throw new UntrustedSignerError(`${format}: expected a signature by a pinned vendor key (${pinned.map(keyId).join(', ') || 'none pinned'}), got one by key ${keyId(vendorKey)}`);
  }
  const body = openEnvelope(env, vendorKey, maxBytes);
  if (!equalBytes(body.bytes('vendorKey', { len: 32 }), vendorKey)) {
    throw new FormatError(`${format}: the signed body names vendor key ${keyId(body.bytes('vendorKey', { len: 32 }))}, its envelope ${keyId(vendorKey)}`);
  }
  return { body, vendorKey };
}

/** Current time in Unix seconds. */
export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}
