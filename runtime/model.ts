/**
 * A loaded, locked model: what `loadModel` returns. The public face is the
 * `LockedModel` interface (state, typed error, declared inputs and outputs,
 * `run`, `release`, `on`, `stats`); the class behind it is the runtime's own:
 * the load moves it to halted (`halt`), hands it the session and run-time
 * hooks (`attach`) and starts recording (`record`).
 *
 * States: `ready` runs; `halted` rejects every `run()` at once with the typed
 * reason; `disabled` (persisted by the keystore) also rejects, until a vendor
 * reinstate token lifts it. A model never returns numbers unless ready.
 */
import { InputMismatchError, KeylockError } from '../keystore/errors.ts';
import type { BackendSession } from './backend.ts';
import type { IOSpec, Manifest } from './klm.ts';
import type { RunHooks } from './keys/hooks.ts';
import { Recorder, type RecordOptions, type RecordStats } from './recorder.ts';
import { shapeSize, type TensorMap } from './tensor.ts';

/**
 * A backend an `auto` load passed over before the one that runs, and why:
 * BackendUnavailableError (it cannot run here: its init or session failed),
 * CanaryMismatchError (its outputs are not the recorded ones within the
 * tolerance), UnsupportedModelError (not its format).
 */
export interface SkippedBackend {
  backend: string;
  error: KeylockError;
}

/** Model state; see the module comment. */
export type ModelState = 'ready' | 'halted' | 'disabled';

/** Latency figures over the most recent runs, in milliseconds, and the backend they ran on. */
export interface RunStats {
  /** The backend whose session runs the model (as `LockedModel.backend`); undefined when none was created. */
  backend?: string;
  runs: number;
  p50: number;
  p99: number;
  /** With `LoadOptions.record`: what the recorder has written. */
  recorded?: RecordStats;
}

/**
 * A loaded model, as `loadModel` returns it. Unless `state` is `ready`, `run()`
 * rejects at once with `error`, the typed reason (KeyMismatchError,
 * ExpiredGrantError, RevokedError, TamperedError, CanaryMismatchError,
 * DisabledError, ...), and never returns numbers.
 */
export interface LockedModel {
  /** `ready`, `halted` or `disabled`. */
  readonly state: ModelState;
  /** Why the model is not ready, if it is not. */
  readonly error: KeylockError | undefined;
  /** The verified manifest; undefined when the file itself did not open (bad envelope, signature or manifest). */
  readonly manifest: Manifest | undefined;
  /** The model's declared (user-facing) inputs. */
  readonly inputs: IOSpec[];
  /** The model's declared outputs. */
  readonly outputs: IOSpec[];
  /** Latency p50/p99 over the last runs, the backend, and what the recorder wrote. */
  readonly stats: RunStats;
  /**
   * The registered backend whose session runs the model (`native`, `wasm`,
   * `tflite`, ...): the one named, or the one `auto` chose. On a halted model,
   * the last one a session was created on; undefined when the load stopped before.
   */
  readonly backend: string | undefined;
  /** What an `auto` load passed over before `backend`, in order, and why; empty otherwise. */
  readonly skippedBackends: readonly SkippedBackend[];
  /**
   * Runs the model (runs are serialized). Rejects with the model's `error` unless
   * it is ready, and with InputMismatchError when the inputs do not match the
   * declared names, dtypes and shapes.
   */
  run(inputs: TensorMap): Promise<TensorMap>;
  /** Releases the backend session and wipes key material; the model is halted afterwards. */
  release(): Promise<void>;
  /** Subscribes to `halt` or `disable`. */
  on(event: 'halt' | 'disable', fn: (e: KeylockError) => void): this;
}

type Listener = (e: KeylockError) => void;

const WINDOW = 1024;

/** The runtime's model: `LockedModel` plus what the load drives. Made by `loadModel` only. */
export class Model implements LockedModel {
  private _state: ModelState = 'ready';
  private _error?: KeylockError;
  private session?: BackendSession;
  private hooks: RunHooks[] = [];
  /** The hooks that rewrite inputs, and every hook's key feeds merged: fixed at attach, read per run. */
  private inputHooks: RunHooks[] = [];
  private keyFeeds: TensorMap | undefined;
  /** Hooks with work around each run (sealed inline: decrypt before, zero after). */
  private aroundHooks: RunHooks[] = [];
  /** Settles when the last run started has settled (never rejects); the next run starts then. */
  private last: Promise<unknown> = Promise.resolve();
  /** Runs started and not yet settled; with none, a run starts at once instead of behind the last. */
  private pending = 0;
  private listeners: Record<'halt' | 'disable', Listener[]> = { halt: [], disable: [] };
  private lat = new Float64Array(WINDOW);
  private runs = 0;
  private recorder?: Recorder;
  private _backend?: string;
  private _skipped: SkippedBackend[] = [];

