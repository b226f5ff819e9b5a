/**
 * The `.klg` grant: one model key, sealed to one device, with a licence window,
 * signed by the vendor.
 *
 *   envelope: { format: "keylock/klg", version: 1, signed: bstr, sig: bstr(64), vendorKey: bstr(32) }
 *   body:     { format, version, grantId, modelId, deviceId, devicePub: bstr(32),
 *               notBefore: uint, notAfter: uint, issued: uint, vendorKey: bstr(32),
 *               ? grace: uint (1..MAX_GRACE_SECONDS; absent: none),
 *               sealedKey: { ephemeralPub: bstr(32), nonce: bstr(24), box: bstr(48) } }
 *
 * The model key is boxed (X25519 + XSalsa20-Poly1305) from a throw-away key pair
 * to the device's X25519 key: only that device opens it. The vendor signature
 * covers the sealed key, so nobody can swap in a key of their own.
 */
import { equalBytes, openFromSender, randomBytes, sealToDevice, signer, signKeyPair, SIZES, wipe } from './nacl.ts';
import { sealEnvelope } from './envelope.ts';
import { openVendorFile, unixNow } from './vendorfile.ts';
import { hex, keyId } from './hex.ts';
import { FormatError, TamperedError, WrongDeviceError } from './errors.ts';
import type { Fields } from './cbor.ts';

export const KLG_FORMAT = 'keylock/klg';
export const KLG_VERSION = 1;
/** Largest `.klg` accepted. */
export const MAX_KLG_BYTES = 16 << 10;
/** Length of every model key. */
export const MODEL_KEY_BYTES = 32;
/** Longest grace period a grant may give a running model after `notAfter`: 30 days. */
export const MAX_GRACE_SECONDS = 30 * 24 * 3600;

/** What the vendor puts in a grant. */
export interface GrantRequest {
  modelId: string;
  /** The 32-byte model key. */
  modelKey: Uint8Array;
  /** The device's X25519 public key (from its `device.pub`). */
  devicePub: Uint8Array;
  deviceId: string;
  /** Licence window, Unix seconds, both required; notBefore < notAfter. */
  notBefore: number;
  notAfter: number;
  /** The vendor's Ed25519 seed. */
  vendorSeed: Uint8Array;
  /** Unix seconds of issue (default now). */
  issued?: number;
  /** Default: 16 random bytes in hex. */
  grantId?: string;
  /**
   * Seconds a model already running when `notAfter` passes may keep running
   * (its `expiring` event fires at `notAfter`, it halts at `notAfter + grace`);
   * loads after `notAfter` are refused either way. 0 or absent: none. At most MAX_GRACE_SECONDS.
   */
  grace?: number;
}

/** A verified, opened grant. */
export interface Grant {
  grantId: string;
  modelId: string;
  deviceId: string;
  notBefore: number;
  notAfter: number;
  issued: number;
  /** Grace seconds after `notAfter` for a model already running (0: none). */
  grace: number;
  /** The vendor key that signed it. */
  vendorKey: Uint8Array;
  /** The opened model key (the caller wipes it when done). */
  modelKey: Uint8Array;
}

/** What `openGrant` needs to know about the device. */
export interface DeviceView {
  deviceId: string;
  devicePub: Uint8Array;
  /** The device's X25519 secret key. */
  deviceSecret: Uint8Array;
  vendorKeys: readonly Uint8Array[];
}

/** Builds and signs a grant (vendor side). */
export function makeGrant(req: GrantRequest): Uint8Array {
  const issuer = grantIssuer(req.vendorSeed);
  try {
    return issuer.issue(req);
  } finally {
    issuer.close();
  }
}

/** Issues many grants under one vendor key (see `grantIssuer`). */
export interface GrantIssuer {
  /** Builds and signs one grant; the same bytes `makeGrant` makes (the `vendorSeed` of `req`, if any, is ignored). */
  issue(req: Omit<GrantRequest, 'vendorSeed'>): Uint8Array;
  /** Wipes the signing key; `issue` throws afterwards. */
  close(): void;
}

/**
 * A grant signer for fleets: the Ed25519 key pair is derived from the vendor
 * seed once, not once per grant (a third of a grant's cost with a JavaScript
 * Ed25519), and imported into native code once where there is native Ed25519. Each grant still gets its own ephemeral X25519 key pair and nonce.
 * The caller keeps its seed and wipes it; `close()` wipes the derived key.
 */
