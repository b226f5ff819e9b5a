/**
 * Pipelines under one grant: `loadPipeline(klp, opts)` loads a `.klp`
 * (runtime/pipeline-file.ts) — several locked models sold as one product, a
 * wake-word detector's melspectrogram -> embedding -> classifier — with one
 * model id, one key and one grant. The pipeline is granted, revoked and halted
 * as one: the grant is looked up once, for the pipeline id; a part that fails
 * any check (signature, digest, key, canary, backend) halts every part, and a
 * part halted while running (a licence that ends) halts the pipeline, with a
 * `halt` event.
 *
 * Running it is streaming: `stream()` keeps, per stream, each stage's model
 * state (runtime/stream.ts) and the glue's buffers (windows), and `push`
 * carries an input through the declared glue steps and stages, returning the
 * last stage's outputs for each time it ran (zero or more).
 */
import { DisabledError, FormatError, InputMismatchError, KeyMismatchError, KeylockError, CanaryMismatchError, TamperedError } from '../keystore/errors.ts';
import { equalBytes, wipe } from '../keystore/nacl.ts';
import { keyCheckValue } from './keys/derive.ts';
import { asKeylockError, loadModel, type LoadOptions, type ModelKeySource } from './load.ts';
import { Model, type LockedModel, type ModelState, type RunStats } from './model.ts';
import { checkKlpParts, openKlp, partModelId, type GlueStep, type KlpFile, type PipelineManifest, type PipelineStage } from './pipeline-file.ts';
import { createStream, FrameAdapter, type ModelStream } from './stream.ts';
import { shapeSize, type TensorArray, type TensorData, type TensorMap } from './tensor.ts';

/** Where the pipeline's key comes from, and how to run its parts. */
export interface PipelineLoadOptions {
  /** The device's key source: one grant, for the pipeline id; its vendor keys are the only ones trusted. */
  keystore?: ModelKeySource;
  /** The pipeline's model key itself (the vendor's own check, tests). */
  modelKey?: Uint8Array;
  /** Trusted vendor public keys (with `modelKey`). */
  trust?: readonly Uint8Array[];
  /** Backend for every part (as `LoadOptions.backend`). */
  backend?: string;
  threads?: number;
  /**
   * Loads one part (default `loadModel`): a product that runs its models elsewhere (a worker, a
   * loader of its own) plugs its loader here; the pipeline only uses the `LockedModel` it returns.
   */
  loadPart?: (klm: Uint8Array, opts: LoadOptions) => Promise<LockedModel>;
  /**
   * Listeners registered before the load starts, so that a pipeline halted (or disabled) by the load
   * itself is reported as an event too, not only by `state`; as `on(event, fn)` afterwards.
   */
  on?: { halt?: (e: KeylockError) => void; disable?: (e: KeylockError) => void };
}

/** Latency of pushes through the whole pipeline, and each part's own. */
export interface PipelineStats {
  pushes: number;
  /** Milliseconds per push, over the most recent pushes. */
  p50: number;
  p99: number;
  stages: Record<string, RunStats>;
}

/** A stream through the pipeline: per-stream stage state and glue buffers. */
export interface PipelineStream {
  /**
   * Carries `inputs` (the first stage's fed input) through the glue and the
   * stages; resolves to the last stage's outputs, once per time it ran.
   * Pushes on one stream run in order.
   */
  push(inputs: TensorMap): Promise<TensorMap[]>;
  /** Every stage's state to zeros and every window emptied (to its prefill). */
  reset(): void;
}

/** A loaded pipeline, as `loadPipeline` returns it. */
export interface LockedPipeline {
  /** `ready`, `halted` or `disabled`: the whole pipeline's, never one part's. */
  readonly state: ModelState;
  /** Why it is not ready. */
  readonly error: KeylockError | undefined;
  /** The stage whose failure halted it, when one did. */
  readonly failedStage: string | undefined;
  /** The verified pipeline manifest; undefined when the file did not open. */
  readonly manifest: PipelineManifest | undefined;
  /** Each stage's model, by stage name (halted with the pipeline). */
  readonly parts: Readonly<Record<string, LockedModel>>;
  /** The input name `push` and `run` take (the first stage's fed input). */
  readonly input: string | undefined;
  readonly stats: PipelineStats;
  /** A new stream (fresh state and buffers). */
  stream(): PipelineStream;
  /** One push on a fresh stream. */
  run(inputs: TensorMap): Promise<TensorMap[]>;
  /** Releases every part; the pipeline is halted afterwards. */
  release(): Promise<void>;
  /** Subscribes to `halt` or `disable` of the pipeline (for a failure of the load itself, pass `on` to `loadPipeline`). */
  on(event: 'halt' | 'disable', fn: (e: KeylockError) => void): this;
}

