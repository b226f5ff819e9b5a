/**
 * The load pipeline: `loadModel` verifies the `.klm`, gets the model key from
 * its source, checks it, undoes the load-time locks, creates the backend
 * session, attaches the run-time hooks and checks the canary. A check that
 * fails does not throw: the model comes back halted (or disabled) with the
 * typed reason.
 */
import {
  BackendUnavailableError, CanaryMismatchError, DisabledError, KeylockError, KeyMismatchError, TamperedError, UnsupportedModelError,
} from '../keystore/errors.ts';
import { equalBytes, prepareNativeHashes, sha256Async, sha256InPlace, sha256Snapshot, wipe } from '../keystore/nacl.ts';
import type { BackendSession } from './backend.ts';
import { AUTO, autoBackends, defaultBackend, registeredBackend, resolveBackend } from './backends.ts';
import { checkCanary } from './canary.ts';
import { env } from './env.ts';
import { checkKlmDigest, openKlmSignedAsync, type KlmFile, type Manifest, type Policy } from './klm.ts';
import { keyCheckValue } from './keys/derive.ts';
import type { ApplyContext } from './keys/hooks.ts';
import { prepareLocks, restoreModel, rewritesAtLoad, runHooks } from './keys/index.ts';
import { Model } from './model.ts';
import { checkRecordOptions, type RecordOptions } from './recorder.ts';
import { isLicenceSource, watchLicence } from './licence.ts';
import { warmUp } from './warmup.ts';
import type { LicenceState } from '../keystore/keystore.ts';

/**
 * Where a device's model keys come from: what `loadModel` uses of a keystore.
 * `Keystore` (keystore/keystore.ts) is one; a product can plug its own, e.g.
 * one whose keys never leave a TPM or secure element except for the load.
 */
export interface ModelKeySource {
  /** The pinned vendor Ed25519 public keys: a model signed by another key does not load. */
  readonly vendorKeys: readonly Uint8Array[];
  /**
   * A copy of the model key (the load wipes it when done), or the typed reason
   * there is none (NoGrantError, ExpiredGrantError, RevokedError, DisabledError).
   */
  modelKeyFor(modelId: string): Uint8Array | Promise<Uint8Array>;
  /** Failures counted for the model since its last successful load. */
  failureCount(modelId: string): number;
  /** Counts (and persists) one failed unlock; `disabled` when the policy disabled the model now or before. */
  recordFailure(modelId: string, policy: Policy): Promise<{ failures: number; disabled: boolean }>;
  /** Clears the failure count after a successful load. */
  resetFailures(modelId: string): Promise<void>;
  /**
   * Optional, with `onChange` (the `Keystore` has both): the licence as it stands,
   * so a loaded model halts when its grant expires or a revocation names it
   * while it runs (runtime/licence.ts). A source without them is checked at load only.
   */
  licenceFor?(modelId: string): LicenceState;
  /** Optional: calls `fn` after every change of the source's state; returns the unsubscribe. */
  onChange?(fn: () => void): () => void;
}

/**
 * Steps of `loadModel`, in order, for `LoadOptions.onPhase`: `open` (envelope,
 * signature, manifest), `key` (model key from the keystore and key check
 * value), `restore` (undo load-time locks on a private copy), `digest` (SHA-256
 * of the model bytes: before the restore, or, hashed beside it on another
 * thread (`env.parallelDigest`), the wait for it after),
 * `create` (backend session), `canary` (recorded canary runs, only when the
 * manifest has one).
 */
export type LoadPhase = 'open' | 'digest' | 'key' | 'restore' | 'create' | 'canary';

