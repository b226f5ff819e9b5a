/**
 * Worker mode, the caller's side: the model runs on its own thread (Node
 * `worker_threads`, a Web Worker in browsers and Electron renderers, a Deno
 * worker), so an inference never blocks the caller's event loop. The caller
 * gets the same `LockedModel` (state, error, run, stats, events).
 *
 * Who holds what:
 * - The worker (runtime/worker-host.ts) opens the `.klm`, verifies it, restores
 *   the model and owns the session: the decrypted model and the run-time key
 *   material (key tensors, shuffle tables) exist only on its thread.
 * - The key source (the `Keystore`) stays on the caller's thread; the worker
 *   asks it through messages, as `loadModel` asks any `ModelKeySource`. The
 *   caller's thread checks the grant (licence window, revocation, clock floor),
 *   transfers the model key to the worker once (its buffer is detached here,
 *   so no copy stays) and counts failures in its keystore. The worker wipes
 *   the key after the load, as an in-thread load does.
 * - Licences are enforced here (runtime/licence.ts): a halt posts `release`
 *   (the worker wipes its keys and releases the session) and ends the thread.
 *
 * Runs are queued here, one in the worker at a time, so a run aborted or late
 * while queued is dropped without reaching the worker and never delays the runs
 * behind it; a run already in the worker cannot be interrupted, its caller is
 * answered at once and its outputs dropped. Outputs come back as transferred
 * buffers (no copy); inputs are copied, or transferred with `{ transfer: true }`.
 * A worker that dies halts the model with WorkerCrashedError; a new load starts
 * a new worker.
 */
import {
  DeadlineError, errorFromWire, errorToWire, InputMismatchError, KeylockError, RunAbortedError, WorkerCrashedError, type WireError,
} from '../keystore/errors.ts';
import { wipe } from '../keystore/nacl.ts';
import { AUTO, isBuiltinBackend } from './backends.ts';
import { env, type WorkerLike } from './env.ts';
import { peekModelFormat, type IOSpec, type Manifest } from './klm.ts';
import { isLicenceSource, watchLicence } from './licence.ts';
import type { LoadOptions, ModelKeySource } from './load.ts';
import { latencyFigures, Model, ModelWatches, WINDOW, type LockedModel, type ModelEvent, type ModelState, type RunOptions, type RunStats, type SkippedBackend } from './model.ts';
import type { TensorMap } from './tensor.ts';

export type { WorkerLike } from './env.ts';

/** Messages from the caller's thread to the worker. */
export type ToWorker =
  | { t: 'load'; klm: Uint8Array; consume: boolean; opts: WireLoadOptions }
  | { t: 'key'; id: number; key?: Uint8Array; failures?: number; error?: WireError }
  | { t: 'answer'; id: number; value?: unknown; error?: WireError }
  | { t: 'run'; id: number; inputs: TensorMap }
  | { t: 'release' };

/** Messages from the worker. */
export type FromWorker =
  | { t: 'key'; id: number; modelId: string }
  | { t: 'ask'; id: number; method: 'recordFailure' | 'resetFailures'; args: unknown[] }
  | { t: 'phase'; phase: string; ms: number }
  | { t: 'loaded'; state: ModelState; error?: WireError; manifest?: Manifest; backend?: string; skipped: { backend: string; error: WireError }[]; runMs?: number }
  | { t: 'ran'; id: number; outputs?: TensorMap; error?: WireError; ms: number }
  | { t: 'released' };

/** What crosses with the load: the options and the caller's platform settings. */
export interface WireLoadOptions {
  backend?: string;
  threads: number;
  warmup?: boolean;
  phases: boolean;
  /** Given: a key source on the caller's side answers the worker (its pinned keys here). */
  vendorKeys?: Uint8Array[];
  modelKey?: Uint8Array;
  trust?: Uint8Array[];
  /** `worker: 'auto'`: time a few runs after the load and report the fastest (`loaded.runMs`). */
  probe?: boolean;
  /** The caller's platform settings the worker's load reads (its own entry set none of them): the rpi default thread count, where the wasm files are. */
  env: { backend?: string; threads: number; wasmPaths?: string; tfliteWasmPaths?: string; parallelDigest?: boolean };
}

