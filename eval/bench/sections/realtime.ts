/**
 * Worker mode (runtime/worker.ts) against in-thread inference, side by side in one process:
 *
 * 1. Event-loop ticks: a 5 ms `setInterval` counts its ticks while a model runs back to back for a
 *    fixed time, (a) as a plain onnxruntime-web `InferenceSession` on the app's thread, (b) keylock
 *    in-thread (`worker: false`), (c) keylock in worker mode, the Node target's default. Ticks are
 *    reported as a share of the ticks expected (elapsed / 5 ms); the modes take turns, round after
 *    round, and the medians over rounds are reported. Goal: ≥ 95 % in worker mode.
 * 2. Per-run cost: the same locked model loaded twice, in-thread and in worker mode, on the same
 *    backend (wasm, 1 thread), called alternately (eval/bench/stats.ts `interleaveCalls`); medians of
 *    per-round ratios, and the fixed cost (worker − in-thread median per call) in microseconds. Goal:
 *    worker / in-thread ≤ 1.05× on models of ≥ 1 ms. A control pair runs beside it: the plain model in
 *    onnxruntime-web on the caller's thread and on a worker thread of its own (plain-ort-worker.mjs,
 *    no keylock), so what any worker thread costs here is told apart from what keylock adds.
 * A control row of the tick count runs no inference at all: what this machine delivers to a timer. Three more rows run a
 * tiny model (MNIST CNN) back to back: in the Node default (`worker: 'auto'`, which runs it on the caller's thread) on
 * native and on wasm, and `worker: false` on wasm. Goal: ≥ 95 % in the default too.
 *
 *   node --import tsx eval/bench/sections/realtime.ts [--quick]
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-web';
import { loadModel } from '../../../targets/node/index.ts';
import { lockOnnx } from '../../../models/lock/index.ts';
import { signKeyPair } from '../../../keystore/nacl.ts';
import { decodeRecorded } from '../../../runtime/recorded.ts';
import type { LockedModel } from '../../../runtime/model.ts';
import type { TensorMap } from '../../../runtime/tensor.ts';
import { MODELS, ROOT, seeded } from '../plan.ts';
import { interleaveCalls, quantile, ratios, seededFloats, summarize, timeBatch, type Summary } from '../stats.ts';

export const TICKS_GOAL = 0.95;
export const OVERHEAD_GOAL = 1.05;
const TICK_MS = 5;

export interface TickRow {
  mode: string;
  /** Share of expected ticks, per round. */
  share: Summary;
  /** Inferences finished per second while the timer ran (median over rounds). */
  runsPerSecond: number;
  /** Longest gap between two ticks (ms), median over rounds. */
  maxGapMs: number;
}

export interface OverheadRow {
  model: string;
  /** The control: plain onnxruntime-web on a worker thread / on the caller's thread, median of per-round ratios (not in quick runs). */
  plainWorkerRatio?: Summary;
  calls: number;
  rounds: number;
  inThreadMs: Summary;
  workerMs: Summary;
  ratio: Summary;
  /** worker − in-thread, median per call, in microseconds. */
  fixedUs: number;
}

export interface RealtimeResults {
  tickModel: string;
  lock: string;
  windowMs: number;
  rounds: number;
  ticks: TickRow[];
  overhead: OverheadRow[];
  ticksGoal: number;
  overheadGoal: number;
}

function inputOf(id: string): TensorMap {
  const m = MODELS.find((x) => x.id === id)!;
  if (m.mnist) return decodeRecorded(new Uint8Array(readFileSync(`${ROOT}test/fixtures/mnist-test.cbor`)))[0].inputs!;
  const size = m.input.dims.reduce((a, b) => a * b, 1);
  return { [m.input.name]: { dtype: 'float32', dims: m.input.dims, data: seededFloats(size, 11) } };
}

/** Runs `run` back to back for `windowMs` while a 5 ms interval counts its ticks. */
async function ticksWhile(run: () => Promise<unknown>, windowMs: number): Promise<{ share: number; runs: number; maxGap: number }> {
  let ticks = 0;
  let last = performance.now();
  let maxGap = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    ticks++;
  }, TICK_MS);
  const t0 = performance.now();
  last = t0;
  let runs = 0;
  while (performance.now() - t0 < windowMs) {
    await run();
    runs++;
  }
  const elapsed = performance.now() - t0;
  clearInterval(timer);
  maxGap = Math.max(maxGap, performance.now() - last);
  return { share: ticks / Math.floor(elapsed / TICK_MS), runs: (runs * 1000) / elapsed, maxGap };
}