/** Where the model key comes from, and how to run. */
export interface LoadOptions {
  /**
   * The device's source of model keys (a `Keystore`, or a product's own
   * `ModelKeySource`): the model key comes from its grant, the vendor keys it
   * pins are the only ones trusted, failures are counted in it, and the policy
   * may disable the model there.
   */
  keystore?: ModelKeySource;
  /** The model key itself (the vendor's own check of a lock, tests). */
  modelKey?: Uint8Array;
  /** Trusted vendor public keys (with `modelKey`); without them the signature proves integrity only. */
  trust?: readonly Uint8Array[];
  /**
   * A registered backend's name (`registerBackend`), or `auto`; default
   * `env.backend` (`auto` under the Node target), else `tflite` for TFLite models
   * and `wasm` for ONNX. A name is never replaced by another backend: where it
   * cannot run, the model halts with BackendUnavailableError. `auto` takes the
   * first of `autoBackends(format)` (`native`, `wasm`; `tflite`) that inits,
   * creates a session and reproduces the canary; it passes a backend over only
   * for those reasons (never for a key, licence or digest failure, which halt
   * first), and says so in the model's `backend` and `skippedBackends`.
   */
  backend?: string;
  /** Intra-op threads; default `env.threads`. */
  threads?: number;
  /**
   * Hands `klm` over to the runtime: the load restores the model inside these
   * bytes instead of a private copy (one model size less at peak) and wipes
   * them afterwards, so the caller must not use them again. The file-loading
   * entry points (`loadModelFile` of the node and deno targets) do this with the
   * bytes they read. Default false: the caller's bytes are never changed.
   */
  consume?: boolean;
  /**
   * Called as each load phase ends, with its wall time in milliseconds (for
   * benchmarks and diagnostics). Without it no clock is read.
   */
  onPhase?: (phase: LoadPhase, ms: number) => void;
  /**
   * Records every run of the loaded model (its declared inputs and its outputs,
   * never key tensors) into a bounded recorded file, for offline replay; see
   * runtime/recorder.ts. The node target's `recordToFile(path, { maxBytes })`
   * makes one. Canary runs at load are not recorded.
   */
  record?: RecordOptions;
  /**
   * One run on zeros of the declared input shapes (dynamic dims 1) at load,
   * so that the first real run does not pay the engine's first-run costs
   * (kernel selection, buffer allocation). Not counted in `stats`.
   */
  warmup?: boolean;
  /**
   * Run the model on its own thread (worker_threads, a Web Worker, a Deno
   * worker), where the platform's entry provides one (`env.spawnWorker`): the
   * default there. `false` runs it on the caller's thread (tiny models, tests).
   * Keys and the decrypted model live only in the worker. See runtime/worker.ts.
   * `'auto'` (the Node target's default, `env.worker`): the model loads in a
   * worker, which times a few runs; one whose run takes at most
   * `AUTO_IN_THREAD_MS` (0.1 ms) is loaded again on the caller's thread, where it
   * lets the event loop turn between runs, and the worker ends; `stats.mode` and
   * `stats.autoRunMs` say which and why. Such a model was loaded twice: the key
   * source is asked twice and `onPhase` reports the phases of both loads.
   */
  worker?: boolean | 'auto';
}

/** Calls `fn` with the time since the previous mark; undefined when nobody listens. */
function phaseClock(fn: LoadOptions['onPhase']): ((p: LoadPhase) => void) | undefined {
  if (!fn) return undefined;
  let t = performance.now();
  return (p) => {
    const now = performance.now();
    fn(p, now - t);
    t = now;
  };
}

/** Failures that count toward the policy's limit: the key or the model's bytes are not what the vendor made. */
function countsAsFailure(e: KeylockError): boolean {
  return e instanceof KeyMismatchError || e instanceof CanaryMismatchError || e instanceof TamperedError;
}

