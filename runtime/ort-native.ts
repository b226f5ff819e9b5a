/**
 * onnxruntime-node backend (`backend: 'native'`): ORT's native CPU build, for
 * Node targets (servers, Electron main, Raspberry Pi). It is an optional
 * dependency, loaded on first use with an import the bundler cannot follow, so
 * no bundle carries it: a platform without the package (a browser, Deno, an
 * image folder without node_modules) gets BackendUnavailableError, never the
 * wasm backend in its place.
 *
 * Its outputs are not guaranteed to be bit-identical to the wasm backend's:
 * native ORT picks x86/ARM kernels (AVX2, AVX-512, NEON, with FMA) whose
 * summation order and rounding differ from the WebAssembly SIMD kernels.
 * docs/BENCH.md gives the measured differences; a canary recorded with one
 * backend must be checked with the same backend.
 */
import { BackendUnavailableError } from '../keystore/errors.ts';
import type { Backend, BackendOptions, BackendSession, IOInfo } from './backend.ts';
import { isDType, type TensorMap } from './tensor.ts';

/*
 * The few shapes of onnxruntime-node's API this backend uses, declared here so that
 * the typecheck and the library build never depend on the optional package being
 * installed (its install can fail on a machine without network, and npm then drops it).
 */
interface NodeTensor { readonly type: string; readonly dims: readonly number[]; readonly data: unknown }
interface ValueMetadata { name: string; isTensor: boolean; type?: string; shape?: readonly (number | string)[] }
interface NodeSession {
  readonly inputMetadata: readonly ValueMetadata[];
  readonly outputMetadata: readonly ValueMetadata[];
  run(feeds: Record<string, NodeTensor>): Promise<Record<string, NodeTensor>>;
  release(): Promise<void>;
}
interface OrtNode {
  Tensor: new (type: string, data: unknown, dims: readonly number[]) => NodeTensor;
  InferenceSession: { create(model: Uint8Array, options: Record<string, unknown>): Promise<NodeSession> };
}

/** Held in a variable so that bundlers leave the import alone (the package is native and optional). */
const PACKAGE = 'onnxruntime-node';
let loading: Promise<OrtNode> | undefined;

async function loadOrtNode(): Promise<OrtNode> {
  loading ??= (async () => {
    try {
      const m = (await import(/* @vite-ignore */ PACKAGE)) as OrtNode & { default?: OrtNode };
      // CommonJS package: Node hands its exports as the namespace and as `default`.
      return m.InferenceSession ? m : m.default!;
    } catch (e) {
      loading = undefined;
      throw new BackendUnavailableError(`the native backend needs the optional package onnxruntime-node, which could not be loaded here: ${(e as Error).message}`, {
        cause: e,
        hint: 'install it beside keylock (npm install onnxruntime-node; it ships CPU binaries for linux, macOS and Windows on x64 and arm64), or leave out the backend option to run on wasm',
      });
    }
  })();
  return loading;
}

function ioInfo(meta: readonly ValueMetadata[]): IOInfo[] {
  return meta.map((m) => m.isTensor && m.type && m.shape
    ? { name: m.name, dtype: m.type, shape: m.shape.map((d) => (d === 4294967295 ? -1 : d)) }
    : { name: m.name });
}

class NativeSession implements BackendSession {
  readonly inputs: IOInfo[];
  readonly outputs: IOInfo[];
  /** onnxruntime-node's `run` starts the inference in a `setImmediate` (test/worker-auto.test.ts checks it). */
  readonly turnsEventLoop = true;
  constructor(private readonly ort: OrtNode, private readonly session: NodeSession) {
    this.inputs = ioInfo(session.inputMetadata);
    this.outputs = ioInfo(session.outputMetadata);
  }
  // Per run this is all keylock adds to a plain onnxruntime-node call (docs/BENCH.md section 10): no
  // entries arrays, and each output's dims array handed on as ORT made it (a fresh array per result,
  // which nothing else holds), not copied.
  async run(feeds: TensorMap): Promise<TensorMap> {
    const f: Record<string, NodeTensor> = {};
    // ORT's type union does not cover every keylock dtype; unsupported ones fail inside ORT with its own message.
    for (const k in feeds) {
      const v = feeds[k];
      f[k] = new this.ort.Tensor(v.dtype, v.data, v.dims);
    }
    const out = await this.session.run(f);
    const r: TensorMap = {};
    for (const k in out) {
      const v = out[k];
      if (!isDType(v.type)) throw new BackendUnavailableError(`onnxruntime-node returned a ${v.type} tensor, which keylock does not carry`);
      r[k] = { dtype: v.type, dims: v.dims as number[], data: v.data as TensorMap[string]['data'] };
    }
    return r;
  }
  release(): Promise<void> {
    return this.session.release();
  }
}

/**
 * Creates an onnxruntime-node CPU session. Unlike the wasm backend, the thread
 * count is per session. Throws BackendUnavailableError when the package cannot
 * be loaded or the session cannot be created.
 */
export async function createNativeSession(model: Uint8Array, opts: BackendOptions = {}): Promise<BackendSession> {
  const threads = opts.threads ?? 1;
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be a positive integer, got ${threads}`);
  const ep = opts.executionProvider ?? 'cpu';
  if (ep !== 'cpu') throw new BackendUnavailableError(`the native backend runs the cpu execution provider, got ${ep}`);
  const ort = await loadOrtNode();
  let s: NodeSession;
  try {
    s = await ort.InferenceSession.create(model, {
      executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1,
      // Errors only: ORT's warnings (e.g. dropping the unread initializers `sealed` inline leaves) are not the app's.
      logSeverityLevel: 3,
    });
  } catch (e) {
    throw new BackendUnavailableError(`onnxruntime-node could not create a session: ${(e as Error).message}`, { cause: e });
  }
  return new NativeSession(ort, s);
}

/**
 * The onnxruntime-node backend, registered as `native`. Its init loads the
 * package, so a platform without it is told why once, before any session.
 */
export const ortNativeBackend: Backend = {
  init: async () => { await loadOrtNode(); },
  create: createNativeSession,
};