/**
 * Whether `loadModel` runs this load of `klm` in a worker: the platform provides one
 * (`env.spawnWorker`), `opts.worker` is not false, nothing the load needs
 * lives only on this thread (a recorder's sink, a backend the app registered),
 * and the platform's worker can run the model's format (`env.workerFormats`:
 * browsers' module workers cannot run tfjs-tflite, whose glue loads with
 * `importScripts`, so a TFLite model runs on the page's thread there).
 */
export function usesWorker(opts: LoadOptions, klm?: Uint8Array): boolean {
  if (opts.worker === false || !env.spawnWorker) return false;
  if (opts.worker === undefined && env.worker === false) return false;
  // 'auto' starts in a worker too: the worker times the model's run (runtime/index.ts decides).
  if (opts.record) return false;
  const asked = opts.backend ?? env.backend;
  if (asked !== undefined && !isBuiltinBackend(asked === AUTO ? AUTO : asked)) return false;
  const formats = env.workerFormats;
  if (!formats) return true;
  // Only picks the thread: the format is read unverified here, and the load verifies the file either way.
  const format = asked === 'tflite' ? 'tflite' : klm ? peekModelFormat(klm) : undefined;
  return format === undefined || formats.includes(format);
}

/** A whole, unshared buffer can be transferred; a view into a larger one (or shared memory) is copied. */
function transferable(a: ArrayBufferView): ArrayBuffer | undefined {
  const b = a.buffer;
  return b instanceof ArrayBuffer && a.byteOffset === 0 && a.byteLength === b.byteLength && b.byteLength > 0 ? b : undefined;
}

/** The buffers of `m`'s tensors that can move to the other thread without a copy. */
export function tensorTransfers(m: TensorMap): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const k in m) {
    const b = transferable(m[k].data);
    if (b) out.add(b);
  }
  return [...out];
}


interface Job {
  id: number;
  inputs: TensorMap;
  transfer: boolean;
  resolve: (out: TensorMap) => void;
  reject: (e: unknown) => void;
  signal?: AbortSignal;
  deadlineMs?: number;
  t0: number;
  started: boolean;
  done: boolean;
  timer?: ReturnType<typeof setTimeout>;
  onAbort?: () => void;
}

/** A model whose session lives in a worker; see the module comment. Made by `loadInWorker`. */
export class WorkerModel implements LockedModel {
  private _state: ModelState = 'ready';
  private _error?: KeylockError;
  private _manifest?: Manifest;
  private _backend?: string;
  private _skipped: SkippedBackend[] = [];
  private watches = new ModelWatches();
  private queue: Job[] = [];
  private inflight?: Job;
  private nextId = 1;
  private lat = new Float64Array(WINDOW);
  private runs = 0;
  private misses = 0;
  private aborts = 0;
  /** Set when this side ends the worker (release, halt): its exit is then no crash. */
  private ending = false;
  private released?: () => void;
  private _runMs?: number;
  private autoChosen = false;

  /** @internal The worker thread (tests kill it to check crash handling). */
  constructor(readonly worker: WorkerLike) {}

  get state(): ModelState { return this._state; }
  get error(): KeylockError | undefined { return this._error; }
  get manifest(): Manifest | undefined { return this._manifest; }
  get inputs(): IOSpec[] { return this._manifest?.inputs ?? []; }
  get outputs(): IOSpec[] { return this._manifest?.outputs ?? []; }
  get backend(): string | undefined { return this._backend; }
  get skippedBackends(): readonly SkippedBackend[] { return this._skipped; }

  get stats(): RunStats {
    const st: RunStats = {
      backend: this._backend, ...latencyFigures(this.lat, this.runs),
      deadlineMisses: this.misses, aborted: this.aborts, mode: 'worker',
    };
    if (this.autoChosen && this._runMs !== undefined) st.autoRunMs = this._runMs;
    return st;
  }