/**
 * Loads a `.klm`. The model key comes from `opts.keystore` (a device) or
 * `opts.modelKey` (a vendor checking its own lock). Check failures (signature,
 * digest, licence window, revocation, key check value, canary) do not throw:
 * they return a model in state `halted` (or `disabled`, when the keystore's
 * policy says so) whose `error` says why, and whose `run()` rejects with it.
 * API misuse (no key source, unknown backend) and what the platform refuses
 * (`env.checkLoad`) throw.
 *
 * Typed here as the runtime's own `Model` (the runtime's tests drive it); the
 * `keylock` entry exports it as returning the public `LockedModel`.
 */
export async function loadModel(klm: Uint8Array, opts: LoadOptions): Promise<Model> {
  const threads = opts.threads ?? env.threads;
  const asked = opts.backend ?? env.backend;
  if (env.checkLoad) await env.checkLoad({ threads, backend: asked });
  const ks = opts.keystore;
  if (!ks && !opts.modelKey) throw new TypeError('loadModel needs a keystore or a modelKey');
  if (asked !== undefined && asked !== AUTO) registeredBackend(asked); // an unknown name is misuse: thrown, not a halted model
  if (opts.record) checkRecordOptions(opts.record);
  const mark = phaseClock(opts.onPhase);
  let file: KlmFile;
  try {
    file = await openKlmSignedAsync(klm, ks ? ks.vendorKeys : opts.trust);
    mark?.('open');
  } catch (e) {
    const m = new Model(undefined);
    m.halt(asKeylockError(e));
    opts.record?.sink.close();
    return m;
  }
  const model = new Model(file.manifest);
  // unlockInto hashes the bytes it restores, just before it restores them, and awaits the check
  // before any backend sees a byte.
  const digest = new DigestCheck(file);
  const format = file.manifest.modelFormat;
  const backend = asked === AUTO ? autoBackends(format) : asked ?? defaultBackend(format);
  const { modelId, policy } = file.manifest;
  let modelKey: Uint8Array | undefined;
  try {
    if (ks) {
      const k = ks.modelKeyFor(modelId);
      modelKey = k instanceof Uint8Array ? k : await k; // a keystore in memory answers at once: no extra turn
    } else {
      modelKey = new Uint8Array(opts.modelKey!);
    }
    await unlockInto(model, file, modelKey, backend, threads, mark, digest, opts.consume === true);
    // Only a device that had failures writes on success: a good run needs no write access.
    if (ks && ks.failureCount(modelId) > 0) await ks.resetFailures(modelId);
  } catch (e) {
    // Bytes that do not match the signed digest are reported as such, whatever else failed while
    // the digest was computed, and (as a file that is not the vendor's) never counted as a failure.
    const tampered = await digest.settled().then(() => undefined, asKeylockError);
    const err = tampered ?? asKeylockError(e);
    if (tampered) {
      model.halt(tampered);
    } else if (err instanceof DisabledError) {
      model.halt(err, 'disabled');
    } else if (ks && countsAsFailure(err)) {
      const r = await ks.recordFailure(modelId, policy);
      if (r.disabled) {
        const d = new DisabledError(modelId, Math.floor(Date.now() / 1000), `${r.failures} failed unlock(s): ${err.message}`);
        model.halt(d, 'disabled');
      } else {
        model.halt(err);
      }
    } else {
      model.halt(err);
    }
  } finally {
    modelKey?.fill(0);
  }
  if (opts.warmup && model.state === 'ready') await warmUp(model);
  // Enforced while loaded, not only at load: expiry (timer + a check per run) and keystore changes.
  if (ks && model.state === 'ready' && isLicenceSource(ks)) watchLicence(model, ks, modelId);
  if (opts.record) {
    if (model.state === 'ready') model.record(opts.record);
    else opts.record.sink.close();
  }
  return model;
}

/**
 * Whether this load hashes beside the restore, only ever when a lock rewrites
 * bytes at load (otherwise there is nothing to overlap): as `env.parallelDigest`
 * says, by default only where it costs no more than hashing first, i.e. on a
 * private copy (no `consume`) where the digest is WebCrypto's (it copies its
 * input either way; loads there overlapped the digest with the restore before).
 */
