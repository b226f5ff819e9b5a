/** What a backend is: the contract between the load and an inference engine (ORT, TFLite). */
import type { TensorMap } from './tensor.ts';

/** Declared input or output of a model, as the backend reports it. */
export interface IOInfo {
  name: string;
  /** Element type name, e.g. `float32`; `undefined` when the backend does not say. */
  dtype?: string;
  /** Dims; a string or -1 marks a dynamic dimension. */
  shape?: (number | string)[];
}

/** A created model session: the one thing every backend provides. */
export interface BackendSession {
  readonly inputs: IOInfo[];
  readonly outputs: IOInfo[];
  run(feeds: TensorMap): Promise<TensorMap>;
  release(): Promise<void>;
  /**
   * True when every `run` lets the event loop turn at least once (onnxruntime-node
   * starts each run in a `setImmediate`): a model kept on the caller's thread by
   * `worker: 'auto'` then has no turns of its own to make. Absent: it may not.
   */
  readonly turnsEventLoop?: boolean;
}

/** Options every backend accepts. */
export interface BackendOptions {
  /** Intra-op threads. Fixed per process for wasm backends (see each backend). */
  threads?: number;
  /** Execution provider, for backends that have several (ORT: `wasm`, `webgpu`). */
  executionProvider?: string;
}

/**
 * A backend: turns model bytes into a session. Registered by name with
 * `registerBackend` (runtime/backends.ts); a load names it in `LoadOptions.backend`.
 */
export interface Backend {
  /** Model formats it runs (`onnx`, `tflite`); absent means ONNX only. */
  readonly formats?: readonly string[];
  /**
   * Checks once, before the backend's first session, that it can run here (e.g.
   * that an optional native package loads). Its rejection is remembered: every
   * later load on this backend halts with BackendUnavailableError saying why.
   */
  init?(): Promise<void>;
  create(model: Uint8Array, opts?: BackendOptions): Promise<BackendSession>;
}
