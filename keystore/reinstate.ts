/**
 * The `.klt` reinstate token: vendor-signed, for one model on one device,
 * usable once. It lifts a `disabled` state and clears the failure counter; it
 * does NOT bring back the model key, which was wiped when the model was
 * disabled — the vendor sends a fresh grant with it (install the token first).
 *
 *   envelope: { format: "keylock/klt", version: 1, signed: bstr, sig: bstr(64), vendorKey: bstr(32) }
 *   body:     { format, version, tokenId: text, deviceId: text, devicePub: bstr(32),
 *               modelId: text, issued: uint, vendorKey: bstr(32) }
 */
import { equalBytes, randomBytes, SIZES } from './nacl.ts';
import { openVendorFile, sealVendorFile, unixNow } from './vendorfile.ts';
import { hex, keyId } from './hex.ts';
import { checkId } from './grant.ts';
import { WrongDeviceError } from './errors.ts';

export const KLT_FORMAT = 'keylock/klt';
export const KLT_VERSION = 1;
/** Largest `.klt` accepted. */
export const MAX_KLT_BYTES = 4 << 10;

/** A verified reinstate token. */
export interface ReinstateToken {
  tokenId: string;
  deviceId: string;
  modelId: string;
  issued: number;
  vendorKey: Uint8Array;
}

/** Builds and signs a reinstate token (vendor side). */
export function makeReinstate(req: { modelId: string; deviceId: string; devicePub: Uint8Array; vendorSeed: Uint8Array; issued?: number; tokenId?: string }): Uint8Array {
  checkId('modelId', req.modelId);
  checkId('deviceId', req.deviceId);
  if (!(req.devicePub instanceof Uint8Array) || req.devicePub.byteLength !== SIZES.boxPublic) throw new RangeError(`devicePub must be ${SIZES.boxPublic} bytes`);
  const tokenId = req.tokenId ?? hex(randomBytes(16));
  checkId('tokenId', tokenId, 64);
  return sealVendorFile(KLT_FORMAT, KLT_VERSION, {
    tokenId, deviceId: req.deviceId, devicePub: req.devicePub, modelId: req.modelId, issued: req.issued ?? unixNow(),
  }, req.vendorSeed);
}

/** Verifies a token against the pinned vendor keys and this device (WrongDeviceError otherwise). */
export function openReinstate(bytes: Uint8Array, device: { deviceId: string; devicePub: Uint8Array; vendorKeys: readonly Uint8Array[] }): ReinstateToken {
  const { body, vendorKey } = openVendorFile(bytes, KLT_FORMAT, KLT_VERSION, MAX_KLT_BYTES, device.vendorKeys);
  const deviceId = body.text('deviceId', 256);
  const devicePub = body.bytes('devicePub', { len: SIZES.boxPublic });
  if (deviceId !== device.deviceId || !equalBytes(devicePub, device.devicePub)) {
    throw new WrongDeviceError(`reinstate token: expected device "${device.deviceId}" (key ${keyId(device.devicePub)}), got device "${deviceId}" (key ${keyId(devicePub)})`);
  }
  return { tokenId: body.text('tokenId', 64), deviceId, modelId: body.text('modelId', 256), issued: body.uint('issued'), vendorKey };
}
