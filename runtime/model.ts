/**
 * A loaded, locked model: verifies the `.klm`, checks the key, undoes the
 * load-time locks, creates the backend session and applies run-time keys
 * (shuffled inputs, sign-flip key tensors) inline on every `run()`.
 *
 * States: `ready` runs; `halted` rejects every `run()` at once with the typed
 * reason; `disabled` (persisted by the keystore) also rejects, until a vendor
 * reinstate token lifts it. A model never returns numbers unless ready.
 */
import { equalBytes, sha256Async, wipe } from '../keystore/nacl.ts';
import type { Backend, BackendSession } from './backend.ts';
import {
  BackendUnavailableError, CanaryMismatchError, DisabledError, InputMismatchError, KeylockError, KeyMismatchError, TamperedError, UnsupportedModelError,
} from '../keystore/errors.ts';
import type { Keystore } from '../keystore/keystore.ts';
import { checkKlmDigest, openKlmSignedAsync, type IOSpec, type KlmFile, type LockEntry, type Manifest } from './klm.ts';
import { restoreAdvparams } from './keys/advparams.ts';
import { restoreDeeplock } from './keys/deeplock.ts';
import { keyCheckValue } from './keys/derive.ts';
import type { ApplyContext, RunHooks } from './keys/hooks.ts';
import { restoreSealed } from './keys/sealed.ts';
import { shuffleHooks } from './keys/shuffle.ts';
import { restoreSignflip, signflipHooks } from './keys/signflip.ts';
import { ortNativeBackend } from './ort-native.ts';
import { ortWasmBackend } from './ort.ts';
import { decodeRecorded } from './recorded.ts';
import { checkRecordOptions, Recorder, type RecordOptions, type RecordStats } from './recorder.ts';
import { shapeSize, type TensorData, type TensorMap } from './tensor.ts';
import { prepareSecretboxWasm } from '../keystore/wasm/secretbox.ts';

/** Model state; see the module comment. */
export type ModelState = 'ready' | 'halted' | 'disabled';

/**
 * Backends by name. A name that is not here is an error, never a fallback.
 * `native` (onnxruntime-node, Node only) loads its package on first use and
 * fails with BackendUnavailableError where it is missing.
 */
export const BACKENDS: Record<string, Backend> = {
  wasm: ortWasmBackend,
  webgpu: { name: 'webgpu', create: (m, o) => ortWasmBackend.create(m, { ...o, executionProvider: 'webgpu' }) },
  native: ortNativeBackend,
  // Imported on first use, so that bundles of apps that never run TFLite do not carry tfjs-tflite.
  tflite: { name: 'tflite', formats: ['tflite'], create: async (m, o) => (await import('./tflite.ts')).createTfliteSession(m, o) },
};

/** The backend a model runs on when `LoadOptions.backend` is not given: `tflite` for TFLite models, `wasm` otherwise. */
export function defaultBackend(format: Manifest['modelFormat']): string {
  return format === 'tflite' ? 'tflite' : 'wasm';
}

/**
 * Steps of `loadModel`, in order, for `LoadOptions.onPhase`: `open` (envelope,
 * signature, manifest), `key` (model key from the keystore and key check
 * value), `restore` (undo load-time locks on a private copy), `digest` (the
 * wait for SHA-256 of the model bytes, started after `open`),
 * `create` (backend session), `canary` (recorded canary runs, only when the
 * manifest has one).
 */
export type LoadPhase = 'open' | 'digest' | 'key' | 'restore' | 'create' | 'canary';

