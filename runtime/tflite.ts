/**
 * TFLite backend through @tensorflow/tfjs-tflite 0.0.1-alpha.10 (the TFLite
 * interpreter compiled to wasm, with XNNPACK).
 *
 * Loaded on demand: runtime/backends.ts imports this file dynamically, so apps
 * that never run a TFLite model do not carry the library. In a browser page
 * that has loaded the library with script tags (tf-core, tf-backend-cpu,
 * tf-tflite min.js), its global `tflite` is used; otherwise the package is
 * imported. In Node, runtime/tflite-node-shim.ts gets the library to load.
 *
 * Device bundles (targets/build.mjs) carry the library as a file of its own,
 * `keylock-tflite.mjs`, beside the bundle with the wasm glue and `.wasm` it
 * loads: the bundle's `import('@tensorflow/tfjs-tflite')` becomes an import of
 * that file, made on the first TFLite session only, and the library is pointed
 * at the bundle's folder (`env.tfliteWasmPaths` overrides it), so nothing is
 * fetched from elsewhere.
 *
 * Tensors go straight into and out of the interpreter's buffers (the
 * library's model runner), not through tfjs tensors: dtypes stay as the model
 * declares them (int8 stays int8) and outputs are exact copies.
 *
 * The library cannot resize inputs: it always runs the shapes stored in the
 * file. A dynamic batch axis runs at its stored size; any other dynamic axis
 * (shape_signature -1) fails inside the library with an opaque "Can't
 * initialize model", so it is refused before loading (UnsupportedModelError).
 */
import type { BackendOptions, BackendSession, IOInfo } from './backend.ts';
import { BackendUnavailableError, InputMismatchError } from '../keystore/errors.ts';
import { checkStaticInputs, tfliteInputs } from './tflite-inputs.ts';
import type { DType, TensorData, TensorMap } from './tensor.ts';
import { isDType, shapeSize } from './tensor.ts';
import { env } from './env.ts';

/**
 * Defined (true) by targets/build.mjs in device bundles, which stage the
 * library's files beside themselves; undefined in the sources.
 */
declare const KEYLOCK_TFLITE_BESIDE_BUNDLE: boolean | undefined;

/** The model runner's view of one input or output (tfjs-tflite's TFLiteWebModelRunnerTensorInfo). */
interface RunnerTensor {
  name: string;
  dataType: string;
  /** Dims joined by commas, e.g. "1,76,32,1". */
  shape: string;
  /** A view of the interpreter's buffer (re-read every run: wasm memory can grow). */
  data(): Int8Array | Uint8Array | Int16Array | Int32Array | Uint32Array | Float32Array | Float64Array;
}

interface Runner {
  getInputs(): RunnerTensor[];
  getOutputs(): RunnerTensor[];
  infer(): boolean;
  cleanUp(): void;
}

/** The parts of the tfjs-tflite module keylock uses. */
interface TfliteModule {
  loadTFLiteModel(model: ArrayBuffer, options?: { numThreads?: number }): Promise<unknown>;
  setWasmPath(path: string): void;
}

const isNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';

let modulePromise: Promise<TfliteModule> | undefined;
/** Node: the shim's report of a glue or `.wasm` file it could not read. */
let shimFailure: (() => string | undefined) | undefined;
/** Node: removes the shim's globals; called once the first model has loaded. */
let removeShim: (() => void) | undefined;
/** Node: the first load, which brings up the wasm module under the shim. */
let firstLoad: Promise<unknown> | undefined;

/**
 * The folder of the library's wasm files: `env.tfliteWasmPaths`, else, in a
 * device bundle, the bundle's own folder; undefined in the sources (the
 * package's folder in Node, the library's choice in a page).
 */
