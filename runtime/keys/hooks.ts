import type { TensorData, TensorMap } from '../tensor.ts';

/** What a scheme contributes to every run, prepared once per loaded model. */
export interface RunHooks {
  /** Extra feeds (key tensors), allocated once and reused on every run. */
  feeds?: TensorMap;
  /** Rewrites one user input (e.g. shuffles it) into a buffer the hook owns and reuses. */
  transformInput?: (name: string, t: TensorData) => TensorData;
  /** Just before each run (after the inputs are checked): e.g. decrypt inline weights into `feeds`' buffers. */
  beforeRun?(): void;
  /** Right after each run, whether it succeeded or not: e.g. zero those buffers. */
  afterRun?(): void;
  /** Zeroizes key material held by the hooks. */
  wipe(): void;
}

/** Context every applier gets. */
export interface ApplyContext {
  modelId: string;
  modelKey: Uint8Array;
  /**
   * Every model byte will be checked against a SHA-256 digest signed by a
   * trusted (pinned) vendor key before any backend sees it. `sealed` then skips
   * its per-tensor MACs, which that digest already covers (docs/SPEC.md).
   */
  authenticated?: boolean;
  /** The manifest's model format (`onnx`, `tflite`): schemes that need a graph input refuse others. */
  modelFormat?: string;
}