/** Where the model key comes from, and how to run. */
export interface LoadOptions {
  /**
   * The device keystore: the model key comes from its grant, the vendor keys it
   * pins are the only ones trusted, failures are counted in it, and the policy
   * may disable the model there.
   */
  keystore?: Keystore;
  /** The model key itself (the vendor's own check of a lock, tests). */
  modelKey?: Uint8Array;
  /** Trusted vendor public keys (with `modelKey`); without them the signature proves integrity only. */
  trust?: readonly Uint8Array[];
  /** Backend name from BACKENDS (default: `tflite` for TFLite models, `wasm` for ONNX). */
  backend?: string;
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

/** Latency figures over the most recent runs, in milliseconds. */
export interface RunStats {
  runs: number;
  p50: number;
  p99: number;
  /** With `LoadOptions.record`: what the recorder has written. */
  recorded?: RecordStats;
}

type Listener = (e: KeylockError) => void;

const WINDOW = 1024;

/** The loaded model. Create with `loadModel`. */
export class LockedModel {
  private _state: ModelState = 'ready';
  private _error?: KeylockError;
  private session?: BackendSession;
  private hooks: RunHooks[] = [];
  /** The hooks that rewrite inputs, and every hook's key feeds merged: fixed at attach, read per run. */
  private inputHooks: RunHooks[] = [];
  private keyFeeds: TensorMap | undefined;
  /** Settles when the last run started has settled (never rejects); the next run starts then. */
  private last: Promise<unknown> = Promise.resolve();
  /** Runs started and not yet settled; with none, a run starts at once instead of behind the last. */
  private pending = 0;
  private listeners: Record<'halt' | 'disable', Listener[]> = { halt: [], disable: [] };
  private lat = new Float64Array(WINDOW);
  private runs = 0;
  private recorder?: Recorder;

  /** @internal */
  constructor(readonly manifest: Manifest | undefined) {}

  /** `ready`, `halted` or `disabled`. */
  get state(): ModelState { return this._state; }
  /** Why the model is not ready, if it is not. */
  get error(): KeylockError | undefined { return this._error; }
  /** The model's declared (user-facing) inputs and outputs. */
  get inputs(): IOSpec[] { return this.manifest?.inputs ?? []; }
  get outputs(): IOSpec[] { return this.manifest?.outputs ?? []; }

  /** Subscribes to `halt` or `disable`. */
  on(event: 'halt' | 'disable', fn: Listener): this {
    this.listeners[event].push(fn);
    return this;
  }

  /** @internal Moves to halted (or disabled) and wipes run-time key material. */
  halt(e: KeylockError, state: 'halted' | 'disabled' = 'halted'): void {
    this._state = state;
    this._error = e;
    for (const h of this.hooks) h.wipe();
    this.hooks = [];
    this.inputHooks = [];
    this.keyFeeds = undefined;
    void this.session?.release().catch(() => undefined);
    this.session = undefined;
    this.recorder?.close();
    for (const fn of this.listeners[state === 'disabled' ? 'disable' : 'halt']) fn(e);
  }

  /** @internal */
  attach(session: BackendSession, hooks: RunHooks[]): void {
    this.session = session;
    this.hooks = hooks;
    this.inputHooks = hooks.filter((h) => h.transformInput);
    const feeds: TensorMap = {};
    for (const h of hooks) if (h.feeds) Object.assign(feeds, h.feeds);
    this.keyFeeds = Object.keys(feeds).length ? feeds : undefined;
  }

  private notReady(): KeylockError {
    return this._error ?? new KeylockError('halted', 'the model is not ready');
  }

  /** @internal Starts recording runs (after the canary, which is not the app's). */
  record(opts: RecordOptions): void {
    this.recorder = new Recorder(opts);
  }

  /** @internal Forgets the runs so far (the load's canary runs are not the app's). */
  resetStats(): void {
    this.runs = 0;
    this.lat.fill(0);
  }

  /** Latency p50/p99 over the last runs. */
  get stats(): RunStats {
    const n = Math.min(this.runs, WINDOW);
    const a = Array.from(this.lat.subarray(0, n)).sort((x, y) => x - y);
    const q = (p: number): number => (n ? a[Math.min(n - 1, Math.floor(p * n))] : NaN);
    const st: RunStats = { runs: this.runs, p50: q(0.5), p99: q(0.99) };
    if (this.recorder) st.recorded = this.recorder.figures;
    return st;
  }

  /**
   * Runs the model. Unless the model is ready, rejects at once with the typed
   * error that halted or disabled it (KeyMismatchError, ExpiredGrantError,
   * RevokedError, TamperedError, CanaryMismatchError, DisabledError, ...), and
   * never returns numbers. Rejects with InputMismatchError when the inputs do
   * not match the declared names, dtypes and shapes.
   */
  run(inputs: TensorMap): Promise<TensorMap> {
    if (this._state !== 'ready' || !this.session) return Promise.reject(this.notReady());
    // Runs are serialized (hooks reuse their buffers); an idle model starts at once. (Measured:
    // decrementing `pending` in a try/finally inside runNow costs about 1 µs more per run.)
    const r = this.pending === 0 ? this.runNow(inputs) : this.last.then(() => this.runNow(inputs));
    this.pending++;
    this.last = r.then(this.settle, this.settle);
    return r;
  }