  /** @internal The fastest run the worker timed after the load (a `probe` load), in ms; undefined if none. */
  get probedRunMs(): number | undefined { return this._runMs; }

  /** @internal `worker: 'auto'` kept the model here: `stats.autoRunMs` reports the probe. */
  chosenByAuto(): void { this.autoChosen = true; }

  on(event: ModelEvent, fn: (e: KeylockError) => void): this {
    this.watches.on(event, fn);
    return this;
  }

  /** @internal */
  emit(event: 'expiring', e: KeylockError): void {
    this.watches.emit(event, e);
  }

  /** @internal See `Model.watch`. */
  watch(stop: () => void, guard?: () => void): void {
    this.watches.watch(this._state === 'ready', stop, guard);
  }

  /** @internal The load's outcome, from the worker. */
  loaded(m: Extract<FromWorker, { t: 'loaded' }>): void {
    this._manifest = m.manifest;
    this._backend = m.backend;
    this._runMs = m.runMs;
    this._skipped = m.skipped.map((s) => ({ backend: s.backend, error: errorFromWire(s.error) as KeylockError }));
    if (m.state !== 'ready') {
      this._state = m.state;
      this._error = errorFromWire(m.error!) as KeylockError;
      this.end();
    }
  }

  /**
   * @internal Halts: every queued and running run rejects with `e`, the worker
   * wipes its keys and releases its session, then its thread ends.
   */
  halt(e: KeylockError, state: 'halted' | 'disabled' = 'halted'): void {
    if (this._state !== 'ready') return;
    this._state = state;
    this._error = e;
    this.watches.stop();
    this.failAll(e);
    this.end();
    this.watches.emit(state === 'disabled' ? 'disable' : 'halt', e);
  }

  /** Asks the worker to wipe and release, then ends it (at once if it does not answer within a second). */
  private end(): Promise<void> {
    if (this.ending) return Promise.resolve();
    this.ending = true;
    return new Promise<void>((resolve) => {
      const kill = setTimeout(() => { this.worker.terminate(); resolve(); }, 1000);
      this.released = () => {
        clearTimeout(kill);
        this.worker.terminate();
        resolve();
      };
      try {
        this.worker.postMessage({ t: 'release' } satisfies ToWorker);
        this.worker.ref?.();
      } catch {
        this.released();
      }
    });
  }

  /** @internal The worker's thread ended: asked to (release, halt), or not (a crash). */
  died(why: string): void {
    if (this.ending) {
      this.released?.();
      return;
    }
    this.ending = true;
    this.halt(new WorkerCrashedError(`the model's worker thread ended unexpectedly (${why}); expected it to run until released. The model is halted; load it again to start a new worker`));
  }

  private failAll(e: KeylockError): void {
    const jobs = [...(this.inflight ? [this.inflight] : []), ...this.queue];
    this.inflight = undefined;
    this.queue = [];
    for (const j of jobs) this.settle(j, undefined, e);
  }

