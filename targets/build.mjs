#!/usr/bin/env node
// Builds one device bundle per target into dist/<target>/ with esbuild and
// prints a size table (raw and gzip). A device bundle holds runtime/ +
// keystore/ and their dependencies only (docs/ARCHITECTURE.md: "the device never
// carries vendor code"); test/bundle.test.ts checks that on every target.
//
//   npm run build                       all targets (node targets/build.mjs)
//   npm run build -- node browser       some targets
//
// ORT's wasm files are copied beside each bundle, and so is the TFLite runtime
// (keylock-tflite.mjs and tfjs-tflite's wasm, stageTflite below); nothing is
// ever fetched from a CDN (the bundles point ORT and tfjs-tflite at their own folder).
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ortDist = join(root, 'node_modules/onnxruntime-web/dist');

// tweetnacl and cbor-x use `require` for Node built-ins; an ESM bundle needs a real one.
const requireBanner = "import { createRequire as __keylockRequire } from 'node:module'; const require = __keylockRequire(import.meta.url);";

/**
 * Replaces a lazily imported source file (`import('../x.ts')`) with a stub whose
 * every exported function throws a typed keylock error. Without code
 * splitting, esbuild inlines dynamic imports, so this is how a bundle leaves
 * a module out while its callers still get a clear error instead of "not a
 * function". `file` is relative to the repository; `error` is a class in
 * keystore/errors.ts taking (message) or, given `code`, (code, message). The
 * stub's metafile input is named `<namespace>:<absolute path>`.
 */
function stubOut(file, error, message, { code, namespace = 'keylock-stub' } = {}) {
  const abs = join(root, file);
  return {
    name: `keylock-stub:${file}`,
    setup(b) {
      b.onResolve({ filter: new RegExp(`(^|/)${basename(file).replace('.', '\\.')}$`) }, (args) => {
        const p = join(dirname(args.importer), args.path);
        return p === abs ? { path: abs, namespace } : undefined;
      });
      b.onLoad({ filter: /.*/, namespace }, (args) => {
        if (args.path !== abs) return undefined;
        const names = [...readFileSync(abs, 'utf8').matchAll(/^export (?:async )?function (\w+)/gm)].map((m) => m[1]);
        const args2 = code ? `${JSON.stringify(code)}, ${JSON.stringify(message)}` : JSON.stringify(message);
        return {
          resolveDir: join(root, 'keystore'),
          loader: 'js',
          contents: `import { ${error} } from './errors.ts';
const unavailable = () => { throw new ${error}(${args2}); };
${names.map((n) => `export const ${n} = unavailable;`).join('\n')}`,
        };
      });
    },
  };
}

/**
 * Browser builds must not reach node:fs: keystore/ imports its file store
 * lazily, and browser bundles get a stub instead, so they keep every keystore
 * feature except files (Keystore.fromBytes / memoryStorage / an own storage).
 */
const browserFileStore = stubOut('keystore/filestore.ts', 'KeylockError',
  'expected a file system (Node, Deno, Electron main) for a file keystore or a file: unlock key, got a browser; keep the keystore bytes yourself (Keystore.fromBytes, memoryStorage or an own KeystoreStorage) and unlock with a hook or env provider',
  { code: 'unsupported-platform', namespace: 'keylock-browser-stub' });

// ---------------------------------------------------------------------------
// TFLite in device bundles
//
// The TFLite backend's own code (runtime/tflite.ts, a few KB, imported by
// runtime/backends.ts on first use) is in every bundle. The library it drives,
// @tensorflow/tfjs-tflite (1.2 MB of JS, 3.6 MB of wasm), is a file of its own
// beside the bundle, `keylock-tflite.mjs`, which the bundle imports on its
// first TFLite session only: a bundle that runs ONNX alone never reads it. The
// library's wasm glue and `.wasm` are staged beside it (TFLITE_FILES), and the
// bundle points the library at its own folder (KEYLOCK_TFLITE_BESIDE_BUNDLE,
// runtime/tflite.ts), so nothing is fetched from a CDN or a page-relative path.
// ---------------------------------------------------------------------------

/** The library's flat ESM build (its `module` entry, dist/index.js, imports files the package does not ship). */
const TFLITE_LIB_SRC = 'node_modules/@tensorflow/tfjs-tflite/dist/tf-tflite.fesm.js';
/** The file name of the library beside each bundle; the bundle's `import('@tensorflow/tfjs-tflite')` points here. */
export const TFLITE_LIB = 'keylock-tflite.mjs';
const tfliteWasmDir = join(root, 'node_modules/@tensorflow/tfjs-tflite/wasm');

