/**
 * Signed envelopes, the outer layer of every keylock file:
 *
 *   { format: text, version: uint, signed: bstr (CBOR of the body), sig: bstr (Ed25519 over `signed`), ...extra }
 *
 * The signature is checked over the exact `signed` bytes before they are
 * decoded; nothing is ever re-encoded before a check. The body repeats the
 * format name, so a signature made for one kind of file never verifies as
 * another kind.
 */
import { decodeCbor, encodeCbor, Fields } from './cbor.ts';
import { sign, SIZES, verify, verifyAsync } from './nacl.ts';
import { FormatError, UnsupportedVersionError } from './errors.ts';

/** A parsed (not yet verified) envelope. */
export interface Envelope {
  format: string;
  version: number;
  signed: Uint8Array;
  sig: Uint8Array;
  /** The outer map, for format-specific unsigned fields (e.g. a model's bytes, bound by a signed digest). */
  outer: Fields;
}

/** Builds an envelope: signs the CBOR of `body` (which gets `format` and `version` added) with a secret key or a `signer` of nacl.ts. */
export function sealEnvelope(format: string, version: number, body: Record<string, unknown>, secretKey: Uint8Array | ((message: Uint8Array) => Uint8Array), extra: Record<string, unknown> = {}): Uint8Array {
  const signed = encodeCbor({ format, version, ...body });
  const sig = typeof secretKey === 'function' ? secretKey(signed) : sign(signed, secretKey);
  return encodeCbor({ format, version, signed, sig, ...extra });
}

/**
 * Decodes a keylock file's outer map (strict CBOR, at most `maxBytes`) and
 * checks that it names `format` and `version`: FormatError for another format,
 * UnsupportedVersionError for another version. Every keylock file starts this
 * way, signed (envelopes) or not (keystore, counter, attempts, key files).
 */
export function parseFormat(bytes: Uint8Array, format: string, version: number, maxBytes: number): Fields {
  const outer = Fields.of(format, decodeCbor(bytes, format, maxBytes));
  const f = outer.text('format', 64);
  if (f !== format) throw new FormatError(`expected a ${format} file, got format "${f}"`);
  const v = outer.uint('version');
  if (v !== version) throw new UnsupportedVersionError(format, version, v);
  return outer;
}

/** Parses an envelope and checks its format name and version (no signature check yet). */
export function parseEnvelope(bytes: Uint8Array, format: string, version: number, maxBytes: number): Envelope {
  const outer = parseFormat(bytes, format, version, maxBytes);
  return { format, version, signed: outer.bytes('signed'), sig: outer.bytes('sig', { len: SIZES.signature }), outer };
}

/**
 * Verifies the signature with `publicKey`, then decodes the body and checks that
 * it repeats the envelope's format and version. `decoded`: `env.signed` already
 * decoded with the same limit (a caller that had to look inside before
 * verifying), used only once the signature over those bytes has verified.
 */
export function openEnvelope(env: Envelope, publicKey: Uint8Array, maxBodyBytes: number, decoded?: unknown): Fields {
  verify(env.signed, env.sig, publicKey, env.format);
  return envelopeBody(env, maxBodyBytes, decoded);
}

/** `openEnvelope` with the signature checked by WebCrypto where available (see `verifyAsync`). */
export async function openEnvelopeAsync(env: Envelope, publicKey: Uint8Array, maxBodyBytes: number, decoded?: unknown): Promise<Fields> {
  await verifyAsync(env.signed, env.sig, publicKey, env.format);
  return envelopeBody(env, maxBodyBytes, decoded);
}

function envelopeBody(env: Envelope, maxBodyBytes: number, decoded?: unknown): Fields {
  const body = Fields.of(`${env.format} body`, decoded ?? decodeCbor(env.signed, `${env.format} body`, maxBodyBytes));
  if (body.text('format', 64) !== env.format || body.uint('version') !== env.version) {
    throw new FormatError(`${env.format}: the signed body names another format or version than its envelope`);
  }
  return body;
}
