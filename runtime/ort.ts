/**
 * onnxruntime-web backend (wasm execution provider, webgpu where the platform has it).
 *
 * ORT's wasm files are always loaded from local disk or from a folder the app
 * names (`env.wasmPaths`): keylock never lets ORT reach a CDN. In Node, ORT
 * resolves its `ort-wasm-simd-threaded.{mjs,wasm}` next to its own module file,
 * which is node_modules in the source tree and the bundle's folder in a device bundle.
 */
import * as ort from 'onnxruntime-web';
import { BackendUnavailableError } from '../keystore/errors.ts';
import type { Backend, BackendOptions, BackendSession, IOInfo } from './backend.ts';
import { env } from './env.ts';
import { catchOrtMemory, InputScrubber } from './ort-scrub.ts';
import { bytesOf, isDType, type DType, type TensorData, type TensorMap } from './tensor.ts';

let initializedThreads: number | undefined;

/**
 * ORT fixes the thread count when its wasm module initializes, on the first
 * session. Asking for another count later would silently run with the old
 * one, so it is an error instead.
 */
function ensureThreads(threads: number): void {
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be a positive integer, got ${threads}`);
  if (initializedThreads === undefined) {
    ort.env.wasm.numThreads = threads;
    initializedThreads = threads;
  } else if (initializedThreads !== threads) {
    throw new BackendUnavailableError(
      `onnxruntime-web was initialized with ${initializedThreads} thread(s) in this process; ${threads} cannot be used until restart`);
  }
}

function toOrt(t: TensorData): ort.Tensor {
  // ORT's type union does not cover every keylock dtype; unsupported ones fail inside ORT with its own message.
  return new ort.Tensor(t.dtype as 'float32', t.data as Float32Array, t.dims);
}

function fromOrt(t: ort.Tensor): TensorData {
  if (!isDType(t.type)) throw new BackendUnavailableError(`onnxruntime-web returned a ${t.type} tensor, which keylock does not carry`);
  return { dtype: t.type as DType, dims: [...t.dims], data: t.data as TensorData['data'] };
}

function ioInfo(meta: readonly ort.InferenceSession.ValueMetadata[]): IOInfo[] {
  return meta.map((m) => m.isTensor
    ? { name: m.name, dtype: m.type, shape: m.shape.map((d) => (d === 4294967295 ? -1 : d)) }
    : { name: m.name });
}

class OrtSession implements BackendSession {
  readonly inputs: IOInfo[];
  readonly outputs: IOInfo[];
  /** Clears ORT's heap copies of the inputs after each run (one ORT thread only: runtime/ort-scrub.ts). */
  private readonly scrubber = initializedThreads === 1 ? new InputScrubber() : undefined;
  constructor(private readonly session: ort.InferenceSession) {
    this.inputs = ioInfo(session.inputMetadata);
    this.outputs = ioInfo(session.outputMetadata);
  }
  async run(feeds: TensorMap): Promise<TensorMap> {
    const f: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) f[k] = toOrt(v);
    const run = (): Promise<ort.InferenceSession.ReturnType> => this.session.run(f);
    const out = this.scrubber ? await this.scrubber.around(Object.entries(feeds).map(([k, v]) => [k, bytesOf(v.data)] as const), run) : await run();
    const r: TensorMap = {};
    for (const [k, v] of Object.entries(out)) r[k] = fromOrt(v);
    return r;
  }
  release(): Promise<void> {
    return this.session.release();
  }
}

/** Creates an ORT session from model bytes. */
export async function createOrtSession(model: Uint8Array, opts: BackendOptions = {}): Promise<BackendSession> {
  ensureThreads(opts.threads ?? 1);
  // ORT reads it when its wasm module initializes, on the first session (env.ts).
  if (env.wasmPaths !== undefined) ort.env.wasm.wasmPaths = env.wasmPaths;
  const ep = opts.executionProvider ?? 'wasm';
  if (ep !== 'wasm' && ep !== 'webgpu') throw new BackendUnavailableError(`onnxruntime-web execution provider must be wasm or webgpu, got ${ep}`);
  let s: ort.InferenceSession;
  try {
    // Errors only: ORT's warnings (e.g. dropping the unread initializers `sealed` inline leaves) are not the app's.
    s = await catchOrtMemory(() => ort.InferenceSession.create(model, { executionProviders: [ep], graphOptimizationLevel: 'all', logSeverityLevel: 3 }));
  } catch (e) {
    throw new BackendUnavailableError(`onnxruntime-web could not create a ${ep} session: ${(e as Error).message}`, { cause: e });
  }
  return new OrtSession(s);
}

/** The onnxruntime-web backend, registered as `wasm` (and, with the webgpu execution provider, `webgpu`). */
export const ortWasmBackend: Backend = { create: createOrtSession };
