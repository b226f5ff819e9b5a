/**
 * Worker mode, the worker's side (runtime/worker.ts is the caller's): one model
 * per worker. It loads the `.klm` with the in-thread `loadModel`, asking the
 * caller's key source through messages (`ModelKeySource` over the port), runs
 * the model for each `run` message and answers with the outputs' buffers
 * transferred. On `release` it wipes the key material, releases the session
 * and says so; the caller then ends the thread.
 *
 * A platform's worker script calls `serveModel` with its port (targets/node/worker.ts,
 * targets/deno/worker.ts, targets/browser/worker.ts).
 */
import { errorFromWire, errorToWire, type WireError } from '../keystore/errors.ts';
import { wipe } from '../keystore/nacl.ts';
import { env } from './env.ts';
import type { Policy } from './klm.ts';
import { loadModel, type LoadOptions, type ModelKeySource } from './load.ts';
import { AUTO_IN_THREAD_MS, type Model } from './model.ts';
import { zeroInputs } from './warmup.ts';
import type { FromWorker, ToWorker } from './worker.ts';
import { tensorTransfers } from './worker.ts';

/** The worker's end of the channel, as its platform gives it. */
export interface HostPort {
  post(msg: FromWorker, transfer?: ArrayBuffer[]): void;
  /** Called once, with the handler of every message from the caller's thread. */
  listen(fn: (msg: ToWorker) => void): void;
  /** Ends this thread (after `released` was posted). */
  close(): void;
}

/** `worker: 'auto'`: runs timed after the load, at most, and the time they may take (the last one started within it). */
const PROBE_RUNS = 1000;
const PROBE_BUDGET_MS = 25;

/** Serves one model on `port` until the caller releases it. */
export function serveModel(port: HostPort): void {
  let model: Model | undefined;
  let nextId = 1;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  const ask = (msg: (id: number) => FromWorker): Promise<unknown> => new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    port.post(msg(id));
  });
  let failures = 0;
  let releasing = false;

  port.listen((m) => {
    switch (m.t) {
      case 'load':
        void load(m.klm, m.consume, m.opts);
        break;
      case 'key':
      case 'answer': {
        const w = waiting.get(m.id);
        waiting.delete(m.id);
        if (!w) break;
        if (m.error) w.reject(errorFromWire(m.error));
        else if (m.t === 'key') {
          failures = m.failures ?? 0;
          w.resolve(m.key);
        } else w.resolve(m.value);
        break;
      }
      case 'run':
        void run(m.id, m.inputs);
        break;
      case 'release':
        releasing = true;
        void (model?.release() ?? Promise.resolve()).catch(() => undefined).then(() => {
          port.post({ t: 'released' });
          port.close();
        });
        break;
    }
  });

  async function load(klm: Uint8Array, consume: boolean, o: ToWorker & { t: 'load' } extends { opts: infer O } ? O : never): Promise<void> {
    // The caller's platform settings, so the worker loads as the caller would have.
    if (o.env.backend !== undefined) env.backend = o.env.backend;
    env.threads = o.env.threads;
    if (o.env.wasmPaths !== undefined) env.wasmPaths = o.env.wasmPaths;
    if (o.env.tfliteWasmPaths !== undefined) env.tfliteWasmPaths = o.env.tfliteWasmPaths;
    if (o.env.parallelDigest !== undefined) env.parallelDigest = o.env.parallelDigest;
    const opts: LoadOptions = {
      backend: o.backend, threads: o.threads, warmup: o.warmup, trust: o.trust,
      // The bytes arrived as this thread's own copy (cloned or transferred): restored in place, then wiped.
      consume: true,
      onPhase: o.phases ? (phase, ms) => port.post({ t: 'phase', phase, ms }) : undefined,
    };
    void consume;
    if (o.modelKey) opts.modelKey = o.modelKey;
    if (o.vendorKeys) {
      const source: ModelKeySource = {
        vendorKeys: o.vendorKeys,
        modelKeyFor: (modelId) => ask((id) => ({ t: 'key', id, modelId })) as Promise<Uint8Array>,
        failureCount: () => failures,
        recordFailure: (modelId: string, policy: Policy) => ask((id) => ({ t: 'ask', id, method: 'recordFailure', args: [modelId, policy] })) as Promise<{ failures: number; disabled: boolean }>,
        resetFailures: async (modelId: string) => { await ask((id) => ({ t: 'ask', id, method: 'resetFailures', args: [modelId] })); },
      };
      opts.keystore = source;
    }
    let loaded: Model;
    try {
      loaded = await loadModel(klm, opts);
    } catch (e) {
      // What an in-thread load throws (misuse, a platform refusal) halts the model here.
      port.post({ t: 'loaded', state: 'halted', error: errorToWire(e), skipped: [] });
      return;
    } finally {
      if (o.modelKey) wipe(o.modelKey);
    }
    model = loaded;
    if (releasing) void loaded.release();
    const runMs = o.probe && loaded.state === 'ready' && !releasing ? await timeRuns(loaded) : undefined;
    port.post({
      runMs,
      t: 'loaded', state: loaded.state, error: loaded.error ? errorToWire(loaded.error) : undefined,
      manifest: loaded.manifest, backend: loaded.backend,
      skipped: loaded.skippedBackends.map((s) => ({ backend: s.backend, error: errorToWire(s.error) as WireError })),
    });
  }

  /**
   * `worker: 'auto'`: the fastest of the runs on zeros of the declared shapes (the
   * first, and those that start within PROBE_BUDGET_MS after it: at least two, at
   * most PROBE_RUNS), in ms, not counted in `stats`. The first runs of a fresh thread are slow (the run path is
   * not compiled yet, a first run allocates), hence the fastest of many: a 20 µs
   * model needs a few dozen, a long model pays two runs at load. It ends early once a run is clearly short. A model
   * that cannot run on zeros (a dtype without zeros, an input the model refuses)
   * reports none and stays in its worker.
   */
  async function timeRuns(m: Model): Promise<number | undefined> {
    let best = Infinity;
    try {
      const x = zeroInputs(m.inputs);
      let start = 0;
      for (let i = 0; i < PROBE_RUNS && best > AUTO_IN_THREAD_MS / 2; i++) {
        const t0 = performance.now();
        await m.run(x);
        const t1 = performance.now();
        best = Math.min(best, t1 - t0);
        if (i === 0) start = t1; // the budget starts after the first run, which pays the engine's first-run costs
        else if (t1 - start >= PROBE_BUDGET_MS) break;
      }
    } catch {
      return undefined;
    } finally {
      m.resetStats();
    }
    return best;
  }

  async function run(id: number, inputs: Parameters<Model['run']>[0]): Promise<void> {
    const t0 = performance.now();
    try {
      const outputs = await model!.run(inputs);
      port.post({ t: 'ran', id, outputs, ms: performance.now() - t0 }, tensorTransfers(outputs));
    } catch (e) {
      port.post({ t: 'ran', id, error: errorToWire(e), ms: performance.now() - t0 });
    }
  }
}