async function lockedPair(id: string, lock: string): Promise<{ inThread: LockedModel; worker: LockedModel; x: TensorMap; bytes: Uint8Array }> {
  const def = MODELS.find((m) => m.id === id)!;
  const bytes = new Uint8Array(readFileSync(`${ROOT}${def.file}`));
  const vendorSeed = seeded('vendor');
  const trust = [signKeyPair(vendorSeed).publicKey];
  const r = await lockOnnx(bytes, { schemes: [lock as 'sealed'], vendorSeed, modelKey: seeded(`key/realtime/${id}`), modelId: `bench-realtime-${id}` });
  const opts = { modelKey: r.modelKey, trust, backend: 'wasm', threads: 1 };
  const inThread = await loadModel(r.klm, { ...opts, worker: false });
  const worker = await loadModel(r.klm, { ...opts, worker: true });
  for (const m of [inThread, worker]) if (m.state !== 'ready') throw m.error!;
  if (inThread.stats.mode !== 'in-thread' || worker.stats.mode !== 'worker') throw new Error(`modes: ${inThread.stats.mode}, ${worker.stats.mode}`);
  return { inThread, worker, x: inputOf(id), bytes };
}

/** The tiny-model rows of the tick table: MNIST CNN (sealed) in the default mode on native and wasm, and `worker: false` on wasm. */
async function tinyModels(): Promise<{ x: TensorMap; models: { label: string; model: LockedModel }[] }> {
  const id = 'mnist-cnn';
  const def = MODELS.find((m) => m.id === id)!;
  const vendorSeed = seeded('vendor');
  const trust = [signKeyPair(vendorSeed).publicKey];
  const r = await lockOnnx(new Uint8Array(readFileSync(`${ROOT}${def.file}`)), { schemes: ['sealed'], vendorSeed, modelKey: seeded(`key/realtime/tiny/${id}`), modelId: `bench-realtime-tiny-${id}` });
  const models: { label: string; model: LockedModel }[] = [];
  for (const [backend, worker] of [['native', undefined], ['wasm', undefined], ['wasm', false]] as const) {
    const model = await loadModel(r.klm, { modelKey: r.modelKey, trust, backend, threads: 1, worker });
    if (model.state !== 'ready') throw model.error!;
    const st = model.stats;
    const label = worker === false
      ? `${id}: keylock in-thread (\`worker: false\`), ${backend}`
      : `${id}: keylock default (\`worker: 'auto'\`), ${backend}: ${st.mode}${st.autoRunMs !== undefined ? ` (run at load ${st.autoRunMs.toFixed(3)} ms)` : ''}`;
    models.push({ label, model });
  }
  return { x: inputOf(id), models };
}

/** The control: a plain onnxruntime-web session on a worker thread (plain-ort-worker.mjs), one run per message. */
async function plainWorker(model: Uint8Array): Promise<{ run(x: unknown): Promise<unknown>; end(): Promise<unknown> }> {
  const w = new Worker(new URL('./plain-ort-worker.mjs', import.meta.url), { workerData: { model } });
  await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
  return {
    run: (x) => new Promise((resolve) => { w.once('message', resolve); w.postMessage(x); }),
    end: () => w.terminate(),
  };
}

