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
import { DeadlineError, InputMismatchError, KeylockError, RunAbortedError } from '../keystore/errors.ts';
import type { BackendSession } from './backend.ts';
import type { IOSpec, Manifest } from './klm.ts';
import type { RunHooks } from './keys/hooks.ts';
import { Recorder, type RecordOptions, type RecordStats } from './recorder.ts';
import { shapeSize, type TensorMap } from './tensor.ts';

/**
 * Per-run options. A run aborted (`signal`) or late (`deadlineMs`) rejects with
 * RunAbortedError or DeadlineError as soon as the caller's thread can tell:
 * at once in worker mode, after the blocking inference in-thread. A queued run
 * that is aborted or late never starts, so the runs behind it are not held up;
 * a started run cannot be interrupted inside the engine, and its outputs are dropped.
 */
export interface RunOptions {
  /** Aborts the run (RunAbortedError): before it starts it never runs; once started its outputs are dropped. */
  signal?: AbortSignal;
  /** Milliseconds from the call (queueing included) within which the outputs must be back, else DeadlineError. */
  deadlineMs?: number;
  /**
   * Worker mode: transfer the inputs' buffers to the worker instead of copying
   * them (the caller's typed arrays are detached afterwards). Outputs are always
   * transferred back. Ignored in-thread.
   */
  transfer?: boolean;
}

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
  /** Slowest run in the window. */
  max: number;
  /** Runs that missed their `deadlineMs` (started late, or not started in time). */
  deadlineMisses: number;
  /** Runs rejected by their `signal`. */
  aborted: number;
  /** `worker` when the model runs on its own thread (worker mode), else `in-thread`. */
  mode?: 'worker' | 'in-thread';
  /**
   * With `worker: 'auto'` (the Node target's default): the run time at load, in
   * milliseconds, that chose `mode` (the fastest of a few runs in the model's
   * worker; `in-thread` when it is at most `AUTO_IN_THREAD_MS`). Undefined when
   * the mode was named, or when no run could be timed (then `worker`).
   */
  autoRunMs?: number;
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
  run(inputs: TensorMap, opts?: RunOptions): Promise<TensorMap>;
  /** Releases the backend session and wipes key material; the model is halted afterwards. */
  release(): Promise<void>;
  /**
   * Subscribes to `halt` (the model stopped: the error says why, e.g.
   * ExpiredGrantError when its grant ran out while it ran, RevokedError when a
   * revocation list naming it was installed, WorkerCrashedError), `disable`, or
   * `expiring` (the grant's `notAfter` passed and its vendor-signed grace period
   * started: the model still runs until the grace ends, then halts).
   */
  on(event: ModelEvent, fn: (e: KeylockError) => void): this;
}

/** Events of a `LockedModel`; see `LockedModel.on`. */
export type ModelEvent = 'halt' | 'disable' | 'expiring';

type Listener = (e: KeylockError) => void;

/**
 * @internal What a loaded model tells and stops, shared by the in-thread `Model`
 * and the caller's side of a worker (`WorkerModel`): the `halt`/`disable`/
 * `expiring` listeners, what to stop when the model halts or is released (e.g.
 * the licence watch's timer), and the check made before every run (e.g. the
 * licence's end; a reason halts the model).
 */
export class ModelWatches {
  private listeners: Record<ModelEvent, Listener[]> = { halt: [], disable: [], expiring: [] };
  private stoppers: (() => void)[] = [];
  guard?: () => void;

  on(event: ModelEvent, fn: Listener): void {
    if (!Object.hasOwn(this.listeners, event)) throw new TypeError(`unknown model event "${String(event)}"; expected halt, disable or expiring`);
    this.listeners[event].push(fn);
  }

  emit(event: ModelEvent, e: KeylockError): void {
    for (const fn of this.listeners[event]) fn(e);
  }

  /** Keeps `stop` (and `guard`) while the model is ready; stops at once otherwise. */
  watch(ready: boolean, stop: () => void, guard?: () => void): void {
    if (!ready) { stop(); return; }
    this.stoppers.push(stop);
    if (guard) this.guard = guard;
  }

  /** Stops every watch and drops the guard. */
  stop(): void {
    const s = this.stoppers;
    this.stoppers = [];
    this.guard = undefined;
    for (const f of s) f();
  }
}

/** A settled run slot of a bounded run that never started. */
const NOTHING: Promise<undefined> = Promise.resolve(undefined);

