/**
 * `keylock image` stages a device image (target bundle, ORT wasm files, locked
 * models, optionally a keystore, signed manifest.klim); `keylock verify-image`
 * checks one. Layout of an image folder:
 *
 *   manifest.klim                   vendor-signed list of everything below
 *   keylock.mjs                     the target bundle (Electron: main.mjs + preload.cjs)
 *   ort-wasm-simd-threaded.*        ORT's glue and wasm, found beside the bundle
 *   keylock-tflite.mjs,             only when a model is TFLite: the tfjs-tflite library
 *   tflite_web_api_cc_simd*.*       and its glue and wasm, imported by the bundle's first TFLite session
 *   models/NAME.klm                 the locked models
 *   keystore/NAME.kls[.counter]     optional: a device keystore and its generation counter
 *                                   (sealed; its storage key never goes in an image)
 *
 * The bundle is rebuilt from the sources for every image, so an image never
 * carries a stale dist/.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { buildTarget, TARGETS, TFLITE_LIB } from '../build.mjs';
import { decodeVendorPub, decodeVendorSecret } from '../../keystore/keyfiles.ts';
import { decodeKlsOuter } from '../../keystore/kls.ts';
import { equalBytes, signKeyPair, wipe } from '../../keystore/nacl.ts';
import { openKlm } from '../../runtime/klm.ts';
import { keyId } from '../../keystore/hex.ts';
import {
  checkImagePath, fileSha256, IMAGE_TARGETS, KLIM_NAME, sealImageManifest, verifyImage,
  type ImageFile, type ImageModel, type ImageRole, type ImageTarget,
} from './image-manifest.ts';
import { CliError, UsageError, type Command } from './command.ts';
import { readInput, req, writeOutput } from './io.ts';

/** Files keystore/filestore.ts keeps beside `F.kls`. */
const KEYSTORE_SIDE_FILES = ['.counter', '.attempts'];

function list(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : typeof v === 'string' ? [v] : [];
}

function keylockVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Refuses an output folder that exists and is not empty: an image never mixes with other files. */
function prepareOut(out: string): void {
  let entries: string[] = [];
  try {
    if (!statSync(out).isDirectory()) throw new CliError(`--out ${out}: expected a folder, got a file`);
    entries = readdirSync(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (entries.length) throw new CliError(`--out ${out}: expected a new or empty folder, got ${entries.length} entries`, 'pick a new folder; an image lists every file in its folder');
  mkdirSync(out, { recursive: true });
}

function fileNameFor(flag: string, path: string, ext: string): string {
  const name = basename(path);
  if (!name.endsWith(ext)) throw new UsageError(`--${flag} ${path}: expected a ${ext} file`);
  try {
    checkImagePath(name);
  } catch {
    throw new UsageError(`--${flag} ${path}: the file name must use letters, digits and "._-" only`);
  }
  return name;
}

/** `keylock image`: stage a device image into a new folder and sign its manifest. */
export const image: Command = {
  summary: 'stage a device image: target bundle, ORT wasm, TFLite runtime when a model is TFLite, models, keystore, signed manifest.klim',
  usage: `image --target ${IMAGE_TARGETS.join('|')} --model M.klm [--model M2.klm ...] [--keystore F.kls] --vendor VENDOR.key --out DIR`,
  options: {
    target: { type: 'string' }, model: { type: 'string', multiple: true }, keystore: { type: 'string' },
    vendor: { type: 'string' }, out: { type: 'string' },
  },
  positionals: [0, 0],
  async run({ values }) {
    const target = req(values, 'target', this.usage) as ImageTarget;
    if (!IMAGE_TARGETS.includes(target) || !TARGETS[target]) throw new UsageError(`--target: expected one of ${IMAGE_TARGETS.join(', ')}, got "${target}"`);
    const models = list(values.model);
    if (!models.length) throw new UsageError('--model M.klm is required (one or more)', `usage: keylock ${this.usage}`);
    const out = req(values, 'out', this.usage);
    const seed = decodeVendorSecret(readInput(req(values, 'vendor', this.usage), 'vendor key'));
    try {
      await stage(target, models, values.keystore as string | undefined, seed, out);
    } finally {
      wipe(seed);
    }
  },
};

/** Checks the inputs, builds the target, copies everything into `out` and signs the list. */
async function stage(target: ImageTarget, models: string[], keystore: string | undefined, seed: Uint8Array, out: string): Promise<void> {
  const { publicKey, secretKey } = signKeyPair(seed);
  wipe(secretKey);

  // Check every input before writing anything.
  const staged: { from: string; path: string; role: ImageRole }[] = [];
  const modelList: ImageModel[] = [];
  let tflite = false;
  for (const m of models) {
    const path = `models/${fileNameFor('model', m, '.klm')}`;
    if (staged.some((s) => s.path === path)) throw new UsageError(`--model: two models named ${basename(m)}; rename one`);
    const { manifest } = openKlm(readInput(m, 'model file'));
    if (!equalBytes(manifest.vendorKey, publicKey)) {
      throw new CliError(`${m}: expected a model signed by vendor key ${keyId(publicKey)}, got one signed by ${keyId(manifest.vendorKey)}`, 'an image is signed by the vendor of its models');
    }
    staged.push({ from: m, path, role: 'model' });
    modelList.push({ path, modelId: manifest.modelId });
    tflite ||= manifest.modelFormat === 'tflite';
  }
  if (keystore !== undefined) {
    decodeKlsOuter(readInput(keystore, 'keystore file'));
    const path = `keystore/${fileNameFor('keystore', keystore, '.kls')}`;
    staged.push({ from: keystore, path, role: 'keystore' });
    // The file store keeps its generation counter (and wrong-secret record) beside
    // the .kls; a keystore copied without its counter opens as a RollbackError.
    for (const side of KEYSTORE_SIDE_FILES) {
      if (existsSync(keystore + side)) staged.push({ from: keystore + side, path: path + side, role: 'keystore' });
    }
  }

  prepareOut(out);
  const build = mkdtempSync(join(tmpdir(), 'keylock-image-'));
  try {
    const built = await buildTarget(target, { outDir: build });
    const ort = new Set(TARGETS[target].ortFiles);
    // The TFLite library and its wasm (4.7 MB, 8.5 MB for browsers) go in only when a model needs them;
    // without them the bundle still runs ONNX (it imports the library on a TFLite session only).
    const tfliteFiles = new Set([TFLITE_LIB, ...TARGETS[target].tfliteFiles]);
    for (const f of built.files) {
      const name = basename(f);
      if (tfliteFiles.has(name) && !tflite) continue;
      staged.push({ from: f, path: name, role: ort.has(name) ? 'ort' : tfliteFiles.has(name) ? 'tflite' : 'bundle' });
    }
    const files: ImageFile[] = [];
    for (const s of staged) {
      const dest = join(out, ...s.path.split('/'));
      mkdirSync(join(dest, '..'), { recursive: true });
      copyFileSync(s.from, dest);
      // Sizes and hashes of the copies, not the sources: the list describes what is in the folder.
      files.push({ path: s.path, size: statSync(dest).size, sha256: fileSha256(dest), role: s.role });
    }
    files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const entries = TARGETS[target].entries.map((e) => e.out);
    writeOutput(join(out, KLIM_NAME), sealImageManifest({ target, created: Math.floor(Date.now() / 1000), keylock: keylockVersion(), entries, files, models: modelList }, seed));
    const total = files.reduce((n, f) => n + f.size, 0);
    process.stdout.write(`image ${out}: target ${target}, ${files.length} files, ${total} bytes, models ${modelList.map((m) => m.modelId).join(', ')}; `
      + `TFLite runtime ${tflite ? 'included' : 'left out (no TFLite model)'}; ${KLIM_NAME} signed by vendor key ${keyId(publicKey)}\n`);
  } finally {
    rmSync(build, { recursive: true, force: true });
  }
}

/** `keylock verify-image`: check an image folder against its signed manifest (exit 0 ok, 1 refused). */
export const verifyImageCmd: Command = {
  summary: 'check an image folder against its signed manifest.klim (missing, extra, changed files)',
  usage: 'verify-image DIR --trust VENDOR.pub [--trust OTHER.pub]',
  options: { trust: { type: 'string', multiple: true } },
  positionals: [1, 1],
  async run({ values, positionals }) {
    const trust = list(values.trust);
    if (!trust.length) throw new UsageError('--trust VENDOR.pub is required', `usage: keylock ${this.usage}`);
    const keys = trust.map((t) => decodeVendorPub(readInput(t, 'vendor public key')));
    try {
      statSync(join(positionals[0], KLIM_NAME));
    } catch {
      throw new CliError(`${positionals[0]}: expected an image folder with ${KLIM_NAME}, got none`);
    }
    const v = verifyImage(positionals[0], keys);
    process.stdout.write(`image ok: target ${v.manifest.target}, ${v.files} files, ${v.bytes} bytes, models ${v.manifest.models.map((m) => `${m.modelId} (${m.path})`).join(', ')}; signed by vendor key ${keyId(v.manifest.vendorKey)} on ${new Date(v.manifest.created * 1000).toISOString()}\n`);
  },
};