export async function measure(quick: boolean): Promise<RealtimeResults> {
  const lock = 'sealed';
  const tickModel = quick ? 'mnist-cnn' : 'ppocr-rec';
  const windowMs = quick ? 100 : 1500;
  const rounds = quick ? 1 : 5;
  process.stderr.write(`    realtime ticks ${tickModel}\n`);
  const pair = await lockedPair(tickModel, lock);
  ort.env.wasm.numThreads = 1;
  const plain = await ort.InferenceSession.create(pair.bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  const [name] = Object.keys(pair.x);
  const xt = pair.x[name];
  const modes: [string, () => Promise<unknown>][] = [
    ['control: no inference (the timer alone)', () => new Promise((resolve) => setTimeout(resolve, 20))],
    ['onnxruntime-web, in-thread (plain model)', () => plain.run({ [name]: new ort.Tensor(xt.dtype as 'float32', xt.data as Float32Array, xt.dims) })],
    ['keylock in-thread (`worker: false`)', () => pair.inThread.run(pair.x)],
    ['keylock worker mode (`worker: true`; what the default picks for this model)', () => pair.worker.run(pair.x)],
  ];
  // A tiny model (MNIST CNN, 20–60 µs a run) in the Node default (`worker: 'auto'`), which runs it on the caller's
  // thread: on native (onnxruntime-node turns the event loop on every run of its own) and on wasm (onnxruntime-web
  // never does; the cooperative yield lets the loop turn every 0.25 ms), beside the same model `worker: false` on wasm.
  const tiny = await tinyModels();
  for (const t of tiny.models) modes.push([t.label, () => t.model.run(tiny.x)]);
  for (const [, run] of modes) for (let i = 0; i < 3; i++) await run(); // warm
  const per: { share: number[]; runs: number[]; gap: number[] }[] = modes.map(() => ({ share: [], runs: [], gap: [] }));
  for (let r = 0; r < rounds; r++) {
    for (let j = 0; j < modes.length; j++) {
      const k = (j + r) % modes.length;
      const t = await ticksWhile(modes[k][1], windowMs);
      per[k].share.push(t.share);
      per[k].runs.push(t.runs);
      per[k].gap.push(t.maxGap);
    }
  }
  const ticks = modes.map(([mode], k) => ({
    mode, share: summarize(per[k].share), runsPerSecond: quantile(per[k].runs, 0.5), maxGapMs: quantile(per[k].gap, 0.5),
  }));
  await plain.release();
  for (const t of tiny.models) await t.model.release();

  const overhead: OverheadRow[] = [];
  for (const id of quick ? ['mnist-cnn'] : ['mnist-mlp', 'mnist-cnn', 'melspectrogram', 'embedding_model', 'ppocr-rec']) {
    process.stderr.write(`    realtime overhead ${id}\n`);
    const p = id === tickModel ? pair : await lockedPair(id, lock);
    const [xn] = Object.keys(p.x);
    const xi = p.x[xn];
    const plainHere = await ort.InferenceSession.create(p.bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    // The control's own worker is left out of the quick run (the CI check), which only checks that the figures come out.
    const control = quick ? undefined : await plainWorker(p.bytes);
    const a = (): Promise<unknown> => p.inThread.run(p.x);
    const b = (): Promise<unknown> => p.worker.run(p.x);
    const c = (): Promise<unknown> => plainHere.run({ [xn]: new ort.Tensor(xi.dtype as 'float32', xi.data as Float32Array, xi.dims) });
    const d = (): Promise<unknown> => control!.run({ name: xn, dtype: xi.dtype, dims: xi.dims, data: xi.data });
    const sides = control ? [a, b, c, d] : [a, b];
    for (let i = 0; i < 10; i++) for (const f of sides) await f();
    const one = await timeBatch(a, 5);
    const rounds2 = quick ? 3 : one > 20 ? 7 : 11;
    const calls = quick ? 20 : Math.max(3, Math.min(400, Math.round(150 / one)));
    const t = await interleaveCalls(sides, rounds2, calls);
    const inThreadMs = summarize(t.sides[0]);
    const workerMs = summarize(t.sides[1]);
    overhead.push({
      model: id, calls, rounds: rounds2, inThreadMs, workerMs, ratio: summarize(ratios(t.sides[1], t.sides[0])),
      fixedUs: (workerMs.median - inThreadMs.median) * 1000, plainWorkerRatio: control ? summarize(ratios(t.sides[3], t.sides[2])) : undefined,
    });
    await Promise.all([p.inThread.release(), p.worker.release(), plainHere.release(), control?.end()]);
  }
  return { tickModel, lock, windowMs, rounds, ticks, overhead, ticksGoal: TICKS_GOAL, overheadGoal: OVERHEAD_GOAL };
}

const ms = (s: Summary): string => (s.median < 0.1 ? s.median.toFixed(4) : s.median.toFixed(3));
const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;

export function render(r: RealtimeResults): string[] {
  const w = r.ticks.find((t) => t.mode.startsWith('keylock worker'));
  const idle = r.ticks.find((t) => t.mode.startsWith('control'));
  const big = r.overhead.filter((o) => o.inThreadMs.median >= 1);
  const bigPass = big.filter((o) => o.ratio.median <= r.overheadGoal).length;
  const small = r.overhead.filter((o) => o.inThreadMs.median < 1);
  const tiny = r.ticks.filter((t) => t.mode.includes('keylock default'));
  const tinyLine = tiny.length
    ? ` The default on a tiny model (the last rows: MNIST CNN, which \`worker: 'auto'\` runs on the caller's thread), same goal: ${tiny.map((t) => { const m = /, (\w+): ([\w-]+)/.exec(t.mode); return `${m ? `${m[1]}, ${m[2]}` : t.mode} ${pct(t.share.median)}, ${t.share.median >= r.ticksGoal ? 'met' : '**missed**'}`; }).join('; ')}.`
    : '';
  return [
    `A 5 ms \`setInterval\` counting its ticks while ${r.tickModel} (locked \`${r.lock}\`) runs back to back for ${r.windowMs} ms, each mode in turn, ${r.rounds} round(s); wasm backend, 1 thread; share of the ticks expected (elapsed / 5 ms), median over rounds. Goal ≥ ${pct(r.ticksGoal)} in worker mode: ${w ? `${pct(w.share.median)}, ${w.share.median >= r.ticksGoal ? 'met' : '**missed**'}` : 'not measured'}${w && idle ? ` (the timer alone, no inference, got ${pct(idle.share.median)} in the same rounds: worker mode kept ${pct(w.share.median / idle.share.median)} of what this machine delivers)` : ''}. The worker thread and the timer's thread share the machine's 2 cores with any other process: read worker mode beside the control row.${tinyLine}`,
    '',
    '| mode | ticks / expected (median) | min–max over rounds | longest gap between ticks (ms, median) | inferences/s |',
    '| --- | ---: | --- | ---: | ---: |',
    ...r.ticks.map((t) => `| ${t.mode} | ${pct(t.share.median)} | ${pct(t.share.min)}–${pct(t.share.max)} | ${t.maxGapMs.toFixed(1)} | ${t.mode.startsWith('control') ? '–' : t.runsPerSecond.toFixed(1)} |`),
    '',
    `Per-run cost of worker mode: each model locked \`${r.lock}\`, loaded in-thread and in worker mode (wasm, 1 thread), called alternately (\`interleaveCalls\`); medians of per-round ratios. Worker-mode times are measured on the caller's thread: posting the inputs (a structured-clone copy), the run, and the outputs transferred back. Goal ≤ ${r.overheadGoal}× on models of ≥ 1 ms: ${bigPass} of ${big.length}; below 1 ms the fixed cost is what counts: ${small.map((o) => `${o.model} ${o.fixedUs.toFixed(0)} µs`).join(', ') || 'none measured'}.`,
    '',
    '| model | in-thread ms/run | worker ms/run | worker / in-thread (median) | p25–p75 (min, max) | fixed cost µs/run | control: plain ORT-web worker / in-thread | ≤ goal |',
    '| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |',
    ...r.overhead.map((o) => `| ${o.model} | ${ms(o.inThreadMs)} | ${ms(o.workerMs)} | ${o.ratio.median.toFixed(3)}× | ${o.ratio.p25.toFixed(3)}–${o.ratio.p75.toFixed(3)} (${o.ratio.min.toFixed(3)}, ${o.ratio.max.toFixed(3)}) | ${o.fixedUs.toFixed(0)} | ${o.plainWorkerRatio ? `${o.plainWorkerRatio.median.toFixed(3)}×` : '–'} | ${o.inThreadMs.median < 1 ? '– (< 1 ms)' : o.ratio.median <= r.overheadGoal ? 'yes' : '**no**'} |`),
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await measure(process.argv.includes('--quick'));
  process.stdout.write(render(r).join('\n') + '\n');
  process.exit(0);
}
