/**
 * Platform settings, in one object (as transformers.js's `env`): what a load
 * uses when its options do not say, and what the platform refuses. A target's
 * entry sets them once when it is imported (rpi: threads; deno: one thread
 * only; browser: where ORT's wasm files are, what the page can run); an app may
 * change them before its first load. Every target exports the same `loadModel`.
 */

/** What the platform check is given: the threads and backend the load will use. */
export interface LoadPlan {
  threads: number;
  /** The backend asked for (`LoadOptions.backend`, else `env.backend`); undefined: by model format. */
  backend?: string;
}

/** keylock's platform settings; see `env`. */
export interface Env {
  /** Intra-op threads of a load that does not give `threads`. Default 1; the rpi target sets min(4, cores). */
  threads: number;
  /** Backend of a load that does not give `backend`; undefined (default): `tflite` for TFLite models, `wasm` otherwise. */
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
   * The platform's refusals, run first by every `loadModel`, before anything is
   * read: it throws (BackendUnavailableError) to refuse a load the platform cannot
   * run as asked, rather than run it slower or elsewhere. Set by target entries
   * (deno: more than one thread; browser: threads on a page that is not
   * cross-origin isolated, webgpu without an adapter).
   */
  checkLoad?: (plan: LoadPlan) => void | Promise<void>;
}

/** The settings every load reads; see `Env`. */
export const env: Env = { threads: 1 };
