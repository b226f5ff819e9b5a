/**
 * The `.klm` locked-model file (docs/SPEC.md, "Locked model").
 *
 *   envelope: { format: "keylock/klm", version: 1, signed: bstr, sig: bstr, model: bstr }
 *   signed:   CBOR of the manifest (below), Ed25519-signed by the vendor
 *   model:    the locked model bytes; bound to the signature by `manifest.digest` (SHA-256)
 *
 * The model bytes sit beside the signed manifest rather than inside it so that
 * the signature covers a few kilobytes and the model is hashed once with a fast
 * hash, instead of Ed25519's SHA-512 running in JavaScript over megabytes.
 *
 * The runtime needs no model parser: every lock entry lists the byte ranges it
 * touches and the input names that take key tensors. Each scheme reads its own
 * entry (runtime/keys/, through the registry in keys/index.ts); the entry types
 * are re-exported here beside the manifest's.
 */
import { decodeCbor, Fields } from '../keystore/cbor.ts';
import { openEnvelope, openEnvelopeAsync, parseEnvelope, type Envelope } from '../keystore/envelope.ts';
import { equalBytes, sha256, sha256Async } from '../keystore/nacl.ts';
import { hex, keyId } from '../keystore/hex.ts';
import { FormatError, TamperedError, UntrustedSignerError } from '../keystore/errors.ts';
import { decodeLockEntry, type LockEntry } from './keys/index.ts';

export const KLM_FORMAT = 'keylock/klm';
export const KLM_VERSION = 1;
/** Largest `.klm` keylock opens (2 GiB less a page: the largest ArrayBuffer most engines allow). */
export const MAX_KLM_BYTES = 0x7fff_f000;
/** Largest signed manifest (it holds byte ranges and a canary, never the model). */
export const MAX_MANIFEST_BYTES = 64 << 20;

/** Model formats keylock locks. */
export type ModelFormat = 'onnx' | 'tflite';

/** A user-facing model input or output. */
export interface IOSpec {
  name: string;
  dtype: string;
  /** Dims; a string names a dynamic dimension. */
  shape: (number | string)[];
}

export type { TensorRange, ChannelRange } from './keys/scheme.ts';
export type { ShuffleLock } from './keys/shuffle.ts';
export type { SignflipLayer, SignflipLock } from './keys/signflip.ts';
export type { DeeplockLock } from './keys/deeplock.ts';
export type { AdvparamsLock } from './keys/advparams.ts';
export type { SealedLock } from './keys/sealed.ts';
export { SCHEMES, type LockEntry, type Scheme } from './keys/index.ts';

/** What a device does when a key check fails. */
export interface Policy {
  onInvalidKey: 'halt' | 'disable';
  /** Failures (persisted in the keystore) after which the model is disabled. 0: never. */
  maxFailures: number;
}

/** Recorded inputs whose outputs must match exactly before a model is ready. */
export interface Canary {
  /** A recorded-inputs file (runtime/recorded.ts). */
  inputs: Uint8Array;
  /** The plain model's outputs on them, as a recorded-outputs file. */
  outputs: Uint8Array;
}

/** The signed manifest of a `.klm`. */
export interface Manifest {
  modelId: string;
  modelFormat: ModelFormat;
  /** Unix seconds when it was locked. */
  created: number;
  /** The vendor's Ed25519 public key that signed it. */
  vendorKey: Uint8Array;
  inputs: IOSpec[];
  outputs: IOSpec[];
  locks: LockEntry[];
  /** Key check value: deriveBytes(modelKey, 'check', 'kcv', 16). */
  kcv: Uint8Array;
  /** SHA-256 of the locked model bytes. */
  digest: Uint8Array;
  /** Length of the locked model bytes. */
  modelBytes: number;
  policy: Policy;
  canary?: Canary;
}

/** A parsed, verified `.klm`. */
export interface KlmFile {
  manifest: Manifest;
  /** The locked model bytes (a view into the file; copy before changing). */
  model: Uint8Array;
  /** The exact signed manifest bytes (for fingerprints). */
  signedManifest: Uint8Array;
  /**
   * True when the signature was checked against a trusted (pinned) vendor key;
   * false when only against the key the manifest names, which proves integrity
   * against accidents, not against someone who re-signs.
   */
  trusted: boolean;
}

function ioSpecs(f: Fields, key: string): IOSpec[] {
  return f.array(key, 4096).map((v, i) => {
    const g = Fields.of(`${f.what}.${key}[${i}]`, v);
    const shape = g.array('shape', 16).map((d, j) => {
      if (typeof d === 'string' || (typeof d === 'number' && Number.isSafeInteger(d) && d >= -1)) return d;
      throw new FormatError(`${g.what}.shape[${j}]: expected an integer or a dimension name, got ${String(d)}`);
    });
    return { name: g.text('name'), dtype: g.text('dtype', 32), shape };
  });
}

/** Checks and converts a decoded manifest body. */
export function parseManifest(f: Fields): Manifest {
  const modelBytes = f.uint('modelBytes');
  const p = f.map('policy');
  const m: Manifest = {
    modelId: f.text('modelId', 256),
    modelFormat: f.oneOf('modelFormat', ['onnx', 'tflite'] as const),
    created: f.uint('created'),
    vendorKey: f.bytes('vendorKey', { len: 32 }),
    inputs: ioSpecs(f, 'inputs'),
    outputs: ioSpecs(f, 'outputs'),
    locks: f.array('locks', 16).map((v, i) => decodeLockEntry(v, i, modelBytes)),
    kcv: f.bytes('kcv', { len: 16 }),
    digest: f.bytes('digest', { len: 32 }),
    modelBytes,
    policy: { onInvalidKey: p.oneOf('onInvalidKey', ['halt', 'disable'] as const), maxFailures: p.uint('maxFailures') },
  };
  const seen = new Set<string>();
  for (const l of m.locks) {
    if (seen.has(l.scheme)) throw new FormatError(`manifest.locks: scheme ${l.scheme} appears twice`);
    seen.add(l.scheme);
  }
  if (f.has('canary')) {
    const c = f.map('canary');
    m.canary = { inputs: c.bytes('inputs'), outputs: c.bytes('outputs') };
  }
  return m;
}

