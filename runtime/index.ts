/**
 * keylock device runtime: the public surface of the `keylock` entry point, as
 * small as onnxruntime's InferenceSession: load a locked model, run it, see why
 * it halted. Everything here may ship in a device bundle; nothing here parses or
 * rewrites models. Helpers for tests (unlocked sessions, recorded files,
 * opening a `.klm`) are in `keylock/testing` (runtime/testing.ts).
 */
export {
  KeylockError, FormatError, SizeLimitError, UnsupportedVersionError, TamperedError, KeyMismatchError, UnsupportedModelError,
  WeakKeyError, InputMismatchError, BackendUnavailableError, CanaryMismatchError, ExpiredGrantError, RevokedError,
  RollbackError, ReplayError, DisabledError, WrongDeviceError, UntrustedSignerError, UnlockError, NoGrantError,
  KeystoreBusyError, LockoutError, RunAbortedError, DeadlineError, WorkerCrashedError,
} from '../keystore/errors.ts';
import { loadModel as load, type LoadOptions } from './load.ts';
import { AUTO_IN_THREAD_MS, Model, type LockedModel } from './model.ts';
import { env } from './env.ts';
import { loadInWorker, usesWorker, WorkerModel } from './worker.ts';

/**
 * Loads a `.klm`. The model key comes from `opts.keystore` (a device's
 * `Keystore` or another `ModelKeySource`) or `opts.modelKey` (a vendor checking
 * its own lock). A check that fails (signature, digest, licence window,
 * revocation, key check value, canary) does not throw: the model comes back
 * `halted` (or `disabled`, when the policy says so) with the typed `error`, and
 * its `run()` rejects with it. API misuse (no key source, unknown backend) and
 * what the platform refuses (`env.checkLoad`) throw. See runtime/load.ts.
 *
 * Where the platform entry provides workers (`env.spawnWorker`: the Node, Deno
 * and browser targets), the model runs on its own thread unless
 * `opts.worker` is false (runtime/worker.ts); the returned model is the same
 * `LockedModel` either way.
 */
export async function loadModel(klm: Uint8Array, opts: LoadOptions): Promise<LockedModel> {
  // Worker mode where the platform has workers (runtime/worker.ts); misuse throws here as in-thread.
  if (opts && usesWorker(opts, klm)) {
    if (!opts.keystore && !opts.modelKey) throw new TypeError('loadModel needs a keystore or a modelKey');
    if (env.checkLoad) await env.checkLoad({ threads: opts.threads ?? env.threads, backend: opts.backend ?? env.backend });
    if ((opts.worker ?? env.worker) !== 'auto') return loadInWorker(klm, opts);
    return loadAuto(klm, opts);
  }
  return load(klm, opts);
}

/**
 * `worker: 'auto'`: loads in a worker, which times the model's run; a model whose
 * run takes at most AUTO_IN_THREAD_MS is loaded again on this thread (the worker
 * released first, so the decrypted model is in one place at a time) and made
 * cooperative (it lets the event loop turn between back-to-back runs); a longer
 * one stays in its worker. The caller's bytes stay here until then (copied to the
 * worker, not transferred); with `consume` they are restored in place by the
 * in-thread load, or wiped when the model stays in the worker.
 */
async function loadAuto(klm: Uint8Array, opts: LoadOptions): Promise<LockedModel> {
  const w = await loadInWorker(klm, { ...opts, consume: false }, true);
  const runMs = w instanceof WorkerModel ? w.probedRunMs : undefined;
  if (w.state !== 'ready' || runMs === undefined || runMs > AUTO_IN_THREAD_MS || !(w instanceof WorkerModel)) {
    if (w instanceof WorkerModel) w.chosenByAuto();
    if (opts.consume === true) klm.fill(0);
    return w;
  }
  await w.release();
  const m = await load(klm, { ...opts, worker: false });
  if (m instanceof Model && m.state === 'ready') m.cooperate(runMs);
  return m;
}
export type { LoadOptions, ModelKeySource } from './load.ts';
export type { LockedModel, ModelEvent, ModelState, RunOptions, RunStats, SkippedBackend } from './model.ts';
export type { WorkerLike } from './env.ts';
export { env } from './env.ts';
export { generateText, DEFAULT_VOCAB, type GenerateOptions, type GenerateResult, type TextModel } from './generate.ts';
export { registerBackend } from './backends.ts';
export type { Backend, BackendOptions, BackendSession, IOInfo } from './backend.ts';
export type { DType, TensorData, TensorMap } from './tensor.ts';
export type { RecordOptions, RecordSink, RecordStats } from './recorder.ts';
export { Keystore, memoryStorage, type KeystoreStorage, type UnlockProvider } from '../keystore/index.ts';
export { createStream, FrameAdapter, inferState, type ModelStream, type StreamOptions, type FrameOptions, type FrameAdapterOptions } from './stream.ts';
export { loadPipeline, type LockedPipeline, type PipelineLoadOptions, type PipelineStats, type PipelineStream } from './pipeline.ts';
export type { PipelineManifest, PipelineStage, GlueStep } from './pipeline-file.ts';