  /** @internal */
  constructor(readonly manifest: Manifest | undefined) {}

  /** `ready`, `halted` or `disabled`. */
  get state(): ModelState { return this._state; }
  /** Why the model is not ready, if it is not. */
  get error(): KeylockError | undefined { return this._error; }
  /** The model's declared (user-facing) inputs and outputs. */
  get inputs(): IOSpec[] { return this.manifest?.inputs ?? []; }
  get outputs(): IOSpec[] { return this.manifest?.outputs ?? []; }
  /** The backend whose session runs the model; see `LockedModel.backend`. */
  get backend(): string | undefined { return this._backend; }
  /** What an `auto` load passed over before `backend`, and why. */
  get skippedBackends(): readonly SkippedBackend[] { return this._skipped; }

  /** Subscribes to `halt` or `disable`. */
  on(event: 'halt' | 'disable', fn: Listener): this {
    this.listeners[event].push(fn);
    return this;
  }

  /** @internal Moves to halted (or disabled) and wipes run-time key material. */
  halt(e: KeylockError, state: 'halted' | 'disabled' = 'halted'): void {
    this._state = state;
    this._error = e;
    void this.takeSession()?.release().catch(() => undefined);
    this.recorder?.close();
    for (const fn of this.listeners[state === 'disabled' ? 'disable' : 'halt']) fn(e);
  }

  /** @internal `backend`: the registered name the session was created by. */
  attach(session: BackendSession, hooks: RunHooks[], backend?: string): void {
    this._backend = backend;
    this.session = session;
    this.hooks = hooks;
    this.inputHooks = hooks.filter((h) => h.transformInput);
    this.aroundHooks = hooks.filter((h) => h.beforeRun || h.afterRun);
    const feeds: TensorMap = {};
    for (const h of hooks) if (h.feeds) Object.assign(feeds, h.feeds);
    this.keyFeeds = Object.keys(feeds).length ? feeds : undefined;
  }

  /**
   * @internal An `auto` load passing over the backend attached last (`why`): its
   * session is released and the run-time key material wiped; the model stays
   * ready for the next candidate's `attach`.
   */
  async detach(why: KeylockError): Promise<void> {
    const s = this.takeSession();
    if (this._backend !== undefined) this._skipped.push({ backend: this._backend, error: why });
    this._backend = undefined;
    this.resetStats();
    await s?.release().catch(() => undefined);
  }

  /** @internal Notes a candidate an `auto` load passed over before any session of it existed. */
  skip(backend: string, why: KeylockError): void {
    this._skipped.push({ backend, error: why });
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
    const st: RunStats = { backend: this._backend, runs: this.runs, p50: q(0.5), p99: q(0.99) };
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
    let out: TensorMap;
    try {
      for (const h of this.aroundHooks) h.beforeRun?.();
      out = await this.session.run(feeds);
    } finally {
      for (const h of this.aroundHooks) h.afterRun?.();
    }
    this.lat[this.runs % WINDOW] = performance.now() - t0;
    this.runs++;
    if (rec) this.recorder!.add(rec, out);
    return out;
  }

  /** Wipes the run-time key material and hands back the session, which the model no longer holds. */
  private takeSession(): BackendSession | undefined {
    for (const h of this.hooks) h.wipe();
    this.hooks = [];
    this.inputHooks = [];
    this.aroundHooks = [];
    this.keyFeeds = undefined;
    const s = this.session;
    this.session = undefined;
    return s;
  }

  /** Releases the backend session and wipes key material. */
  async release(): Promise<void> {
    const s = this.takeSession();
    this.recorder?.close();
    if (this._state === 'ready') { this._state = 'halted'; this._error = new KeylockError('released', 'the model was released'); }
    await s?.release();
  }
}

/** Checks user inputs against the manifest's declared inputs. */
function checkInputs(specs: readonly IOSpec[], inputs: TensorMap): void {
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