/**
 * The tfjs-tflite files each kind of target loads. Node, Deno, rpi and the
 * Electron main process: the SIMD build (runtime/tflite-node-shim.ts loads the
 * non-threaded glue there; every Node 20 platform has wasm SIMD). Browsers: the
 * SIMD build, threaded on a cross-origin isolated page (the library picks; its
 * pthread workers come from a blob, so the `.worker.js` is not needed); like
 * ORT's browser build, pages without wasm SIMD are not served.
 */
export const TFLITE_FILES = {
  node: ['tflite_web_api_cc_simd.js', 'tflite_web_api_cc_simd.wasm'],
  browser: ['tflite_web_api_cc_simd.js', 'tflite_web_api_cc_simd.wasm', 'tflite_web_api_cc_simd_threaded.js', 'tflite_web_api_cc_simd_threaded.wasm'],
};

/** In a main bundle: `import('@tensorflow/tfjs-tflite')` stays an import, of the library file beside the bundle. */
const tfliteBeside = {
  name: 'keylock-tflite-beside',
  setup(b) {
    b.onResolve({ filter: /^@tensorflow\/tfjs-tflite$/ }, () => ({ path: `./${TFLITE_LIB}`, external: true }));
  },
};

/** The statement with which tfjs-tflite starts loading its wasm when imported, from a path resolved against the page. */
const TFLITE_PRELOAD = /(EmscriptenModuleLoader\.getInstance\(""\s*,\s*"tflite_web_api"\s*,\s*'(?:[^'\\]|\\.)*'\))\.load\(!0\)/g;

/**
 * Two edits to the library file, both checked so a different version of the
 * package fails the build instead of shipping unedited:
 * - its import-time preload is removed: it resolves the glue against the
 *   page's URL (a request to the page's folder, and a second copy of the wasm
 *   module once keylock sets the bundle's folder); the first session loads it;
 * - @tensorflow/tfjs-core is replaced by a stub: the library uses it only in
 *   `TFLiteModel.predict` (tfjs tensors in and out), which keylock does not call
 *   (it runs the model runner, runtime/tflite.ts); `tensor()` throws there.
 */
const tfliteLibEdits = {
  name: 'keylock-tflite-lib',
  setup(b) {
    b.onResolve({ filter: /^@tensorflow\/tfjs-core$/ }, () => ({ path: 'tfjs-core', namespace: 'keylock-tfjs-core-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'keylock-tfjs-core-stub' }, () => ({
      loader: 'js',
      contents: `export class Tensor {}
export function tensor() { throw new Error('keylock-tflite.mjs: TFLiteModel.predict needs @tensorflow/tfjs-core, which keylock leaves out; keylock runs the model runner'); }`,
    }));
    b.onLoad({ filter: /tf-tflite\.fesm\.js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      const n = [...text.matchAll(TFLITE_PRELOAD)].length;
      if (n !== 1) throw new Error(`${TFLITE_LIB_SRC}: expected one import-time preload statement to remove, found ${n} (a different @tensorflow/tfjs-tflite than 0.0.1-alpha.10?)`);
      return { loader: 'js', contents: text.replace(TFLITE_PRELOAD, '$1') };
    });
  },
};

/** Builds keylock-tflite.mjs into `out` and copies the wasm files `files` beside it. */
async function stageTflite(out, { platform, files, minify }) {
  const result = await esbuild.build({
    entryPoints: [join(root, TFLITE_LIB_SRC)],
    bundle: true,
    format: 'esm',
    platform,
    target: platform === 'node' ? 'node20' : ['es2022', 'chrome110', 'firefox115', 'safari16'],
    minify,
    legalComments: 'none',
    metafile: true,
    outfile: join(out, TFLITE_LIB),
    absWorkingDir: root,
    logLevel: 'warning',
    plugins: [tfliteLibEdits],
  });
  for (const f of files) copyFileSync(join(tfliteWasmDir, f), join(out, f));
  return { inputs: Object.keys(result.metafile.inputs), imports: Object.values(result.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path)) };
}

/** Main bundles point tfjs-tflite at their own folder (runtime/tflite.ts). */
const tfliteDefine = { KEYLOCK_TFLITE_BESIDE_BUNDLE: 'true' };

