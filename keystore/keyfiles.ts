/**
 * Small key files, CBOR like every keylock file:
 *
 *   vendor public key  { format: "keylock/vendor-pub", version: 1, key: bstr(32) }   Ed25519
 *   device public key  { format: "keylock/device-pub", version: 1, deviceId: text, key: bstr(32) }   X25519
 *   model key          { format: "keylock/model-key", version: 1, modelId: text, key: bstr(32) }   secret
 *   vendor secret key  { format: "keylock/vendor-key", version: 1, seed: bstr(32) }   secret
 */
import { encodeCbor, type Fields } from './cbor.ts';
import { parseFormat } from './envelope.ts';

const MAX_KEYFILE = 4096;

function parse(bytes: Uint8Array, format: string): Fields {
  return parseFormat(bytes, format, 1, MAX_KEYFILE);
}

/** Encodes a vendor public key file. */
export function encodeVendorPub(key: Uint8Array): Uint8Array {
  return encodeCbor({ format: 'keylock/vendor-pub', version: 1, key });
}
/** Decodes a vendor public key file; returns the 32-byte Ed25519 key. */
export function decodeVendorPub(bytes: Uint8Array): Uint8Array {
  return parse(bytes, 'keylock/vendor-pub').bytes('key', { len: 32 });
}

/** Encodes a device public key file. */
export function encodeDevicePub(deviceId: string, key: Uint8Array): Uint8Array {
  return encodeCbor({ format: 'keylock/device-pub', version: 1, deviceId, key });
}
/** Decodes a device public key file. */
export function decodeDevicePub(bytes: Uint8Array): { deviceId: string; key: Uint8Array } {
  const f = parse(bytes, 'keylock/device-pub');
  return { deviceId: f.text('deviceId', 256), key: f.bytes('key', { len: 32 }) };
}

/** Encodes a model key file (secret: write it with mode 0600). */
export function encodeModelKey(modelId: string, key: Uint8Array): Uint8Array {
  return encodeCbor({ format: 'keylock/model-key', version: 1, modelId, key });
}
/** Decodes a model key file. */
export function decodeModelKey(bytes: Uint8Array): { modelId: string; key: Uint8Array } {
  const f = parse(bytes, 'keylock/model-key');
  return { modelId: f.text('modelId', 256), key: f.bytes('key', { len: 32 }) };
}

/** Encodes a vendor secret key file (secret: write it with mode 0600). */
export function encodeVendorSecret(seed: Uint8Array): Uint8Array {
  return encodeCbor({ format: 'keylock/vendor-key', version: 1, seed });
}
/** Decodes a vendor secret key file; returns the 32-byte Ed25519 seed. */
export function decodeVendorSecret(bytes: Uint8Array): Uint8Array {
  return parse(bytes, 'keylock/vendor-key').bytes('seed', { len: 32 });
}
