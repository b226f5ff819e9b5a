/**
 * Device images: a folder to flash or copy onto a device, holding a target
 * bundle, ORT's wasm files, locked models, optionally a keystore, and
 * `manifest.klim`, a vendor-signed list of every file with its size and
 * SHA-256 (format `keylock/image`, version 1; docs/SPEC.md "Device images").
 *
 *   { format: "keylock/image", version: 1, signed: bstr, sig: bstr(64), vendorKey: bstr(32) }
 *   signed = CBOR { format, version, vendorKey, target, created, keylock,
 *                   entries: [text], files: [{ path, size, sha256, role }], models: [{ path, modelId }] }
 *
 * Verification checks the signature against pinned keys first, then the folder
 * against the list: a listed file that is missing, a file that is not listed,
 * and a file whose size or hash differs are each a typed error.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, Fields } from '../../keystore/cbor.ts';
import { openVendorFile, sealVendorFile } from '../../keystore/vendorfile.ts';
import { FormatError, TamperedError } from '../../keystore/errors.ts';

/** Format name of `manifest.klim`. */
export const KLIM_FORMAT = 'keylock/image';
/** The one version of `manifest.klim`. */
export const KLIM_VERSION = 1;
/** The manifest's file name, at the top of the image folder. */
export const KLIM_NAME = 'manifest.klim';
/** Largest manifest accepted (1 MiB). */
export const MAX_KLIM_BYTES = 1 << 20;
/** Most files one image may list. */
export const MAX_IMAGE_FILES = 4096;
/** Targets an image may be made for (targets/build.mjs TARGETS). */
export const IMAGE_TARGETS = ['node', 'deno', 'rpi', 'browser', 'browser-webgpu', 'electron'] as const;
/** A target an image is made for. */
export type ImageTarget = (typeof IMAGE_TARGETS)[number];
/**
 * What a file is for: the target's bundle files, ORT's wasm files, a locked model, a keystore, the
 * TFLite runtime (keylock-tflite.mjs and tfjs-tflite's glue and wasm, in images that hold a TFLite model).
 */
export const IMAGE_ROLES = ['bundle', 'ort', 'model', 'keystore', 'tflite'] as const;
/** The role of a listed file. */
export type ImageRole = (typeof IMAGE_ROLES)[number];

/** One listed file. `path` is relative to the image folder, `/`-separated. */
export interface ImageFile {
  path: string;
  size: number;
  sha256: Uint8Array;
  role: ImageRole;
}

/** A model in the image and the id its `.klm` manifest names. */
export interface ImageModel {
  path: string;
  modelId: string;
}

/** The signed body of `manifest.klim`. */
export interface ImageManifest {
  target: ImageTarget;
  /** Unix seconds. */
  created: number;
  /** keylock version that made the image. */
  keylock: string;
  /** The bundle files an app imports (e.g. `keylock.mjs`; Electron: `main.mjs`, `preload.cjs`). */
  entries: string[];
  files: ImageFile[];
  models: ImageModel[];
  /** The signing vendor key (Ed25519 public key). */
  vendorKey: Uint8Array;
}

/** Some files of an image are not what its manifest lists. `paths` names them. */
export class ImageFileError extends TamperedError {
  constructor(readonly kind: 'missing' | 'extra' | 'changed', readonly paths: string[], message: string) {
    super(message);
  }
}
/** Files the manifest lists are not in the folder. */
export class ImageMissingFileError extends ImageFileError {
  constructor(paths: string[]) {
    super('missing', paths, `image: expected every listed file, got ${paths.length} missing: ${paths.join(', ')}`);
  }
}
/** The folder holds files (or links, devices…) that the manifest does not list. */
export class ImageExtraFileError extends ImageFileError {
  constructor(paths: string[]) {
    super('extra', paths, `image: expected only listed files, got ${paths.length} more: ${paths.join(', ')}`);
  }
}
/** Files whose size or SHA-256 differ from the manifest's. */
export class ImageChangedFileError extends ImageFileError {
  constructor(paths: string[]) {
    super('changed', paths, `image: expected the listed size and SHA-256, got different contents in ${paths.join(', ')}`);
  }
}

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** Throws FormatError unless `p` is a plain relative path: `/`-separated safe names, no `.`/`..`, not the manifest. */
export function checkImagePath(p: string): void {
  const segs = p.split('/');
  if (p.length > 1024 || !segs.every((s) => SEGMENT.test(s) && s !== '..' && s !== '.') || p === KLIM_NAME) {
    throw new FormatError(`image path: expected a relative path of names made of letters, digits, "._-" (not "${KLIM_NAME}"), got "${p}"`);
  }
}

