/**
 * Browser target: the runtime for pages and workers. Entry point of
 * `dist/browser/keylock.mjs`; ORT's wasm files sit beside the bundle and are
 * loaded from there (never from a CDN), so the app serves one folder.
 *
 * The app supplies the keystore: bytes it fetched or kept (`Keystore.fromBytes`)
 * or a keystore kept in IndexedDB (`indexedDbStorage`), and the unlock secret
 * (a `hook` provider wired to whatever the app trusts, or a passphrase).
 * Threads need a cross-origin isolated page (COOP `same-origin` + COEP
 * `require-corp`); webgpu needs a WebGPU adapter. Both are checked before
 * every load (`env.checkLoad`): keylock fails instead of running slower or
 * elsewhere than asked.
 */
import * as ort from 'onnxruntime-web';
import { BackendUnavailableError } from '../../keystore/errors.ts';
import { env } from '../../runtime/env.ts';
import { secretboxWasmReady } from '../../keystore/wasm/secretbox.ts';
import { hasWebWorkers, webWorkerSpawner } from './spawn.ts';

export * from '../../runtime/index.ts';
export { indexedDbStorage } from './idb.ts';

/** The folder this bundle was loaded from: ORT's `.mjs` glue and `.wasm` live there. */
export const BUNDLE_BASE = new URL('./', import.meta.url).href;
env.wasmPaths = BUNDLE_BASE;
// Worker mode: each model in a module Web Worker (keylock-worker.mjs beside the bundle), where the page has them.
if (hasWebWorkers()) env.spawnWorker ??= webWorkerSpawner(new URL('./keylock-worker.mjs', import.meta.url));
// tfjs-tflite loads its glue with importScripts, which module workers lack: TFLite models run on the page's thread.
env.workerFormats ??= ['onnx'];

interface GpuAdapterLike {
  info?: { vendor?: string; architecture?: string; description?: string; isFallbackAdapter?: boolean };
  isFallbackAdapter?: boolean;
}
interface GpuLike {
  requestAdapter(): Promise<GpuAdapterLike | null>;
}

/** What the WebGPU adapter says about itself (SwiftShader reports `isFallbackAdapter`). */
export interface WebGpuInfo {
  vendor: string;
  architecture: string;
  fallback: boolean;
}

/** The page's WebGPU adapter, or `undefined` when the page has none. */
export async function webGpuInfo(): Promise<WebGpuInfo | undefined> {
  const gpu = (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu;
  if (!gpu) return undefined;
  const a = await gpu.requestAdapter().catch(() => null);
  if (!a) return undefined;
  return { vendor: a.info?.vendor ?? '', architecture: a.info?.architecture ?? '', fallback: Boolean(a.info?.isFallbackAdapter ?? a.isFallbackAdapter) };
}

/** How ORT runs on this page; `wasmThreads` is the count ORT really uses once a session exists on this page (in worker mode the model's ORT runs in its worker, not here). */
export interface BrowserBackendInfo {
  crossOriginIsolated: boolean;
  wasmThreads: number;
  wasmPaths: string;
  /** What opens `sealed` tensors: `wasm-simd` (keystore/wasm/secretbox.ts) or `js` where the page cannot run that. */
  secretbox: 'wasm-simd' | 'js';
}

/** Reports isolation and ORT's thread count (ORT lowers it to 1 on a non-isolated page; `loadModel` refuses that first). */
export function backendInfo(): BrowserBackendInfo {
  return {
    crossOriginIsolated: globalThis.crossOriginIsolated === true,
    wasmThreads: ort.env.wasm.numThreads ?? 1,
    wasmPaths: typeof ort.env.wasm.wasmPaths === 'string' ? ort.env.wasm.wasmPaths : BUNDLE_BASE,
    secretbox: secretboxWasmReady() ? 'wasm-simd' : 'js',
  };
}

/*
 * Two browser checks before every load, thrown as BackendUnavailableError
 * (keylock fails instead of running slower or elsewhere than asked): more than
 * one thread on a page that is not cross-origin isolated (ORT would quietly run
 * one), and `webgpu` without a WebGPU adapter.
 */
env.checkLoad = async ({ threads, backend }) => {
  if (threads > 1 && globalThis.crossOriginIsolated !== true) {
    throw new BackendUnavailableError(`${threads} wasm threads need a cross-origin isolated page (COOP same-origin + COEP require-corp); expected crossOriginIsolated true, got false`);
  }
  if (backend === 'webgpu' && !(await webGpuInfo())) {
    throw new BackendUnavailableError('backend webgpu: expected a WebGPU adapter (navigator.gpu.requestAdapter()), got none');
  }
};
