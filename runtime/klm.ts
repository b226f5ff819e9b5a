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
 * touches and the input names that take key tensors.
 */
import { decodeCbor, Fields } from '../keystore/cbor.ts';
import { openEnvelope, openEnvelopeAsync, parseEnvelope, type Envelope } from '../keystore/envelope.ts';
import { equalBytes, sha256, sha256Async } from '../keystore/nacl.ts';
import { FormatError, TamperedError, UntrustedSignerError } from '../keystore/errors.ts';

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

/** A tensor's data inside the model bytes. */
export interface TensorRange {
  name: string;
  /** Byte offset of the first element in the model bytes. */
  offset: number;
  /** Byte length of the data. */
  length: number;
  /** Element type, e.g. `float32`. */
  dtype: string;
}

/**
 * Tensor data whose elements belong to output channels. With `outer` layout the
 * channel of element i is floor(i / (n / channels)) (OIHW conv weights, [out,in]
 * Gemm weights, biases); with `inner` it is i mod channels ([in,out] MatMul weights).
 */
export interface ChannelRange extends TensorRange {
  layout: 'outer' | 'inner';
}

export interface ShuffleLock {
  scheme: 'shuffle';
  /** The model input the runtime shuffles (NCHW float32). */
  input: string;
  block: number;
  channels: number;
  negpos: boolean;
  /** True when the inverse permutation was absorbed into the first layer post hoc. */
  absorbed: boolean;
  /** Memory layout of the input image: `nchw` when absent (ONNX), `nhwc` for TFLite. */
  layout?: 'nchw' | 'nhwc';
}

export interface SignflipLayer {
  /** Name of the locked layer's weight tensor: it labels the layer's key bits. */
  weight: string;
  /** Output channels. */
  channels: number;
  /** Every range whose keyed channels were negated (weight, bias, batch-norm mean and bias). */
  ranges: ChannelRange[];
  /** Input mode: the graph input that takes this layer's ±1 key tensor, and its dims. */
  keyInput?: string;
  keyDims?: number[];
}

export interface SignflipLock {
  scheme: 'signflip';
  mode: 'input' | 'fold';
  /** 0: one bit per channel of each layer; U > 0: channel j of any layer uses MAC-unit bit j mod U. */
  units: number;
  layers: SignflipLayer[];
}

export interface DeeplockLock {
  scheme: 'deeplock';
  /** float32 tensors in key-schedule order: parameter i (counted across them) uses round-key word i. */
  tensors: TensorRange[];
}

export interface AdvparamsLock {
  scheme: 'advparams';
  /** The tensors the sealed key list indexes into. */
  tensors: TensorRange[];
  /** secretbox(MAC || ciphertext) of the CBOR key list [[tensor index, element index, original value bytes], ...]. */
  sealedKey: Uint8Array;
}

export interface SealedLock {
  scheme: 'sealed';
  tensors: (TensorRange & { mac: Uint8Array })[];
}

/** One applied lock with its public parameters. Locks are applied in order and undone in reverse. */
export type LockEntry = ShuffleLock | SignflipLock | DeeplockLock | AdvparamsLock | SealedLock;
export type Scheme = LockEntry['scheme'];
export const SCHEMES: readonly Scheme[] = ['shuffle', 'signflip', 'deeplock', 'advparams', 'sealed'];

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

function ranges(f: Fields, key: string, modelBytes: number): TensorRange[] {
  return f.array(key).map((v, i) => range(Fields.of(`${f.what}.${key}[${i}]`, v), modelBytes));
}

function range(g: Fields, modelBytes: number): TensorRange {
  const r = { name: g.text('name'), offset: g.uint('offset'), length: g.uint('length'), dtype: g.text('dtype', 32) };
  if (r.offset + r.length > modelBytes) {
    throw new FormatError(`${g.what}: range ${r.offset}+${r.length} ends past the model's ${modelBytes} bytes`);
  }
  return r;
}

function lockEntry(v: unknown, i: number, modelBytes: number): LockEntry {
  const f = Fields.of(`manifest.locks[${i}]`, v);
  const scheme = f.oneOf('scheme', SCHEMES);
  switch (scheme) {
    case 'shuffle': {
      const e: ShuffleLock = {
        scheme, input: f.text('input'), block: f.uint('block'), channels: f.uint('channels'),
        negpos: f.bool('negpos'), absorbed: f.bool('absorbed'),
      };
      if (f.has('layout')) e.layout = f.oneOf('layout', ['nchw', 'nhwc'] as const);
      if (e.block < 1 || e.channels < 1 || e.block * e.block * e.channels > 1 << 24) {
        throw new FormatError(`${f.what}: block ${e.block} x ${e.block} x ${e.channels} is out of range`);
      }
      return e;
    }
    case 'signflip': {
      const layers = f.array('layers', 1 << 16).map((lv, j) => {
        const g = Fields.of(`${f.what}.layers[${j}]`, lv);
        const layer: SignflipLayer = {
          weight: g.text('weight'),
          channels: g.uint('channels'),
          ranges: g.array('ranges', 64).map((rv, k) => {
            const h = Fields.of(`${g.what}.ranges[${k}]`, rv);
            return { ...range(h, modelBytes), layout: h.oneOf('layout', ['outer', 'inner'] as const) };
          }),
        };
        if (g.has('keyInput')) {
          layer.keyInput = g.text('keyInput');
          layer.keyDims = g.array('keyDims', 8).map((d, k) => {
            if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1) throw new FormatError(`${g.what}.keyDims[${k}]: expected a positive integer`);
            return d;
          });
        }
        return layer;
      });
      return { scheme, mode: f.oneOf('mode', ['input', 'fold'] as const), units: f.uint('units'), layers };
    }
    case 'deeplock':
      return { scheme, tensors: ranges(f, 'tensors', modelBytes) };
    case 'advparams':
      return { scheme, tensors: ranges(f, 'tensors', modelBytes), sealedKey: f.bytes('sealedKey', { max: 1 << 24 }) };
    case 'sealed':
      return {
        scheme,
        tensors: f.array('tensors').map((tv, j) => {
          const g = Fields.of(`${f.what}.tensors[${j}]`, tv);
          return { ...range(g, modelBytes), mac: g.bytes('mac', { len: 16 }) };
        }),
      };
  }
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
    locks: f.array('locks', 16).map((v, i) => lockEntry(v, i, modelBytes)),
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

function peekVendorKey(signed: Uint8Array): { key?: Uint8Array; decoded?: unknown } {
  let decoded: unknown;
  try {
    decoded = decodeCbor(signed, 'manifest', MAX_MANIFEST_BYTES);
    return { key: Fields.of('manifest', decoded).bytes('vendorKey', { len: 32 }), decoded };
  } catch {
    return { decoded };
  }
}

/** Lower-case hex of bytes. */
export function hex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

/** Short id of a public key: the first 8 bytes of its SHA-256, in hex. */
export function keyId(publicKey: Uint8Array): string {
  return hex(sha256(publicKey).subarray(0, 8));
}