function digestBeside(file: KlmFile, consume: boolean): boolean {
  return rewritesAtLoad(file.manifest.locks) && (env.parallelDigest ?? (!consume && !sha256InPlace()));
}

/**
 * The check of a `.klm`'s signed digest in one load, over exactly the bytes the
 * restore reads: `begin` hashes them as they are just before the restore, and
 * `settled` is the check's outcome (over the file's untouched model bytes when
 * the load failed before its restore began).
 */
export class DigestCheck {
  #done?: Promise<void>;
  constructor(private readonly file: KlmFile) {}

  /**
   * Starts the SHA-256 of `bytes` (which the caller restores in place next).
   * Beside (`beside`, and WebCrypto takes the input): a copy is hashed on
   * another thread and undefined is returned: `bytes` may be rewritten at once.
   * Otherwise the returned promise settles once `bytes` are hashed and checked;
   * only then may they be rewritten.
   */
  begin(bytes: Uint8Array, beside: boolean): Promise<void> | undefined {
    const snapshot = beside ? sha256Snapshot(bytes) : undefined;
    this.#done = (snapshot ?? sha256Async(bytes)).then((d) => checkKlmDigest(this.file, d));
    this.#done.catch(() => undefined); // awaited by the load; never an unhandled rejection meanwhile
    return snapshot ? undefined : this.#done;
  }