/**
 * runtime/tflite-node-shim.ts (imported by runtime/tflite.ts under Node only)
 * reads files with node:fs; browser bundles get a stub instead.
 */
const browserTfliteShim = stubOut('runtime/tflite-node-shim.ts', 'BackendUnavailableError',
  'backend tflite: expected Node or Deno for the tfjs-tflite Node shim, got a browser', { namespace: 'keylock-browser-stub' });

// Node, Deno, rpi and the Electron main process share these options. Deno runs
// the node-platform bundle: it defines `process`, so ORT takes its Node code
// path there anyway (docs/TARGETS.md, Deno). cbor-extract stays external:
// bundled, cbor-x silently loses native decoding; unresolvable (an image
// folder without node_modules), cbor-x falls back to its pure-JS decoder.
const nodeOptions = { platform: 'node', target: 'node20', banner: { js: requireBanner }, external: ['cbor-extract'], plugins: [tfliteBeside], define: tfliteDefine };
const nodeOrt = ['ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'];

// Browser bundles use ORT's builds without embedded wasm glue (export
// condition `onnxruntime-web-use-extern-wasm`): the glue .mjs and the .wasm sit
// beside the bundle, exactly as for Node. The entry (targets/browser/index.ts)
// sets env.wasmPaths (ORT's wasmPaths at its first session) to the bundle's own
// folder, computed from import.meta.url, so ORT never guesses a location and
// never reaches a CDN.
// ORT's worker threads import the glue from that same folder.
const browserOptions = {
  platform: 'browser',
  target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
  conditions: ['onnxruntime-web-use-extern-wasm'],
  plugins: [browserFileStore, browserTfliteShim, tfliteBeside],
  define: tfliteDefine,
};

/**
 * Worker mode (runtime/worker.ts): every target ships its worker script beside
 * the main bundle as `keylock-worker.mjs` (node, rpi, electron's main process:
 * the worker_threads script targets/node/worker.ts; browser, deno: the module
 * Web Worker script targets/browser/worker.ts). It is a second bundle of the same
 * runtime (the worker loads and runs the model), built with the same options.
 *
 * Targets: `entry` (the main source), `entries` (source → output file name,
 * with per-entry esbuild options), esbuild options, and the ORT files that
 * must sit beside the bundle.
 *
 * Two browser bundles, because the wasm differs by 14 MB:
 * - `browser`: `onnxruntime-web/wasm` (ort.wasm.min.mjs), wasm EP only,
 *   ships ort-wasm-simd-threaded.{mjs,wasm} (14.2 MB);
 * - `browser-webgpu`: the default `onnxruntime-web` build (JSEP: wasm + webgpu
 *   EPs, ort.min.mjs), ships ort-wasm-simd-threaded.jsep.{mjs,wasm} (28.3 MB).
 * Both come from the same entry; a page that never asks for `backend: 'webgpu'`
 * should ship `browser`.
 */