/**
 * Parses and verifies a `.klm`: envelope, Ed25519 signature (by `trusted` when
 * given, else by the key the manifest names, which proves integrity only), then
 * the model digest. Throws FormatError / TamperedError / SizeLimitError.
 */
export function openKlm(bytes: Uint8Array, trusted?: readonly Uint8Array[]): KlmFile {
  const file = openKlmSigned(bytes, trusted);
  checkKlmDigest(file, sha256(file.model));
  return file;
}

/**
 * `openKlm` with the signature and the model digest checked by WebCrypto where
 * the platform has it: on a model of megabytes, SHA-256 in JavaScript costs
 * more than creating the session. Same checks, same errors.
 */
export async function openKlmAsync(bytes: Uint8Array, trusted?: readonly Uint8Array[]): Promise<KlmFile> {
  const file = await openKlmSignedAsync(bytes, trusted);
  checkKlmDigest(file, await sha256Async(file.model));
  return file;
}

/**
 * The checks of `openKlm` up to, not including, the model digest: envelope,
 * signature, manifest. Its `model` is not yet proven; pass its SHA-256 to
 * `checkKlmDigest` before using it.
 */
export function openKlmSigned(bytes: Uint8Array, trusted?: readonly Uint8Array[]): KlmFile {
  const { env, model, key, decoded } = klmSigner(bytes, trusted);
  return { manifest: parseManifest(openEnvelope(env, key, MAX_MANIFEST_BYTES, decoded)), model, signedManifest: env.signed, trusted: trusted !== undefined };
}

/** `openKlmSigned` with the signature checked by WebCrypto where available (see `verifyAsync`). */
export async function openKlmSignedAsync(bytes: Uint8Array, trusted?: readonly Uint8Array[]): Promise<KlmFile> {
  const { env, model, key, decoded } = klmSigner(bytes, trusted);
  return { manifest: parseManifest(await openEnvelopeAsync(env, key, MAX_MANIFEST_BYTES, decoded)), model, signedManifest: env.signed, trusted: trusted !== undefined };
}

/**
 * Parses the envelope and picks the key that must have signed it. `decoded` is the manifest as
 * decoded to find its signer, reused once the signature over its bytes verifies (a sealed model's
 * manifest lists every tensor: decoding it is most of opening the file).
 */
function klmSigner(bytes: Uint8Array, trusted?: readonly Uint8Array[]): { env: Envelope; model: Uint8Array; key: Uint8Array; decoded?: unknown } {
  const env = parseEnvelope(bytes, KLM_FORMAT, KLM_VERSION, MAX_KLM_BYTES);
  const model = env.outer.bytes('model');
  // Which key signed it is read from the manifest before verification only to pick
  // among the trusted keys; the signature check below is what makes it count.
  const { key: named, decoded } = peekVendorKey(env.signed);
  let key = named;
  if (trusted) {
    const match = trusted.find((k) => named && equalBytes(k, named));
    if (!match) throw new UntrustedSignerError(`${KLM_FORMAT}: expected a signature by one of ${trusted.length} trusted vendor key(s), got one by ${named ? keyId(named) : 'an unnamed key'}`);
    key = match;
  }
  if (!key) throw new FormatError(`${KLM_FORMAT}: the manifest names no vendor key`);
  return { env, model, key, decoded };
}

/** Throws TamperedError unless the model bytes have the signed length and `digest` is the signed SHA-256. */
export function checkKlmDigest(file: KlmFile, digest: Uint8Array): void {
  const { manifest, model } = file;
  if (model.byteLength !== manifest.modelBytes || !equalBytes(digest, manifest.digest)) {
    throw new TamperedError(`${KLM_FORMAT}: the model bytes do not match the signed digest (expected ${manifest.modelBytes} bytes with SHA-256 ${hex(manifest.digest).slice(0, 16)}…, got ${model.byteLength} bytes)`);
  }
}

/**
 * The model format a `.klm` says it holds, read without verifying anything
 * (undefined when the file does not parse): only for choosing where to load it
 * (runtime/worker.ts `usesWorker`); the load itself verifies the file.
 */
export function peekModelFormat(bytes: Uint8Array): ModelFormat | undefined {
  try {
    const env = parseEnvelope(bytes, KLM_FORMAT, KLM_VERSION, MAX_KLM_BYTES);
    const f = Fields.of('manifest', decodeCbor(env.signed, 'manifest', MAX_MANIFEST_BYTES));
    return f.oneOf('modelFormat', ['onnx', 'tflite'] as const);
  } catch {
    return undefined;
  }
}

function peekVendorKey(signed: Uint8Array): { key?: Uint8Array; decoded?: unknown } {
  let decoded: unknown;
  try {
    decoded = decodeCbor(signed, 'manifest', MAX_MANIFEST_BYTES);
    return { key: Fields.of('manifest', decoded).bytes('vendorKey', { len: 32 }), decoded };
  } catch {
    return { decoded };
  }
}