export function tfliteWasmBase(): string | undefined {
  if (env.tfliteWasmPaths !== undefined) {
    if (!env.tfliteWasmPaths.endsWith('/')) throw new BackendUnavailableError(`env.tfliteWasmPaths: expected a folder ending in "/", got "${env.tfliteWasmPaths}"`);
    return env.tfliteWasmPaths;
  }
  return typeof KEYLOCK_TFLITE_BESIDE_BUNDLE !== 'undefined' && KEYLOCK_TFLITE_BESIDE_BUNDLE ? new URL('./', import.meta.url).href : undefined;
}

async function tfliteModule(): Promise<TfliteModule> {
  modulePromise ??= (async () => {
    const global = (globalThis as { tflite?: Partial<TfliteModule> }).tflite;
    const base = tfliteWasmBase();
    if (global?.loadTFLiteModel && global.setWasmPath) {
      if (env.tfliteWasmPaths !== undefined) global.setWasmPath(env.tfliteWasmPaths);
      return global as TfliteModule;
    }
    if (isNode) {
      // The library starts loading its wasm as soon as it is imported: the shim must be in place first.
      const shim = await import('./tflite-node-shim.ts');
      try {
        removeShim = shim.installTfliteNodeShim(base === undefined ? shim.defaultTfliteWasmDir() : shim.folderPath(base));
      } catch (e) {
        // The platform refused a global the library needs: a backend that cannot run here, not a damaged file.
        throw new BackendUnavailableError(`backend tflite: the globals tfjs-tflite needs (self, location, importScripts) could not be set here: ${(e as Error)?.message ?? String(e)}`, { cause: e });
      }
      shimFailure = shim.tfliteShimFailure;
    }
    let imported: Partial<TfliteModule> & { default?: TfliteModule };
    try {
      imported = (await import('@tensorflow/tfjs-tflite')) as unknown as Partial<TfliteModule> & { default?: TfliteModule };
    } catch (e) {
      removeShim?.();
      removeShim = undefined;
      throw new BackendUnavailableError(`backend tflite: expected @tensorflow/tfjs-tflite (in a device bundle: keylock-tflite.mjs beside the bundle), got an import error: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
    // Node loads the package's CommonJS build, whose exports may come as `default` only.
    const mod = (imported.loadTFLiteModel ? imported : imported.default!) as TfliteModule;
    // In a page, the glue and .wasm come from the bundle's folder; Node's shim reads them from disk itself.
    if (!isNode && base !== undefined) mod.setWasmPath(base);
    return mod;
  })();
  // A failed import is not kept: the next session tries again (the file may have been put in place).
  modulePromise.catch(() => { modulePromise = undefined; });
  return modulePromise;
}

function dims(t: RunnerTensor): number[] {
  return t.shape === '' ? [] : t.shape.split(',').map(Number);
}

function info(t: RunnerTensor): IOInfo {
  return { name: t.name, dtype: t.dataType, shape: dims(t) };
}

class TfliteSession implements BackendSession {
  readonly inputs: IOInfo[];
  readonly outputs: IOInfo[];
  private readonly ins: RunnerTensor[];
  private readonly outs: RunnerTensor[];

  constructor(private runner: Runner | undefined) {
    this.ins = runner!.getInputs();
    this.outs = runner!.getOutputs();
    this.inputs = this.ins.map(info);
    this.outputs = this.outs.map(info);
  }

  async run(feeds: TensorMap): Promise<TensorMap> {
    const r = this.runner;
    if (!r) throw new BackendUnavailableError('the TFLite session was released');
    for (const name of Object.keys(feeds)) {
      if (!this.ins.some((i) => i.name === name)) throw new InputMismatchError(`unknown input "${name}"; the TFLite model takes ${this.ins.map((i) => `"${i.name}"`).join(', ')}`);
    }
    for (const i of this.ins) {
      const t = feeds[i.name];
      if (!t) throw new InputMismatchError(`missing input "${i.name}" of the TFLite model`);
      if (t.dtype !== i.dataType) {
        throw new InputMismatchError(`TFLite input "${i.name}": expected ${i.dataType}, got ${t.dtype}`);
      }
      const want = dims(i);
      if (t.dims.length !== want.length || t.dims.some((d, k) => d !== want[k])) {
        throw new InputMismatchError(`TFLite input "${i.name}": expected shape [${want.join(',')}], got [${t.dims.join(',')}] (the model runs its stored shapes)`);
      }
      const dst = i.data();
      if (t.data.length !== dst.length) throw new InputMismatchError(`TFLite input "${i.name}": expected ${dst.length} elements, got ${t.data.length}`);
      (dst as Float32Array).set(t.data as Float32Array);
    }
    if (!r.infer()) throw new BackendUnavailableError('tfjs-tflite: inference failed (the interpreter returned an error)');
    const out: TensorMap = {};
    for (const o of this.outs) {
      if (!isDType(o.dataType)) throw new BackendUnavailableError(`tfjs-tflite returned a ${o.dataType} tensor, which keylock does not carry`);
      const d = dims(o);
      const data = o.data().slice();
      if (data.length !== shapeSize(d)) throw new BackendUnavailableError(`tfjs-tflite output "${o.name}": shape [${d.join(',')}] but ${data.length} elements`);
      out[o.name] = { dtype: o.dataType as DType, dims: d, data } as TensorData;
    }
    return out;
  }

  async release(): Promise<void> {
    const r = this.runner;
    this.runner = undefined;
    r?.cleanUp();
  }
}

async function load(mod: TfliteModule, buf: ArrayBuffer, numThreads: number): Promise<unknown> {
  if (!isNode) return mod.loadTFLiteModel(buf, { numThreads });
  if (!firstLoad) {
    const first = mod.loadTFLiteModel(buf, { numThreads });
    firstLoad = first.then(() => undefined, () => undefined).finally(() => { removeShim?.(); removeShim = undefined; });
    return first;
  }
  await firstLoad;
  return mod.loadTFLiteModel(buf, { numThreads });
}

/**
 * Creates a TFLite session from model bytes (the bytes are copied into the
 * interpreter; the caller may wipe its copy afterwards). UnsupportedModelError
 * for dynamic input axes; BackendUnavailableError when the library fails.
 */
export async function createTfliteSession(model: Uint8Array, opts: BackendOptions = {}): Promise<BackendSession> {
  const threads = opts.threads ?? 1;
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be a positive integer, got ${threads}`);
  if (opts.executionProvider !== undefined && opts.executionProvider !== 'wasm') {
    throw new BackendUnavailableError(`the tflite backend runs on wasm only, got execution provider "${opts.executionProvider}"`);
  }
  // Node runs the non-threaded build. The platform's default count (env.threads, which the rpi target
  // raises for ORT) means "no preference" here and runs one thread; any other count is refused.
  if (isNode && threads !== 1 && threads !== env.threads) {
    throw new BackendUnavailableError(`the tflite backend runs one thread in Node (the shim loads the non-threaded build), got threads ${threads}`);
  }
  checkStaticInputs(tfliteInputs(model));
  const mod = await tfliteModule();
  // The library takes an ArrayBuffer; a private copy also keeps the caller's buffer out of its hands.
  const buf = model.slice().buffer;
  let m: unknown;
  try {
    m = await load(mod, buf, isNode ? 1 : threads);
  } catch (e) {
    const missing = shimFailure?.();
    if (missing) throw new BackendUnavailableError(`backend tflite: ${missing}`, { cause: e });
    throw new BackendUnavailableError(`@tensorflow/tfjs-tflite could not load the model: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  } finally {
    new Uint8Array(buf).fill(0);
  }
  const runner = (m as { modelRunner?: Runner }).modelRunner;
  if (!runner?.getInputs || !runner.infer) throw new BackendUnavailableError('@tensorflow/tfjs-tflite: the loaded model exposes no model runner (expected version 0.0.1-alpha.10)');
  return new TfliteSession(runner);
}