export function grantIssuer(vendorSeed: Uint8Array): GrantIssuer {
  const { publicKey, secretKey } = signKeyPair(vendorSeed);
  // The key imported into native code once (node:crypto), not per grant: ≈ 35 µs of each signature.
  let signWith: ((message: Uint8Array) => Uint8Array) | undefined = signer(secretKey);
  let open = true;
  return {
    issue(req) {
      if (!open || !signWith) throw new TypeError('this grant issuer was closed');
      checkId('modelId', req.modelId);
      checkId('deviceId', req.deviceId);
      if (!(req.modelKey instanceof Uint8Array) || req.modelKey.byteLength !== MODEL_KEY_BYTES) throw new RangeError(`modelKey must be ${MODEL_KEY_BYTES} bytes`);
      checkWindow(req.notBefore, req.notAfter, (m) => new RangeError(m));
      const issued = req.issued ?? unixNow();
      if (!Number.isSafeInteger(issued) || issued < 0) throw new RangeError(`issued must be Unix seconds, got ${issued}`);
      const grantId = req.grantId ?? hex(randomBytes(16));
      checkId('grantId', grantId, 64);
      const grace = req.grace ?? 0;
      if (!Number.isSafeInteger(grace) || grace < 0 || grace > MAX_GRACE_SECONDS) throw new RangeError(`grace must be 0..${MAX_GRACE_SECONDS} seconds, got ${grace}`);
      const s = sealToDevice(req.modelKey, req.devicePub);
      // What vendorfile.ts sealVendorFile signs, field for field: the signer's key in the body and the outer map.
      return sealEnvelope(KLG_FORMAT, KLG_VERSION, {
        grantId, modelId: req.modelId, deviceId: req.deviceId, devicePub: req.devicePub,
        notBefore: req.notBefore, notAfter: req.notAfter, issued,
        // Written only when given, so grants without one keep their bytes (and older devices ignore it).
        ...(grace > 0 ? { grace } : {}),
        sealedKey: { ephemeralPub: s.ephemeralPub, nonce: s.nonce, box: s.box },
        vendorKey: publicKey,
      }, signWith, { vendorKey: publicKey });
    },
    close() {
      open = false;
      signWith = undefined;
      wipe(secretKey);
    },
  };
}

/**
 * Verifies a grant for this device and opens its model key. Unpinned signer:
 * UntrustedSignerError; bad signature or a box that does not open: TamperedError;
 * another device's id or key: WrongDeviceError. The licence window is checked
 * by the keystore, against its clock.
 */
export function openGrant(bytes: Uint8Array, device: DeviceView): Grant {
  const { body, vendorKey } = openVendorFile(bytes, KLG_FORMAT, KLG_VERSION, MAX_KLG_BYTES, device.vendorKeys);
  const deviceId = body.text('deviceId', 256);
  const devicePub = body.bytes('devicePub', { len: SIZES.boxPublic });
  if (deviceId !== device.deviceId || !equalBytes(devicePub, device.devicePub)) {
    throw new WrongDeviceError(`grant: expected device "${device.deviceId}" (key ${keyId(device.devicePub)}), got device "${deviceId}" (key ${keyId(devicePub)})`);
  }
  const notBefore = body.uint('notBefore');
  const notAfter = body.uint('notAfter');
  checkWindow(notBefore, notAfter, (m) => new FormatError(`grant: ${m}`));
  const sk = body.map('sealedKey');
  const sealed = {
    ephemeralPub: sk.bytes('ephemeralPub', { len: SIZES.boxPublic }),
    nonce: sk.bytes('nonce', { len: SIZES.boxNonce }),
    box: sk.bytes('box', { len: SIZES.mac + MODEL_KEY_BYTES }),
  };
  const modelId = body.text('modelId', 256);
  // Every field is read before the key is opened, so a malformed field never strands an opened key.
  const grantId = body.text('grantId', 64);
  const issued = body.uint('issued');
  const grace = readGrace(body);
  const modelKey = openFromSender(sealed, device.deviceSecret, () => new TamperedError(`grant for model "${modelId}": the sealed model key does not open with this device's key`));
  return { grantId, modelId, deviceId, notBefore, notAfter, issued, grace, vendorKey, modelKey };
}

/** Grant metadata without opening the key (vendor or CLI inspection); checks the signature against `vendorKeys`. */
export function inspectGrant(bytes: Uint8Array, vendorKeys: readonly Uint8Array[]): Omit<Grant, 'modelKey'> & { devicePub: Uint8Array } {
  const { body, vendorKey } = openVendorFile(bytes, KLG_FORMAT, KLG_VERSION, MAX_KLG_BYTES, vendorKeys);
  return {
    grantId: body.text('grantId', 64), modelId: body.text('modelId', 256), deviceId: body.text('deviceId', 256),
    devicePub: body.bytes('devicePub', { len: SIZES.boxPublic }),
    notBefore: body.uint('notBefore'), notAfter: body.uint('notAfter'), issued: body.uint('issued'), grace: readGrace(body), vendorKey,
  };
}

/** The optional `grace` field: absent is 0; present it must be 1..MAX_GRACE_SECONDS. */
function readGrace(body: Fields): number {
  if (!body.has('grace')) return 0;
  const g = body.uint('grace');
  if (g < 1 || g > MAX_GRACE_SECONDS) throw new FormatError(`grant: grace: expected 1..${MAX_GRACE_SECONDS} seconds, got ${g}`);
  return g;
}

function checkWindow(notBefore: number, notAfter: number, err: (m: string) => Error): void {
  if (!Number.isSafeInteger(notBefore) || notBefore < 0 || !Number.isSafeInteger(notAfter) || notAfter < 0) {
    throw err(`licence window: expected Unix seconds for notBefore and notAfter, got ${notBefore} and ${notAfter}`);
  }
  if (notAfter <= notBefore) throw err(`licence window: expected notBefore < notAfter, got ${notBefore} >= ${notAfter}`);
}

/** Ids are non-empty text of bounded length. */
export function checkId(what: string, v: unknown, max = 256): asserts v is string {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new RangeError(`${what} must be a non-empty string of at most ${max} characters`);
}