/** SHA-256 of a file. */
export function fileSha256(path: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(readFileSync(path)).digest());
}

/** Signs a manifest body with the vendor's Ed25519 seed. */
export function sealImageManifest(m: Omit<ImageManifest, 'vendorKey'>, vendorSeed: Uint8Array): Uint8Array {
  for (const f of m.files) checkImagePath(f.path);
  const body = {
    target: m.target, created: m.created, keylock: m.keylock, entries: m.entries,
    files: m.files.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256, role: f.role })),
    models: m.models.map((x) => ({ path: x.path, modelId: x.modelId })),
  };
  return sealVendorFile(KLIM_FORMAT, KLIM_VERSION, body, vendorSeed);
}

function items(f: Fields, key: string, max: number): Fields[] {
  return f.array(key, max).map((v, i) => Fields.of(`${KLIM_FORMAT}.${key}[${i}]`, v));
}

/**
 * Opens `manifest.klim` bytes: the signer must be one of `trusted`
 * (UntrustedSignerError), the signature must verify (TamperedError), and every
 * field must be well formed (FormatError), with unique, safe paths.
 */
export function openImageManifest(bytes: Uint8Array, trusted: readonly Uint8Array[]): ImageManifest {
  const { body, vendorKey } = openVendorFile(bytes, KLIM_FORMAT, KLIM_VERSION, MAX_KLIM_BYTES, trusted);
  const files = items(body, 'files', MAX_IMAGE_FILES).map((f) => ({
    path: f.text('path', 1024), size: f.uint('size'), sha256: f.bytes('sha256', { len: 32 }), role: f.oneOf('role', IMAGE_ROLES),
  }));
  const seen = new Set<string>();
  for (const f of files) {
    checkImagePath(f.path);
    if (seen.has(f.path)) throw new FormatError(`${KLIM_FORMAT}: expected each path once, got "${f.path}" twice`);
    seen.add(f.path);
  }
  const models = items(body, 'models', MAX_IMAGE_FILES).map((m) => ({ path: m.text('path', 1024), modelId: m.text('modelId', 256) }));
  for (const m of models) if (!seen.has(m.path)) throw new FormatError(`${KLIM_FORMAT}: model "${m.path}" is not among the listed files`);
  const entries = body.array('entries', 16).map((e) => {
    if (typeof e !== 'string' || !seen.has(e)) throw new FormatError(`${KLIM_FORMAT}.entries: expected listed file names, got ${describe(e)}`);
    return e;
  });
  return {
    target: body.oneOf('target', IMAGE_TARGETS), created: body.uint('created'), keylock: body.text('keylock', 64),
    entries, files, models, vendorKey,
  };
}

/**
 * Every entry under `dir` except the top-level manifest, as `/`-separated
 * relative paths. Anything that is not a regular file or a folder (a symbolic
 * link, a device) is returned in `odd`: an image holds plain files only.
 */
export function listImageFolder(dir: string): { files: string[]; odd: string[] } {
  const files: string[] = [];
  const odd: string[] = [];
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (p === KLIM_NAME) continue;
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) files.push(p);
      else odd.push(p);
    }
  };
  walk('');
  return { files: files.sort(), odd: odd.sort() };
}

/** What a verified image holds. */
export interface VerifiedImage {
  manifest: ImageManifest;
  files: number;
  bytes: number;
}

/**
 * Verifies an image folder against its signed manifest. Throws, in this order:
 * UntrustedSignerError / TamperedError / FormatError for the manifest itself,
 * then ImageMissingFileError, ImageExtraFileError, ImageChangedFileError (each
 * naming every file of its kind).
 */
export function verifyImage(dir: string, trusted: readonly Uint8Array[]): VerifiedImage {
  const manifest = openImageManifest(new Uint8Array(readFileSync(join(dir, KLIM_NAME))), trusted);
  const { files: present, odd } = listImageFolder(dir);
  const have = new Set(present);
  const listed = new Set(manifest.files.map((f) => f.path));
  const missing = manifest.files.filter((f) => !have.has(f.path)).map((f) => f.path);
  if (missing.length) throw new ImageMissingFileError(missing);
  const extra = [...present.filter((p) => !listed.has(p)), ...odd];
  if (extra.length) throw new ImageExtraFileError(extra);
  const changed: string[] = [];
  let bytes = 0;
  for (const f of manifest.files) {
    const abs = join(dir, ...f.path.split('/'));
    const size = lstatSync(abs).size;
    bytes += size;
    if (size !== f.size || !Buffer.from(fileSha256(abs)).equals(Buffer.from(f.sha256))) changed.push(f.path);
  }
  if (changed.length) throw new ImageChangedFileError(changed);
  return { manifest, files: manifest.files.length, bytes };
}