type Step = (t: TensorData) => TensorData[];

function affine(s: Extract<GlueStep, { op: 'affine' }>): Step {
  return (t) => {
    if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new InputMismatchError(`glue step affine: expected a float32 or float64 tensor, got ${t.dtype}`);
    const x = t.data as Float32Array | Float64Array;
    const y = new (x.constructor as Float32ArrayConstructor)(x.length);
    const { mul, div, add } = s;
    for (let i = 0; i < x.length; i++) y[i] = (x[i] * mul) / div + add;
    return [{ dtype: t.dtype, dims: t.dims, data: y }];
  };
}

function windowStep(s: Extract<GlueStep, { op: 'window' }>): { step: Step; reset(): void } {
  let fa: FrameAdapter | undefined;
  return {
    step: (t) => {
      fa ??= new FrameAdapter({ size: s.size, hop: s.hop, row: s.row, prefill: s.prefill, dtype: t.dtype });
      if (fa.dtype !== t.dtype) throw new InputMismatchError(`glue step window: expected ${fa.dtype} tensors, got ${t.dtype}`);
      return fa.push(t.data).map((data: TensorArray) => ({ dtype: t.dtype, dims: [s.size, s.row], data }));
    },
    reset: () => fa?.reset(),
  };
}

function reshape(s: Extract<GlueStep, { op: 'reshape' }>): Step {
  return (t) => {
    const known = s.shape.reduce((p, d) => (d === -1 ? p : p * d), 1);
    const dims = s.shape.map((d) => (d === -1 ? t.data.length / known : d));
    if (!dims.every((d) => Number.isSafeInteger(d)) || shapeSize(dims) !== t.data.length) {
      throw new InputMismatchError(`glue step reshape: [${s.shape.join(',')}] does not fit ${t.data.length} elements (dims [${t.dims.join(',')}])`);
    }
    return [{ dtype: t.dtype, dims, data: t.data }];
  };
}

/** The glue of one stage as a function: a tensor in, the tensors it emits out (windows keep their rows between calls). */
export function glue(steps: readonly GlueStep[]): { apply(t: TensorData): TensorData[]; reset(): void } {
  const fs: Step[] = [];
  const resets: (() => void)[] = [];
  for (const g of steps) {
    if (g.op === 'affine') fs.push(affine(g));
    else if (g.op === 'reshape') fs.push(reshape(g));
    else {
      const w = windowStep(g);
      fs.push(w.step);
      resets.push(w.reset);
    }
  }
  return {
    apply: (t) => {
      let ts = [t];
      for (const f of fs) ts = ts.flatMap(f);
      return ts;
    },
    reset: () => { for (const r of resets) r(); },
  };
}

interface StageRun {
  spec: PipelineStage;
  stream: ModelStream;
  glue: ReturnType<typeof glue>;
}

class Stream implements PipelineStream {
  private queue: Promise<unknown> = Promise.resolve();
  constructor(private readonly owner: Pipeline, private readonly stages: StageRun[]) {}

  reset(): void {
    for (const s of this.stages) {
      s.stream.reset();
      s.glue.reset();
    }
  }

  push(inputs: TensorMap): Promise<TensorMap[]> {
    const r = this.queue.then(() => this.owner.timed(() => this.pushNow(inputs)));
    this.queue = r.catch(() => undefined);
    return r;
  }

  private async pushNow(inputs: TensorMap): Promise<TensorMap[]> {
    this.owner.checkReady();
    const first = this.stages[0].spec;
    const names = Object.keys(inputs);
    if (names.length !== 1 || names[0] !== first.input) throw new InputMismatchError(`pipeline input: expected "${first.input}" only, got ${names.map((n) => `"${n}"`).join(', ') || 'none'}`);
    const results: TensorMap[] = [];
    await this.feed(0, inputs[first.input], results);
    return results;
  }

  private async feed(i: number, t: TensorData, results: TensorMap[]): Promise<void> {
    const s = this.stages[i];
    for (const x of s.glue.apply(t)) {
      let out: TensorMap;
      try {
        out = await s.stream.push({ [s.spec.input]: x });
      } catch (e) {
        throw this.owner.partFailed(s.spec.name, e);
      }
      if (i === this.stages.length - 1) {
        results.push(out);
      } else {
        const next = this.stages[i + 1].spec;
        await this.feed(i + 1, out[next.from!], results);
      }
    }
  }
}