export const TARGETS = {
  // The node-platform device bundles (node, rpi, deno) also export what checks a
  // device from its folder, which has no node_modules: decodeRecorded and unlocked
  // sessions (targets/node/bundle.ts). Apps that install the package get the node target alone.
  node: {
    entry: 'targets/node/bundle.ts',
    entries: [{ in: 'targets/node/bundle.ts', out: 'keylock.mjs' }, { in: 'targets/node/worker.ts', out: 'keylock-worker.mjs' }],
    options: nodeOptions,
    ortFiles: nodeOrt,
    tfliteFiles: TFLITE_FILES.node,
  },
  deno: {
    entry: 'targets/deno/index.ts',
    entries: [{ in: 'targets/deno/index.ts', out: 'keylock.mjs' }, { in: 'targets/browser/worker.ts', out: 'keylock-worker.mjs' }],
    options: nodeOptions,
    ortFiles: nodeOrt,
    tfliteFiles: TFLITE_FILES.node,
  },
  // Same code as node; the entry only sets `env.threads` to min(4, cores): a
  // Pi 4/5 has 4 cores, and ORT fixes the count per process at the first
  // session, so the default is chosen once, up front (targets/rpi/README.md).
  rpi: {
    entry: 'targets/rpi/index.ts',
    entries: [{ in: 'targets/rpi/index.ts', out: 'keylock.mjs' }, { in: 'targets/node/worker.ts', out: 'keylock-worker.mjs' }],
    options: nodeOptions,
    ortFiles: nodeOrt,
    tfliteFiles: TFLITE_FILES.node,
  },
  browser: {
    entry: 'targets/browser/index.ts',
    entries: [{ in: 'targets/browser/index.ts', out: 'keylock.mjs' }, { in: 'targets/browser/worker.ts', out: 'keylock-worker.mjs' }],
    options: { ...browserOptions, alias: { 'onnxruntime-web': 'onnxruntime-web/wasm' } },
    ortFiles: ['ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'],
    tfliteFiles: TFLITE_FILES.browser,
  },
  'browser-webgpu': {
    entry: 'targets/browser/index.ts',
    entries: [{ in: 'targets/browser/index.ts', out: 'keylock.mjs' }, { in: 'targets/browser/worker.ts', out: 'keylock-worker.mjs' }],
    options: browserOptions,
    ortFiles: ['ort-wasm-simd-threaded.jsep.mjs', 'ort-wasm-simd-threaded.jsep.wasm'],
    tfliteFiles: TFLITE_FILES.browser,
  },
  // Electron: the main process is Node (ESM main, Electron >= 28) and runs the
  // model; the preload is a CommonJS file (sandboxed preloads cannot be ESM)
  // that only forwards IPC, so it carries no runtime at all.
  electron: {
    entry: 'targets/electron/main.ts',
    entries: [
      { in: 'targets/electron/main.ts', out: 'main.mjs' },
      { in: 'targets/electron/preload.ts', out: 'preload.cjs', options: { format: 'cjs', banner: {}, external: ['electron'] } },
      { in: 'targets/node/worker.ts', out: 'keylock-worker.mjs' },
    ],
    options: { ...nodeOptions, external: ['cbor-extract', 'electron'] },
    ortFiles: nodeOrt,
    tfliteFiles: TFLITE_FILES.node,
  },
};

/**
 * Builds one target into `outDir` (default dist/<name>/, emptied first).
 * Returns the output files (absolute paths), the source files bundled (paths
 * relative to the repository, as esbuild's metafile names them) and, per
 * output bundle, the imports it leaves external.
 */
export async function buildTarget(name, { minify = true, outDir } = {}) {
  const t = TARGETS[name];
  if (!t) throw new Error(`unknown target ${name}; known: ${Object.keys(TARGETS).join(', ')}`);
  const out = outDir ?? join(root, 'dist', name);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const inputs = new Set();
  const externals = {};
  for (const e of t.entries) {
    const result = await esbuild.build({
      entryPoints: [join(root, e.in)],
      bundle: true,
      format: 'esm',
      minify,
      // No keepNames (it costs about 11 KB a bundle): typed errors get their `name` from a
      // table of string keys in keystore/errors.ts, which minification leaves alone.
      legalComments: 'none',
      metafile: true,
      outfile: join(out, e.out),
      absWorkingDir: root,
      logLevel: 'warning',
      ...t.options,
      ...e.options,
    });
    for (const i of Object.keys(result.metafile.inputs)) inputs.add(i);
    for (const o of Object.values(result.metafile.outputs)) externals[e.out] = o.imports.filter((i) => i.external).map((i) => i.path);
  }
  for (const f of t.ortFiles) copyFileSync(join(ortDist, f), join(out, f));
  const lib = await stageTflite(out, { platform: t.options.platform, files: t.tfliteFiles, minify });
  return { dir: out, files: readdirSync(out).map((f) => join(out, f)), inputs: [...inputs], externals, tfliteInputs: lib.inputs, tfliteImports: lib.imports };
}

function table(rows) {
  const head = ['target', 'file', 'bytes', 'gzip -9'];
  const all = [head, ...rows];
  const w = head.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  return all.map((r) => r.map((c, i) => (i >= 2 ? String(c).padStart(w[i]) : String(c).padEnd(w[i]))).join('  ')).join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(TARGETS);
  const rows = [];
  for (const n of names) {
    let raw = 0;
    let gz = 0;
    for (const f of (await buildTarget(n)).files.sort()) {
      const bytes = readFileSync(f);
      const g = gzipSync(bytes, { level: 9 }).length;
      raw += statSync(f).size;
      gz += g;
      rows.push([n, relative(root, f), bytes.length, g]);
    }
    rows.push([n, '(total)', raw, gz]);
  }
  console.log(table(rows));
}
