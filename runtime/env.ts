/**
 * Platform settings, in one object (as transformers.js's `env`): what a load
 * uses when its options do not say, and what the platform refuses. A target's
 * entry sets them once when it is imported (rpi: threads; deno: one thread
 * only; browser: where ORT's wasm files are, what the page can run); an app may
 * change them before its first load. Every target exports the same `loadModel`.
 */

import { cryptoInfo, type CryptoInfo } from '../keystore/nacl.ts';

/** What the platform check is given: the threads and backend the load will use. */
export interface LoadPlan {
  threads: number;
  /** The backend asked for (`LoadOptions.backend`, else `env.backend`; may be `auto`); undefined: by model format. */
  backend?: string;
}

/** keylock's platform settings; see `env`. */
export interface Env {
  /**
   * Intra-op threads of a load that does not give `threads`. Default 1; the rpi target sets min(4, cores).
   * The tflite backend under Node runs one thread: there, this default means one, and another count is refused.
   */
  threads: number;
  /**
   * Backend of a load that does not give `backend`. Undefined (the runtime's
   * default, kept by the browser, Deno and Electron entries): `tflite` for TFLite
   * models, `wasm` otherwise, the backends that record canaries. `'auto'` (set by
   * the Node target, `keylock` under Node, and so by the CLI): per load, the first
   * of `autoBackends(format)` (`native` then `wasm`; `tflite`) that inits, creates
   * a session and reproduces the canary; the model's `backend` and
   * `skippedBackends` say which ran and what was passed over. Set `'wasm'` to get
   * the browser-exact path under Node.
   */
  backend?: string;
  /**
   * Where onnxruntime-web loads its wasm files from: a folder path or a file:/http: URL
   * ending in `/`. Read when a session is created; ORT uses the value of its first
   * session for the life of the process. Undefined: ORT's default (beside its own
   * module, i.e. node_modules in the sources and the bundle's folder in a device bundle).
   * The browser target sets its bundle's folder, so ORT never reaches a CDN.
   */
  wasmPaths?: string;
  /**
   * Where @tensorflow/tfjs-tflite loads its wasm glue (`tflite_web_api_cc_simd*.js`) and `.wasm` from,
   * for the `tflite` backend: a folder path or a file:/http: URL ending in `/`. Read by the first TFLite
   * session of the process. Undefined: in a device bundle (`npm run build`), the bundle's own folder,
   * where the build stages them; in the sources, the package's `wasm/` folder in node_modules (Node) or
   * the library's own choice (a page that loaded it with script tags and called `tflite.setWasmPath`).
   */
  tfliteWasmPaths?: string;
  /**
   * The platform's refusals, run first by every `loadModel`, before anything is
   * read: it throws (BackendUnavailableError) to refuse a load the platform cannot
   * run as asked, rather than run it slower or elsewhere. Set by target entries
   * (deno: more than one thread; browser: threads on a page that is not
   * cross-origin isolated, webgpu without an adapter).
   */
  checkLoad?: (plan: LoadPlan) => void | Promise<void>;
  /**
   * Whether a load hashes the model bytes on another thread while it undoes the
   * load-time locks (`true`), or hashes them first and restores after (`false`).
   * Beside: WebCrypto's digest on a copy of the bytes taken just before the restore
   * (`sha256Snapshot` in keystore/nacl.ts), awaited before any backend sees a byte;
   * it saves about the restore's time where a second core is free, and costs a
   * memory copy of the model on the loading thread and one more model size at peak
   * until garbage collection. It can only pay where a core is idle during the load:
   * on a machine whose cores are busy the hashing thread takes its time from the
   * loading thread, and beside measured slower (docs/BENCH.md section 2 and its
   * notes measure both). Undefined (the default): beside only where it costs no
   * more than hashing first, a load into a private copy (no `consume`) where the
   * digest is WebCrypto's anyway (browsers: it copies its input either way);
   * hashed first otherwise (Node's own hash, which Deno offers too, reads the bytes
   * in place; `consume` in a browser). Beside applies only to models of 1 MiB or more with a lock that
   * rewrites bytes at load, where WebCrypto is.
   * Read by the thread that loads (in worker mode the caller's value is passed on).
   */
  parallelDigest?: boolean;
  /**
   * Which implementation the crypto boundary uses here (read-only; keystore/native.ts): Ed25519 and
   * X25519 through node:crypto where present, WebCrypto for verification where not, tweetnacl last,
   * always the same bytes. Detected once, on first use.
   */
  readonly crypto: CryptoInfo;
  /**
   * Starts a thread for one model (worker mode, runtime/worker.ts): set by the
   * entries of platforms that have workers (Node `worker_threads`, Deno and
   * browser Web Workers). Undefined: every load runs on the caller's thread.
   */
  spawnWorker?: () => WorkerLike;
  /**
   * `false`: loads that do not say (`LoadOptions.worker`) run on the caller's
   * thread even where the platform has workers. `'auto'` (set by the Node
   * target): by the run time measured at load, see `LoadOptions.worker`.
   * Default: worker mode there.
   */
  worker?: boolean | 'auto';
  /**
   * The model formats the platform's worker can run (worker mode); a model of
   * another format loads on the caller's thread. Undefined: every format. The
   * browser target sets `['onnx']`: tfjs-tflite loads its wasm glue with
   * `importScripts`, which a module Web Worker does not have, so TFLite models run
   * on the page's thread there (Node, rpi, Electron's main process and Deno run
   * them in their workers).
   */
  workerFormats?: readonly ('onnx' | 'tflite')[];
}

/**
 * A worker as a platform entry hands it to the runtime (`env.spawnWorker`):
 * structured-clone messages with a transfer list, one callback for its
 * messages and one for the end of its thread.
 */
export interface WorkerLike {
  postMessage(msg: unknown, transfer?: ArrayBuffer[]): void;
  /** Set by the runtime: each message the worker posts. */
  onmessage: ((data: unknown) => void) | null;
  /** Set by the runtime: the thread ended (an uncaught error, an exit, a terminate), with why. */
  ondeath: ((why: string) => void) | null;
  /** Ends the thread. */
  terminate(): void;
  /**
   * The platform tells when the thread ended (Node's `exit`): after the worker
   * acknowledged `release` it is left to end by itself (its exit handlers run),
   * and terminated only if it has not within a second.
   */
  readonly reportsExit?: boolean;
  /** Node: a worker with a request pending keeps the process alive; an idle one never does. */
  ref?(): void;
  unref?(): void;
}

/** The settings every load reads; see `Env`. */
export const env: Env = {
  threads: 1,
  get crypto() {
    return cryptoInfo();
  },
};