  /** The check's outcome; starts it on the file's model bytes if `begin` was not called. */
  settled(): Promise<void> {
    return (this.#done ??= sha256Async(this.file.model).then((d) => checkKlmDigest(this.file, d)));
  }
}

/**
 * Shared by every key source: key check, restore, session, hooks, canary, on
 * the registered backend `backend`, or, given a list (`auto`), on the first of
 * those candidates that inits, creates a session and reproduces the canary.
 * `digest`, when given, checks the signed digest of the bytes restored: before
 * the restore, or hashed beside it on another thread, and in both cases
 * settled before the backend sees any byte.
 */
export async function unlockInto(
  model: Model, file: KlmFile, modelKey: Uint8Array, backend: string | readonly string[], threads?: number, mark?: (p: LoadPhase) => void,
  digest?: DigestCheck, consume = false,
): Promise<void> {
  const { manifest } = file;
  checkKey(manifest, modelKey);
  mark?.('key');
  const auto = typeof backend !== 'string';
  const formatOf = (name: string): readonly string[] => registeredBackend(name).formats ?? ['onnx'];
  let candidates: readonly string[] = auto ? backend : [backend];
  if (auto) {
    // A candidate that does not run this format is passed over (recorded) before the restore.
    for (const name of candidates) {
      if (!formatOf(name).includes(manifest.modelFormat)) model.skip(name, new UnsupportedModelError(`the ${name} backend runs ${formatOf(name).join(', ')} models`));
    }
    candidates = candidates.filter((name) => formatOf(name).includes(manifest.modelFormat));
    if (!candidates.length) throw new UnsupportedModelError(`model "${manifest.modelId}" is ${manifest.modelFormat}; no registered backend of auto (${backend.join(', ') || 'none'}) runs it`);
  } else {
    const formats = formatOf(backend);
    if (!formats.includes(manifest.modelFormat)) {
      throw new UnsupportedModelError(`model "${manifest.modelId}" is ${manifest.modelFormat}; the ${backend} backend runs ${formats.join(', ')} models`);
    }
  }
  const recording = defaultBackend(manifest.modelFormat);
  // With a pinned signer, the digest awaited below covers every byte restore reads.
  const ctx: ApplyContext = { modelId: manifest.modelId, modelKey, authenticated: file.trusted && digest !== undefined, modelFormat: manifest.modelFormat };
  await prepareLocks(manifest.locks);
  await prepareNativeHashes(); // the restore's nonces use Node's SHAKE256 where there is one
  let bytes: Uint8Array | undefined;
  let canaryFailure: KeylockError | undefined;
  try {
    const target = consume ? file.model : new Uint8Array(file.model); // otherwise a private copy: the caller's buffer is never changed
    // The digest covers what the restore reads: these bytes, as they are now. Hashed first (bytes
    // that fail it are left as they are), or beside the restore on a copy taken here, with nothing
    // in between that could change them (bytes that fail it are wiped with what was restored in them).
    const before = digest?.begin(target, digestBeside(file, consume));
    if (before) {
      await before;
      mark?.('digest');
    }
    bytes = target;
    const restoring = restoreModel(bytes, manifest.locks, ctx);
    if (restoring) await restoring; // AES-256-GCM on WebCrypto
    mark?.('restore');
    if (digest && !before) {
      await digest.settled();
      mark?.('digest');
    }
    for (let i = 0; i < candidates.length; i++) {
      const name = candidates[i];
      const last = i === candidates.length - 1;
      let session: BackendSession | undefined;
      try {
        // Initialized here, on first use, as the package it may load was before: a key or
        // digest failure is reported as such even where the backend cannot run.
        session = await (await resolveBackend(name)).create(bytes!, { threads });
        mark?.('create');
        // The plaintext goes as soon as no other candidate may need it: the backend holds its own copy.
        // Under auto it is kept through this candidate's canary, for the next one's session.
        if (last || !manifest.canary) bytes = wipeNow(bytes);
        model.attach(session, runHooks(manifest.locks, ctx), name);
        session = undefined;
        if (manifest.canary) {
          // Recorded by the lock tool on the format's default backend: exact there; other kernels round differently.
          await checkCanary(manifest.canary, (x) => model.run(x), name, name === recording);
          model.resetStats();
          mark?.('canary');
        }
        return;
      } catch (e) {
        const err = asKeylockError(e);
        await session?.release().catch(() => undefined); // created, not attached: the model does not release it
        if (!auto || !passesOver(e)) throw err;
        // The last candidate failed too: the model halts (on it, when it has a session), and a
        // canary that an earlier candidate did not reproduce is reported as such.
        if (last) throw err instanceof CanaryMismatchError ? err : canaryFailure ?? err;
        if (err instanceof CanaryMismatchError) canaryFailure = err;
        if (model.backend === name) await model.detach(err);
        else model.skip(name, err);
      }
    }
  } finally {
    wipeNow(bytes);
  }
}

/** Wipes `b` and drops it: nothing here keeps the plaintext reachable afterwards. */
function wipeNow(b: Uint8Array | undefined): undefined {
  wipe(b);
  return undefined;
}

/**
 * Whether an `auto` load may pass over a candidate for `e`: it cannot run here
 * (its init or session failed, or it threw an error of its own while running),
 * or its outputs are not the recorded ones. Key, licence and digest failures
 * come before any backend and are never passed over.
 */
function passesOver(e: unknown): boolean {
  return e instanceof BackendUnavailableError || e instanceof CanaryMismatchError || e instanceof UnsupportedModelError || !(e instanceof KeylockError);
}

/** Throws KeyMismatchError unless `modelKey` matches the manifest's key check value. */
export function checkKey(manifest: Manifest, modelKey: Uint8Array): void {
  if (modelKey.byteLength !== 32) throw new KeyMismatchError(`model key must be 32 bytes, got ${modelKey.byteLength}`);
  const kcv = keyCheckValue(modelKey);
  const ok = equalBytes(kcv, manifest.kcv);
  wipe(kcv);
  if (!ok) throw new KeyMismatchError(`the key does not open model "${manifest.modelId}" (key check value mismatch)`);
}

/** Any failure of a load as a KeylockError: a foreign one means the file could not be loaded. */
export function asKeylockError(e: unknown): KeylockError {
  if (e instanceof KeylockError) return e;
  return new TamperedError(`the model could not be loaded: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}