type Listener = (e: KeylockError) => void;
const WINDOW = 1024;

class Pipeline implements LockedPipeline {
  manifest: PipelineManifest | undefined;
  parts: Record<string, LockedModel> = {};
  private _state: ModelState = 'ready';
  private _error?: KeylockError;
  private _failed?: string;
  private listeners: Record<'halt' | 'disable', Listener[]> = { halt: [], disable: [] };
  private lat = new Float64Array(WINDOW);
  private pushes = 0;

  get state(): ModelState { return this._state; }
  get error(): KeylockError | undefined { return this._error; }
  get failedStage(): string | undefined { return this._failed; }
  get input(): string | undefined { return this.manifest?.stages[0].input; }

  on(event: 'halt' | 'disable', fn: Listener): this {
    this.listeners[event].push(fn);
    return this;
  }

  /** Halts the pipeline and releases every part; `stage`: the part whose failure did it. */
  halt(e: KeylockError, state: 'halted' | 'disabled' = 'halted', stage?: string): void {
    if (this._state !== 'ready') return;
    this._state = state;
    this._error = e;
    this._failed = stage;
    // Every part halts with the pipeline's reason (a part's own halt event comes back here and stops above).
    for (const p of Object.values(this.parts)) {
      if (p instanceof Model) p.halt(e, state);
      else void p.release().catch(() => undefined);
    }
    for (const fn of this.listeners[state === 'disabled' ? 'disable' : 'halt']) fn(e);
  }

  /** Adds a loaded part; its halt (a licence ending while it runs) halts the pipeline. */
  attach(stage: string, m: LockedModel): void {
    this.parts[stage] = m;
    m.on('halt', (e) => this.halt(e, 'halted', stage));
    m.on('disable', (e) => this.halt(e, 'disabled', stage));
  }

  checkReady(): void {
    if (this._state !== 'ready') throw this._error ?? new KeylockError('halted', 'the pipeline is not ready');
    for (const [name, p] of Object.entries(this.parts)) {
      if (p.state !== 'ready') {
        const e = p.error ?? new KeylockError('halted', `pipeline stage "${name}" is not ready`);
        this.halt(e, p.state === 'disabled' ? 'disabled' : 'halted', name);
        throw e;
      }
    }
  }

  /** A part's run failed: a part no longer ready halts the pipeline; bad input is the caller's. */
  partFailed(stage: string, e: unknown): unknown {
    const p = this.parts[stage];
    if (p && p.state !== 'ready') {
      const err = p.error ?? asKeylockError(e);
      this.halt(err, p.state === 'disabled' ? 'disabled' : 'halted', stage);
      return err;
    }
    return e;
  }

  async timed<T>(f: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const r = await f();
    this.lat[this.pushes % WINDOW] = performance.now() - t0;
    this.pushes++;
    return r;
  }

  get stats(): PipelineStats {
    const n = Math.min(this.pushes, WINDOW);
    const a = Array.from(this.lat.subarray(0, n)).sort((x, y) => x - y);
    const q = (p: number): number => (n ? a[Math.min(n - 1, Math.floor(p * n))] : NaN);
    const stages: Record<string, RunStats> = {};
    for (const [k, p] of Object.entries(this.parts)) stages[k] = p.stats;
    return { pushes: this.pushes, p50: q(0.5), p99: q(0.99), stages };
  }

  stream(): PipelineStream {
    if (!this.manifest) throw this._error ?? new KeylockError('halted', 'the pipeline is not ready');
    const runs: StageRun[] = this.manifest.stages.map((spec) => (
      { spec, glue: glue(spec.steps), stream: createStream(this.parts[spec.name], { state: spec.state, constants: spec.constants }) }
    ));
    return new Stream(this, runs);
  }

