/**
 * Lets @tensorflow/tfjs-tflite 0.0.1-alpha.10 load in Node (the library ships no Node build; what it trips over is listed below).
 * Imported by runtime/tflite.ts only when it runs under Node; browsers load
 * the library as shipped.
 *
 * The library has no Node code path. Finding no `window`, it takes itself for
 * a Web Worker: it reads `self.location`, then `importScripts()` the glue
 * `tflite_web_api_cc[_simd][_threaded].js` next to the page, which would fetch
 * its `.wasm` of the same name. It starts this already when it is imported (a
 * preload with an empty wasm path, resolved against `location.href`).
 *
 * So, from before the import until the first model has loaded, the shim
 * provides:
 * - `self` (= globalThis) and `location`, whose `href` is a file: URL inside
 *   the wasm folder, so the preload finds the glue there;
 * - `importScripts(url)`: loads the glue with `require` and wraps its factory
 *   so that it gets the `.wasm` bytes read from disk (`wasmBinary`) and never
 *   fetches anything;
 * - the non-threaded build: Node passes the library's multi-threading check,
 *   but the threaded glue needs real Web Workers, so `_threaded` is dropped
 *   from the name (the SIMD build stays).
 * The library keeps its wasm module once loaded; then `remove()` deletes the
 * globals, so other code (onnxruntime-web, tfjs) never sees a fake `self`.
 * The caller must not call the library's `setWasmPath` in Node: a second path
 * would load a second copy of the wasm module.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const require = createRequire(import.meta.url);

/** The library's wasm folder in node_modules, with a trailing slash. */
export function defaultTfliteWasmDir(): string {
  return join(dirname(require.resolve('@tensorflow/tfjs-tflite/package.json')), 'wasm') + '/';
}

/** A folder given as a path or a file: URL, as a path with a trailing slash. */
export function folderPath(folder: string): string {
  const p = folder.startsWith('file:') ? fileURLToPath(folder) : folder;
  return p.endsWith('/') ? p : `${p}/`;
}

type Factory = (opts: Record<string, unknown>) => Promise<unknown>;

const NAMES = ['self', 'location', 'importScripts', 'tflite_web_api_ModuleFactory'] as const;

let lastFailure: string | undefined;

/** Why the shim could not load the library's glue or `.wasm` (a missing or unreadable file), if it could not. */
export function tfliteShimFailure(): string | undefined {
  return lastFailure;
}

/**
 * Installs the worker globals for the wasm folder `wasmDir` (a path ending in
 * `/`). Returns the function that removes them again.
 */
export function installTfliteNodeShim(wasmDir: string): () => void {
  const g = globalThis as Record<string, unknown>;
  const saved = NAMES.map((n) => [n, Object.getOwnPropertyDescriptor(g, n)] as const);
  // A file name inside the folder: the library cuts location.href at its last '/'.
  const href = pathToFileURL(join(wasmDir, 'index.html')).href;
  // Own properties, defined rather than assigned: in a Deno worker `self` and `location` are getters
  // of the worker scope's prototype, which an assignment cannot replace; `remove()` uncovers them again.
  const set = (n: (typeof NAMES)[number], value: unknown): void => {
    try {
      Object.defineProperty(g, n, { value, writable: true, configurable: true, enumerable: false });
    } catch {
      g[n] = value; // an own property that cannot be redefined but may be writable
    }
  };
  set('self', globalThis);
  set('location', { origin: 'file://', href, protocol: 'file:' });
  set('importScripts', (url: string): void => {
    const path = (url.startsWith('file:') ? fileURLToPath(url) : url).replace(/_threaded\.js$/, '.js');
    let factory: Factory;
    let wasmBinary: Uint8Array;
    try {
      factory = require(path) as Factory;
      wasmBinary = readFileSync(path.replace(/\.js$/, '.wasm'));
    } catch (e) {
      // The library swallows this and fails later with an unrelated TypeError: keep the real reason.
      lastFailure = `expected tfjs-tflite's ${basename(path)} and ${basename(path).replace(/\.js$/, '.wasm')} in ${dirname(path)}/, got: ${(e as Error)?.message ?? String(e)}`;
      throw e;
    }
    // The interpreter announces every XNNPACK delegate on stderr with "INFO: "; keep warnings and errors.
    const printErr = (s: string): void => { if (!s.startsWith('INFO: ')) console.warn(s); };
    set('tflite_web_api_ModuleFactory', (opts: Record<string, unknown>) => factory({ ...opts, wasmBinary, printErr }));
  });
  return () => {
    for (const [n, d] of saved) {
      if (d) Object.defineProperty(g, n, d);
      else delete g[n];
    }
  };
}