  private readonly settle = (): void => { this.pending--; };

  private async runNow(inputs: TensorMap): Promise<TensorMap> {
    if (this._state !== 'ready' || !this.session) throw this.notReady();
    checkInputs(this.inputs, inputs);
    const rec = this.recorder?.begin(inputs);
    const t0 = performance.now();
    // Load-time locks need nothing per run: the caller's inputs go to the backend as they are.
    let feeds = inputs;
    if (this.inputHooks.length || this.keyFeeds) {
      feeds = {};
      for (const name in inputs) {
        let x = inputs[name];
        for (const h of this.inputHooks) x = h.transformInput!(name, x);
        feeds[name] = x;
      }
      if (this.keyFeeds) Object.assign(feeds, this.keyFeeds);
    }
    const out = await this.session.run(feeds);
    this.lat[this.runs % WINDOW] = performance.now() - t0;
    this.runs++;
    if (rec) this.recorder!.add(rec, out);
    return out;
  }

  /** Releases the backend session and wipes key material. */
  async release(): Promise<void> {
    for (const h of this.hooks) h.wipe();
    this.hooks = [];
    this.inputHooks = [];
    this.keyFeeds = undefined;
    const s = this.session;
    this.session = undefined;
    this.recorder?.close();
    if (this._state === 'ready') { this._state = 'halted'; this._error = new KeylockError('released', 'the model was released'); }
    await s?.release();
  }
}

/** Checks user inputs against the manifest's declared inputs. */
export function checkInputs(specs: readonly IOSpec[], inputs: TensorMap): void {
  const names = Object.keys(inputs);
  for (const s of specs) {
    const t = inputs[s.name];
    if (!t) throw new InputMismatchError(`missing input "${s.name}"; the model takes ${specs.map((x) => `"${x.name}"`).join(', ')}, got ${names.map((x) => `"${x}"`).join(', ') || 'none'}`);
    if (t.dtype !== s.dtype) throw new InputMismatchError(`input "${s.name}": expected ${s.dtype}, got ${t.dtype}`);
    const fixed = s.shape.length === t.dims.length && s.shape.every((d, i) => typeof d !== 'number' || d < 0 || d === t.dims[i]);
    if (!fixed) throw new InputMismatchError(`input "${s.name}": expected shape [${s.shape.join(',')}], got [${t.dims.join(',')}]`);
    if (t.data.length !== shapeSize(t.dims)) throw new InputMismatchError(`input "${s.name}": dims [${t.dims.join(',')}] need ${shapeSize(t.dims)} elements, got ${t.data.length}`);
  }
  for (const n of names) {
    if (!specs.some((s) => s.name === n)) throw new InputMismatchError(`unknown input "${n}"; the model takes ${specs.map((x) => `"${x.name}"`).join(', ')}`);
  }
}

/** Undoes every load-time lock on `model` (a private copy), last applied first. */
export function restoreModel(model: Uint8Array, locks: readonly LockEntry[], ctx: ApplyContext): void {
  for (let i = locks.length - 1; i >= 0; i--) {
    const l = locks[i];
    if (l.scheme === 'sealed') restoreSealed(model, l, ctx);
    else if (l.scheme === 'deeplock') restoreDeeplock(model, l, ctx);
    else if (l.scheme === 'advparams') restoreAdvparams(model, l, ctx);
    else if (l.scheme === 'signflip') restoreSignflip(model, l, ctx);
  }
}

/** Run-time hooks of every lock, in lock order. */
export function runHooks(locks: readonly LockEntry[], ctx: ApplyContext): RunHooks[] {
  const hooks: RunHooks[] = [];
  for (const l of locks) {
    if (l.scheme === 'shuffle') hooks.push(shuffleHooks(l, ctx));
    else if (l.scheme === 'signflip' && l.mode === 'input') hooks.push(signflipHooks(l, ctx));
  }
  return hooks;
}

/** Throws KeyMismatchError unless `modelKey` matches the manifest's key check value. */
export function checkKey(manifest: Manifest, modelKey: Uint8Array): void {
  if (modelKey.byteLength !== 32) throw new KeyMismatchError(`model key must be 32 bytes, got ${modelKey.byteLength}`);
  const kcv = keyCheckValue(modelKey);
  const ok = equalBytes(kcv, manifest.kcv);
  wipe(kcv);
  if (!ok) throw new KeyMismatchError(`the key does not open model "${manifest.modelId}" (key check value mismatch)`);
}

/** Compares outputs bit for bit with a recorded-outputs file. */
/**
 * How far a canary output may be from the recorded one on a backend other than
 * the recording one, relative to the output's largest magnitude. Other kernels
 * sum in another order: measured 8.8e-7 for onnxruntime-node against
 * onnxruntime-web (docs/BENCH.md); a wrong key or changed weights move outputs
 * by tens of percent.
 */
export const CANARY_TOLERANCE = 1e-4;

/**
 * The canary's outputs against the recorded ones: bit for bit on the backend
 * that recorded them (`defaultBackend` of the format: the lock tool records
 * with it), within CANARY_TOLERANCE of the output's scale on another one.
 */
function checkCanary(expected: TensorMap, got: TensorMap, i: number, backend: string, exact: boolean): void {
  for (const [name, e] of Object.entries(expected)) {
    const g = got[name];
    if (!g || g.dtype !== e.dtype || g.data.length !== e.data.length) {
      throw new CanaryMismatchError(`canary sample ${i}: expected output "${name}" as ${e.dtype} [${e.dims.join(',')}], got ${g ? `${g.dtype} [${g.dims.join(',')}]` : 'none'}`);
    }
    const eb = new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength);
    const gb = new Uint8Array(g.data.buffer, g.data.byteOffset, g.data.byteLength);
    if (equalBytes(eb, gb)) continue;
    if (exact || (e.dtype !== 'float32' && e.dtype !== 'float64')) {
      throw new CanaryMismatchError(`canary sample ${i}: output "${name}" differs from the recorded one (expected bit for bit on backend ${backend}, which recorded it)`);
    }
    const ed = e.data as Float32Array | Float64Array;
    const gd = g.data as Float32Array | Float64Array;
    let scale = 0;
    for (let j = 0; j < ed.length; j++) scale = Math.max(scale, Math.abs(ed[j]));
    const allowed = CANARY_TOLERANCE * (scale || 1);
    let worst = 0;
    for (let j = 0; j < ed.length; j++) {
      const d = Math.abs(gd[j] - ed[j]);
      // NaN where the recording had a number (or the reverse) is a mismatch too.
      if (!(d <= allowed) && !(Number.isNaN(ed[j]) && Number.isNaN(gd[j]))) worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
    }
    if (worst > 0) {
      throw new CanaryMismatchError(`canary sample ${i}: output "${name}" differs from the recorded one by up to ${worst.toExponential(2)}; backend ${backend}, which did not record it, is allowed ${allowed.toExponential(2)} (${CANARY_TOLERANCE} of the output's scale)`);
    }
  }
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
 * API misuse (no key source, unknown backend) throws.
 */
export async function loadModel(klm: Uint8Array, opts: LoadOptions): Promise<LockedModel> {
  const ks = opts.keystore;
  if (!ks && !opts.modelKey) throw new TypeError('loadModel needs a keystore or a modelKey');
  if (opts.backend !== undefined && !BACKENDS[opts.backend]) throw new UnsupportedModelError(`unknown backend "${opts.backend}"; available: ${Object.keys(BACKENDS).join(', ')}`);
  if (opts.record) checkRecordOptions(opts.record);
  const mark = phaseClock(opts.onPhase);
  let file: KlmFile;
  let verified: Promise<void>;
  try {
    file = await openKlmSignedAsync(klm, ks ? ks.vendorKeys : opts.trust);
    mark?.('open');
    // The digest (native code: Node's hash, else WebCrypto) is started here; where it runs on
    // another thread (WebCrypto) it overlaps the key check and the restore. unlockInto awaits it
    // before any backend sees the bytes.
    const f = file;
    verified = sha256Async(f.model).then((d) => checkKlmDigest(f, d));
    verified.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
  } catch (e) {
    const m = new LockedModel(undefined);
    m.halt(asKeylockError(e));
    opts.record?.sink.close();
    return m;
  }
  const model = new LockedModel(file.manifest);
  const backend = BACKENDS[opts.backend ?? defaultBackend(file.manifest.modelFormat)];
  const { modelId, policy } = file.manifest;
  let modelKey: Uint8Array | undefined;
  try {
    modelKey = ks ? ks.modelKeyFor(modelId) : new Uint8Array(opts.modelKey!);
    await unlockInto(model, file, modelKey, backend, opts.threads, mark, verified, opts.consume === true);
    // Only a device that had failures writes on success: a good run needs no write access.
    if (ks && ks.failureCount(modelId) > 0) await ks.resetFailures(modelId);
  } catch (e) {
    // Bytes that do not match the signed digest are reported as such, whatever else failed while
    // the digest was computed, and (as a file that is not the vendor's) never counted as a failure.
    const tampered = await verified.then(() => undefined, asKeylockError);
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
  if (opts.record) {
    if (model.state === 'ready') model.record(opts.record);
    else opts.record.sink.close();
  }
  return model;
}

/**
 * Shared by every key source: key check, restore, session, hooks, canary.
 * `verified`, when given, is the pending digest check of `file`: it is awaited
 * after the restore and before the backend sees any byte.
 */
export async function unlockInto(
  model: LockedModel, file: KlmFile, modelKey: Uint8Array, backend: Backend, threads?: number, mark?: (p: LoadPhase) => void,
  verified?: Promise<void>, consume = false,
): Promise<void> {
  const { manifest } = file;
  checkKey(manifest, modelKey);
  mark?.('key');
  const formats = backend.formats ?? ['onnx'];
  if (!formats.includes(manifest.modelFormat)) {
    throw new UnsupportedModelError(`model "${manifest.modelId}" is ${manifest.modelFormat}; the ${backend.name} backend runs ${formats.join(', ')} models`);
  }
  // With a pinned signer, the digest awaited below covers every byte restore reads.
  const ctx: ApplyContext = { modelId: manifest.modelId, modelKey, authenticated: file.trusted && verified !== undefined };
  // A browser's main thread may refuse to compile WebAssembly synchronously; sealed
  // tensors then open in JavaScript unless the module was compiled here first.
  if (manifest.locks.some((l) => l.scheme === 'sealed')) await prepareSecretboxWasm();
  let session: BackendSession;
  let bytes: Uint8Array | undefined;
  try {
    if (consume && verified) {
      // Restoring in the caller's bytes changes what the digest reads: it is settled first.
      await verified;
      mark?.('digest');
    }
    bytes = consume ? file.model : new Uint8Array(file.model); // otherwise a private copy: the caller's buffer is never changed
    restoreModel(bytes, manifest.locks, ctx);
    mark?.('restore');
    if (verified && !consume) {
      await verified;
      mark?.('digest');
    }
    session = await backend.create(bytes, { threads });
    mark?.('create');
  } finally {
    wipe(bytes); // the backend holds its own copy; the plaintext in JS memory goes now
    bytes = undefined; // and the buffer with it: nothing here keeps it reachable during the canary runs
  }
  model.attach(session, runHooks(manifest.locks, ctx));
  if (manifest.canary) {
    const ins = decodeRecorded(manifest.canary.inputs, 'inputs');
    const outs = decodeRecorded(manifest.canary.outputs, 'outputs');
    // Recorded by the lock tool on the format's default backend: exact there; other kernels round differently.
    const exact = backend.name === defaultBackend(manifest.modelFormat);
    for (let i = 0; i < ins.length; i++) checkCanary(outs[i]?.outputs ?? {}, await model.run(ins[i].inputs!), i, backend.name, exact);
    model.resetStats();
    mark?.('canary');
  }
}

function asKeylockError(e: unknown): KeylockError {
  if (e instanceof KeylockError) return e;
  return new TamperedError(`the model could not be loaded: ${(e as Error)?.message ?? String(e)}`, { cause: e });
}

export type { TensorData };