  run(inputs: TensorMap): Promise<TensorMap[]> {
    try {
      return this.stream().push(inputs);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async release(): Promise<void> {
    if (this._state === 'ready') { this._state = 'halted'; this._error = new KeylockError('released', 'the pipeline was released'); }
    await Promise.all(Object.values(this.parts).map((p) => p.release()));
  }
}

/** Failures that count toward the policy's limit, as for a single model. */
function countsAsFailure(e: KeylockError): boolean {
  return e instanceof KeyMismatchError || e instanceof CanaryMismatchError || e instanceof TamperedError;
}

/** Checks that the stages' wiring fits the parts' declared inputs and outputs (FormatError otherwise). */
function checkWiring(m: PipelineManifest, parts: Record<string, LockedModel>): void {
  m.stages.forEach((s, i) => {
    const p = parts[s.name];
    if (!p.inputs.some((x) => x.name === s.input)) throw new FormatError(`pipeline stage "${s.name}" feeds input "${s.input}"; its part takes ${p.inputs.map((x) => `"${x.name}"`).join(', ')}`);
    if (i > 0) {
      const prev = parts[m.stages[i - 1].name];
      if (!prev.outputs.some((x) => x.name === s.from)) throw new FormatError(`pipeline stage "${s.name}" takes output "${s.from}" of "${m.stages[i - 1].name}", which gives ${prev.outputs.map((x) => `"${x.name}"`).join(', ')}`);
    }
  });
}

/**
 * Loads a `.klp`. The key comes once from `opts.keystore` (the grant for the
 * pipeline id: licence window, revocation, clock floor) or `opts.modelKey`.
 * A check that fails does not throw: the pipeline comes back `halted` (or
 * `disabled`) with the typed `error` and the `failedStage`, and every part is
 * halted. API misuse (no key source) throws.
 */
export async function loadPipeline(klp: Uint8Array, opts: PipelineLoadOptions): Promise<LockedPipeline> {
  const ks = opts.keystore;
  if (!ks && !opts.modelKey) throw new TypeError('loadPipeline needs a keystore or a modelKey');
  const p = new Pipeline();
  if (opts.on?.halt) p.on('halt', opts.on.halt);
  if (opts.on?.disable) p.on('disable', opts.on.disable);
  let file: KlpFile;
  try {
    file = await openKlp(klp, ks ? ks.vendorKeys : opts.trust);
  } catch (e) {
    p.halt(asKeylockError(e));
    return p;
  }
  const { manifest } = file;
  p.manifest = manifest;
  const { pipelineId, policy } = manifest;
  let key: Uint8Array | undefined;
  let stage: string | undefined;
  const loaded: Record<string, LockedModel> = {};
  try {
    try {
      await checkKlpParts(file);
    } catch (e) {
      stage = (e as { stage?: string }).stage;
      throw e;
    }
    key = ks ? await ks.modelKeyFor(pipelineId) : new Uint8Array(opts.modelKey!);
    const kcv = keyCheckValue(key);
    const ok = key.byteLength === 32 && equalBytes(kcv, manifest.kcv);
    wipe(kcv);
    if (!ok) throw new KeyMismatchError(`the key does not open pipeline "${pipelineId}" (key check value mismatch)`);
    // The parts are the vendor's (their digests are signed above) and signed by the same key.
    const trust = file.trusted ? [manifest.vendorKey] : undefined;
    for (let i = 0; i < manifest.stages.length; i++) {
      const s = manifest.stages[i];
      stage = s.name;
      const m = await (opts.loadPart ?? loadModel)(file.parts[i], { modelKey: key, trust, backend: opts.backend, threads: opts.threads });
      loaded[s.name] = m;
      if (m.state !== 'ready') throw m.error!;
      const want = partModelId(pipelineId, s.name);
      if (m.manifest!.modelId !== want) throw new TamperedError(`pipeline stage "${s.name}": expected a part with model id "${want}", got "${m.manifest!.modelId}"`);
      if (!equalBytes(m.manifest!.vendorKey, manifest.vendorKey)) throw new TamperedError(`pipeline stage "${s.name}": expected a part signed by the pipeline's vendor key, got one signed by another`);
    }
    stage = undefined;
    checkWiring(manifest, loaded);
    for (const [k, m] of Object.entries(loaded)) p.attach(k, m);
    p.stream(); // the streams' options (state, constants) fit the parts, or the load fails here
    if (ks && ks.failureCount(pipelineId) > 0) await ks.resetFailures(pipelineId);
  } catch (e) {
    const err = asKeylockError(e);
    // Every stage has a part to read, halted below with the pipeline's reason (one that never loaded too).
    for (const s of manifest.stages) p.parts[s.name] ??= loaded[s.name] ?? new Model(undefined);
    if (err instanceof DisabledError) {
      p.halt(err, 'disabled', stage);
    } else if (ks && countsAsFailure(err)) {
      const r = await ks.recordFailure(pipelineId, policy);
      p.halt(r.disabled ? new DisabledError(pipelineId, Math.floor(Date.now() / 1000), `${r.failures} failed unlock(s): ${err.message}`) : err, r.disabled ? 'disabled' : 'halted', stage);
    } else {
      p.halt(err, 'halted', stage);
    }
  } finally {
    key?.fill(0);
  }
  return p;
}