  run(inputs: TensorMap, opts?: RunOptions): Promise<TensorMap> {
    this.watches.guard?.();
    if (this._state !== 'ready') return Promise.reject(this._error ?? new KeylockError('halted', 'the model is not ready'));
    if (inputs === null || typeof inputs !== 'object') return Promise.reject(new InputMismatchError(`run: expected a map of input names to tensors, got ${inputs === null ? 'null' : typeof inputs}`));
    const deadlineMs = opts?.deadlineMs;
    if (deadlineMs !== undefined && !(typeof deadlineMs === 'number' && deadlineMs >= 0)) {
      return Promise.reject(new RangeError(`run: deadlineMs must be a non-negative number of milliseconds, got ${String(deadlineMs)}`));
    }
    const signal = opts?.signal;
    if (signal?.aborted) {
      this.aborts++;
      return Promise.reject(new RunAbortedError('run: aborted by its signal before it started', { cause: signal.reason }));
    }
    return new Promise<TensorMap>((resolve, reject) => {
      const job: Job = {
        id: this.nextId++, inputs, transfer: opts?.transfer === true, resolve, reject, signal, deadlineMs,
        t0: performance.now(), started: false, done: false,
      };
      if (signal) {
        job.onAbort = () => {
          if (job.done) return;
          this.aborts++;
          this.settle(job, undefined, new RunAbortedError(`run: aborted by its signal ${job.started ? 'while it ran; its outputs are dropped' : 'while queued; it never ran'}`, { cause: signal.reason }));
          this.drop(job);
        };
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      if (deadlineMs !== undefined) job.timer = setTimeout(() => this.late(job), deadlineMs);
      this.queue.push(job);
      this.pump();
    });
  }

  private late(job: Job): void {
    if (job.done) return;
    this.misses++;
    this.settle(job, undefined, new DeadlineError(job.deadlineMs!, performance.now() - job.t0, job.started));
    this.drop(job);
  }

  /** A job given up while queued leaves the queue; one in the worker stays until its answer (dropped). */
  private drop(job: Job): void {
    const i = this.queue.indexOf(job);
    if (i >= 0) this.queue.splice(i, 1);
  }

  private settle(job: Job, out: TensorMap | undefined, e?: unknown): void {
    if (job.done) return;
    job.done = true;
    if (job.timer !== undefined) clearTimeout(job.timer);
    if (job.onAbort) job.signal!.removeEventListener('abort', job.onAbort);
    if (e !== undefined) job.reject(e);
    else job.resolve(out!);
  }

  /** Sends the next live job when the worker is idle. */
  private pump(): void {
    if (this.inflight || this._state !== 'ready') return;
    let job: Job | undefined;
    while ((job = this.queue.shift()) && job.done);
    if (!job) {
      this.worker.unref?.();
      return;
    }
    if (job.deadlineMs !== undefined && performance.now() - job.t0 > job.deadlineMs) {
      this.late(job);
      this.pump();
      return;
    }
    job.started = true;
    this.inflight = job;
    this.worker.ref?.();
    try {
      this.worker.postMessage({ t: 'run', id: job.id, inputs: job.inputs } satisfies ToWorker, job.transfer ? tensorTransfers(job.inputs) : []);
    } catch (e) {
      this.inflight = undefined;
      this.settle(job, undefined, new InputMismatchError(`run: the inputs cannot be sent to the model's worker: ${(e as Error)?.message ?? String(e)}`));
      this.pump();
    }
  }

  /** @internal A run's answer. */
  ran(m: Extract<FromWorker, { t: 'ran' }>): void {
    const job = this.inflight;
    if (!job || job.id !== m.id) return;
    this.inflight = undefined;
    if (m.error) {
      this.settle(job, undefined, errorFromWire(m.error));
    } else {
      this.lat[this.runs % WINDOW] = performance.now() - job.t0;
      this.runs++;
      if (!job.done && job.deadlineMs !== undefined && performance.now() - job.t0 > job.deadlineMs) this.late(job);
      else this.settle(job, m.outputs);
    }
    this.pump();
  }

  /** @internal The worker's release acknowledgement: its keys are wiped, its session released. */
  releasedAck(): void {
    // A thread whose end is reported closes itself now (ondeath settles the release); others are ended here.
    if (!this.worker.reportsExit) this.released?.();
  }

  async release(): Promise<void> {
    this.watches.stop();
    if (this._state === 'ready') {
      this._state = 'halted';
      this._error = new KeylockError('released', 'the model was released');
      this.failAll(this._error);
    }
    await this.end();
  }
}

/**
 * Loads `klm` in a new worker (see the module comment). Check failures come
 * back as a halted or disabled model, as from an in-thread load; a worker that
 * cannot start or dies during the load halts it with WorkerCrashedError.
 */
export async function loadInWorker(klm: Uint8Array, opts: LoadOptions, probe = false): Promise<LockedModel> {
  const ks: ModelKeySource | undefined = opts.keystore;
  let worker: WorkerLike;
  try {
    worker = env.spawnWorker!();
  } catch (e) {
    // No thread could be started (a missing worker script, a page whose CSP forbids workers): halted, as a crash.
    const m = new Model(undefined);
    m.halt(new WorkerCrashedError(`the model's worker thread could not be started: ${(e as Error)?.message ?? String(e)}; expected keylock-worker.mjs beside the bundle (or load with worker: false)`, { cause: e }));
    return m;
  }
  const model = new WorkerModel(worker);
  let loadedModelId: string | undefined;
  const done = new Promise<void>((resolve) => {
    const answer = (id: number, run: () => unknown): void => {
      Promise.resolve().then(run).then(
        (value) => worker.postMessage({ t: 'answer', id, value } satisfies ToWorker),
        (e: unknown) => worker.postMessage({ t: 'answer', id, error: errorToWire(e) } satisfies ToWorker),
      );
    };
    worker.onmessage = (data) => {
      const m = data as FromWorker;
      switch (m.t) {
        case 'key': {
          loadedModelId = m.modelId;
          Promise.resolve().then(() => ks!.modelKeyFor(m.modelId)).then((k) => {
            // The key moves to the worker: this thread's buffer is detached by the transfer, its source copy wiped.
            const key = new Uint8Array(k);
            wipe(k);
            worker.postMessage({ t: 'key', id: m.id, key, failures: ks!.failureCount(m.modelId) } satisfies ToWorker, [key.buffer as ArrayBuffer]);
          }, (e: unknown) => worker.postMessage({ t: 'key', id: m.id, error: errorToWire(e) } satisfies ToWorker));
          break;
        }
        case 'ask':
          if (m.method === 'recordFailure') answer(m.id, () => ks!.recordFailure(m.args[0] as string, m.args[1] as Manifest['policy']));
          else answer(m.id, () => ks!.resetFailures(m.args[0] as string));
          break;
        case 'phase':
          opts.onPhase?.(m.phase as Parameters<NonNullable<LoadOptions['onPhase']>>[0], m.ms);
          break;
        case 'loaded':
          model.loaded(m);
          resolve();
          break;
        case 'ran':
          model.ran(m);
          break;
        case 'released':
          model.releasedAck();
          break;
      }
    };
    worker.ondeath = (why) => {
      model.died(why);
      resolve();
    };
  });
  worker.ref?.();
  const consume = opts.consume === true && transferable(klm) !== undefined;
  const wire: WireLoadOptions = {
    backend: opts.backend, threads: opts.threads ?? env.threads, warmup: opts.warmup, phases: opts.onPhase !== undefined, probe,
    vendorKeys: ks ? ks.vendorKeys.map((k) => k.slice()) : undefined,
    modelKey: opts.modelKey ? new Uint8Array(opts.modelKey) : undefined,
    trust: opts.trust?.map((k) => k.slice()),
    env: { backend: env.backend, threads: env.threads, wasmPaths: env.wasmPaths, tfliteWasmPaths: env.tfliteWasmPaths, parallelDigest: env.parallelDigest },
  };
  const transfer: ArrayBuffer[] = [];
  if (consume) transfer.push(klm.buffer as ArrayBuffer);
  if (wire.modelKey) transfer.push(wire.modelKey.buffer as ArrayBuffer);
  worker.postMessage({ t: 'load', klm, consume, opts: wire } satisfies ToWorker, transfer);
  // Handed over but not transferable (a view into a larger buffer): the worker got a copy; these bytes are wiped as promised.
  if (opts.consume === true && !consume) klm.fill(0);
  await done;
  if (model.state === 'ready') {
    worker.unref?.();
    if (ks && loadedModelId !== undefined && isLicenceSource(ks)) watchLicence(model, ks, loadedModelId);
  }
  return model;
}