/**
 * `worker: 'auto'`: a model whose run at load took at most this long (ms) runs on
 * the caller's thread, longer ones on a worker. A run this short blocks the event
 * loop less than a 5 ms timer's own jitter, and a thread hop (tens to a hundred
 * microseconds each way) would cost more than the run; docs/BENCH.md section 14.
 */
export const AUTO_IN_THREAD_MS = 0.1;

/**
 * A cooperative in-thread model (`worker: 'auto'` chose the caller's thread) lets
 * the event loop turn at least this often (ms) while it runs back to back: when
 * the loop has not turned for this long, the next run waits for one `setImmediate`
 * turn first, so timers and I/O keep their pace.
 */
export const YIELD_MS = 0.25;

/** One turn of the event loop (a macrotask): `setImmediate` where there is one, else a zero timer. */
const nextTurn: (f: () => void) => void = typeof globalThis.setImmediate === 'function'
  ? (f) => { globalThis.setImmediate(f); }
  : (f) => { setTimeout(f, 0); };

/** Runs whose latency `stats` keeps: the last this many. */
export const WINDOW = 1024;

/** `runs`, p50, p99 and max of the latencies kept in `lat` (a ring of `WINDOW`), for `stats`. */
export function latencyFigures(lat: Float64Array, runs: number): Pick<RunStats, 'runs' | 'p50' | 'p99' | 'max'> {
  const n = Math.min(runs, WINDOW);
  const a = Array.from(lat.subarray(0, n)).sort((x, y) => x - y);
  const q = (p: number): number => (n ? a[Math.min(n - 1, Math.floor(p * n))] : NaN);
  return { runs, p50: q(0.5), p99: q(0.99), max: n ? a[n - 1] : NaN };
}

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
  private watches = new ModelWatches();
  private misses = 0;
  private aborts = 0;
  private lat = new Float64Array(WINDOW);
  private runs = 0;
  private recorder?: Recorder;
  private _backend?: string;
  private _skipped: SkippedBackend[] = [];
  /** Set by `cooperate`: runs let the event loop turn (see YIELD_MS); `autoRunMs` is what chose it. */
  private coop = false;
  private autoRunMs?: number;
  /** When the event loop was last seen turning (performance.now()), and since when a marker turn has been pending. */
  private turnAt = 0;
  private markAt = -1;
  private readonly onTurn = (): void => { this.markAt = -1; this.turnAt = performance.now(); };

  /** @internal */
  constructor(readonly manifest: Manifest | undefined) {}

  /**
   * @internal `worker: 'auto'` put this model on the caller's thread after a run of
   * `runMs` at load: from now on its runs let the event loop turn every YIELD_MS,
   * unless its session's runs turn it anyway (`BackendSession.turnsEventLoop`).
   */
  cooperate(runMs: number): void {
    // A session whose every run turns the event loop (onnxruntime-node) needs no turns of the model's own.
    this.coop = this.session?.turnsEventLoop !== true;
    this.autoRunMs = runMs;
    this.turnAt = performance.now();
  }

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

  /** Subscribes to `halt`, `disable` or `expiring`; see `LockedModel.on`. */
  on(event: ModelEvent, fn: Listener): this {
    this.watches.on(event, fn);
    return this;
  }

  /** @internal Tells `expiring` listeners (the licence watch). */
  emit(event: 'expiring', e: KeylockError): void {
    this.watches.emit(event, e);
  }

  /** @internal Something to stop when the model halts or is released; `guard` runs before every run. */
  watch(stop: () => void, guard?: () => void): void {
    this.watches.watch(this._state === 'ready', stop, guard);
  }

  /** @internal Moves to halted (or disabled) and wipes run-time key material. */
  halt(e: KeylockError, state: 'halted' | 'disabled' = 'halted'): void {
    this.watches.stop();
    this._state = state;
    this._error = e;
    void this.takeSession()?.release().catch(() => undefined);
    this.recorder?.close();
    this.watches.emit(state === 'disabled' ? 'disable' : 'halt', e);
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
    this.misses = 0;
    this.aborts = 0;
    this.lat.fill(0);
  }

  /** Latency p50/p99 over the last runs. */
  get stats(): RunStats {
    const st: RunStats = {
      backend: this._backend, ...latencyFigures(this.lat, this.runs),
      deadlineMisses: this.misses, aborted: this.aborts, mode: 'in-thread',
    };
    if (this.autoRunMs !== undefined) st.autoRunMs = this.autoRunMs;
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
  run(inputs: TensorMap, opts?: RunOptions): Promise<TensorMap> {
    this.watches.guard?.();
    if (this._state !== 'ready' || !this.session) return Promise.reject(this.notReady());
    if (opts && (opts.signal || opts.deadlineMs !== undefined)) return this.runBounded(inputs, opts);
    // Runs are serialized (hooks reuse their buffers); an idle model starts at once. (Measured:
    // decrementing `pending` in a try/finally inside runNow costs about 1 µs more per run.)
    const r = this.pending === 0 ? this.start(inputs) : this.last.then(() => this.start(inputs));
    this.pending++;
    this.last = r.then(this.settle, this.settle);
    return r;
  }

  private readonly settle = (): void => { this.pending--; };

  /**
   * A run with a signal or deadline: the caller's promise settles on the first
   * of the outputs, the abort and the deadline; a run still queued then is
   * skipped when its turn comes (it never starts).
   */
  private runBounded(inputs: TensorMap, opts: RunOptions): Promise<TensorMap> {
    const { signal, deadlineMs } = opts;
    if (deadlineMs !== undefined && !(typeof deadlineMs === 'number' && deadlineMs >= 0)) {
      return Promise.reject(new RangeError(`run: deadlineMs must be a non-negative number of milliseconds, got ${String(deadlineMs)}`));
    }
    if (signal?.aborted) {
      this.aborts++;
      return Promise.reject(new RunAbortedError('run: aborted by its signal before it started', { cause: signal.reason }));
    }
    const t0 = performance.now();
    let started = false;
    let done = false;
    const late = (): boolean => deadlineMs !== undefined && performance.now() - t0 > deadlineMs;
    return new Promise<TensorMap>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = (): void => {
        done = true;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const miss = (): void => {
        if (done) return;
        finish();
        this.misses++;
        reject(new DeadlineError(deadlineMs!, performance.now() - t0, started));
      };
      const onAbort = (): void => {
        if (done) return;
        finish();
        this.aborts++;
        reject(new RunAbortedError(`run: aborted by its signal ${started ? 'while it ran; its outputs are dropped' : 'while queued; it never ran'}`, { cause: signal!.reason }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (deadlineMs !== undefined) timer = setTimeout(miss, deadlineMs);
      const go = (): Promise<TensorMap> | undefined => {
        // Its turn came: one that was given up meanwhile never starts, so the runs behind it go on.
        if (done) return undefined;
        if (late()) { miss(); return undefined; }
        started = true;
        return this.start(inputs);
      };
      // An idle model starts the run now, as the unbounded path does (no microtask turn before it).
      const r = this.pending === 0 ? go() ?? NOTHING : this.last.then(go);
      this.pending++;
      this.last = r.then(this.settle, this.settle);
      r.then((out) => {
        if (done || !out) return;
        if (late()) { miss(); return; } // in-thread the timer cannot fire during the inference: checked here
        finish();
        resolve(out);
      }, (e: unknown) => {
        if (done) return;
        finish();
        reject(e);
      });
    });
  }

  /**
   * Starts a run whose turn came. A cooperative model first lets the event loop
   * turn when it has not for YIELD_MS: a marker turn is asked for once the loop
   * has been quiet that long, and the run waits for a turn of its own only when
   * the marker has not fired YIELD_MS later (a backend that turns the loop itself,
   * as onnxruntime-node does on every run, never waits). Otherwise one clock read.
   */
  private start(inputs: TensorMap): Promise<TensorMap> {
    if (!this.coop) return this.runNow(inputs);
    // The clock read here is also the run's start for `stats` (one read per run, as without cooperation).
    const now = performance.now();
    if (now - this.turnAt >= YIELD_MS) {
      if (this.markAt < 0) {
        this.markAt = now;
        nextTurn(this.onTurn);
      } else if (now - this.markAt >= YIELD_MS) {
        return new Promise<void>((resolve) => { nextTurn(resolve); }).then(() => this.runNow(inputs));
      }
    }
    return this.runNow(inputs, now);
  }

  /** `t0`: the run's start on the performance clock, when the caller has just read it. */
  private async runNow(inputs: TensorMap, t0?: number): Promise<TensorMap> {
    if (this._state !== 'ready' || !this.session) throw this.notReady();
    checkInputs(this.inputs, inputs);
    const rec = this.recorder?.begin(inputs);
    t0 ??= performance.now();
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
    this.watches.stop();
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
