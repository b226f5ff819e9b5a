#!/usr/bin/env node
// Builds one device bundle per target into dist/<target>/ with esbuild and
// prints a size table (raw and gzip). A device bundle holds runtime/ +
// keystore/ and their dependencies only (docs/ARCHITECTURE.md: "the device never
// carries vendor code"); test/bundle.test.ts checks that on every target.
//
//   npm run build                       all targets (node targets/build.mjs)
//   npm run build -- node browser       some targets
//
// ORT's wasm files are copied beside each bundle; nothing is ever fetched from
// a CDN (the browser bundles point ORT at their own folder).
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

/**
 * The TFLite backend (runtime/tflite.ts, imported by runtime/backends.ts on first
 * use) pulls in @tensorflow/tfjs-tflite, 1.9 MB of JS plus its own wasm files,
 * and device bundles carry no @tensorflow/* code. It is left out of every
 * target: `backend: 'tflite'` (the default for a TFLite model) fails there
 * with BackendUnavailableError. The TFLite path is tracked in its own issue.
 */
const noTflite = stubOut('runtime/tflite.ts', 'BackendUnavailableError',
  'backend tflite: expected it in this bundle, got a device bundle built without it (targets/build.mjs leaves @tensorflow/tfjs-tflite out of device bundles); run TFLite models from the sources for now');

// Node, Deno, rpi and the Electron main process share these options. Deno runs
// the node-platform bundle: it defines `process`, so ORT takes its Node code
// path there anyway (docs/TARGETS.md, Deno). cbor-extract stays external:
// bundled, cbor-x silently loses native decoding; unresolvable (an image
// folder without node_modules), cbor-x falls back to its pure-JS decoder.
const nodeOptions = { platform: 'node', target: 'node20', banner: { js: requireBanner }, external: ['cbor-extract'], plugins: [noTflite] };
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
  plugins: [browserFileStore, noTflite],
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
  },
  deno: {
    entry: 'targets/deno/index.ts',
    entries: [{ in: 'targets/deno/index.ts', out: 'keylock.mjs' }, { in: 'targets/browser/worker.ts', out: 'keylock-worker.mjs' }],
    options: nodeOptions,
    ortFiles: nodeOrt,
  },
  // Same code as node; the entry only sets `env.threads` to min(4, cores): a
  // Pi 4/5 has 4 cores, and ORT fixes the count per process at the first
  // session, so the default is chosen once, up front (targets/rpi/README.md).
  rpi: {
    entry: 'targets/rpi/index.ts',
    entries: [{ in: 'targets/rpi/index.ts', out: 'keylock.mjs' }, { in: 'targets/node/worker.ts', out: 'keylock-worker.mjs' }],
    options: nodeOptions,
    ortFiles: nodeOrt,
  },
  browser: {
    entry: 'targets/browser/index.ts',
    entries: [{ in: 'targets/browser/index.ts', out: 'keylock.mjs' }, { in: 'targets/browser/worker.ts', out: 'keylock-worker.mjs' }],
    options: { ...browserOptions, alias: { 'onnxruntime-web': 'onnxruntime-web/wasm' } },
    ortFiles: ['ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'],
  },
  'browser-webgpu': {
    entry: 'targets/browser/index.ts',
    entries: [{ in: 'targets/browser/index.ts', out: 'keylock.mjs' }, { in: 'targets/browser/worker.ts', out: 'keylock-worker.mjs' }],
    options: browserOptions,
    ortFiles: ['ort-wasm-simd-threaded.jsep.mjs', 'ort-wasm-simd-threaded.jsep.wasm'],
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
  return { dir: out, files: readdirSync(out).map((f) => join(out, f)), inputs: [...inputs], externals };
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
